"""``distillguard bench summary``: the figures of several ``bench detect`` runs in one set of tables.

A single evaluation seed says little about a detector whose targets are rates of 1e-3: one seed has
about 9,400 benign accounts and 22 campaigns. This reads the ``results.json`` of several runs (one
per evaluation traffic) and writes

- one row per run with distillguard's figures, and a pooled row (counts summed, rates recomputed
  from the summed counts, per-run figures that cannot be pooled, like ARI, as their range);
- the issue's targets, with the runs that meet each;
- distillguard per extraction archetype, pooled over the runs: accounts flagged by ``scan``, campaigns
  caught, campaigns flagged online and the share of a campaign served before its first flag;
- benign accounts flagged by ``scan`` per benign archetype;
- every detector side by side over all the runs.

It reads only the result files (a campaign's archetype comes from the file, or from the traffic
folder's ``labels.jsonl`` for files written before the harness recorded it), so the README's tables
can be regenerated from the runs that made them.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from distillguard.errors import InputError

DETECTOR = "distillguard"


@dataclass(frozen=True)
class Target:
    """One target of the detection issue, tested on one run's distillguard row."""

    name: str
    met: Callable[[dict[str, Any]], bool]


TARGETS = (
    Target("recall >= 0.95 at a benign FPR <= 1e-3 (own threshold)",
           lambda d: d["account"]["recall_at_threshold"] >= 0.95 and d["account"]["fpr_at_threshold"] <= 1e-3),
    Target("every campaign caught", lambda d: d["campaign"]["caught"] == d["campaign"]["campaigns"]),
    Target("ARI >= 0.9", lambda d: (d["cluster"] or {}).get("ari_extraction") is not None and d["cluster"]["ari_extraction"] >= 0.9),
    Target("no benign account in a flagged cluster", lambda d: (d["cluster"] or {}).get("benign_in_flagged_cluster") == 0),
    Target("replay: median requests before a campaign's first flag <= 1,000",
           lambda d: d["replay"] is not None and (d["replay"]["median_requests_before_flag"] or 0) <= 1000),
    Target("replay: median share of a campaign's requests before its first flag <= 1%",
           lambda d: d["replay"] is not None and (d["replay"]["median_share_before_flag"] or 0) <= 0.01),
)


@dataclass
class Run:
    """One ``bench detect`` run: its label (the evaluation seed, or the traffic folder's name) and results."""

    label: str
    results: dict[str, Any]

    @property
    def detector(self) -> dict[str, Any]:
        return next(d for d in self.results["detectors"] if d["name"] == DETECTOR)


def load_runs(paths: list[Path]) -> list[Run]:
    """Each path is a ``bench detect --out`` folder or its ``results.json``."""
    if not paths:
        raise InputError("give the output folders (or results.json files) of one or more `bench detect` runs")
    runs = []
    for p in paths:
        f = Path(p) / "results.json" if Path(p).is_dir() else Path(p)
        if not f.is_file():
            raise InputError(f"{f} not found: give a `bench detect --out` folder or its results.json")
        try:
            res = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{f} is not readable JSON ({e}); re-run `bench detect` for it") from e
        if not isinstance(res, dict) or not isinstance(res.get("detectors"), list) or "traffic" not in res:
            raise InputError(f"{f} is not a `bench detect` results file (no detectors or traffic)")
        det = next((d for d in res["detectors"] if d.get("name") == DETECTOR), None)
        if det is None or not det.get("available"):
            raise InputError(f"{f} has no distillguard figures (a `--no-detector` run, or the detector failed: "
                             f"{(det or {}).get('note') or 'no row'})")
        ev = res["traffic"]["evaluation"]
        label = f"seed {ev['seed']}" if ev.get("seed") is not None else Path(ev.get("folder") or f.parent).name
        runs.append(Run(label, res))
    return runs


def _campaign_archetypes(run: Run) -> dict[str, str]:
    """Campaign id -> archetype, from the results file or else from the traffic's labels.jsonl."""
    det = run.detector
    out = {c: e["archetype"] for part in (det["campaign"], det["replay"] or {})
           for c, e in (part.get("per_campaign") or {}).items() if e.get("archetype")}
    if out:
        return out
    labels = Path(run.results["traffic"]["evaluation"].get("folder") or "") / "labels.jsonl"
    if labels.is_file():
        for line in labels.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("campaign_id") and r.get("archetype"):
                    out[r["campaign_id"]] = r["archetype"]
    return out


def _flagged_extraction(account: dict[str, Any]) -> int:
    """Extraction accounts flagged at the detector's own threshold: its flagged accounts less its false
    positives (exact, where recall times the count would go through a rounded rate)."""
    return account["flagged_accounts"] - account["false_positives"]


def _range(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}-{format(hi, fmt)}"


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Rows per run, the pooled row, targets, per-archetype and per-detector tables (as plain data)."""
    rows = []
    pooled_campaigns: list[dict[str, Any]] = []
    arch = defaultdict(lambda: {"accounts": 0, "flagged": 0, "campaigns": 0, "caught": 0, "online": []})
    benign = defaultdict(lambda: {"accounts": 0, "flagged": 0})
    for run in runs:
        d = run.detector
        acc, camp, cl, rp = d["account"], d["campaign"], d["cluster"] or {}, d["replay"]
        arch_of = _campaign_archetypes(run)
        row = {
            "label": run.label,
            "requests": run.results["traffic"]["evaluation"]["requests"],
            "accounts": acc["accounts"], "extraction": acc["extraction_accounts"], "benign": acc["benign_accounts"],
            "roc_auc": acc["roc_auc"], "pr_auc": acc["pr_auc"], "recall_at_fpr_0.001": acc["recall_at_fpr_0.001"],
            "recall": acc["recall_at_threshold"], "flagged_extraction": _flagged_extraction(acc),
            "false_positives": acc["false_positives"], "fpr": acc["fpr_at_threshold"],
            "campaigns": camp["campaigns"], "caught": camp["caught"],
            "ari": cl.get("ari_extraction"), "benign_in_flagged_cluster": cl.get("benign_in_flagged_cluster"),
            "targets": [t.met(d) for t in TARGETS],
        }
        if rp is not None:
            per = rp["per_campaign"]
            row.update(replay_flagged=rp["campaigns"] - rp["never_flagged"], replay_campaigns=rp["campaigns"],
                       median_before=rp["median_requests_before_flag"], median_share=rp["median_share_before_flag"],
                       under_1pct=sum(1 for e in per.values() if e["flagged"] and e["share_before_flag"] <= 0.01),
                       benign_online=rp["benign_flagged"], benign_replayed=acc["benign_accounts"])
            for cid, e in per.items():
                arch[arch_of.get(cid, "unknown")]["online"].append(e)
                pooled_campaigns.append(e)
        for cid, e in (camp.get("per_campaign") or {}).items():
            a = arch[arch_of.get(cid, "unknown")]
            a["campaigns"] += 1
            a["caught"] += bool(e["caught"])
        for name, e in (d["per_archetype"] or {}).items():
            target = arch[name] if e["label"] == "extraction" else benign[name]
            target["accounts"] += e["accounts"]
            target["flagged"] += e["flagged"]
        rows.append(row)
    pooled = _pooled(rows, pooled_campaigns)
    detectors = _detectors(runs)
    return {"rows": rows, "pooled": pooled, "targets": [t.name for t in TARGETS],
            "archetypes": {k: _arch_row(v) for k, v in sorted(arch.items()) if v["accounts"] or v["campaigns"]},
            "benign_archetypes": dict(sorted(benign.items())), "detectors": detectors}


def _pooled(rows: list[dict[str, Any]], campaigns: list[dict[str, Any]]) -> dict[str, Any]:
    s = lambda k: sum(r[k] for r in rows if r.get(k) is not None)  # noqa: E731
    out = {
        "label": f"all {len(rows)}", "requests": s("requests"), "accounts": s("accounts"), "extraction": s("extraction"),
        "benign": s("benign"), "roc_auc": _range([r["roc_auc"] for r in rows], ".3f"),
        "pr_auc": _range([r["pr_auc"] for r in rows], ".3f"),
        "recall_at_fpr_0.001": _range([r["recall_at_fpr_0.001"] for r in rows], ".3f"),
        "recall": s("flagged_extraction") / max(s("extraction"), 1), "false_positives": s("false_positives"),
        "fpr": s("false_positives") / max(s("benign"), 1), "campaigns": s("campaigns"), "caught": s("caught"),
        "ari": _range([r["ari"] for r in rows if r["ari"] is not None], ".3f") if any(r["ari"] is not None for r in rows) else None,
        "benign_in_flagged_cluster": s("benign_in_flagged_cluster"),
    }
    if campaigns:
        out.update(replay_flagged=s("replay_flagged"), replay_campaigns=s("replay_campaigns"),
                   median_before=statistics.median(e["requests_before_flag"] for e in campaigns),
                   median_share=statistics.median(e["share_before_flag"] for e in campaigns),
                   under_1pct=s("under_1pct"), benign_online=s("benign_online"), benign_replayed=s("benign_replayed"))
    return out


def _arch_row(a: dict[str, Any]) -> dict[str, Any]:
    online = a["online"]
    flagged = [e for e in online if e["flagged"]]
    return {
        "accounts": a["accounts"], "flagged": a["flagged"], "campaigns": a["campaigns"], "caught": a["caught"],
        "online_campaigns": len(online), "online_flagged": len(flagged),
        "online_median_share": statistics.median(e["share_before_flag"] for e in online) if online else None,
        "online_median_before": statistics.median(e["requests_before_flag"] for e in online) if online else None,
        "online_under_1pct": sum(1 for e in flagged if e["share_before_flag"] <= 0.01),
    }


def _detectors(runs: list[Run]) -> list[dict[str, Any]]:
    """Every detector over all runs: PR-AUC range, pooled recall and FPR at its own threshold, campaigns."""
    acc: dict[str, dict[str, Any]] = {}
    for run in runs:
        for d in run.results["detectors"]:
            if not d.get("available", True) or d.get("account") is None:
                continue
            a = acc.setdefault(d["name"], {"name": d["name"], "pr_auc": [], "flagged": 0, "extraction": 0, "fp": 0,
                                           "benign": 0, "caught": 0, "campaigns": 0, "runs": 0})
            m = d["account"]
            a["runs"] += 1
            a["pr_auc"].append(m["pr_auc"])
            a["flagged"] += _flagged_extraction(m)
            a["extraction"] += m["extraction_accounts"]
            a["fp"] += m["false_positives"]
            a["benign"] += m["benign_accounts"]
            a["caught"] += d["campaign"]["caught"]
            a["campaigns"] += d["campaign"]["campaigns"]
    return [{"name": a["name"], "runs": a["runs"], "pr_auc": _range(a["pr_auc"], ".3f"),
             "pr_auc_mean": statistics.mean(a["pr_auc"]), "recall": a["flagged"] / max(a["extraction"], 1),
             "fpr": a["fp"] / max(a["benign"], 1), "false_positives": a["fp"], "caught": a["caught"],
             "campaigns": a["campaigns"]} for a in acc.values()]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def to_markdown(summary: dict[str, Any]) -> str:
    rows, pooled = summary["rows"], summary["pooled"]
    n = len(rows)
    out = ["| run | requests | accounts (extraction) | ROC-AUC | PR-AUC | recall @1e-3 FPR | recall (own thr.) | "
           "benign FPR (own thr.) | campaigns caught | ARI | benign in a flagged cluster | replay: campaigns flagged | "
           "replay: median requests before flag (share) | replay: campaigns flagged before 1% | replay: benign flagged |",
           "|---|---:|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def fmt(r: dict[str, Any], bold: bool = False) -> str:
        b = "**" if bold else ""
        num = lambda v: v if isinstance(v, str) else ("–" if v is None else f"{v:.3f}")  # noqa: E731
        replay = ("– | – | – | –" if "replay_campaigns" not in r else
                  f"{r['replay_flagged']}/{r['replay_campaigns']} | {r['median_before']:,.0f} ({_pct(r['median_share'])}) | "
                  f"{r['under_1pct']}/{r['replay_campaigns']} | {r['benign_online']} ({r['benign_online'] / max(r['benign_replayed'], 1):.1e})")
        return (f"| {b}{r['label']}{b} | {r['requests']:,} | {r['accounts']:,} ({r['extraction']:,}) | {num(r['roc_auc'])} | "
                f"{num(r['pr_auc'])} | {num(r['recall_at_fpr_0.001'])} | {b}{r['recall']:.3f}{b} | "
                f"{b}{r['fpr']:.1e}{b} ({r['false_positives']} of {r['benign']:,}) | {r['caught']}/{r['campaigns']} | "
                f"{num(r['ari'])} | {r['benign_in_flagged_cluster']} | {replay} |")

    out += [fmt(r) for r in rows] + [fmt(pooled, bold=True)]
    out.append("")
    out.append(f"The pooled row sums the counts of the {n} runs and recomputes recall and FPR from them; ROC-AUC, PR-AUC, "
               "recall at an oracle 1e-3 FPR and ARI are per-run figures, shown as their range; its replay median is over "
               "every campaign of every run.")
    out += ["", "| target | runs that meet it |", "|---|---|"]
    for i, name in enumerate(summary["targets"]):
        met = [r["label"] for r in rows if r["targets"][i]]
        missed = [r["label"] for r in rows if not r["targets"][i]]
        out.append(f"| {name} | {len(met)} of {n}" + (f" (not: {', '.join(missed)})" if missed and len(missed) < n else "") + " |")
    out += ["", "distillguard per extraction archetype, over all runs:", "",
            "| archetype | accounts flagged by scan | campaigns caught by scan | campaigns flagged online | "
            "online: median share served before the first flag (requests) | online: flagged before 1% |",
            "|---|---|---|---|---|---|"]
    for name, a in summary["archetypes"].items():
        share = a["flagged"] / a["accounts"] if a["accounts"] else 0.0
        med = "–" if a["online_median_share"] is None else f"{_pct(a['online_median_share'])} ({a['online_median_before']:,.0f})"
        out.append(f"| {name} | {a['flagged']:,} of {a['accounts']:,} ({_pct(share)}) | {a['caught']} of {a['campaigns']} | "
                   f"{a['online_flagged']} of {a['online_campaigns']} | {med} | {a['online_under_1pct']} |")
    out += ["", "Benign accounts flagged by scan, per archetype, over all runs:", "",
            "| archetype | accounts | flagged | share |", "|---|---:|---:|---:|"]
    for name, b in summary["benign_archetypes"].items():
        rate = f"{b['flagged'] / b['accounts']:.1e}" if b["flagged"] else "0"
        out.append(f"| {name} | {b['accounts']:,} | {b['flagged']} | {rate} |")
    out += ["", "Every detector over all runs (recall and FPR at its own threshold, pooled):", "",
            "| detector | runs | PR-AUC | recall (own thr.) | benign FPR (own thr.) | campaigns caught |",
            "|---|---:|---|---|---|---|"]
    for d in sorted(summary["detectors"], key=lambda d: (d["name"] != DETECTOR, -d["pr_auc_mean"])):
        out.append(f"| {d['name']} | {d['runs']} | {d['pr_auc']} | {d['recall']:.3f} | {d['fpr']:.1e} ({d['false_positives']}) | "
                   f"{d['caught']}/{d['campaigns']} |")
    return "\n".join(out) + "\n"
