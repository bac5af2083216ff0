"""A linked cluster is scored on its combined traffic, at most what its members' own requests look like
unless those look like extraction (reach the batch threshold).

A company's team (one card) adds up to a bulk extractor's volume while each member's requests look like
people's: it must not be flagged. A campaign spread thin (one card, a few requests per account, each
account under the volume discount) must be: its members' requests look like extraction. Both through
``scan`` (batch) and the online detector (``replay``), with a model that makes the two cases plain.
"""

from __future__ import annotations

import gzip
import math

import orjson
import pytest

from distillguard.detect.online import OnlineDetector
from distillguard.detect.replay import run_replay
from distillguard.detect.scan import run_scan
from distillguard.detect.scoring import ScoreModel, Threshold
from distillguard.features.stats import features_scalar
from distillguard.schema import event_from_record

T0 = 1_767_225_600.0
#: volume (requests per active day) and logprob harvesting, nothing else: a team of five at 350 requests
#: a day each is 1,750 together (a bulk extractor's volume); a campaign's accounts send 6 requests each,
#: under the 20 that logprob harvesting needs to count in full
MODEL = ScoreModel(weights={"high_volume": 10.0, "logprob_harvest": 10.0}, bias=-5.0, threshold=Threshold(0.5))


def _record(rid: str, account: str, ts: float, *, logprobs: bool) -> dict:
    request = {"model": "m1", "messages": [{"role": "user", "content": f"question {rid}: what is {ts % 97:.0f} squared?"}]}
    if logprobs:
        request |= {"logprobs": True, "top_logprobs": 5}
    return {"request_id": rid, "timestamp": ts, "account_id": account, "endpoint": "/v1/chat/completions",
            "client_ip": f"198.51.100.{len(rid) % 200}", "request": request,
            "response": {"choices": [{"message": {"content": "an answer"}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 12, "completion_tokens": 40}}}


def _traffic() -> tuple[list[dict], dict[str, dict]]:
    records, accounts = [], {}
    # (both span more than a day: online, a small cluster in its first day is not judged yet)
    for k in range(5):  # the team: 350 plain requests a day each, for two days
        a = f"team-{k}"
        accounts[a] = {"account_id": a, "payment_fingerprint": "card-team", "created_at": T0 - 400 * 86400.0}
        records += [_record(f"t{k}-{i}", a, T0 + i * 245.0 + k, logprobs=False) for i in range(700)]
    for k in range(5):  # the campaign: 6 harvesting requests each, an account every 8 hours
        a = f"camp-{k}"
        accounts[a] = {"account_id": a, "payment_fingerprint": "card-camp", "created_at": T0 - 2 * 86400.0}
        records += [_record(f"c{k}-{i}", a, T0 + 8 * 3600.0 * k + i * 600.0, logprobs=True) for i in range(6)]
    records.sort(key=lambda r: r["timestamp"])
    return records, accounts


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("members")
    records, accounts = _traffic()
    with gzip.open(d / "traffic.jsonl.gz", "wb") as f:
        f.writelines(orjson.dumps(r) + b"\n" for r in records)
    (d / "accounts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in accounts.values()))
    model = d / "model.json"
    MODEL.save(model)
    return d, model


def _clusters(path) -> dict[str, dict]:
    return {c["account_ids"][0].split("-")[0]: c for c in map(orjson.loads, path.read_bytes().splitlines())}


def test_scan_caps_a_cluster_at_its_members_requests(logs, tmp_path):
    d, model = logs
    run_scan([d / "traffic.jsonl.gz"], tmp_path, accounts=d / "accounts.jsonl", model=model, progress=False, write_html=False)
    clusters = _clusters(tmp_path / "clusters.jsonl")
    team, camp = clusters["team"], clusters["camp"]
    assert len(team["account_ids"]) == 5 and len(camp["account_ids"]) == 5
    assert math.isclose(team["score"], min(team["combined_score"], team["members_score"]), abs_tol=1e-6)
    assert math.isclose(camp["score"], camp["combined_score"], abs_tol=1e-6)  # members over the threshold
    # together the team looks like one bulk extractor; its members' requests do not
    assert team["combined_score"] > 0.9 and team["members_score"] < 0.05 and not team["flagged"]
    assert camp["combined_score"] > 0.9 and camp["members_score"] > 0.9 and camp["flagged"]
    verdicts = {v["account_id"]: v for v in map(orjson.loads, (tmp_path / "verdicts.jsonl").read_bytes().splitlines())}
    assert not any(v["flagged"] for a, v in verdicts.items() if a.startswith("team"))
    for a in camp["account_ids"]:  # each under the discount on its own, flagged as a member
        assert verdicts[a]["flagged"] and verdicts[a]["reasons"][0]["signal"] == "linked_cluster"
        assert "members' own requests" in verdicts[a]["reasons"][0]["detail"]


def test_replay_flags_the_campaign_and_not_the_team(logs, tmp_path):
    d, model = logs
    run_replay([d / "traffic.jsonl.gz"], tmp_path, accounts=d / "accounts.jsonl", model=model, progress=False)
    flagged = {r["account_id"] for r in map(orjson.loads, (tmp_path / "first_flags.jsonl").read_bytes().splitlines())}
    assert flagged == {f"camp-{k}" for k in range(5)}


def test_online_members_score_is_the_request_weighted_mean_of_their_undiscounted_scores():
    records, accounts = _traffic()
    det = OnlineDetector(accounts=accounts, model=MODEL, rescore_every=0.0, cluster_min_span_hours=0.0)
    for r in records:
        det.process(event_from_record(r))
    for group in ("team", "camp"):
        ids = [f"{group}-{k}" for k in range(5)]
        stats = [det.account_state(a).stats for a in ids]
        own = [MODEL.score_scalar(MODEL.strengths_scalar(features_scalar(s), discount=False)) for s in stats]
        want = sum(o * s.n for o, s in zip(own, stats)) / sum(s.n for s in stats)
        assert math.isclose(det.members_score(ids[0]), want, rel_tol=1e-9)
    assert det.members_score("team-0") < 0.05 < 0.9 < det.members_score("camp-0")


@pytest.mark.parametrize("gate", [0.5, 0.999])
def test_online_a_cluster_counts_at_its_combined_score_once_its_members_reach_the_gate(gate):
    """The gate is the batch threshold (the online one is higher: peak scores), so that members who look
    like extraction at the batch operating point let the cluster count in full."""
    records, accounts = _traffic()
    det = OnlineDetector(accounts=accounts, model=MODEL, rescore_every=0.0, cluster_min_span_hours=0.0)
    assert det.members_gate == MODEL.threshold.value
    det.members_gate = gate
    last = None
    for r in records:
        v = det.process(event_from_record(r))
        if v.account_id.startswith("camp"):
            last = v
    members = det.members_score("camp-0")
    combined = det._cluster_score[det.linker.root("camp-0")]
    assert 0.5 < members < 0.999 and members != combined
    assert last.cluster_score == (combined if gate <= members else min(combined, members))
