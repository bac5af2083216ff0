"""Tests of the traffic simulator (``distillguard simulate``)."""

from __future__ import annotations

import gzip
import re
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.errors import InputError
from distillguard.schema import event_from_record, parse_timestamp
from distillguard.simulate import read_traffic, shipped_sample_dir, simulate
from distillguard.simulate.archetypes import BENIGN, CAMPAIGNS_SMALL, CAMPAIGNS_STANDARD, EXTRACTION
from distillguard.simulate.core import WINDOW_START, resolve_preset
from distillguard.simulate.generate import NEW, encode_self_instruct
from distillguard.simulate.sources import load_sources

SAMPLE = shipped_sample_dir()


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """One custom run on the shipped sample: every benign and every extraction archetype."""
    out = tmp_path_factory.mktemp("sim")
    res = simulate(out, n_accounts=220, days=3, seed=7, data_path=SAMPLE)
    traffic = read_traffic(res.traffic)
    labels = {r["account_id"]: r for r in _jsonl(res.labels)}
    accounts = {r["account_id"]: r for r in _jsonl(res.accounts)}
    return res, traffic, labels, accounts


def test_every_archetype_present_with_traffic(sim):
    res, traffic, labels, _ = sim
    seen = Counter(labels[r["account_id"]]["archetype"] for r in traffic)
    for name in list(BENIGN) + list(EXTRACTION):
        assert seen[name] > 0, f"archetype {name} has no traffic"
    assert {r["label"] for r in labels.values()} == {"benign", "extraction"}


def test_every_line_is_a_valid_contract_record(sim):
    res, traffic, _, _ = sim
    ids = set()
    last = -1.0
    for rec in traffic:
        ev = event_from_record(rec)  # raises RecordRejected on any contract violation
        assert ev["ts"] >= last  # written in time order
        last = ev["ts"]
        assert WINDOW_START <= ev["ts"] < WINDOW_START + 3 * 86400
        ids.add(rec["request_id"])
        if rec["status_code"] == 200:
            assert ev["completion_tokens"] >= 1 and ev["prompt_tokens"] >= 1
            assert 0 <= (ev["reasoning_tokens"] or 0) <= ev["completion_tokens"]
            if ev["model"] == "orion-2-think":
                assert ev["reasoning_tokens"] > 0  # benign reasoning-model use has hidden reasoning too
            assert rec["response"]["choices"]
        else:
            assert "response" not in rec
        assert ev["prompt"] or ev["n_messages"] > 0
    assert len(ids) == len(traffic)


def test_labels_and_accounts_consistent_with_traffic(sim):
    res, traffic, labels, accounts = sim
    assert set(labels) == set(accounts)
    assert {r["account_id"] for r in traffic} <= set(labels)
    for aid, lab in labels.items():
        assert re.fullmatch(r"org-[A-Za-z0-9]{24}", aid)  # ids carry no label
        assert lab["label"] in ("benign", "extraction")
        assert (lab["campaign_id"] is not None) == (lab["label"] == "extraction")
        if lab["archetype"] in ("company", "campus"):
            assert lab["group_id"]
        acc = accounts[aid]
        assert set(acc) == {"account_id", "created_at", "payment_fingerprint", "email_domain", "country", "tier",
                            "verified"}
        assert isinstance(acc["verified"], bool) and len(acc["country"]) == 2
        parse_timestamp(acc["created_at"])
    # company members share payment; campaigns have several accounts
    groups = defaultdict(set)
    for aid, lab in labels.items():
        if lab["archetype"] == "company":
            groups[lab["group_id"]].add(accounts[aid]["payment_fingerprint"])
    assert groups and all(len(p) == 1 for p in groups.values())
    assert res.n_campaigns == len(EXTRACTION)


def test_no_label_leaks_in_identifiers(sim):
    _, traffic, _, _ = sim
    words = set(BENIGN) | set(EXTRACTION) | {"extraction", "benign", "campaign"}
    for rec in traffic[:3000]:
        for f in ("account_id", "api_key_id", "request_id", "end_user"):
            v = (rec.get(f) or "").lower()
            assert not any(w in v for w in words), (f, v)


def test_hydra_stays_under_per_account_limits_and_shares_cards(sim):
    _, traffic, labels, accounts = sim
    hydra = [a for a, l in labels.items() if l["archetype"] == "hydra"]
    assert len(hydra) >= 20
    per_min = Counter()
    tokens_day = Counter()
    ips = set()
    for rec in traffic:
        if labels[rec["account_id"]]["archetype"] != "hydra":
            continue
        ts = parse_timestamp(rec["timestamp"])
        per_min[(rec["account_id"], int(ts // 60))] += 1
        u = (rec.get("response") or {}).get("usage", {})
        tokens_day[(rec["account_id"], int(ts // 86400))] += u.get("total_tokens", 0)
        ips.add(rec["client_ip"])
    assert max(per_min.values()) < 60
    assert max(tokens_day.values()) < 1_000_000
    cards = Counter(accounts[a]["payment_fingerprint"] for a in hydra)
    assert cards.most_common(1)[0][1] >= 3  # a few cards reused across accounts
    assert len(ips) > len(hydra)  # rotating proxies
    assert len({labels[a]["campaign_id"] for a in hydra}) == 1


def test_extraction_archetype_signatures(sim):
    _, traffic, labels, _ = sim
    template = (SAMPLE / "stanford_alpaca" / "prompt.txt").read_text()
    by = defaultdict(list)
    for rec in traffic:
        by[labels[rec["account_id"]]["archetype"]].append(rec)
    si = by["self_instruct"]
    assert all(r["endpoint"] == "/v1/completions" and r["request"]["prompt"][0].startswith(template) for r in si)
    assert all(r["request"]["max_tokens"] == 3072 and r["request"]["stop"] == ["\n20", "20.", "20."] for r in si)
    lp = by["logprob_harvest"]
    assert all(r["request"].get("logprobs") is True for r in lp)
    assert any(r["request"].get("n", 1) > 1 for r in lp)
    assert len({r["request"].get("temperature") for r in lp}) >= 3
    cot = [r["request"]["messages"][-1]["content"] for r in by["cot_elicitation"]]
    assert any(re.search(r"[\u4e00-\u9fff\u0400-\u04ff\u3040-\u30ff\uac00-\ud7af]", c) for c in cot)
    new_first = min(parse_timestamp(r["timestamp"]) for r in traffic if r["request"]["model"] == NEW)
    pivot_new = [r for r in by["model_pivot"] if r["request"]["model"] == NEW]
    assert pivot_new and min(parse_timestamp(r["timestamp"]) for r in pivot_new) >= new_first
    para = {r["request"]["messages"][-1]["content"].split("\n")[0] for r in by["paraphrase"]}
    assert len(para) > 10  # wording varies
    # benign look-alikes: eval harness at temperature 0, batch pipelines templated
    assert all(r["request"].get("temperature") in (0.0, 0.8) for r in by["eval_harness"])
    assert any(r.get("batch_id") for r in by["batch_pipeline"]) or by["batch_pipeline"]


def test_realism_stats(sim):
    res, traffic, labels, _ = sim
    real = orjson.loads(res.realism_path.read_bytes())
    assert real == orjson.loads(orjson.dumps(res.realism, option=orjson.OPT_SERIALIZE_NUMPY))
    per = real["archetypes"]
    assert set(per) == set(BENIGN) | set(EXTRACTION)
    assert sum(d["requests"] for d in per.values()) == len(traffic) == real["totals"]["requests"]
    for name, d in per.items():
        assert 0 <= d["multi_turn_share"] <= 1 and d["requests_per_account_day"] >= 0
        if d["label"] == "benign":
            assert 0 <= d["exact_shared_rate"] <= d["near_shared_rate"] + 1e-9 <= 1 + 1e-9
    assert per["individual"]["multi_turn_share"] > 0.2
    assert per["self_instruct"]["multi_turn_share"] == 0 and per["logprob_harvest"]["multi_turn_share"] == 0
    assert 0 < real["totals"]["benign_first_turn_exact_shared_rate"] < 1


def test_deterministic_for_a_seed(tmp_path):
    a = simulate(tmp_path / "a", n_accounts=40, days=1, seed=3, data_path=SAMPLE)
    b = simulate(tmp_path / "b", n_accounts=40, days=1, seed=3, data_path=SAMPLE)
    c = simulate(tmp_path / "c", n_accounts=40, days=1, seed=4, data_path=SAMPLE)
    for name in ("traffic.jsonl.gz", "accounts.jsonl", "labels.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert gzip.decompress((tmp_path / "a" / "traffic.jsonl.gz").read_bytes()) != \
        gzip.decompress((tmp_path / "c" / "traffic.jsonl.gz").read_bytes())
    assert a.n_requests == b.n_requests and c.n_requests > 0


def test_cli_runs_on_the_shipped_sample(tmp_path):
    r = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "o"), "--accounts", "30", "--days", "1",
                                 "--seed", "2", "--data", str(SAMPLE)])
    assert r.exit_code == 0, r.output
    assert "req/acct/day" in r.output or "requests" in r.output
    for name in ("traffic.jsonl.gz", "accounts.jsonl", "labels.jsonl", "realism.json"):
        assert (tmp_path / "o" / name).is_file()


def test_cli_bad_input_gives_clear_error(tmp_path):
    r = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "o"), "--preset", "huge"])
    assert r.exit_code == 1 and "unknown preset" in r.output
    r = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "does not exist" in r.output
    with pytest.raises(InputError, match="at least 20"):
        simulate(tmp_path / "x", n_accounts=5, data_path=SAMPLE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="Azure"):
        load_sources(empty)


def test_presets_cover_the_archetypes():
    assert set(CAMPAIGNS_STANDARD) == set(EXTRACTION) and len(CAMPAIGNS_STANDARD) >= 20
    assert 5 <= len(CAMPAIGNS_SMALL) <= 8
    std = resolve_preset("standard", None, None)
    assert std.benign_accounts >= 10_000 and 7 <= std.days <= 14
    small = resolve_preset(None, None, None)
    assert small.name == "small" and small.benign_accounts == 600 and small.days == 3


def test_shipped_sample_is_permissive_and_attributed():
    data = SAMPLE.parent
    assert (data / "ATTRIBUTION.md").is_file()
    names = {p.name for p in SAMPLE.iterdir() if p.is_dir()}
    assert names.isdisjoint({"codealpaca", "instruction_wild", "wizardlm"})  # non-commercial data
    assert not list(SAMPLE.rglob("alpaca_5000*"))
    for d in SAMPLE.iterdir():
        if d.is_dir():
            assert list(d.glob("LICENSE*")), f"{d.name} lacks its license"
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 1_000_000


def test_self_instruct_prompt_matches_alpaca_encoding():
    tasks = [("Give three tips:", "", "a"), ("Sort  the list", "3, 1", "1, 3")]
    p = encode_self_instruct("HEAD", tasks)
    assert p == ("HEAD\n###\n1. Instruction: Give three tips\n1. Input:\n<noinput>\n1. Output:\na\n"
                 "###\n2. Instruction: Sort the list\n2. Input:\n3, 1\n2. Output:\n1, 3\n###\n3. Instruction:")


@pytest.mark.needs_shared
def test_runs_on_the_shared_raw_data(shared_raw, tmp_path):
    src = load_sources(shared_raw)
    assert len(src.distill) > 10_000 and src.alpaca_triples and len(src.human) > 3000
    res = simulate(tmp_path, n_accounts=60, days=1, seed=5, data_path=shared_raw)
    assert res.realism["data"]["distill_items"] == len(src.distill)
    for rec in read_traffic(res.traffic)[:2000]:
        event_from_record(rec)


@pytest.mark.slow
def test_small_preset_from_the_shipped_sample(tmp_path):
    res = simulate(tmp_path, preset="small", seed=0, data_path=SAMPLE)
    tot = res.realism["totals"]
    assert 600 <= tot["benign_accounts"] <= 602
    assert res.n_campaigns == len(CAMPAIGNS_SMALL)
    assert set(res.realism["campaigns"]) == set(CAMPAIGNS_SMALL)
    assert 10_000 < res.n_requests < 100_000
    assert res.realism["data"]["folder"] == str(SAMPLE)
