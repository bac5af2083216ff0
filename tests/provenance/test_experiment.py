"""A mini end-to-end experiment run: results.json shape and report."""

from __future__ import annotations

import json

import pytest

from distillguard.provenance.experiment import ExperimentConfig, run_experiment


@pytest.mark.slow
def test_mini_experiment_results_shape(tmp_path):
    cfg = ExperimentConfig.quick(n_prompts=200, n_fresh_prompts=20, answer_tokens=24, fractions=(0.1, 1.0), n_decoys=10,
                                 bb_samples=2, bb_prompts=10, fresh_samples=1, max_reading_texts=40, vocab_size=600)
    rows = run_experiment(tmp_path, cfg, progress=False)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data == json.loads(json.dumps(rows))
    tests = {"reading", "blackbox_supervised", "blackbox_unsupervised"}
    assert {r["test"] for r in data} == tests
    for r in data:
        assert {"test", "watermarked_fraction", "student", "p_value", "scored_tokens"} <= set(r)
        assert r["student"] in ("watermarked", "clean") and 0.0 <= r["p_value"] <= 1.0
        assert isinstance(r["scored_tokens"], int) and isinstance(r["watermarked_fraction"], float)
    assert {r["student"] for r in data} == {"watermarked", "clean"}
    full = [r for r in data if r["watermarked_fraction"] == 1.0 and r["test"] == "reading" and not r.get("attack")]
    assert full and full[0]["p_value"] < 1e-6
    assert all(r["p_value"] > 1e-4 for r in data if r["student"] == "clean")
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "What this shows" in html
