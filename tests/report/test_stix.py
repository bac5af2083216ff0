"""STIX 2.1 export: valid bundle, ATLAS attack patterns, campaigns, indicators, relationships, sightings."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime

import pytest
import stix2

from distillguard.errors import InputError
from distillguard.report import export_stix

NOW = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def bundle(scan_dir, tmp_path_factory):
    out = export_stix(scan_dir, tmp_path_factory.mktemp("stix") / "b.json", producer="Example AI", now=NOW)
    text = out.read_text(encoding="utf-8")
    parsed = stix2.parse(text, allow_custom=True)
    return parsed, json.loads(text), text


def _of(raw, kind):
    return [o for o in raw["objects"] if o["type"] == kind]


def test_parses_as_stix21(bundle):
    parsed, raw, _ = bundle
    assert parsed.type == "bundle"
    assert all(o["spec_version"] == "2.1" for o in raw["objects"] if o["type"] != "marking-definition"
               or "spec_version" in o)
    assert len(parsed.objects) == len(raw["objects"])
    ids = [o["id"] for o in raw["objects"]]
    assert len(ids) == len(set(ids))


def test_attack_patterns_reference_atlas(bundle):
    aps = {o["external_references"][0]["external_id"]: o for o in _of(bundle[1], "attack-pattern")}
    assert {"AML.T0024.002", "AML.T0005.001"} <= set(aps)
    ref = aps["AML.T0024.002"]["external_references"][0]
    assert ref["source_name"] == "mitre-atlas"
    assert ref["url"] == "https://atlas.mitre.org/techniques/AML.T0024.002"


def test_one_campaign_per_flagged_cluster_and_singleton(bundle):
    camps = _of(bundle[1], "campaign")
    clusters = sorted(c["x_distillguard_cluster_id"] for c in camps if c.get("x_distillguard_cluster_id"))
    assert clusters == ["c-0000", "c-0001", "c-0002"]  # the benign NAT cluster is not exported
    assert len(camps) == 3 + 3
    c0 = next(c for c in camps if c.get("x_distillguard_cluster_id") == "c-0000")
    assert c0["x_distillguard_accounts"] == 14 and c0["confidence"] == 97
    assert c0["first_seen"] == "2026-01-01T05:00:00Z" and c0["last_seen"] == "2026-01-02T11:00:00Z"


def test_indicators_use_standard_patterns_where_stix_has_objects(bundle):
    patterns = {o["pattern"] for o in _of(bundle[1], "indicator")}
    assert "[ipv4-addr:value ISSUBSET '203.0.113.0/24']" in patterns
    assert ("[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = "
            "'python-httpx/0.27.0 extractor/0']") in patterns
    assert "[x-distillguard-payment-method:fingerprint = 'pf_00abababababababababab']" in patterns
    assert "[x-distillguard-prompt-template:signature = '0000000000000000']" in patterns
    assert "[x-distillguard-prompt-template:signature = '0000000000000000ff']" in patterns  # a "template" link
    assert "[ipv4-addr:value = '198.51.100.1']" in patterns  # singleton's IP: no prefix covers it
    assert "[ipv4-addr:value = '203.0.113.10']" not in patterns  # covered by the cluster's shared prefix
    # a request fingerprint that only the cluster's flagged members send (clusters.jsonl "fingerprints")
    assert "[x-distillguard-request-fingerprint:value = 'you are a grader 0. | 0.2|-|4096|1|0 | #00']" in patterns
    # values that do not single out an operator are not shared
    assert not any("OpenAI/Python" in p for p in patterns)
    assert not any("198.51.100.0/24" in p or "192.0.2.0/24" in p for p in patterns)


def test_relationships_and_sightings(bundle):
    raw = bundle[1]
    by_id = {o["id"]: o for o in raw["objects"]}
    rels = Counter((by_id[r["source_ref"]]["type"], r["relationship_type"], by_id[r["target_ref"]]["type"])
                   for r in _of(raw, "relationship"))
    assert set(rels) == {("indicator", "indicates", "campaign"), ("campaign", "uses", "attack-pattern")}
    assert rels[("campaign", "uses", "attack-pattern")] >= 2 * 6
    sightings = _of(raw, "sighting")
    assert len(sightings) == rels[("indicator", "indicates", "campaign")]
    prefix = next(o for o in _of(raw, "indicator") if o["pattern"].endswith("'203.0.113.0/24']"))
    s = next(s for s in sightings if s["sighting_of_ref"] == prefix["id"])
    assert s["count"] == 14
    ident = _of(raw, "identity")[0]
    assert ident["name"] == "Example AI" and s["where_sighted_refs"] == [ident["id"]]


def test_markings_report_and_privacy(bundle):
    raw, text = bundle[1], bundle[2]
    tlp = _of(raw, "marking-definition")[0]["id"]
    assert all(tlp in o.get("object_marking_refs", []) for o in raw["objects"] if o["type"] != "marking-definition")
    report = _of(raw, "report")[0]
    assert set(report["object_refs"]) == {o["id"] for o in raw["objects"]} - {tlp, report["id"]}
    assert "acct-" not in text  # account ids stay with the provider


def test_ids_are_stable_across_exports(scan_dir, tmp_path, bundle):
    again = json.loads(export_stix(scan_dir, tmp_path / "again.json", producer="Example AI", now=NOW).read_text())
    assert again == bundle[1]


def test_no_ips_and_quotes_in_values(scan_dir, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    lines = (d / "clusters.jsonl").read_text().replace("python-httpx/0.27.0 extractor/0", "evil'ua\\\\x")
    (d / "clusters.jsonl").write_text(lines)
    raw = json.loads(export_stix(d, tmp_path / "b.json", include_ips=False).read_text())
    patterns = [o["pattern"] for o in _of(raw, "indicator")]
    assert not any("ipv4-addr:value =" in p for p in patterns)
    assert any("ISSUBSET" in p for p in patterns)
    # the link value (evil'ua\x) is no member's plain user agent any more: a client fingerprint
    assert r"[x-distillguard-client-fingerprint:value = 'evil\'ua\\x']" in patterns


def test_bad_tlp_and_bad_folder(scan_dir, tmp_path):
    with pytest.raises(InputError, match="unknown TLP"):
        export_stix(scan_dir, tmp_path / "b.json", tlp="purple")
    with pytest.raises(InputError, match="distillguard scan"):
        export_stix(tmp_path, tmp_path / "b.json")


def test_nothing_flagged_gives_a_small_valid_bundle(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "summary.json").write_text('{"requests": 5, "accounts": 1, "time_range": [0, 10]}')
    (d / "verdicts.jsonl").write_text('{"account_id": "a", "score": 0.1, "flagged": false, "reasons": []}\n')
    raw = json.loads(export_stix(d, tmp_path / "b.json").read_text())
    stix2.parse(json.dumps(raw), allow_custom=True)
    assert Counter(o["type"] for o in raw["objects"]) == Counter(
        {"attack-pattern": 2, "marking-definition": 1, "identity": 1, "report": 1})


def test_malformed_values_are_skipped_and_counted(tmp_path, scan_dir):
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    text = (d / "clusters.jsonl").read_text().replace("203.0.113.0/24", "not-an-ip/99")
    (d / "clusters.jsonl").write_text(text)
    raw = json.loads(export_stix(d, tmp_path / "b.json").read_text())
    assert not any("not-an-ip" in o.get("pattern", "") for o in raw["objects"])
    assert "1 malformed value(s) left out" in _of(raw, "report")[0]["description"]


def test_a_missing_source_file_is_warned_about(tmp_path, scan_dir):
    """Without evidence.jsonl the bundle loses the accounts' own indicators: the export says so."""
    warned: list[str] = []
    export_stix(scan_dir, tmp_path / "whole.json", warn=warned.append)
    assert warned == []
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    (d / "evidence.jsonl").unlink()
    export_stix(d, tmp_path / "b.json", warn=warned.append)
    assert len(warned) == 1 and "evidence.jsonl is missing" in warned[0] and "payment fingerprints" in warned[0]
    (d / "clusters.jsonl").unlink()
    warned.clear()
    export_stix(d, tmp_path / "b.json", warn=warned.append)
    assert sorted(w.split(" is missing")[0].rsplit("/", 1)[1] for w in warned) == ["clusters.jsonl", "evidence.jsonl"]
