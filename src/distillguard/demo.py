"""``distillguard demo``: the main job end to end on the sample shipped inside the package.

Simulates a small, realistic traffic log from the shipped real prompts and traces (no ``../shared``
needed), scans it with the embedded DuckDB engine, replays it through the online detector, and prints
what was found against the simulation's labels.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson


def run_demo(out: Path, *, seed: int = 2026, n_accounts: int | None = None) -> dict:
    from rich.console import Console
    from rich.table import Table

    from distillguard.detect.replay import run_replay
    from distillguard.detect.scan import run_scan
    from distillguard.simulate import shipped_sample_dir, simulate

    console = Console()
    out = Path(out)
    t0 = time.perf_counter()
    traffic = out / "traffic"
    console.print(f"[bold]1/3[/] simulating traffic on the shipped sample of real prompts (seed {seed}) ...")
    sim = simulate(traffic, preset="small" if n_accounts is None else None, n_accounts=n_accounts, seed=seed,
                   data_path=shipped_sample_dir(), progress=True)
    console.print(f"      {sim.n_requests:,} requests in {traffic / 'traffic.jsonl.gz'}")
    console.print("[bold]2/3[/] scanning (batch detection, DuckDB) ...")
    scan_dir = out / "scan"
    s = run_scan([traffic / "traffic.jsonl.gz"], scan_dir, accounts=traffic / "accounts.jsonl")
    console.print("[bold]3/3[/] replaying through the gateway's online detector ...")
    r = run_replay([traffic / "traffic.jsonl.gz"], out / "replay", accounts=traffic / "accounts.jsonl")

    labels = {x["account_id"]: x for x in map(orjson.loads, (traffic / "labels.jsonl").read_bytes().splitlines())}
    verdicts = [orjson.loads(x) for x in (scan_dir / "verdicts.jsonl").read_bytes().splitlines()]
    first = {x["account_id"]: x for x in map(orjson.loads, (out / "replay" / "first_flags.jsonl").read_bytes().splitlines())}
    per: dict[tuple[str, str], list[int]] = {}
    for v in verdicts:
        lab = labels.get(v["account_id"], {"label": "?", "archetype": "?"})
        row = per.setdefault((lab["label"], lab["archetype"]), [0, 0, 0])
        row[0] += 1
        row[1] += int(v["flagged"])
        row[2] += int(v["account_id"] in first)
    table = Table(title="accounts flagged, by simulated behaviour (labels are the simulation's ground truth)")
    for col in ("label", "behaviour", "accounts", "flagged by scan", "flagged online (replay)"):
        table.add_column(col, justify="right" if col[0] in "af" else "left")
    for (label, arch), (n, f, o) in sorted(per.items()):
        style = "red" if label == "extraction" else None
        table.add_row(label, arch, str(n), str(f), str(o), style=style)
    console.print(table)
    console.print(
        f"scan: {s['requests']:,} requests, {s['accounts']:,} accounts, {s['flagged_accounts']} flagged, "
        f"{s['flagged_clusters']} of {s['clusters']} linked groups flagged, {s['rejected']} rejected lines\n"
        f"replay: {r['online_requests_per_s']:,.0f} requests/s through the online detector\n"
        f"done in {time.perf_counter() - t0:.0f} s.  Report: [bold]{(scan_dir / 'report.html').resolve()}[/]"
    )
    return {"scan": s, "replay": r}
