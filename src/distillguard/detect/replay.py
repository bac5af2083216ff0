"""``replay``: the online detector over logs in timestamp order, as if each request arrived live (contracts.md §3).

The per-request derived values are computed in bulk by the batch SQL (the tested twin of
:func:`~distillguard.features.derive.derive_one`); everything stateful — account and cluster stats,
links, scores, the threshold — is :class:`~distillguard.detect.online.OnlineDetector`, the gateway's
own code.

A log in time order (as gateways write them) is *streamed*: each chunk is read, checked, derived and
sorted on a thread while the detector replays the chunk before, and the log is never held whole
(the detector's own state still grows with the accounts it sees). Rows within :data:`STREAM_LATENESS_S` of the newest timestamp are held back
until later ones arrive, so lines written in completion order (a little out of arrival order) still
stream. At the first row older than what was already replayed, or the first repeated request id,
replay starts over on the exact path: load the whole log, drop duplicates (reported in
``rejected.jsonl``), sort it, replay. Both paths feed the detector the same requests in the same
order (``ts``, then ``request_id``), so they give the same flags.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.detect.online import OnlineDetector
from distillguard.detect.scoring import ScoreModel
from distillguard.errors import InputError
from distillguard.features.derive import DERIVED_FLAGS, SCAN_CHARS, WORD_PATTERN, WORDS_PROMPT_CHARS, derive_sql
from distillguard.features.stats import WORDS_FIRST_N
from distillguard.ingest import EventReader, EventStore, RejectWriter, accounts_by_id
from distillguard.ingest.reader import connect
from distillguard.ingest.store import RESOURCE_ERRORS, resource_failure
from distillguard.prefetch import prefetched
from distillguard.progress import byte_progress, count_progress
from distillguard.schema import UNAUTHENTICATED_ACCOUNT
from distillguard.workdir import work_dir

_BATCH = 50_000
#: How far behind the newest timestamp a line may come and the log still stream (see the module docstring).
STREAM_LATENESS_S = 900.0
STREAM_FIRST_CHUNK_BYTES = 2 * 1024 * 1024
#: Per-request derived values passed to ``process_derived`` besides the flags (``DERIVED_FLAGS``).
DERIVED_VALUES = ("out_tok", "in_tok", "psig", "fsig", "sph", "temp", "ph", "pre", "suf", "end_user")


def _replay_sql(source: str = "events", *, counted: str | None = None) -> str:
    """``source``'s derived requests in replay order, with the words of each account's first
    WORDS_FIRST_N requests. ``counted``: a table of requests already replayed per account (``account_id,
    n``; the streaming path's earlier chunks), which count towards those first requests."""
    seen = "coalesce(c.n, 0)" if counted else "0"
    join = f"LEFT JOIN {counted} c USING (account_id)" if counted else ""
    return f"""
SELECT account_id, ts, client_ip, user_agent, model,
       {', '.join(DERIVED_FLAGS + DERIVED_VALUES)},
       CASE WHEN rk + {seen} <= {WORDS_FIRST_N} THEN regexp_extract_all(lower(left(coalesce(prompt, ''), {WORDS_PROMPT_CHARS})), '{WORD_PATTERN}') END AS words
FROM (SELECT *, row_number() OVER (PARTITION BY account_id ORDER BY ts, request_id) AS rk FROM ({derive_sql(source)}) x) x
{join}
WHERE account_id <> '{UNAUTHENTICATED_ACCOUNT}'  -- refused by the gateway for a missing or unknown key
ORDER BY ts, request_id
"""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _interned_words(col: pa.ChunkedArray | pa.Array) -> list[list[str] | None]:
    """Each row's words as a list of interned strings (None for a NULL row): each distinct word of the
    batch is converted and interned once, and the rows are slices of one list, instead of one new
    string object per word and row (the detector keeps the words of each account's first prompts)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    lens = pc.list_value_length(arr)
    valid = pc.is_valid(lens).to_numpy(zero_copy_only=False).tolist()
    n = pc.fill_null(lens, 0).to_numpy(zero_copy_only=False)
    ends = np.cumsum(n)
    starts = (ends - n).tolist()
    enc = pc.dictionary_encode(arr.flatten())  # flatten skips NULL rows' values, as lens counts them 0
    vocab = np.array([sys.intern(w) for w in enc.dictionary.to_pylist()] + [None], dtype=object)
    idx = enc.indices.fill_null(len(vocab) - 1).to_numpy(zero_copy_only=False)
    words = vocab[idx].tolist()
    return [words[a:b] if v else None for a, b, v in zip(starts, ends.tolist(), valid)]


def batch_rows(batch: pa.Table) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """The requests of one derived batch (columns as :func:`_replay_sql` gives them) as Python values:
    ``(account_id, ts, words, client_ip, user_agent, model)`` and the values of DERIVED_FLAGS + DERIVED_VALUES."""
    cols = {name: batch.column(name).to_pylist() for name in batch.schema.names if name != "words"}
    cols["words"] = _interned_words(batch.column("words"))
    meta = zip(cols["account_id"], cols["ts"], cols["words"], cols["client_ip"], cols["user_agent"], cols["model"])
    return zip(meta, zip(*[cols[c] for c in DERIVED_FLAGS + DERIVED_VALUES]))


def _feed(det: OnlineDetector, batch: pa.Table) -> None:
    """Replay one time-ordered batch of derived requests (columns as :func:`_replay_sql` gives them)."""
    names = DERIVED_FLAGS + DERIVED_VALUES
    process = det.process_derived
    for (aid, ts, words, ip, ua, model), values in batch_rows(batch):
        process(aid, ts, dict(zip(names, values)), words, client_ip=ip, user_agent=ua, model=model, verdict=False)


def open_stream(paths: list[str | Path], rejects: RejectWriter, work: Path, *, lateness_s: float = STREAM_LATENESS_S,
                counts: list[int] | None = None, on_progress: Callable[[int], None] | None = None):
    """The streaming path's reader: ``(connection, reader, batches)``, set up as ``replay`` runs it (one
    DuckDB thread: the reader's thread and the detector's Python loop each have a core of their own; a
    small first chunk, so that the detector starts soon, chunks doubling from there: a chunk costs the
    reader a fixed overhead, which large ones spread). The caller closes the connection."""
    con = connect(memory_limit="2GB", temp_directory=work)
    con.execute("SET threads = 1")
    reader = EventReader(rejects=rejects, con=con, prompt_max_chars=SCAN_CHARS, keep_response_text=False,
                         on_progress=on_progress, first_chunk_bytes=STREAM_FIRST_CHUNK_BYTES)
    return con, reader, stream_derived(reader, paths, con, lateness_s=lateness_s, counts=counts)


def replay_store(con, det: OnlineDetector, *, on_batch: Callable[[int], None] | None = None) -> int:
    """Feed every request of the store's ``events`` table to ``det`` in timestamp order; returns the count.

    The derived values come from the batch SQL; the query computes and converts the next batch on a
    thread while this one is replayed."""
    reader = con.sql(_replay_sql()).to_arrow_reader(_BATCH)
    done = 0
    for batch in prefetched(lambda: iter(reader), name="distillguard-replay"):
        _feed(det, batch)
        done += batch.num_rows
        if on_batch:
            on_batch(batch.num_rows)
    return done


class NotInTimeOrder(Exception):
    """The log cannot be replayed as it is read: a row older than what was already replayed, or a
    repeated request id (the exact path reports duplicates with where each was first seen)."""


class _SeenIds:
    """64-bit hashes of the request ids read so far, in sorted runs merged as they grow (an LSM in
    miniature: a chunk's membership test is a binary search per run, and memory is 8 bytes an id).
    Two different ids with one hash (odds about 3e-8 in a log of a million) only send the log down
    the exact path, which compares the ids themselves."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def add_new(self, hashes: np.ndarray) -> bool:
        """Add ``hashes``; False (and nothing added) when one repeats, within them or against earlier ones."""
        h = np.sort(hashes.astype(np.uint64, copy=False))
        if h.size and (h[1:] == h[:-1]).any():
            return False
        for run in self._runs:
            i = np.searchsorted(run, h)
            if (run[np.minimum(i, run.size - 1)] == h).any():
                return False
        self._runs.append(h)
        while len(self._runs) > 1 and self._runs[-2].size <= 2 * self._runs[-1].size:
            b, a = self._runs.pop(), self._runs.pop()
            self._runs.append(np.sort(np.concatenate([a, b]), kind="stable"))
        return True


def _count_sql(source: str) -> str:
    """Requests per account so far (capped at WORDS_FIRST_N: only the first ones carry words)."""
    return f"""
CREATE OR REPLACE TEMP TABLE _dg_seen_n AS
SELECT account_id, least(sum(n), {WORDS_FIRST_N}) AS n
FROM (SELECT account_id, n FROM _dg_seen_n UNION ALL SELECT account_id, count(*) AS n FROM {source} GROUP BY account_id)
GROUP BY account_id
"""


def stream_derived(reader: EventReader, paths: list[str | Path], con, *, lateness_s: float = STREAM_LATENESS_S,
                   counts: list[int] | None = None) -> Iterator[pa.Table]:
    """Derived requests of a log in time order, one batch per chunk read, for :func:`_feed`.

    Raises :class:`NotInTimeOrder` as soon as the log turns out not to be in time order (within
    ``lateness_s``) or repeats a request id. ``counts[0]`` accumulates the requests read."""
    seen = _SeenIds()
    held: pa.Table | None = None
    replayed_to = -math.inf  # the newest timestamp already handed out

    con.execute("CREATE OR REPLACE TEMP TABLE _dg_seen_n (account_id VARCHAR, n BIGINT)")

    def derive(rows: pa.Table) -> pa.Table:
        con.register("_dg_stream", rows)
        try:
            out = con.sql(_replay_sql("_dg_stream", counted="_dg_seen_n")).to_arrow_table()
            con.execute(_count_sql("_dg_stream"))
            return out
        finally:
            con.unregister("_dg_stream")

    for events in reader.iter_batches(list(paths)):
        ts = events.column("ts")
        oldest = pc.min(ts).as_py()
        if oldest <= replayed_to:
            i = pc.index(pc.less_equal(ts, replayed_to), True).as_py()
            raise NotInTimeOrder(f"{events.column('_src')[i]} line {events.column('_line')[i]} is {replayed_to - oldest:.0f} s "
                                 f"older than requests already replayed")
        con.register("_dg_ids", events.select(["request_id"]))
        try:
            hashes = con.sql("SELECT hash(request_id) AS h FROM _dg_ids").fetchnumpy()["h"]
        finally:
            con.unregister("_dg_ids")
        if not seen.add_new(np.asarray(hashes)):
            raise NotInTimeOrder("a request id repeats")
        if counts is not None:
            counts[0] += events.num_rows
        rows = events if held is None else pa.concat_tables([held, events])
        cut = pc.max(rows.column("ts")).as_py() - lateness_s
        early = pc.less(rows.column("ts"), cut)
        ready, held = rows.filter(early), rows.filter(pc.invert(early))
        if ready.num_rows:
            replayed_to = max(replayed_to, pc.max(ready.column("ts")).as_py())
            yield derive(ready)
    if held is not None and held.num_rows:
        yield derive(held)


def run_replay(
    paths: list[str | Path],
    out_dir: str | Path,
    *,
    accounts: str | Path | None = None,
    model: ScoreModel | str | Path | None = None,
    progress: bool = True,
    stream: bool = True,
    lateness_s: float = STREAM_LATENESS_S,
) -> dict[str, Any]:
    """Replay ``paths`` through the online detector; writes ``first_flags.jsonl`` and ``rejected.jsonl``.

    ``stream``: try the streaming path first (see the module docstring); False sorts the whole log first."""
    t_start = time.perf_counter()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot write to output folder {out}: {e.strerror or e}") from e
    if isinstance(model, (str, Path)):
        model = ScoreModel.load(model)
    sorted_because = None
    work = work_dir("distillguard-replay-")
    try:
        run = None
        if stream:
            try:
                run = _replay_streamed(paths, out, work, accounts=accounts, model=model, progress=progress, lateness_s=lateness_s)
            except NotInTimeOrder as e:
                sorted_because = str(e)  # start over on the exact path (it rewrites rejected.jsonl)
        if run is None:
            run = _replay_sorted(paths, out, work, accounts=accounts, model=model, progress=progress)
        det, total, n_rejected, t_read, t_online, damaged = run
    except RESOURCE_ERRORS as e:
        raise resource_failure(e, work) from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if total == 0:
        raise InputError(f"no readable requests in {len(paths)} input file(s); see {out / 'rejected.jsonl'}")
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
        "damaged_inputs": damaged,  # compressed logs that end in damage (the lines before it were replayed)
        "accounts": len(det.peak_scores()),
        "flagged_accounts": len(flagged),
        "threshold": det.threshold,
        "order": "sorted" if sorted_because or not stream else "streamed",
        "sorted_because": sorted_because,
        "read_s": t_read,
        "online_s": t_online,
        "online_requests_per_s": total / t_online if t_online > 0 else None,
        "elapsed_s": time.perf_counter() - t_start,
    }
    (out / "replay_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _start_rejects(out: Path) -> RejectWriter:
    try:
        (out / "rejected.jsonl").write_bytes(b"")
    except OSError as e:
        raise InputError(f"cannot write to output folder {out}: {e.strerror or e}") from e
    return RejectWriter(out / "rejected.jsonl")


def _replay_streamed(paths, out: Path, work: Path, *, accounts, model, progress: bool, lateness_s: float):
    """Read, derive and replay chunk by chunk (raises :class:`NotInTimeOrder`, see the module docstring)."""
    t_start = time.perf_counter()
    con = None
    try:
        with _start_rejects(out) as rej:
            det = OnlineDetector(accounts=accounts_by_id(accounts, rejects=rej), model=model)
            t_read = time.perf_counter() - t_start
            counts = [0]
            t0 = time.perf_counter()
            with byte_progress([Path(p) for p in paths], "replay") if progress else nullcontext(None) as advance:
                con, reader, batches = open_stream(paths, rej, work, lateness_s=lateness_s, counts=counts, on_progress=advance)
                for batch in prefetched(lambda: batches, name="distillguard-replay-stream"):
                    _feed(det, batch)
            t_online = time.perf_counter() - t0
            n_rejected = rej.total
    finally:
        if con is not None:
            con.close()
    return det, counts[0], n_rejected, t_read, t_online, reader.stats.damaged


def _replay_sorted(paths, out: Path, work: Path, *, accounts, model, progress: bool):
    """Load the whole log, drop repeated request ids, sort, replay."""
    t_start = time.perf_counter()
    store = EventStore(":memory:", memory_limit="3GB", temp_directory=work)
    try:
        with _start_rejects(out) as rej:
            reader = EventReader(rejects=rej, con=store.cursor(), prompt_max_chars=SCAN_CHARS, keep_response_text=False)
            store.append_all(reader, paths)
            store.finish_run(rej)
            acct = accounts_by_id(accounts, rejects=rej)
            n_rejected = rej.total
        total = store.count()
        t_read = time.perf_counter() - t_start
        det = OnlineDetector(accounts=acct, model=model)
        t0 = time.perf_counter()
        with count_progress(total, "replay") if progress else nullcontext(None) as advance:
            replay_store(store.con, det, on_batch=advance)
        t_online = time.perf_counter() - t0
    finally:
        store.close()
    return det, total, n_rejected, t_read, t_online, reader.stats.damaged
