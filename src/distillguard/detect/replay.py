"""``replay``: the online detector over logs in timestamp order, as if each request arrived live (contracts.md §3).

The per-request derived values are computed in bulk by the batch SQL (the tested twin of
:func:`~distillguard.features.derive.derive_one`); everything stateful — account and cluster stats,
links, scores, the threshold — is :class:`~distillguard.detect.online.OnlineDetector`, the gateway's
own code.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import orjson

from distillguard.detect.online import OnlineDetector
from distillguard.detect.scoring import ScoreModel
from distillguard.errors import InputError
from distillguard.features.derive import DERIVED_FLAGS, SCAN_CHARS, WORD_PATTERN, WORDS_PROMPT_CHARS, derive_sql
from distillguard.features.stats import WORDS_FIRST_N
from distillguard.ingest import EventReader, EventStore, RejectWriter, load_accounts
from distillguard.prefetch import prefetched
from distillguard.progress import count_progress
from distillguard.schema import UNAUTHENTICATED_ACCOUNT

_BATCH = 50_000
#: Per-request derived values passed to ``process_derived`` besides the flags (``DERIVED_FLAGS``).
DERIVED_VALUES = ("out_tok", "in_tok", "psig", "fsig", "sph", "temp", "ph", "pre", "suf")


def _replay_sql() -> str:
    return f"""
SELECT account_id, ts, client_ip, user_agent, model,
       {', '.join(DERIVED_FLAGS + DERIVED_VALUES)},
       CASE WHEN rk <= {WORDS_FIRST_N} THEN regexp_extract_all(lower(left(coalesce(prompt, ''), {WORDS_PROMPT_CHARS})), '{WORD_PATTERN}') END AS words
FROM (SELECT *, row_number() OVER (PARTITION BY account_id ORDER BY ts, request_id) AS rk FROM ({derive_sql('events')}) x)
WHERE account_id <> '{UNAUTHENTICATED_ACCOUNT}'  -- refused by the gateway for a missing or unknown key
ORDER BY ts, request_id
"""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def replay_store(con, det: OnlineDetector, *, on_batch: Callable[[int], None] | None = None) -> int:
    """Feed every request of the store's ``events`` table to ``det`` in timestamp order; returns the count.

    The derived values come from the batch SQL; the query computes and converts the next batch on a
    thread while this one is replayed."""
    reader = con.sql(_replay_sql()).to_arrow_reader(_BATCH)
    names = DERIVED_FLAGS + DERIVED_VALUES
    process = det.process_derived
    done = 0
    for batch in prefetched(lambda: iter(reader), name="distillguard-replay"):
        cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
        n = batch.num_rows
        aids, tss, ips, uas, words = cols["account_id"], cols["ts"], cols["client_ip"], cols["user_agent"], cols["words"]
        models = cols["model"]
        value_cols = [cols[c] for c in names]
        for i in range(n):
            d = dict(zip(names, [c[i] for c in value_cols]))
            process(aids[i], tss[i], d, words[i], client_ip=ips[i], user_agent=uas[i], model=models[i])
        done += n
        if on_batch:
            on_batch(n)
    return done


def run_replay(
    paths: list[str | Path],
    out_dir: str | Path,
    *,
    accounts: str | Path | None = None,
    model: ScoreModel | str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Replay ``paths`` through the online detector; writes ``first_flags.jsonl`` and ``rejected.jsonl``."""
    t_start = time.perf_counter()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "rejected.jsonl").write_bytes(b"")
    except OSError as e:
        raise InputError(f"cannot write to output folder {out}: {e.strerror or e}") from e
    if isinstance(model, (str, Path)):
        model = ScoreModel.load(model)
    work = Path(tempfile.mkdtemp(prefix="distillguard-replay-"))
    try:
        store = EventStore(":memory:", memory_limit="3GB", temp_directory=work)
        with RejectWriter(out / "rejected.jsonl") as rej:
            reader = EventReader(rejects=rej, con=store.cursor(), prompt_max_chars=SCAN_CHARS, keep_response_text=False)
            store.append_all(reader, paths)
            store.finish_run(rej)
            acct: dict[str, dict] = {}
            if accounts is not None:
                acct = {r["account_id"]: r for r in load_accounts(accounts, rejects=rej).to_pylist()}
            n_rejected = rej.total
        total = store.count()
        if total == 0:
            raise InputError(f"no readable requests in {len(paths)} input file(s); see {out / 'rejected.jsonl'}")
        t_read = time.perf_counter() - t_start
        det = OnlineDetector(accounts=acct, model=model)
        t0 = time.perf_counter()
        with count_progress(total, "replay") if progress else nullcontext(None) as advance:
            replay_store(store.con, det, on_batch=advance)
        t_online = time.perf_counter() - t0
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    flagged = sorted(det.flagged_accounts().items(), key=lambda kv: (kv[1].flagged_at, kv[0]))
    with open(out / "first_flags.jsonl", "wb") as f:
        for aid, st in flagged:
            f.write(orjson.dumps({
                "account_id": aid,
                "flagged_at": iso(st.flagged_at),
                "flagged_at_unix": st.flagged_at,
                "requests_before_flag": st.requests_before_flag,
                "cluster_id": st.flag_cluster,
                "reasons": st.flag_reasons,
            }) + b"\n")
    summary = {
        "inputs": [str(p) for p in paths],
        "requests": total,
        "rejected": n_rejected,
        "accounts": len(det.peak_scores()),
        "flagged_accounts": len(flagged),
        "threshold": det.threshold,
        "read_s": t_read,
        "online_s": t_online,
        "online_requests_per_s": total / t_online if t_online > 0 else None,
        "elapsed_s": time.perf_counter() - t_start,
    }
    (out / "replay_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
