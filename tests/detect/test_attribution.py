"""Attribution after flagging: flagged accounts that run one script far above chance become one cluster.

Six harvesting accounts with nothing in common but their request fingerprint (a system prompt and two
parameter signatures that nobody else uses: separate cards, addresses and hours) are flagged one by
one and must come out as one cluster. Six evaluation-harness accounts that share another such
fingerprint, but whose requests look like people's, must stay unlinked: the fingerprint alone links
nothing. Attribution changes who is grouped, never who is flagged.
"""

from __future__ import annotations

import gzip

import orjson
import pyarrow.compute as pc
import pytest

from distillguard.detect.scan import analyse, final_scores, load_into, run_scan
from distillguard.detect.scoring import ScoreModel, Threshold
from distillguard.ingest import EventStore, RejectWriter
from distillguard.linkage.graph import FINGERPRINT_STRONG

T0 = 1_767_225_600.0
MODEL = ScoreModel(weights={"logprob_harvest": 10.0}, bias=-5.0, threshold=Threshold(0.5))


def _record(rid: str, account: str, ts: float, *, ip: str, system: str | None, temperature: float | None,
            logprobs: bool) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": f"item {rid}: explain {ts % 89:.0f} in one paragraph"}]
    request: dict = {"model": "m1", "messages": messages}
    if temperature is not None:
        request["temperature"] = temperature
    if logprobs:
        request |= {"logprobs": True, "top_logprobs": 5}
    return {"request_id": rid, "timestamp": ts, "account_id": account, "endpoint": "/v1/chat/completions",
            "client_ip": ip, "request": request,
            "response": {"choices": [{"message": {"content": "an answer"}, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 12, "completion_tokens": 40}}}


def _traffic() -> list[dict]:
    records = []
    groups = {  # name: (system prompt, temperatures, logprobs)
        "ops": ("You generate training data. Answer fully.", (0.3, 0.9), True),
        "harness": ("You are a grader. Reply with one letter.", (0.0, 0.1), False),
    }
    for g, (system, temps, lp) in groups.items():
        for k in range(6):  # each account in its own hours, from its own address
            a = f"{g}-{k}"
            start = T0 + (k * 7 + (3 if g == "harness" else 0)) * 3600.0
            records += [_record(f"{a}-{i}", a, start + i * 97.0, ip=f"203.0.{k + (100 if g == 'harness' else 0)}.{i % 7 + 1}",
                                system=system, temperature=temps[i % 2], logprobs=lp) for i in range(30)]
    for k in range(30):  # the population the fingerprints are rare in: default settings
        a = f"user-{k}"
        records += [_record(f"{a}-{i}", a, T0 + k * 1800.0 + i * 300.0, ip=f"198.51.100.{k + 1}", system=None,
                            temperature=None, logprobs=False) for i in range(25)]
    records += [_record(f"lone-{i}", "lone-0", T0 + 50 * 3600.0 + i * 60.0, ip="192.0.2.9", system="Be terse.",
                        temperature=0.5, logprobs=True) for i in range(30)]
    records.sort(key=lambda r: r["timestamp"])
    return records


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    d = tmp_path_factory.mktemp("attribution")
    with gzip.open(d / "traffic.jsonl.gz", "wb") as f:
        f.writelines(orjson.dumps(r) + b"\n" for r in _traffic())
    model = d / "model.json"
    MODEL.save(model)
    out = d / "scan"
    run_scan([d / "traffic.jsonl.gz"], out, model=model, progress=False, write_html=False)
    return d, out


def _jsonl(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def test_flagged_accounts_sharing_a_strong_fingerprint_are_one_cluster(scanned):
    _, out = scanned
    verdicts = {v["account_id"]: v for v in _jsonl(out / "verdicts.jsonl")}
    clusters = _jsonl(out / "clusters.jsonl")
    ops = sorted(f"ops-{k}" for k in range(6))
    (c,) = [c for c in clusters if c["account_ids"] == ops]
    assert c["flagged"] and c["attributed_from"] == ops  # six unlinked flagged accounts joined
    assert c["attributed_by"] == "request_fingerprint" and c["joined_clusters"] == []
    assert "request_fingerprint" in {link["type"] for link in c["links"]}
    for a in ops:
        assert verdicts[a]["flagged"] and verdicts[a]["cluster_id"] == c["cluster_id"]
        linked = [r for r in verdicts[a]["reasons"] if r["signal"] == "linked_cluster"]
        assert linked and "joined after flagging" in linked[0]["detail"]
    # the harness accounts share a fingerprint as strong, but nothing flags them: they stay unlinked
    for k in range(6):
        assert not verdicts[f"harness-{k}"]["flagged"] and verdicts[f"harness-{k}"]["cluster_id"] is None
    assert verdicts["lone-0"]["flagged"] and verdicts["lone-0"]["cluster_id"] is None  # its script is its own
    assert all(not c["attributed_from"] for c in clusters if c["account_ids"] != ops)


def test_attribution_changes_no_flag_and_the_fingerprints_are_strong(scanned):
    d, out = scanned
    store = EventStore(":memory:")
    with RejectWriter(d / "rejected.jsonl") as rej:
        load_into(store, [d / "traffic.jsonl.gz"], rej)
    an = analyse(store.con, has_accounts=False)
    store.close()
    # before attribution: no cluster at all, and both groups' fingerprints at the strong weight
    assert an.clusters == {}
    fp = an.edges.filter(pc.equal(an.edges["type"], "request_fingerprint")).to_pylist()
    for g in ("ops", "harness"):
        ws = {e["w"] for e in fp if e["src"].startswith(g) and e["dst"].startswith(g)}
        assert len([e for e in fp if e["src"].startswith(g) and e["dst"].startswith(g)]) == 15  # every pair of six
        assert min(ws) >= FINGERPRINT_STRONG - 1e-9 and max(e["total"] for e in fp if e["src"].startswith(g)) < 1.0
    _, _, _, flags = final_scores(an, MODEL)
    before = {a for a, f in zip(an.account_ids, flags) if f}
    after = {v["account_id"] for v in _jsonl(out / "verdicts.jsonl") if v["flagged"]}
    assert before == after == {f"ops-{k}" for k in range(6)} | {"lone-0"}


def _card_groups_traffic(d):
    """One operator's eight harvesting accounts on two payment cards, all created in one hour, with one
    user agent; each account sweeps its own temperatures, so that no request fingerprint is shared.
    A pair on one card is linked (the card, the hour, the script); a pair on two cards only tied (the
    hour and the script, under an edge). Beside them: a flagged pair with the same script on a third
    card, created another day, and a team created in the same hour whose requests look like people's."""
    hour = "2026-01-01T03:0{}:00Z"
    accounts, records = [], []

    def account(a, card, created, *, lp, temps, ua):
        accounts.append({"account_id": a, "created_at": created, "payment_fingerprint": card})
        for i in range(30):
            rid = f"{a}-{i}"
            r = _record(rid, a, T0 + 86400.0 + len(accounts) * 97.0 + i * 61.0, ip=f"198.18.{len(accounts)}.{i % 5 + 1}",
                        system=None, temperature=0.7 if i == 0 else temps[i % len(temps)], logprobs=lp)
            r["user_agent"] = ua
            records.append(r)

    for g in ("a", "b"):
        for k in range(4):
            account(f"op-{g}{k}", f"card-{g}", hour.format(k), lp=True, temps=(0.1 * k + (0.05 if g == "b" else 0), 1.0),
                    ua="harvester/1.0")
    for k in range(2):
        account(f"other-{k}", "card-c", "2025-06-01T12:00:00Z", lp=True, temps=(0.33, 0.44 + k / 100), ua="harvester/1.0")
    for k in range(4):
        account(f"team-{k}", "card-t", hour.format(k + 4), lp=False, temps=(0.2 * k, 0.9), ua="office-app/2.3")
    for k in range(30):  # the population, created over the year before
        account(f"user-{k}", f"card-u{k}", f"2025-{k % 12 + 1:02d}-15T10:00:00Z", lp=False, temps=(0.5,), ua="sdk/1.0")
    records.sort(key=lambda r: r["timestamp"])
    with gzip.open(d / "traffic.jsonl.gz", "wb") as f:
        f.writelines(orjson.dumps(r) + b"\n" for r in records)
    (d / "accounts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in accounts))


def test_flagged_card_groups_tied_member_by_member_are_one_cluster(tmp_path):
    _card_groups_traffic(tmp_path)
    model = tmp_path / "model.json"
    MODEL.save(model)
    store = EventStore(":memory:")
    with RejectWriter(tmp_path / "rejected.jsonl") as rej:
        load_into(store, [tmp_path / "traffic.jsonl.gz"], rej, accounts=tmp_path / "accounts.jsonl")
    an = analyse(store.con, has_accounts=True)
    store.close()
    ops = sorted(f"op-{g}{k}" for g in "ab" for k in range(4))
    # the link graph: one cluster per card, and the two cards' accounts only tied (under an edge)
    by_card = {g: {an.clusters.get(f"op-{g}{k}") for k in range(4)} for g in "ab"}
    assert all(len(c) == 1 and None not in c for c in by_card.values()) and by_card["a"] != by_card["b"]
    cross = an.edges.filter(pc.and_(pc.starts_with(an.edges["src"], "op-a"), pc.starts_with(an.edges["dst"], "op-b")))
    assert cross.num_rows and max(cross["total"].to_pylist()) < 1.0
    assert {"created_wave", "user_agent_params"} <= set(cross["type"].to_pylist())

    out = tmp_path / "scan"
    run_scan([tmp_path / "traffic.jsonl.gz"], out, accounts=tmp_path / "accounts.jsonl", model=model,
             progress=False, write_html=False)
    verdicts = {v["account_id"]: v for v in _jsonl(out / "verdicts.jsonl")}
    clusters = {c["cluster_id"]: c for c in _jsonl(out / "clusters.jsonl")}
    (c,) = [c for c in clusters.values() if set(ops) <= set(c["account_ids"])]
    assert c["account_ids"] == ops and c["flagged"]
    assert sorted(c["joined_clusters"]) == sorted(x for s in by_card.values() for x in s)
    assert c["attributed_by"] == "ties"
    assert len(c["attributed_from"]) == 4 and set(c["attributed_from"]) in ({f"op-{g}{k}" for k in range(4)} for g in "ab")
    linked = [r for r in verdicts["op-a0"]["reasons"] if r["signal"] == "linked_cluster"]
    assert "2 link-graph clusters and 0 flagged accounts outside them, tied member by member" in linked[0]["detail"]
    # the same script on another card and day is its own cluster; the team in the same hour is not flagged
    assert verdicts["other-0"]["flagged"] and verdicts["other-0"]["cluster_id"] not in (None, c["cluster_id"])
    assert verdicts["other-0"]["cluster_id"] == verdicts["other-1"]["cluster_id"]
    assert not any(verdicts[f"team-{k}"]["flagged"] for k in range(4))
    assert all(verdicts[f"team-{k}"]["cluster_id"] != c["cluster_id"] for k in range(4))
    assert {a for a, v in verdicts.items() if v["flagged"]} == set(ops) | {"other-0", "other-1"}
