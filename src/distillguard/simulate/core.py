"""``simulate()``: presets, account mix, writing the traffic, account, label and realism files.

Presets

=========  =============  =========  ==============================================  ==================
preset     benign accts   days       campaigns                                       requests (approx.)
=========  =============  =========  ==============================================  ==================
small      600            3          8 (every extraction archetype but low_and_slow)  ~35 thousand
standard   10,000         10         22 (every extraction archetype, 2-3 each)        ~1 million
custom     ``n_accounts``  ``days``  one campaign of every extraction archetype       scales with N
=========  =============  =========  ==============================================  ==================

The window starts on Monday 2026-03-02 00:00 UTC; the new model ``orion-3`` is released at 17:00 UTC
in the middle of the window. Everything random comes from one ``numpy`` generator seeded with
``seed``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import gzip
import queue
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson

from distillguard.errors import InputError
from distillguard.simulate import generate as G
from distillguard.simulate.archetypes import BENIGN, CAMPAIGNS_SMALL, CAMPAIGNS_STANDARD, EXTRACTION
from distillguard.simulate.sources import default_data_dir, load_sources
from distillguard.simulate.table import COMPLETIONS, render_rows

WINDOW_START = datetime(2026, 3, 2, tzinfo=timezone.utc).timestamp()
CHUNK = 20_000


@dataclass(frozen=True)
class Preset:
    """Size of a simulation."""

    name: str
    benign_accounts: int
    days: int
    campaigns: tuple[str, ...]
    scale: float


PRESETS = {
    "small": Preset("small", 600, 3, tuple(CAMPAIGNS_SMALL), 0.2),
    "standard": Preset("standard", 10_000, 10, tuple(CAMPAIGNS_STANDARD), 1.0),
}


@dataclass
class SimulationResult:
    """Paths and figures of one simulation (``realism`` is the content of ``realism.json``)."""

    out_dir: Path
    traffic: Path
    accounts: Path
    labels: Path
    realism_path: Path
    n_requests: int
    n_accounts: int
    n_campaigns: int
    seconds: float
    realism: dict = field(default_factory=dict)


def resolve_preset(preset: str | None, n_accounts: int | None, days: int | None) -> Preset:
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
    if n_accounts is not None and n_accounts < 20:
        raise InputError("--accounts must be at least 20 (benign accounts); try --preset small")
    if days is not None and not (1 <= days <= 60):
        raise InputError("--days must be between 1 and 60")
    if n_accounts is None:
        base = PRESETS[preset or "small"]
        return Preset(base.name, base.benign_accounts, days or base.days, base.campaigns, base.scale)
    scale = float(np.clip(n_accounts / 4000, 0.1, 1.5))
    return Preset("custom", n_accounts, days or 3, tuple(EXTRACTION), scale)


def _benign_counts(n: int) -> dict[str, int]:
    counts = {k: int(round(a.share * n)) for k, a in BENIGN.items()}
    counts["reseller"] = max(1, counts["reseller"])
    counts["eval_harness"] = max(1, counts["eval_harness"])
    counts["individual"] += n - sum(counts.values())
    return counts


def _generate(ctx: G.Ctx, preset: Preset, progress=None, task=None) -> None:
    counts = _benign_counts(preset.benign_accounts)
    r = ctx.rng
    singles = {}
    for kind in ("individual", "product", "batch_pipeline", "eval_harness", "coding_assistant", "agent_framework",
                 "reseller"):
        singles[kind] = np.array([G.make_benign_account(ctx, kind) for _ in range(counts[kind])], dtype=np.int64)
    grouped, homework = G.make_groups(ctx, counts["company"], counts["campus"])
    steps = [
        ("individual", lambda: G.gen_chat_users(ctx, singles["individual"], BENIGN["individual"])),
        ("company", lambda: (G.gen_chat_users(ctx, np.array(grouped["individual"], dtype=np.int64), BENIGN["company"]),
                             G.gen_products(ctx, np.array(grouped["product"], dtype=np.int64), BENIGN["product"]),
                             G.gen_batch(ctx, np.array(grouped["batch_pipeline"], dtype=np.int64), BENIGN["batch_pipeline"]),
                             G.gen_coding(ctx, np.array(grouped["coding_assistant"], dtype=np.int64), BENIGN["coding_assistant"]))),
        ("campus", lambda: G.gen_chat_users(ctx, np.array(grouped["campus"], dtype=np.int64), BENIGN["campus"],
                                            homework=homework)),
        ("product", lambda: G.gen_products(ctx, singles["product"], BENIGN["product"])),
        ("batch_pipeline", lambda: G.gen_batch(ctx, singles["batch_pipeline"], BENIGN["batch_pipeline"])),
        ("eval_harness", lambda: G.gen_eval(ctx, singles["eval_harness"], BENIGN["eval_harness"])),
        ("coding_assistant", lambda: G.gen_coding(ctx, singles["coding_assistant"], BENIGN["coding_assistant"])),
        ("agent_framework", lambda: G.gen_agents(ctx, singles["agent_framework"], BENIGN["agent_framework"])),
        ("reseller", lambda: G.gen_resellers(ctx, singles["reseller"], BENIGN["reseller"])),
    ]
    for name in preset.campaigns:
        steps.append((name, lambda name=name: G.gen_campaign(ctx, name, preset.scale)))
    for name, fn in steps:
        if progress is not None:
            progress.update(task, description=f"generating {name}")
        fn()
        if progress is not None:
            progress.advance(task)
    del r


def _account_ids(ctx: G.Ctx, n: int) -> list[str]:
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    raw = ctx.rng.integers(0, len(alphabet), size=(n, 24))
    ids = ["org-" + "".join(row) for row in alphabet[raw].tolist()]
    if len(set(ids)) != n:  # pragma: no cover - 62^24 space
        raise RuntimeError("account id collision")
    return ids


class _GzipWriter:
    """Compress and write in a background thread (zlib releases the GIL) while rows are rendered."""

    def __init__(self, path: Path, level: int = 2):
        self.f = open(path, "wb")
        self.q: queue.Queue = queue.Queue(maxsize=4)
        self.c = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.err: BaseException | None = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        try:
            while True:
                b = self.q.get()
                if b is None:
                    break
                self.f.write(self.c.compress(b))
            self.f.write(self.c.flush())
        except BaseException as e:  # pragma: no cover
            self.err = e

    def write(self, b: bytes) -> None:
        self.q.put(b)

    def close(self) -> None:
        self.q.put(None)
        self.t.join()
        self.f.close()
        if self.err:
            raise self.err


def simulate(out_dir, *, preset: str | None = None, n_accounts: int | None = None, days: int | None = None,
             seed: int = 0, data_path=None, progress: bool = False) -> SimulationResult:
    """Simulate labelled traffic on real data into ``out_dir``; see the module docstring.

    >>> import tempfile
    >>> res = simulate(tempfile.mkdtemp(), n_accounts=30, days=1, seed=1,
    ...                data_path=__import__("distillguard.simulate.sources").simulate.sources.shipped_sample_dir())
    >>> res.n_requests > 100 and res.traffic.name
    'traffic.jsonl.gz'
    """
    t_start = time.perf_counter()
    p = resolve_preset(preset, n_accounts, days)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {out}: {e}; choose a writable --out") from None
    src = load_sources(Path(data_path) if data_path is not None else default_data_dir())
    rng = np.random.default_rng(seed)
    t0 = WINDOW_START
    release = t0 + (p.days // 2) * G.DAY + 17 * 3600 if p.days >= 2 else t0 + 0.6 * G.DAY
    ctx = G.Ctx(rng=G.FastRng(rng), src=src, t0=t0, days=p.days, release_ts=release)

    prog = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), transient=False)
        prog.start()
    try:
        gen_task = prog.add_task("generating", total=9 + len(p.campaigns)) if prog else None
        _generate(ctx, p, prog, gen_task)
        cols = ctx.tab.finish()
        n = len(cols["ts"])
        # clip to the window, drop nothing silently: times outside are folded back in
        cols["ts"] = t0 + np.mod(cols["ts"] - t0, ctx.span)
        # errors: 0.3% rate-limited, 0.1% server errors (no response body)
        u = rng.random(n)
        cols["status"] = np.where(u < 0.003, 429, np.where(u < 0.004, 500, 200)).astype(np.int32)
        # reasoning models spend hidden reasoning tokens on every request, benign or not
        think = np.array([m == G.THINK for m in cols["model"].tolist()], dtype=bool) & (cols["rtok"] == 0)
        k = int(think.sum())
        extra = (250 * np.exp(0.9 * rng.standard_normal(k))).astype(np.int64) + 20
        cols["rtok"][think] = extra
        cols["ctok"][think] += extra
        mt = cols["max_tokens"]
        cap = think & (mt > 0) & (cols["ctok"] > mt)
        cols["ctok"][cap] = mt[cap]
        cols["rtok"][cap] = np.minimum(cols["rtok"][cap], np.maximum(mt[cap] - 1, 0))
        fast = np.array([m == G.MINI for m in cols["model"].tolist()])
        per_tok = np.where(fast, 9.0, 22.0) * np.exp(0.25 * rng.standard_normal(n))
        latency = np.round(180 + cols["ptok"] * 0.04 + rng.exponential(150, n) + cols["ctok"] * per_tok, 1)
        latency = np.where(cols["status"] == 200, latency, np.round(rng.uniform(20, 400, n), 1))
        order = np.argsort(cols["ts"], kind="stable")

        accs = ctx.acc
        n_acc = len(accs.rows)
        ids = _account_ids(ctx, n_acc)
        nkeys = rng.integers(1, 4, n_acc)
        nkeys[[i for i, row in enumerate(accs.rows) if row["archetype"] == "hydra"]] = 1
        keys = [["key_" + ctx.hexid(12) for _ in range(k)] for k in nkeys.tolist()]
        req_ids_raw = rng.integers(0, 2**62, n, dtype=np.int64)
        key_pick = rng.random(n)

        traffic_path = out / "traffic.jsonl.gz"
        w = _GzipWriter(traffic_path)
        wtask = prog.add_task("writing traffic.jsonl.gz", total=n) if prog else None
        try:
            for c0 in range(0, n, CHUNK):
                idx = order[c0 : c0 + CHUNK]
                ts_ms = np.round(cols["ts"][idx] * 1000).astype("datetime64[ms]")
                ts_str = np.datetime_as_string(ts_ms, unit="ms", timezone="UTC").tolist()
                acct = cols["acct"][idx].tolist()
                rids = [f"req_{x:016x}" for x in req_ids_raw[idx].tolist()]
                kp = key_pick[idx].tolist()
                kids = [keys[a][0] if (k < 0.75 or len(keys[a]) == 1) else keys[a][int(k * 97) % len(keys[a])]
                        for a, k in zip(acct, kp)]
                recs = render_rows(cols, idx, rids, ts_str, [ids[a] for a in acct], kids, latency[idx].tolist())
                w.write(b"".join([orjson.dumps(r_, option=orjson.OPT_APPEND_NEWLINE) for r_ in recs]))
                if prog:
                    prog.advance(wtask, len(idx))
        finally:
            w.close()

        acc_path, lab_path = out / "accounts.jsonl", out / "labels.jsonl"
        by_id = sorted(range(n_acc), key=lambda i: ids[i])
        with open(acc_path, "wb") as fa, open(lab_path, "wb") as fl:
            for i in by_id:
                row = accs.rows[i]
                created = datetime.fromtimestamp(round(row["created_at"]), tz=timezone.utc).isoformat().replace("+00:00", "Z")
                fa.write(orjson.dumps({"account_id": ids[i], "created_at": created,
                                       "payment_fingerprint": row["payment_fingerprint"],
                                       "email_domain": row["email_domain"], "country": row["country"],
                                       "tier": row["tier"], "verified": row["verified"]}) + b"\n")
                fl.write(orjson.dumps({"account_id": ids[i], "label": row["label"], "campaign_id": row["campaign_id"],
                                       "archetype": row["archetype"], "group_id": row["group_id"]}) + b"\n")

        if prog:
            prog.update(gen_task, description="realism statistics")
        from distillguard.simulate.realism import realism_stats

        realism = realism_stats(cols, accs.rows, p.days)
        realism["preset"] = p.name
        realism["seed"] = seed
        realism["days"] = p.days
        realism["window_start"] = datetime.fromtimestamp(t0, tz=timezone.utc).isoformat()
        realism["new_model_release"] = datetime.fromtimestamp(release, tz=timezone.utc).isoformat()
        realism["data"] = src.summary()
        realism["campaigns"] = dict(Counter(r_["archetype"] for r_ in accs.rows if r_["campaign_id"]
                                            and r_["label"] == "extraction"))
        realism["n_campaigns"] = len({r_["campaign_id"] for r_ in accs.rows if r_["campaign_id"]})
        realism_path = out / "realism.json"
        realism_path.write_bytes(orjson.dumps(realism, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    finally:
        if prog:
            prog.stop()
    return SimulationResult(out_dir=out, traffic=traffic_path, accounts=acc_path, labels=lab_path,
                            realism_path=realism_path, n_requests=int(n), n_accounts=n_acc,
                            n_campaigns=realism["n_campaigns"], seconds=time.perf_counter() - t_start,
                            realism=realism)


def read_traffic(path) -> list[dict]:
    """Read a simulated ``traffic.jsonl.gz`` back (small files; for tests and examples)."""
    with gzip.open(path, "rb") as f:
        return [orjson.loads(line) for line in f]


__all__ = ["PRESETS", "Preset", "SimulationResult", "read_traffic", "resolve_preset", "simulate", "COMPLETIONS"]
