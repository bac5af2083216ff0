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
    # the cluster's score: its combined traffic's, at most what its members' own requests look like
    # unless those reach the batch threshold
    combined, members = det._cluster_score[det.linker.root("a")], det.members_score("a")
    cscore = combined if members >= det.members_gate else min(combined, members)
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


def test_idle_accounts_are_forgotten_unless_flagged_or_linked():
    cards = {"p1": {"payment_fingerprint": "card-9"}, "p2": {"payment_fingerprint": "card-9"}}
    det = OnlineDetector(accounts=cards)
    t = 1_767_225_600.0
    det.threshold = 0.0  # the first account is flagged at its first request
    det.process(_event("f0", "flagged", t, "198.51.100.1"))
    det.threshold = float("inf")
    for i in range(25):  # enough requests for a request fingerprint
        det.process(_event(f"l{i}", "lone", t + i, "198.51.100.2"))
    det.process(_event("p1", "p1", t + 30, "198.51.100.3"))
    det.process(_event("p2", "p2", t + 31, "198.51.100.4"))
    det.process(_event("r0", "recent", t + 10_000, "198.51.100.5"))
    assert det.is_flagged("flagged") and det.linker.root("p1") == det.linker.root("p2")
    assert det.account_state("lone").fingerprint is not None and det._fp_n >= 1
    fp_before = det._fp_n

    assert det.forget_idle(t + 5_000) == 1  # only "lone": idle, unflagged, alone
    assert det.account_state("lone") is None and det.forgotten == 1
    assert {"flagged", "p1", "p2", "recent"} <= set(det._acc)
    assert det._fp_n == fp_before - 1  # its fingerprint no longer counts in the population
    v = det.process(_event("l25", "lone", t + 20_000, "198.51.100.2"))  # it comes back: a new account
    assert v.account_id == "lone" and det.account_state("lone").stats.n == 1


def test_a_gateway_detector_stays_bounded_by_its_active_accounts(monkeypatch):
    import distillguard.detect.online as online_mod

    monkeypatch.setattr(online_mod, "WORDS_SWEEP_EVERY", 100)
    monkeypatch.setattr(online_mod, "WORDS_SWEEP_PER_ACCOUNT", 0)
    det = OnlineDetector(forget_idle_s=3600.0)
    t = 1_767_225_600.0
    peak = 0
    for i in range(3000):  # a new account every 10 s, each sending 2 requests a minute apart
        det.process(_event(f"a{i}", f"acct-{i}", t + 10.0 * i, f"10.0.{i // 250}.{i % 250}"))
        det.process(_event(f"b{i}", f"acct-{i}", t + 10.0 * i + 60.0, f"10.0.{i // 250}.{i % 250}"))
        peak = max(peak, len(det._acc))
    # an hour holds 360 accounts; a sweep every 100 requests forgets the older ones
    assert det.forgotten > 2000 and peak < 500
    # without forgetting, every account stays
    keep = OnlineDetector()
    for i in range(3000):
        keep.process(_event(f"a{i}", f"acct-{i}", t + 10.0 * i, f"10.0.{i // 250}.{i % 250}"))
    assert len(keep._acc) == 3000
