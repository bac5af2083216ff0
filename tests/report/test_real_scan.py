"""End to end: simulate a little traffic, run the real scan, then the report and the STIX export on it."""

from __future__ import annotations

import json

import pytest
import stix2

from distillguard.report import export_stix, load_scan, write_report


@pytest.mark.slow
def test_report_and_stix_on_a_real_scan(tmp_path):
    from distillguard.detect.scan import run_scan
    from distillguard.simulate.core import simulate
    from distillguard.simulate.sources import shipped_sample_dir

    sim = simulate(tmp_path / "sim", n_accounts=40, days=1, seed=2, data_path=shipped_sample_dir())
    out = tmp_path / "scan"
    run_scan([sim.traffic], out, accounts=sim.accounts, progress=False, write_html=False)
    scan = load_scan(out)
    assert scan.missing == [], "the scan folder lacks files that .notes/SCAN_OUTPUT.md promises"
    assert scan.flagged_verdicts, "expected the simulated campaigns to flag someone"

    html = write_report(out).read_text(encoding="utf-8")
    assert html.count('<div class="acct"') == min(50, len(scan.flagged_verdicts))
    assert html.count('<svg class="hist"') >= 5  # signals.json features exist in accounts.parquet
    # each plot draws the signal's strength under the scan's model: learned shapes included
    from distillguard.detect.scoring import ScoreModel

    model = ScoreModel.default()
    curves = {sig["name"]: sig["model"] for sig in json.loads((out / "signals.json").read_text()) if "model" in sig}
    assert set(model.shapes) <= set(curves) and all(curves[n]["learned"] for n in model.shapes)
    for name, c in curves.items():
        assert c["weight"] == pytest.approx(model.weights.get(name, 0.0)) and c["x"] == sorted(c["x"])
        assert c["learned"] == (name in model.shapes) and all(0.0 <= y <= 1.0 for y in c["y"])
    assert html.count('<polyline class="strength"') == html.count('<svg class="hist"') - html.count(">no values</text>")
    assert html.count("<script") == 1
    # each flagged cluster shown says what its score is made of
    assert html.count("Linkage and pooled volume alone never flag") == min(20, len(scan.flagged_clusters))

    bundle_path = export_stix(out, tmp_path / "bundle.json")
    bundle = stix2.parse(bundle_path.read_text(), allow_custom=True)
    types = {o.type for o in bundle.objects}
    assert {"identity", "attack-pattern", "campaign", "relationship", "report"} <= types
    raw = json.loads(bundle_path.read_text())
    n_campaigns = sum(o["type"] == "campaign" for o in raw["objects"])
    in_clusters = {a for c in scan.flagged_clusters for a in c["account_ids"]}
    singles = [v for v in scan.flagged_verdicts if v["account_id"] not in in_clusters]
    assert n_campaigns == len(scan.flagged_clusters) + len(singles)
