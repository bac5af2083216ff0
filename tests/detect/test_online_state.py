"""What the online detector keeps between requests (its memory is the gateway's)."""

from distillguard.detect.online import OnlineDetector
from distillguard.schema import event_from_record


def _event(rid: str, account: str, ts: float, ip: str) -> dict:
    return event_from_record({"request_id": rid, "timestamp": ts, "account_id": account, "client_ip": ip,
                              "endpoint": "/v1/chat/completions",
                              "request": {"messages": [{"role": "user", "content": "hello there"}]}})


def test_an_account_id_is_kept_once_whatever_each_request_brings():
    """Each request's account id is its own string object (as Arrow and JSON give them); the tables that
    keep ids must hold the first one, not pin one copy per request."""
    det = OnlineDetector()
    first, later = "".join(["acct", "-1"]), "".join(["acct-", "1"])
    assert first == later and first is not later
    det.process(_event("r1", first, 0.0, "198.51.100.1"))
    det.process(_event("r2", later, 60.0, "198.51.100.2"))
    assert det.linker._holders[("client_ip", "198.51.100.2")][0] is first
    assert det.process(_event("r3", "".join(["acct-", "1"]), 120.0, "198.51.100.2")).account_id is first


def _cot_event(rid: str, account: str, ts: float) -> dict:
    return event_from_record({
        "request_id": rid, "timestamp": ts, "account_id": account, "endpoint": "/v1/chat/completions",
        "request": {"messages": [{"role": "user", "content": f"Explain step by step, then answer: item {rid}"}],
                    "max_tokens": 100, "logprobs": True, "top_logprobs": 5},
        "response": {"choices": [{"message": {"content": "ok"}, "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 9, "completion_tokens": 100}}})


def test_a_flagged_cluster_stays_flagged_and_flags_whoever_joins_it():
    """A campaign's replacement accounts link to the flagged ones (here by payment card) and are flagged
    at their first request even when the cluster's score has fallen below the threshold since; a union
    flags accounts that never send another request."""
    cards = {a: {"payment_fingerprint": "card-1"} for a in ("a", "b", "c", "d")}
    cards |= {a: {"payment_fingerprint": "card-2"} for a in ("e", "f")}
    det = OnlineDetector(accounts=cards, cluster_min_span_hours=0.0)  # clusters judged at once, not by early weights
    det.threshold = float("inf")
    t = 1_767_225_600.0
    for i in range(90):  # a harvests; b and c send plain requests
        x = "abc"[i % 3]
        det.process(_cot_event(f"r{i}", x, t + 30.0 * i) if x == "a" else _event(f"r{i}", x, t + 30.0 * i, "198.51.100.7"))
    cscore = det._cluster_score[det.linker.root("a")]
    own = max(det.account_state(x).score for x in "bc")
    assert own < cscore  # b and c are flagged only as members
    det.threshold = (own + cscore) / 2
    v = det.process(_cot_event("r90", "a", t + 30.0 * 90))
    assert v.flagged and v.cluster_id is not None
    assert det.is_flagged("b") and det.is_flagged("c")
    assert det.account_state("b").flag_reasons[0]["signal"] == "linked_cluster"

    det.threshold = 1.01  # nothing scores this much any more: only the cluster's flag can flag
    v = det.process(_event("r91", "d", t + 30.0 * 91, "203.0.113.9"))  # a new account on the same card
    assert v.flagged and det.account_state("d").requests_before_flag == 0
    reason = det.account_state("d").flag_reasons[0]
    assert reason["signal"] == "linked_cluster" and "when the cluster was flagged" in reason["detail"]

    # another group (card 2) sent requests before; a new link merges it into the flagged cluster, and
    # the next request of any member flags all of it, f included, which sends nothing more
    det.process(_event("r92", "e", t + 30.0 * 92, "203.0.113.10"))
    det.process(_event("r93", "f", t + 30.0 * 93, "203.0.113.11"))
    assert not det.is_flagged("e") and not det.is_flagged("f")
    det.linker.add_key("e", "payment_fingerprint", "card-1")
    assert det.linker.root("f") == det.linker.root("a")
    det.process(_cot_event("r94", "a", t + 30.0 * 94))
    assert det.is_flagged("e") and det.is_flagged("f") and det.account_state("f").requests_before_flag == 1
