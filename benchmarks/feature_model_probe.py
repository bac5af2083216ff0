"""Probe: how much the per-account features know that the signal model does not use.

The shipped score is a non-negative logistic over *signal strengths*: each feature is clipped to a
hand-set ramp (:mod:`distillguard.detect.signals`) before it is weighed, so that every point of a
score is a reason an analyst can read. This probe fits a plain logistic regression on the *raw*
feature columns of ``accounts.parquet`` (standardised, signed weights, no ramps) on training scans,
and reports, on other scans, the recall of extraction accounts at a benign false-positive rate of
1e-3 for three scores: the probe's, the shipped model's own-account score (``own_score``, no
cluster) and its final score (``score``, with the account's cluster). The threshold is read on each
evaluation scan's own benign accounts (a ROC reading, not an operating threshold), the same for all
three, so the columns compare what each score separates, not how well a threshold transfers.

It is a measurement for the next round of the detector, not a detector: the raw features carry
the simulator's habits (how often each benign archetype streams, how long its prompts are), and a
signed, unramped model gives up the per-signal reasons.

Run (from the repository root), with scans made by ``distillguard scan`` and the labels of each log::

    .venv/bin/python benchmarks/feature_model_probe.py \\
        --train /tmp/scan-101:/tmp/sim101/labels.jsonl --train /tmp/scan-102:/tmp/sim102/labels.jsonl \\
        --eval /tmp/scan-1004:/tmp/sim1004/labels.jsonl --eval /tmp/scan-1005:/tmp/sim1005/labels.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

#: Columns of accounts.parquet that are outputs or ids, not features.
NOT_FEATURES = {"account_id", "score", "own_score", "flagged", "cluster_id"}


def load(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(features, is_extraction, own_score, score, feature names, archetype) of one ``SCAN:LABELS``."""
    scan, labels = spec.split(":", 1)
    t = pq.read_table(Path(scan) / "accounts.parquet")
    lab = {}
    with open(labels, "rb") as f:
        for line in f:
            r = json.loads(line)
            lab[r["account_id"]] = r
    ids = t["account_id"].to_pylist()
    names = [c for c in t.column_names if c not in NOT_FEATURES and not c.startswith("s_")]
    x = np.column_stack([t[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in names])
    y = np.asarray([lab[a]["label"] == "extraction" for a in ids])
    arch = np.asarray([lab[a]["archetype"] for a in ids])
    own = t["own_score"].to_numpy(zero_copy_only=False).astype(np.float64)
    score = t["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    return x, y, own, score, names, arch


def recall_at_fpr(p: np.ndarray, y: np.ndarray, fpr: float) -> tuple[np.ndarray, float]:
    """Flags at the lowest threshold that flags at most ``fpr`` of the benign accounts."""
    ben = np.sort(p[~y])[::-1]
    thr = ben[int(np.floor(fpr * len(ben)))]
    flags = p > thr
    return flags, float(flags[y].mean())


def main() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", action="append", required=True, help="SCAN_DIR:LABELS.jsonl (repeatable)")
    ap.add_argument("--eval", action="append", required=True, help="SCAN_DIR:LABELS.jsonl (repeatable)")
    ap.add_argument("--fpr", type=float, default=1e-3)
    ap.add_argument("--top", type=int, default=10, help="show this many largest standardised weights")
    a = ap.parse_args()

    parts = [load(s) for s in a.train]
    names = parts[0][4]
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(x, y)
    coef = model[-1].coef_[0]
    print(f"trained on {len(y):,} accounts ({int(y.sum()):,} extraction) from {len(parts)} scans")
    print("largest standardised weights:", ", ".join(f"{names[i]} {coef[i]:+.2f}" for i in np.argsort(-np.abs(coef))[: a.top]))
    print()
    print("| evaluation scan | accounts | extraction | raw-feature logistic | shipped own_score | shipped score |")
    print("|---|---:|---:|---:|---:|---:|")
    per_arch: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for spec in a.eval:
        xe, ye, own, score, n2, arch = load(spec)
        if n2 != names:
            raise SystemExit(f"{spec}: feature columns differ from the training scans'")
        fr, r_raw = recall_at_fpr(model.predict_proba(xe)[:, 1], ye, a.fpr)
        _, r_own = recall_at_fpr(own, ye, a.fpr)
        fs, r_score = recall_at_fpr(score, ye, a.fpr)
        print(f"| {spec.split(':', 1)[0]} | {len(ye):,} | {int(ye.sum()):,} | {r_raw:.3f} | {r_own:.3f} | {r_score:.3f} |")
        for k in np.unique(arch[ye]):
            m = ye & (arch == k)
            c = per_arch[k]
            c[0] += int(fr[m].sum())
            c[1] += int(fs[m].sum())
            c[2] += int(m.sum())
    print()
    print("| archetype | extraction accounts | raw-feature logistic | shipped score |")
    print("|---|---:|---:|---:|")
    for k, (raw, sc, n) in sorted(per_arch.items()):
        print(f"| {k} | {n} | {raw / n:.3f} | {sc / n:.3f} |")


if __name__ == "__main__":
    main()
