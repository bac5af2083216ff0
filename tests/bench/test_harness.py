"""The benchmark harness end to end on tiny labelled traffic, and the ``bench detect`` command."""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from distillguard.bench.harness import run_detect_bench
from distillguard.cli import app
from distillguard.errors import InputError


@pytest.fixture
def no_detector(monkeypatch):
    """Make ``distillguard.detect.scan`` unimportable, as before the detector lands."""
    monkeypatch.setitem(sys.modules, "distillguard.detect.scan", None)
    monkeypatch.setitem(sys.modules, "distillguard.detect.replay", None)


@pytest.fixture
def oracle_detector(monkeypatch):
    """A stand-in detector that reads the labels: proves the harness reads contract files correctly."""

    def labels_of(paths):
        folder = Path(paths[0]).parent
        return [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]

    def run_scan(paths, out_dir, *, accounts=None):
        rows = labels_of(paths)
        with open(out_dir / "verdicts.jsonl", "w") as fh:
            for r in rows:
                ext = r["label"] == "extraction"
                fh.write(json.dumps({"account_id": r["account_id"], "score": 0.9 if ext else 0.1, "flagged": ext,
                                     "cluster_id": r["campaign_id"], "reasons": []}) + "\n")
        camps = sorted({r["campaign_id"] for r in rows if r["campaign_id"]})
        with open(out_dir / "clusters.jsonl", "w") as fh:
            for c in camps:
                ids = [r["account_id"] for r in rows if r["campaign_id"] == c]
                fh.write(json.dumps({"cluster_id": c, "account_ids": ids, "score": 0.9, "flagged": True,
                                     "links": []}) + "\n")
        return {"accounts": len(rows)}

    def run_replay(paths, out_dir, *, accounts=None):
        # flag each extraction account at its 11th request (10 served before)
        seen: dict[str, list[float]] = {}
        with gzip.open(paths[0], "rb") as fh:
            for line in fh:
                r = orjson.loads(line)
                seen.setdefault(r["account_id"], []).append(r["timestamp"])
        ext = {r["account_id"] for r in labels_of(paths) if r["label"] == "extraction"}
        with open(out_dir / "first_flags.jsonl", "w") as fh:
            for a in sorted(ext):
                ts = sorted(seen[a])
                fh.write(json.dumps({"account_id": a, "flagged_at": ts[10], "requests_before_flag": 10,
                                     "cluster_id": None, "reasons": []}) + "\n")
        return {}

    scan_mod = types.ModuleType("distillguard.detect.scan")
    scan_mod.run_scan = run_scan
    replay_mod = types.ModuleType("distillguard.detect.replay")
    replay_mod.run_replay = run_replay
    monkeypatch.setitem(sys.modules, "distillguard.detect.scan", scan_mod)
    monkeypatch.setitem(sys.modules, "distillguard.detect.replay", replay_mod)


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
