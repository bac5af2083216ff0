"""Metric functions of the benchmark on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from distillguard.bench import metrics as M


def test_perfect_detector():
    y = np.array([0] * 1000 + [1] * 10)
    s = np.concatenate([np.linspace(0, 0.5, 1000), np.linspace(0.9, 1.0, 10)])
    m = M.account_metrics(y, s, s > 0.6)
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["recall_at_fpr_0.01"] == 1.0 and m["recall_at_fpr_0.001"] == 1.0
    assert m["recall_at_threshold"] == 1.0 and m["fpr_at_threshold"] == 0.0
    assert m["false_positives"] == 0


def test_inverted_detector_and_random_detector():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    assert M.account_metrics(y, s, s > 0.5)["roc_auc"] == 0.0
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 20000)
    auc = M.account_metrics(y, rng.random(20000), np.zeros(20000, bool))["roc_auc"]
    assert abs(auc - 0.5) < 0.02


def test_recall_at_fpr_counts_allowed_false_positives():
    # 1000 benign scores 0..999; extraction scores straddle the top benign scores
    y = np.array([0] * 1000 + [1] * 4)
    s = np.concatenate([np.arange(1000.0), [997.5, 998.5, 999.5, 1500.0]])
    # FPR 1e-2 allows 10 benign above t -> t = 989: all four extraction above
    assert M.recall_at_fpr(y, s, 1e-2) == {"recall": 1.0, "fpr": 0.01, "threshold": 989.0}
    # FPR 1e-3 allows 1 benign above t -> t = 998: three of four extraction above
    r = M.recall_at_fpr(y, s, 1e-3)
    assert r["recall"] == 0.75 and r["fpr"] == 0.001 and r["threshold"] == 998.0
    # ties with the threshold are not flagged (no credit for a detector that scores everyone equal)
    assert M.recall_at_fpr(np.array([0, 0, 1]), np.zeros(3), 1e-3)["recall"] == 0.0


def test_account_metrics_one_class_gives_none():
    m = M.account_metrics(np.zeros(5, int), np.arange(5.0), np.zeros(5, bool))
    assert m["roc_auc"] is None and m["recall_at_threshold"] is None and m["fpr_at_threshold"] == 0.0


def test_campaign_metrics_half_rule():
    cid = ["a", "a", "b", "b", "b", "c", None]
    flagged = np.array([1, 0, 1, 0, 0, 1, 1], bool)
    req = np.array([10, 10, 1, 1, 1, 5, 100])
    m = M.campaign_metrics(cid, flagged, req)
    assert m["campaigns"] == 3
    assert [m["per_campaign"][c]["caught"] for c in "abc"] == [True, False, True]
    assert m["caught"] == 2 and m["caught_share"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["request_share_flagged"] == pytest.approx((10 + 1 + 5) / 28, abs=1e-6)  # benign 100 excluded


def test_cluster_metrics_known_ari():
    labels = ["extraction"] * 6 + ["benign"] * 3
    camp = ["a", "a", "a", "b", "b", "b", None, None, None]
    perfect = ["x", "x", "x", "y", "y", "y", None, "z", "z"]
    m = M.cluster_metrics(labels, camp, perfect, {"x": True, "y": True, "z": False})
    assert m["ari_extraction"] == 1.0 and m["benign_linked"] == 0 and m["benign_in_flagged_cluster"] == 0
    # everything in one cluster: ARI 0, and the benign account in it is linked to a campaign
    merged = ["x"] * 6 + ["x", None, None]
    m = M.cluster_metrics(labels, camp, merged, {"x": True})
    assert m["ari_extraction"] == 0.0 and m["benign_linked"] == 1 and m["benign_in_flagged_cluster"] == 1
    # no clusters at all: every account a singleton -> ARI 0
    assert M.cluster_metrics(labels, camp, [None] * 9)["ari_extraction"] == 0.0
    # a campaign split 2+1: ARI by hand from the contingency table
    m = M.cluster_metrics(labels[:6], camp[:6], ["x", "x", "w", "y", "y", "y"])
    assert m["ari_extraction"] == pytest.approx(12 / 17, abs=1e-5)  # (4 - 1.6) / (5 - 1.6) by hand


def test_replay_metrics_censors_unflagged_campaigns():
    acc = np.array(["a1", "a2", "a1", "a2", "b1", "b1", "b1", "b1"])
    ts = np.array([1, 2, 3, 4, 1, 2, 3, 4], float)
    campaign = {"a1": "A", "a2": "A", "b1": "B"}
    m = M.replay_metrics(acc, ts, campaign, {"a2": 3.5, "a1": 9.0})
    assert m["per_campaign"]["A"]["requests_before_flag"] == 3  # earliest account flag counts
    assert m["per_campaign"]["B"] == {"requests": 4, "flagged": False, "requests_before_flag": 4,
                                      "share_before_flag": 1.0}
    assert m["never_flagged"] == 1
    assert m["median_requests_before_flag"] == 3.5


def test_per_archetype_shares():
    p = M.per_archetype(["h", "h", "h", "x"], ["benign"] * 3 + ["extraction"], np.array([0, 0, 1, 1], bool))
    assert p["h"]["flagged_share"] == pytest.approx(1 / 3, abs=1e-6) and p["x"]["flagged_share"] == 1.0
