"""The detection benchmark: distillguard and the baselines, scored on the same labelled traffic.

:func:`run_detect_bench` gets two labelled traffic folders: a *tuning* one (a seed the benchmark does
not report on; baselines learn their thresholds, reference samples and models there) and an
*evaluation* one (a fresh seed; every reported figure comes from it). Each can be given as a folder
or simulated from a preset. It writes ``results.json`` and ``results.md`` into the output folder.

Example (the detector row reads "not available" until ``distillguard.detect.scan`` exists)::

    results = run_detect_bench(Path("bench-out"), preset="small", seed=1)
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from distillguard.bench import metrics as M
from distillguard.bench.baselines import DEFAULT_TUNE_FPR, default_baselines, fit_embedder
from distillguard.bench.data import DEFAULT_READER, Traffic, load_event_table, load_traffic, traffic_logs
from distillguard.bench.detector import DetectorRun, run_distillguard
from distillguard.bench.embed import MAX_CHARS, PROMPTS_PER_ACCOUNT
from distillguard.errors import InputError

PRESETS = ("small", "standard")
EMBEDDING = (f"hashed char 3-4-gram TF-IDF (2^16 buckets) + truncated SVD to 64 dims, L2-normalised; "
             f"first {PROMPTS_PER_ACCOUNT} prompts per account, cut to {MAX_CHARS} chars; fitted on the tuning seed")


def simulated_traffic(root: Path, *, preset: str, seed: int) -> Path:
    """Simulate ``preset`` with ``seed`` into ``root/<preset>-seed<seed>`` (reused when complete)."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    folder = Path(root) / f"{preset}-seed{seed}"
    marker = folder / ".bench-complete"
    if marker.is_file() and (folder / "labels.jsonl").is_file():
        return folder
    try:
        from distillguard.simulate import simulate  # type: ignore[attr-defined]
    except ImportError:
        raise InputError(
            "the traffic simulator (distillguard.simulate.simulate) is not available; "
            "pass labelled traffic folders with --traffic DIR --tune-traffic DIR"
        ) from None
    folder.mkdir(parents=True, exist_ok=True)
    simulate(folder, preset=preset, seed=seed)
    marker.write_text(json.dumps({"preset": preset, "seed": seed}))
    return folder


def prepare_traffic(*, traffic_dir: Path | None, preset: str | None, seed: int, traffic_root: Path,
                    cache_dir: Path, reader: str = DEFAULT_READER) -> tuple[Path, float, float]:
    """Simulate (when no folder is given) and parse one traffic folder into the event cache.

    Runs in a worker process; returns (folder, simulate seconds, parse seconds).
    """
    t0 = time.perf_counter()
    folder = Path(traffic_dir) if traffic_dir is not None else simulated_traffic(traffic_root, preset=preset,
                                                                                  seed=seed)
    t1 = time.perf_counter()
    if not (folder / "labels.jsonl").is_file():
        raise InputError(f"no labels.jsonl in {folder}; the benchmark needs labelled traffic "
                         f"(`distillguard simulate --out {folder}` writes it)")
    load_event_table(traffic_logs(folder), reader=reader, cache_dir=cache_dir)
    return folder, round(t1 - t0, 3), round(time.perf_counter() - t1, 3)


def _traffic_summary(t: Traffic, *, seed: int | None, preset: str | None) -> dict[str, Any]:
    return {
        "folder": str(t.folder),
        "preset": preset,
        "seed": seed,
        "requests": t.n_events,
        "accounts": int(t.account_ids.size),
        "benign_accounts": int((t.y == 0).sum()),
        "extraction_accounts": int(t.y.sum()),
        "campaigns": len({c for c in t.campaign if c is not None}),
        "extraction_requests": int(t.requests[t.y == 1].sum()),
        "reader": t.reader,
    }


def _row(name: str, kind: str, traffic: Traffic, scores: np.ndarray, flagged: np.ndarray, **extra) -> dict:
    row = {
        "name": name,
        "kind": kind,
        "available": True,
        "account": M.account_metrics(traffic.y, scores, flagged),
        "campaign": M.campaign_metrics(traffic.campaign, flagged, traffic.requests),
        "cluster": None,
        "replay": None,
        "per_archetype": M.per_archetype(traffic.archetype, traffic.label, flagged),
    }
    row.update(extra)
    _name_archetypes(row["campaign"].get("per_campaign", {}), traffic)
    return row


def _name_archetypes(per_campaign: dict[str, dict[str, Any]], traffic: Traffic) -> None:
    """Add each campaign's archetype to its entry (``bench summary`` pools campaigns by archetype)."""
    ext = np.flatnonzero(traffic.y == 1)
    arch = {traffic.campaign[i]: str(traffic.archetype[i]) for i in ext}
    for cid, entry in per_campaign.items():
        entry["archetype"] = arch.get(cid, "unknown")


def _detector_row(run: DetectorRun, traffic: Traffic) -> dict:
    if not run.available:
        return {"name": run.name, "kind": "distillguard", "available": False, "note": run.note,
                "error_detail": run.error_detail,
                "account": None, "campaign": None, "cluster": None, "replay": None, "per_archetype": None}
    row = _row(run.name, "distillguard", traffic, run.scores, run.flagged, note=run.note,
               description="distillguard scan (contract §2 verdicts) and replay (§3 first flags)",
               tuned=False, threshold="detector's own (flagged)", elapsed_s=run.elapsed_s)
    row["cluster"] = M.cluster_metrics(traffic.label, traffic.campaign, run.cluster_ids, run.cluster_flagged)
    if run.first_flag_ts is not None:
        ext = traffic.y == 1
        acc_campaign = {traffic.account_ids[i]: traffic.campaign[i] for i in np.flatnonzero(ext)}
        ev = ext[traffic.acc]
        row["replay"] = M.replay_metrics(traffic.account_ids[traffic.acc[ev]], traffic.ts[ev],
                                         acc_campaign, run.first_flag_ts)
        row["replay"]["elapsed_s"] = run.replay_elapsed_s
        _name_archetypes(row["replay"]["per_campaign"], traffic)
        # benign accounts ever flagged online
        benign_ids = set(traffic.account_ids[~ext])
        row["replay"]["benign_flagged"] = sum(a in benign_ids for a in run.first_flag_ts)
        row["replay"]["benign_flagged_fpr"] = row["replay"]["benign_flagged"] / max(len(benign_ids), 1)
    row["replay_note"] = run.replay_note
    if run.error_detail:
        row["error_detail"] = run.error_detail
    return row


def run_detect_bench(
    out: Path,
    *,
    traffic: Path | None = None,
    tune_traffic: Path | None = None,
    preset: str | None = None,
    tune_preset: str | None = None,
    seed: int = 1,
    tune_seed: int | None = None,
    tune_fpr: float = DEFAULT_TUNE_FPR,
    detector: bool = True,
    replay: bool = True,
    progress: bool = True,
    jobs: int = 2,
    reader: str = DEFAULT_READER,
) -> dict[str, Any]:
    """Run the benchmark and write ``out/results.json`` and ``out/results.md``; returns the results.

    ``jobs=2`` simulates and parses the evaluation and the tuning traffic in two processes at once.
    Parsed event tables are cached under ``out/cache`` and simulated traffic under ``out/traffic``.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if traffic is None and preset is None:
        preset = "small"
    tune_seed = seed + 1000 if tune_seed is None else tune_seed
    if tune_seed == seed and tune_traffic is None:
        raise InputError(f"--tune-seed must differ from --seed (both {seed}): thresholds are never tuned on "
                         "the reported traffic")
    if traffic is not None and tune_traffic is not None and Path(traffic).resolve() == Path(tune_traffic).resolve():
        raise InputError("--tune-traffic must be a different folder from --traffic")
    tune_preset = tune_preset or preset or "small"
    baselines_probe = default_baselines(tune_fpr=tune_fpr, seed=seed)
    n_steps = 2 + 2 * len(baselines_probe) + (1 if detector else 0) + 1
    timing: dict[str, float] = {}
    t_start = time.perf_counter()

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), disable=not progress, transient=False) as prog:
        task = prog.add_task("bench detect", total=n_steps)

        def step(desc: str):
            prog.update(task, description=desc)

        def done(key: str, t0: float):
            timing[key] = round(time.perf_counter() - t0, 3)
            prog.advance(task)

        t0 = time.perf_counter()
        step("traffic: simulate and parse evaluation + tuning" + (" (2 processes)" if jobs > 1 else ""))
        specs = [
            dict(traffic_dir=traffic, preset=preset, seed=seed),
            dict(traffic_dir=tune_traffic, preset=tune_preset, seed=tune_seed),
        ]
        common = dict(traffic_root=out / "traffic", cache_dir=out / "cache", reader=reader)
        if jobs > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
                futs = [pool.submit(prepare_traffic, **spec, **common) for spec in specs]
                prepared = [f.result() for f in futs]
        else:
            prepared = [prepare_traffic(**spec, **common) for spec in specs]
        (eval_dir, timing["simulate_eval"], timing["parse_eval"]), (tune_dir, timing["simulate_tune"],
                                                                    timing["parse_tune"]) = prepared
        done("prepare_traffic", t0)

        t0 = time.perf_counter()
        step("load: evaluation and tuning traffic")
        ev = load_traffic(eval_dir, reader=reader, cache_dir=out / "cache")
        tu = load_traffic(tune_dir, reader=reader, cache_dir=out / "cache")
        done("load", t0)
        if (tu.y == 0).sum() == 0:
            raise InputError(f"the tuning traffic {tune_dir} has no benign account; thresholds cannot be tuned")

        rows: list[dict] = []
        if detector:
            t0 = time.perf_counter()
            step("distillguard: scan + replay")
            rows.append(_detector_row(run_distillguard(ev, out / "distillguard", replay=replay), ev))
            done("distillguard", t0)

        t0 = time.perf_counter()
        step("embeddings: fit on tuning traffic")
        embedder = fit_embedder(tu, seed=seed)
        timing["embed_fit"] = round(time.perf_counter() - t0, 3)
        for b in default_baselines(tune_fpr=tune_fpr, seed=seed, embedder=embedder):
            t0 = time.perf_counter()
            step(f"baseline {b.name}: tune")
            b.fit(tu)
            done(f"{b.name}_tune", t0)
            t0 = time.perf_counter()
            step(f"baseline {b.name}: score")
            s = b.score_samples(ev)
            f = b.predict(ev, s)
            el = time.perf_counter() - t0
            done(f"{b.name}_score", t0)
            rows.append(_row(b.name, "baseline", ev, s, f, description=b.description, tuned=b.tuned,
                             threshold=M._clean(b.threshold_), elapsed_s=round(el, 3)))

        step("metrics and tables")
        timing["total"] = round(time.perf_counter() - t_start, 3)
        results = {
            "benchmark": "distillguard bench detect",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": _cpus()},
            "traffic": {
                "evaluation": _traffic_summary(ev, seed=seed if traffic is None else None, preset=preset),
                "tuning": _traffic_summary(tu, seed=tune_seed if tune_traffic is None else None,
                                           preset=tune_preset if tune_traffic is None else None),
            },
            "settings": {
                "tune_fpr": tune_fpr,
                "fpr_targets": list(M.FPR_TARGETS),
                "embedding": EMBEDDING,
                "prompts_per_account": PROMPTS_PER_ACCOUNT,
                "campaign_caught_rule": "at least half of the campaign's accounts flagged",
                "ari": "over extraction accounts only; an unclustered account is its own singleton",
            },
            "detectors": rows,
            "timing_s": timing,
        }
        (out / "results.json").write_text(json.dumps(results, indent=2))
        md = results_markdown(results)
        (out / "results.md").write_text(md)
        prog.advance(task)
    return results


def _cpus() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def results_markdown(results: dict[str, Any]) -> str:
    """The Markdown report: traffic summary, the main table, the per-archetype table, notes."""
    ev = results["traffic"]["evaluation"]
    tu = results["traffic"]["tuning"]
    lines = [
        f"Evaluation traffic: {ev['requests']:,} requests, {ev['accounts']:,} accounts "
        f"({ev['benign_accounts']:,} benign, {ev['extraction_accounts']:,} extraction in {ev['campaigns']} campaigns), "
        f"preset {ev['preset'] or '–'}, seed {ev['seed'] if ev['seed'] is not None else '–'}. "
        f"Thresholds tuned on seed {tu['seed'] if tu['seed'] is not None else tu['folder']} "
        f"(benign FPR target {results['settings']['tune_fpr']:g}).",
        "",
        "| detector | ROC-AUC | PR-AUC | recall @1e-2 FPR | recall @1e-3 FPR | recall (own thr.) | FPR (own thr.) "
        "| campaigns caught | campaign requests flagged | ARI | benign linked (in flagged cluster) "
        "| replay: campaigns flagged | replay: requests before flag, median (share) | p90 | replay: benign flagged (FPR) | time s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["detectors"]:
        if not r["available"]:
            lines.append(f"| {r['name']} | {r.get('note', 'not available')} |" + " |" * 15)
            continue
        a, c, cl, rp = r["account"], r["campaign"], r["cluster"], r["replay"]
        caught = f"{c['caught']}/{c['campaigns']}" if c["campaigns"] else "–"
        linked = f"{cl['benign_linked']} ({cl['benign_in_flagged_cluster']})" if cl else "–"
        med = p90 = rflag = rben = "–"
        if rp:
            if rp.get("benign_flagged") is not None:  # flagged at any moment of the replay, as a gateway would act
                rben = f"{rp['benign_flagged']} ({rp['benign_flagged_fpr']:.4f})"
            rflag = f"{rp['campaigns'] - rp['never_flagged']}/{rp['campaigns']}"
            med = f"{_f(rp['median_requests_before_flag'], 0)} ({_pct(rp['median_share_before_flag'])})"
            p90 = f"{_f(rp['p90_requests_before_flag'], 0)} ({_pct(rp['p90_share_before_flag'])})"
        lines.append(
            f"| {r['name']} | {_f(a['roc_auc'])} | {_f(a['pr_auc'])} | {_f(a['recall_at_fpr_0.01'])} "
            f"| {_f(a['recall_at_fpr_0.001'])} | {_f(a['recall_at_threshold'])} | {_f(a['fpr_at_threshold'], 4)} "
            f"| {caught} | {_pct(c['request_share_flagged'])} | {_f(cl['ari_extraction']) if cl else '–'} "
            f"| {linked} | {rflag} | {med} | {p90} | {rben} | {_f(r.get('elapsed_s'), 1)} |"
        )
    # per-archetype table: flagged share per detector
    avail = [r for r in results["detectors"] if r["available"]]
    if avail:
        archs = avail[0]["per_archetype"]
        lines += ["", "Per archetype: share of accounts flagged at each detector's own threshold "
                  "(recall for extraction archetypes, false-positive rate for benign ones).", "",
                  "| archetype | label | accounts | " + " | ".join(r["name"] for r in avail) + " |",
                  "|---|---|---|" + "---|" * len(avail)]
        for name in sorted(archs, key=lambda k: (archs[k]["label"] != "extraction", k)):
            p = archs[name]
            vals = " | ".join(_f(r["per_archetype"][name]["flagged_share"]) for r in avail)
            lines.append(f"| {name} | {p['label']} | {p['accounts']:,} | {vals} |")
    notes = [r for r in results["detectors"] if r.get("replay_note")]
    if notes:
        lines += [""] + [f"- {r['name']}: {r['replay_note'].strip().splitlines()[0]}" for r in notes]
    lines += ["", f"Embedding for PRADA/MMD: {results['settings']['embedding']}."]
    total = results.get("timing_s", {}).get("total")
    if total is not None:
        lines += ["", f"Whole run (simulation, parsing, every detector): {total:.0f} s on "
                  f"{results['machine']['cpus']} CPUs; time s column: scoring the evaluation traffic "
                  "(distillguard: scan; its replay time is in results.json)."]
    return "\n".join(lines) + "\n"
