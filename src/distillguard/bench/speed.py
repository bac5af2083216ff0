"""Speed and memory benchmarks: ``bench ingest`` and ``bench scan``.

Each measured step runs in its own child process, so its wall time and peak resident memory (from
``wait4``'s rusage) are its own. The baseline in the same run is DuckDB merely parsing the same log
(``read_json`` over every top-level field), and every figure is reported with its ratio to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_STEPS = {
    "duckdb_parse": """
import duckdb, sys
con = duckdb.connect(); con.execute("SET TimeZone='UTC'"); con.execute("SET enable_progress_bar = false")
n = con.sql(f"SELECT count(*), count(request_id), count(request), count(response) FROM read_json({sys.argv[1]!r}, format='newline_delimited', "
            "columns={'request_id':'VARCHAR','timestamp':'JSON','account_id':'VARCHAR','endpoint':'VARCHAR','client_ip':'VARCHAR',"
            "'user_agent':'VARCHAR','request':'JSON','response':'JSON','status_code':'JSON','latency_ms':'JSON'}, ignore_errors=true)").fetchall()[0][0]
print('ROWS', n)
""",
    "ingest": """
import sys, tempfile, os
from distillguard.ingest import EventReader, EventStore, RejectWriter
d = tempfile.mkdtemp()
store = EventStore(os.path.join(d, 's.duckdb'), memory_limit='3GB')
with RejectWriter(os.path.join(d, 'rejected.jsonl')) as rej:
    store.append_all(EventReader(rejects=rej, con=store.cursor()), [sys.argv[1]])
    store.finish_run(rej)
print('ROWS', store.count())
""",
    "scan": """
import sys, tempfile, json
from distillguard.detect.scan import run_scan
acc = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
s = run_scan([sys.argv[1]], tempfile.mkdtemp(), accounts=acc, progress=False, write_html=False)
print('ROWS', s['requests']); print(json.dumps(s['timings']), file=sys.stderr)
""",
    "replay": """
import sys, tempfile, json
from distillguard.detect.replay import run_replay
acc = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None
s = run_replay([sys.argv[1]], tempfile.mkdtemp(), accounts=acc, progress=False, stream=STREAM)
print('ROWS', s['requests']); print(json.dumps({k: s[k] for k in ('online_s', 'read_s', 'order', 'sorted_because')}), file=sys.stderr)
""",
}
# replay's exact path (load the whole log, sort, then replay): what streaming is measured against
_STEPS["replay_sorted"] = _STEPS["replay"].replace("stream=STREAM", "stream=False")
_STEPS["replay"] = _STEPS["replay"].replace("stream=STREAM", "stream=True")
# the streaming replay's reader alone, with no detector: reading, checking the order, deriving and turning
# each request into the Python values the detector takes. Streamed replay cannot be faster than this
_STEPS["replay_reader"] = """
import sys, tempfile, os
from distillguard.detect.replay import batch_rows, open_stream
from distillguard.ingest import RejectWriter
n = 0
with RejectWriter(os.path.join(tempfile.mkdtemp(), 'rejected.jsonl')) as rej:
    con, reader, batches = open_stream([sys.argv[1]], rej, tempfile.mkdtemp())
    for batch in batches:
        for _ in batch_rows(batch):
            n += 1
    con.close()
print('ROWS', n)
"""


def _run_step(name: str, log: Path, accounts: Path | None) -> dict[str, Any]:
    args = [sys.executable, "-c", _STEPS[name], str(log), str(accounts) if accounts else ""]
    # the step's output goes to files, not pipes: os.wait4 (for its rusage) reads nothing until the step
    # ends, so a step that wrote more than a pipe holds (64 KB of warnings) would wait for ever
    # the step writes its outputs under a temporary $TMPDIR of its own, removed when it ends
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr, \
            tempfile.TemporaryDirectory(prefix="dg-speed-") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=fout, stderr=ferr, text=True, env={**os.environ, "TMPDIR": tmp})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step {name} failed: {err[-2000:]}")
    rows = int(next(line for line in reversed(out.splitlines()) if line.startswith("ROWS ")).split()[1])
    extra = {}
    for line in err.splitlines():
        if line.startswith("{"):
            try:
                extra = json.loads(line)
            except json.JSONDecodeError:
                pass
    return {"step": name, "rows": rows, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mib": usage.ru_maxrss / 1024.0, "requests_per_s": rows / wall if wall > 0 else None, **extra}


def run_speed_bench(log: Path, *, steps: list[str], accounts: Path | None = None, out: Path | None = None) -> dict[str, Any]:
    """Run ``steps`` (and the DuckDB parse baseline) on ``log``; return and optionally write the figures."""
    results = {"log": str(log), "log_bytes": log.stat().st_size, "cores": os.cpu_count(), "steps": []}
    base = _run_step("duckdb_parse", log, None)
    results["steps"].append(base)
    for s in steps:
        r = _run_step(s, log, accounts)
        r["ratio_to_duckdb_parse"] = r["wall_s"] / base["wall_s"] if base["wall_s"] else None
        results["steps"].append(r)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "speed.md").write_text(to_markdown(results))
    return results


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"log: `{results['log']}` ({results['log_bytes'] / 2**20:,.0f} MiB on disk), {results['cores']} cores",
        "",
        "| step | requests | wall s | CPU s | requests/s | peak RSS MiB | x DuckDB parse time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["steps"]:
        ratio = r.get("ratio_to_duckdb_parse")
        cpu = r.get("cpu_s")
        lines.append(
            f"| {r['step']} | {r['rows']:,} | {r['wall_s']:.1f} | {'–' if cpu is None else f'{cpu:.1f}'} | "
            f"{r['requests_per_s']:,.0f} | {r['peak_rss_mib']:,.0f} | {'1.00 (baseline)' if ratio is None else f'{ratio:.2f}'} |"
        )
    lines.append("\n(CPU s: user and system time of the step's process, all threads; on a shared machine it varies less "
                 "than the wall clock, so compare it too when comparing two versions.)")
    base = results["steps"][0]["wall_s"] if results["steps"] else 0
    for r in results["steps"]:
        stages = [(k[:-2], v) for k, v in r.items() if r["step"] == "scan" and k.endswith("_s")
                  and k not in ("wall_s", "cpu_s", "requests_per_s") and isinstance(v, (int, float))]
        if stages and base:
            lines.append("\nscan by stage: " + ", ".join(f"{k} {v:.1f} s ({v / base:.2f}x parse)" for k, v in stages))
    by_step = {r["step"]: r for r in results["steps"]}
    for name in ("replay", "replay_sorted"):
        r = by_step.get(name)
        if r and r.get("online_s"):
            how = ("streamed: read while replaying" if r.get("order") == "streamed"
                   else f"reading and sorting the log first took {r['read_s']:.1f} s"
                   + (f"; not streamed because {r['sorted_because']}" if r.get("sorted_because") else ""))
            lines.append(f"\n{name}: the online detector ran {r['rows'] / r['online_s']:,.0f} requests/s ({r['online_s']:.1f} s; {how})")
    rr = by_step.get("replay_reader")
    if rr:
        lines.append(f"\nreplay_reader: the streamed replay's reader alone (no detector) runs {rr['requests_per_s']:,.0f} requests/s, "
                     f"the most a streamed replay can reach here" + (f"; replay reaches {by_step['replay']['requests_per_s'] / rr['requests_per_s']:.0%} of it"
                                                                     if "replay" in by_step else ""))
    if "replay" in by_step and "replay_sorted" in by_step:
        lines.append(f"\nstreamed replay: {by_step['replay_sorted']['wall_s'] / by_step['replay']['wall_s']:.2f}x the speed of the sorted path")
    return "\n".join(lines) + "\n"


def _relabel(buf: bytes, i: int) -> bytes:
    return (buf.replace(b'"request_id":"', b'"request_id":"r%d-' % i).replace(b'"account_id":"', b'"account_id":"c%d-' % i)
            .replace(b'"payment_fingerprint":"', b'"payment_fingerprint":"c%d-' % i))


_REPEAT_BLOCK_LINES = 200


def repeat_log(log: Path, accounts: Path | None, copies: int, out: Path) -> tuple[Path, Path | None]:
    """Write ``copies`` copies of a log (and its account file), each with its own request and account ids.

    Copy ``i`` prefixes every ``request_id`` with ``r<i>-`` and every ``account_id`` and
    ``payment_fingerprint`` with ``c<i>-``, so the result has ``copies`` times the requests *and* the
    accounts (a larger provider, not the same customers sending more). IP addresses, creation times
    and request settings stay as they were, so every campaign's fingerprint is shared by ``copies``
    times as many accounts. Works on compact JSON (no space after the colon), as the simulator and the
    gateway write it. Output is gzip level 1.

    The copies are interleaved in blocks of :data:`_REPEAT_BLOCK_LINES` lines (block 1 of every copy,
    then block 2 of every copy, ...), so a log in time order stays in time order to within a block's
    span: one provider's log, which ``replay`` can stream.
    """
    from isal import igzip

    from distillguard.ingest.lines import open_binary

    out.mkdir(parents=True, exist_ok=True)

    def write_blocks(w, lines: list[bytes], *, last: bool) -> list[bytes]:
        """Write every full block of ``lines`` (and the rest too when ``last``); return what is left."""
        full = len(lines) if last else len(lines) - len(lines) % _REPEAT_BLOCK_LINES
        for j in range(0, full, _REPEAT_BLOCK_LINES):
            block = b"\n".join(lines[j : min(j + _REPEAT_BLOCK_LINES, full)]) + b"\n"
            for i in range(copies):
                w.write(_relabel(block, i))
        return lines[full:]

    def copy(src: Path, dst: Path) -> None:
        with igzip.open(dst, "wb", compresslevel=1) as w, open_binary(src) as f:
            carry, pending = b"", []
            while block := f.read(1 << 24):
                buf = carry + block
                cut = buf.rfind(b"\n") + 1
                carry = buf[cut:]
                pending = write_blocks(w, pending + (buf[: cut - 1].split(b"\n") if cut else []), last=False)
            write_blocks(w, pending + ([carry] if carry else []), last=True)

    big = out / f"traffic-x{copies}.jsonl.gz"
    copy(log, big)
    big_acc = None
    if accounts is not None:
        big_acc = out / f"accounts-x{copies}.jsonl.gz"
        copy(accounts, big_acc)
    return big, big_acc


def _speed_cli(steps: list[str], extra: tuple[str, ...] = ()):
    """A speed command that runs ``steps`` by default and also accepts the ``extra`` ones in ``--steps``."""
    import typer

    def command(
        log: Path = typer.Argument(None, help="Traffic log to measure on (default: simulate the standard preset)."),
        accounts: Path = typer.Option(None, "--accounts", help="Account file for the log."),
        seed: int = typer.Option(1, "--seed", help="Seed when the log is simulated."),
        out: Path = typer.Option(Path("bench-out/speed"), "--out", help="Folder for speed.json and speed.md."),
        repeat: int = typer.Option(1, "--repeat", help="Measure on this many copies of the log, each with its own "
                                                     "request and account ids (e.g. 10 for ~10M requests from the standard preset)."),
        only: str = typer.Option(",".join(steps), "--steps", help=f"Steps to run besides the DuckDB parse: {', '.join(steps + list(extra))}."),
    ) -> None:
        from rich.console import Console

        if log is None:
            from distillguard.simulate import simulate

            sim = out / f"traffic-standard-{seed}"
            if not (sim / "traffic.jsonl.gz").exists():
                simulate(sim, preset="standard", seed=seed, progress=True)
            log, accounts = sim / "traffic.jsonl.gz", accounts or sim / "accounts.jsonl"
        for what, path in (("log", log), ("--accounts", accounts)):
            if path is not None and not Path(path).is_file():
                raise typer.BadParameter(f"{what} {path} is not a file")
        chosen = [x.strip() for x in only.split(",") if x.strip()]
        unknown = set(chosen) - set(steps) - set(extra)
        if unknown:
            raise typer.BadParameter(f"unknown step(s) {', '.join(sorted(unknown))}; choose from {', '.join(steps + list(extra))}")
        if repeat > 1:
            log, accounts = repeat_log(Path(log), Path(accounts) if accounts else None, repeat, out / "repeated")
        res = run_speed_bench(Path(log), steps=chosen, accounts=accounts, out=out)
        Console().print(to_markdown(res), markup=False, highlight=False, soft_wrap=True)

    return command


bench_ingest_command = _speed_cli(["ingest"])
bench_ingest_command.__doc__ = """Ingest speed and peak memory, against DuckDB merely parsing the same log.

    Example: distillguard bench ingest logs/traffic.jsonl.gz --out bench-out/ingest
    """
bench_scan_command = _speed_cli(["scan", "replay", "replay_sorted"], extra=("replay_reader",))
bench_scan_command.__doc__ = """scan and replay speed and peak memory, against DuckDB merely parsing the same log
    (replay_sorted: replay's exact path, which loads and sorts the whole log first; replay_reader, on
    request: the streamed replay's reader alone, with no detector, the floor of replay's time).

    Example: distillguard bench scan logs/traffic.jsonl.gz --accounts accounts.jsonl --out bench-out/scan

    10 million requests: distillguard bench scan sim1/traffic.jsonl.gz --accounts sim1/accounts.jsonl --repeat 10 --steps scan
    """
