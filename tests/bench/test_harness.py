"""The benchmark harness end to end on tiny labelled traffic, and the ``bench detect`` command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distillguard.bench.harness import run_detect_bench
from distillguard.cli import app
from distillguard.errors import InputError


@pytest.mark.slow
def test_harness_writes_results_and_reports_missing_detector(tiny_eval, tiny_tune, tmp_path, no_detector):
    out = tmp_path / "out"
    res = run_detect_bench(out, traffic=tiny_eval, tune_traffic=tiny_tune, progress=False, jobs=1)
    saved = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert saved["traffic"]["evaluation"]["extraction_accounts"] == 5
    assert saved["traffic"]["evaluation"]["campaigns"] == 2
    names = [r["name"] for r in saved["detectors"]]
    assert names[0] == "distillguard" and not saved["detectors"][0]["available"]
    assert "not available" in saved["detectors"][0]["note"]
    assert {"ratelimit-60rpm-1Mtpd", "top-requests", "prada", "mmd", "iforest"} <= set(names)
    top = next(r for r in res["detectors"] if r["name"] == "top-requests")
    assert top["account"]["roc_auc"] == 1.0  # the bulk and hydra accounts out-volume every human
    assert top["per_archetype"]["bulk_single"]["flagged_share"] == 1.0
    # Markdown: one table row per detector, and the per-archetype table
    for n in names:
        assert f"| {n} |" in md
    assert "| hydra | extraction | 4 |" in md


@pytest.mark.slow
def test_harness_scores_detector_from_its_output_files(tiny_eval, tiny_tune, tmp_path, oracle_detector):
    res = run_detect_bench(tmp_path / "out", traffic=tiny_eval, tune_traffic=tiny_tune, progress=False, jobs=1)
    dg = res["detectors"][0]
    assert dg["available"] and dg["name"] == "distillguard"
    assert dg["account"]["roc_auc"] == 1.0 and dg["account"]["recall_at_threshold"] == 1.0
    assert dg["account"]["fpr_at_threshold"] == 0.0
    assert dg["campaign"]["caught"] == 2 and dg["campaign"]["request_share_flagged"] == 1.0
    assert dg["cluster"]["ari_extraction"] == 1.0 and dg["cluster"]["benign_linked"] == 0
    # 10 requests before each account's flag; the campaign's earliest account decides
    assert dg["replay"]["per_campaign"]["camp-bulk-1"]["requests_before_flag"] == 10
    # each campaign names its archetype (bench summary pools by it)
    assert dg["replay"]["per_campaign"]["camp-hydra-1"]["archetype"] == "hydra"
    assert dg["campaign"]["per_campaign"]["camp-hydra-1"]["archetype"] == "hydra"
    assert dg["replay"]["never_flagged"] == 0 and dg["replay"]["benign_flagged"] == 0
    assert dg["replay"]["benign_flagged_fpr"] == 0.0
    row = next(line for line in (tmp_path / "out" / "results.md").read_text().splitlines() if line.startswith("| distillguard |"))
    assert row.count("|") == 17 and "| 0 (0.0000) |" in row  # the replay's benign flags have their column
    hydra = dg["replay"]["per_campaign"]["camp-hydra-1"]
    # its four accounts run in lockstep (60 s apart, 7 s offsets): 10 requests each before the first flag
    assert hydra["requests_before_flag"] == 40 and hydra["requests"] == 600
    assert (tmp_path / "out" / "distillguard" / "scan" / "verdicts.jsonl").is_file()


def test_tuning_seed_must_differ(tmp_path):
    with pytest.raises(InputError, match="must differ"):
        run_detect_bench(tmp_path, preset="small", seed=3, tune_seed=3, progress=False)


def test_missing_labels_is_a_clear_error(tiny_tune, tmp_path):
    (tmp_path / "traffic.jsonl").write_text("")
    with pytest.raises(InputError, match="labels.jsonl"):
        run_detect_bench(tmp_path / "out", traffic=tmp_path, tune_traffic=tiny_tune, progress=False, jobs=1)


@pytest.mark.slow
def test_cli_bench_detect(tiny_eval, tiny_tune, tmp_path, no_detector):
    out = tmp_path / "cli-out"
    r = CliRunner().invoke(app, ["bench", "detect", "--traffic", str(tiny_eval), "--tune-traffic", str(tiny_tune),
                                 "--no-detector", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "| detector | ROC-AUC" in r.output and "| iforest |" in r.output
    assert (out / "results.json").is_file() and (out / "results.md").is_file()
    assert all(d["name"] != "distillguard" for d in json.loads((out / "results.json").read_text())["detectors"])


def test_cli_errors_and_help(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["bench", "detect", "--help"])
    assert r.exit_code == 0 and "Example" in r.output
    r = runner.invoke(app, ["bench", "detect", "--traffic", str(tmp_path), "--tune-traffic", str(tmp_path / "x"),
                            "--jobs", "1", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "labels.jsonl" in r.output
    r = runner.invoke(app, ["bench", "detect", "--traffic", str(tmp_path), "--preset", "small", "--out", str(tmp_path)])
    assert r.exit_code == 2
