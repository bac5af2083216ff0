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
