"""``bench summary``: pooling several ``bench detect`` runs, from their real results files."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from distillguard.bench.harness import run_detect_bench
from distillguard.bench.summary import TARGETS, load_runs, summarize, to_markdown
from distillguard.cli import app
from distillguard.errors import InputError


@pytest.fixture
def two_runs(tiny_eval, tiny_tune, tmp_path, oracle_detector):
    """Two real `bench detect` runs, each traffic evaluated with the other as its tuning traffic."""
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    run_detect_bench(a, traffic=tiny_eval, tune_traffic=tiny_tune, progress=False, jobs=1)
    run_detect_bench(b, traffic=tiny_tune, tune_traffic=tiny_eval, progress=False, jobs=1)
    return a, b


def _dg(folder):
    res = json.loads((folder / "results.json").read_text())
    return res, next(d for d in res["detectors"] if d["name"] == "distillguard")


@pytest.mark.slow
def test_the_runs_are_pooled_by_summing_their_counts(two_runs):
    a, b = two_runs
    s = summarize(load_runs([a, b / "results.json"]))  # a folder or its results file
    (ra, da), (rb, db) = _dg(a), _dg(b)
    assert [r["label"] for r in s["rows"]] == [ra["traffic"]["evaluation"]["folder"].rsplit("/", 1)[-1],
                                               rb["traffic"]["evaluation"]["folder"].rsplit("/", 1)[-1]]
    p = s["pooled"]
    assert p["extraction"] == da["account"]["extraction_accounts"] + db["account"]["extraction_accounts"]
    assert p["campaigns"] == da["campaign"]["campaigns"] + db["campaign"]["campaigns"] == 4
    assert p["caught"] == 4 and p["recall"] == 1.0 and p["fpr"] == 0.0  # the oracle flags exactly the campaigns
    assert p["replay_campaigns"] == 4 and p["replay_flagged"] == 4
    # every campaign is flagged after 10 requests of each account (the oracle's replay)
    assert s["archetypes"]["hydra"]["online_median_before"] == 40
    assert s["archetypes"]["hydra"]["campaigns"] == 2 and s["archetypes"]["hydra"]["caught"] == 2
    # the oracle meets the batch targets on both runs (recall, every campaign, ARI, no benign linked)
    assert all(r["targets"][:4] == [True] * 4 for r in s["rows"])
    md = to_markdown(s)
    assert all(f"| {t.name} | " in md for t in TARGETS) and "| **all 2** |" in md
    assert "| hydra |" in md and "| top-requests | 2 |" in md


@pytest.mark.slow
def test_a_miss_counts_against_the_pooled_rates_and_the_targets(two_runs):
    a, b = two_runs
    res, dg = _dg(b)
    # the second run's detector missed half of its (now 20) extraction accounts and a campaign, and
    # flagged 3 benign accounts: pooled, the runs weigh by their counts, not one rate each
    n_ext, n_ben = 20, dg["account"]["benign_accounts"]
    dg["account"].update(extraction_accounts=n_ext, recall_at_threshold=0.5, flagged_accounts=10 + 3, false_positives=3,
                         fpr_at_threshold=3 / n_ben)
    dg["campaign"]["caught"] -= 1
    (b / "results.json").write_text(json.dumps(res))
    s = summarize(load_runs([a, b]))
    _, da = _dg(a)
    total = da["account"]["extraction_accounts"] + n_ext
    assert s["pooled"]["recall"] == pytest.approx((da["account"]["extraction_accounts"] + 10) / total)
    assert s["pooled"]["recall"] != pytest.approx((1.0 + 0.5) / 2)
    assert s["pooled"]["fpr"] == pytest.approx(3 / (da["account"]["benign_accounts"] + n_ben))
    assert s["pooled"]["false_positives"] == 3 and s["pooled"]["caught"] == 3
    every_campaign = [t.name for t in TARGETS].index("every campaign caught")
    assert [r["targets"][every_campaign] for r in s["rows"]] == [True, False]
    assert "| every campaign caught | 1 of 2 (not: " in to_markdown(s)


@pytest.mark.slow
def test_archetypes_come_from_the_labels_for_older_results_files(two_runs):
    a, _ = two_runs
    res, dg = _dg(a)
    for part in (dg["campaign"], dg["replay"]):
        for e in part["per_campaign"].values():
            del e["archetype"]
    (a / "results.json").write_text(json.dumps(res))
    s = summarize(load_runs([a]))
    assert {"hydra", "bulk_single"} <= set(s["archetypes"]) and "unknown" not in s["archetypes"]
    # and without the traffic folder either, the campaigns are still counted, under "unknown"
    shutil.move(res["traffic"]["evaluation"]["folder"], str(a / "gone"))
    try:
        assert summarize(load_runs([a]))["archetypes"]["unknown"]["online_campaigns"] == 2
    finally:
        shutil.move(str(a / "gone"), res["traffic"]["evaluation"]["folder"])


@pytest.mark.slow
def test_a_run_without_replay_pools_its_batch_figures_only(two_runs, tiny_eval, tiny_tune, tmp_path, oracle_detector):
    a, _ = two_runs
    c = tmp_path / "no-replay"
    run_detect_bench(c, traffic=tiny_tune, tune_traffic=tiny_eval, progress=False, jobs=1, replay=False)
    s = summarize(load_runs([a, c]))
    assert s["pooled"]["replay_campaigns"] == 2 and s["pooled"]["caught"] == 4  # replay from run a only
    assert s["pooled"]["benign_replayed"] == s["rows"][0]["benign"]
    median_1pct = [t.name for t in TARGETS].index("replay: median share of a campaign's requests before its first flag <= 1%")
    assert s["rows"][1]["targets"][median_1pct] is False  # no replay, no claim
    assert "| – | – | – | – |" in to_markdown(s)


def test_what_is_not_a_bench_detect_run_is_a_clear_error(tmp_path, tiny_eval, tiny_tune, no_detector):
    with pytest.raises(InputError, match="not found"):
        load_runs([tmp_path / "nothing"])
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        load_runs([tmp_path / "x.json"])
    (tmp_path / "y.json").write_text('{"detectors": 3}')
    with pytest.raises(InputError, match="not a `bench detect` results file"):
        load_runs([tmp_path / "y.json"])
    with pytest.raises(InputError, match="one or more"):
        load_runs([])
    out = tmp_path / "baselines-only"
    run_detect_bench(out, traffic=tiny_eval, tune_traffic=tiny_tune, progress=False, jobs=1, detector=False)
    with pytest.raises(InputError, match="no distillguard figures"):
        load_runs([out])
    r = CliRunner().invoke(app, ["bench", "summary", str(out)])
    assert r.exit_code == 1 and "no distillguard figures" in r.output


@pytest.mark.slow
def test_cli_bench_summary_prints_and_writes_the_tables(two_runs, tmp_path):
    a, b = two_runs
    md = tmp_path / "summary.md"
    r = CliRunner().invoke(app, ["bench", "summary", str(a), str(b), "--out", str(md)])
    assert r.exit_code == 0, r.output
    assert "| **all 2** |" in r.output and md.read_text().startswith("| run | requests |")
