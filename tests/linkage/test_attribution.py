"""attribution_groups: which flagged, unlinked accounts a request fingerprint far above chance joins."""

from __future__ import annotations

import pyarrow as pa

from distillguard.linkage.attribution import attribution_groups, consolidation_groups, cross_links, tied_pairs
from distillguard.linkage.graph import FINGERPRINT_STRONG, fingerprint_weight


def _keys(rows):
    a, v, le = zip(*rows)
    return pa.table({"account_id": list(a), "value": list(v), "log2_expected": list(le)})


def test_only_flagged_unlinked_holders_of_a_strong_fingerprint_join():
    # fp1: 6 holders expected 0.25 times (lift 2^4.6): strong; fp2: 6 holders expected 3 times: weak
    rows = [(f"a{i}", "fp1", -2.0) for i in range(6)] + [(f"b{i}", "fp2", 1.58) for i in range(6)]
    assert fingerprint_weight(6, -2.0) >= FINGERPRINT_STRONG > fingerprint_weight(6, 1.58)
    everyone = {r[0] for r in rows}
    assert attribution_groups(_keys(rows), {}, everyone) == [[f"a{i}" for i in range(6)]]
    # a holder that is not flagged stays out, and still counts towards the lift
    assert attribution_groups(_keys(rows), {}, everyone - {"a0", "a1"}) == [[f"a{i}" for i in range(2, 6)]]
    assert attribution_groups(_keys(rows), {}, {"a0"}) == []  # one flagged holder: nothing to join


def test_a_cluster_neither_grows_nor_lends_its_numbers():
    """A big cluster makes its own fingerprint look rare: the holders outside it must be far above
    chance by themselves, and the cluster's members are never attributed."""
    rows = [(f"h{i}", "fp", 3.0) for i in range(200)] + [(f"x{i}", "fp", 3.0) for i in range(5)]
    clusters = {f"h{i}": "C1" for i in range(200)}
    everyone = {r[0] for r in rows}
    assert fingerprint_weight(205, 3.0) >= FINGERPRINT_STRONG > fingerprint_weight(5, 3.0)
    assert attribution_groups(_keys(rows), clusters, everyone) == []
    # without the cluster, the same 205 holders are one strong group
    assert len(attribution_groups(_keys(rows), {}, everyone)[0]) == 205


def test_groups_are_disjoint_sorted_and_skip_missing_values():
    rows = [(f"a{i}", "fp1", -3.0) for i in range(5)] + [(f"c{i}", "fp3", -3.0) for i in range(5)]
    rows += [("n1", None, None), ("n2", None, None)]
    groups = attribution_groups(_keys(rows), {}, {r[0] for r in rows})
    assert groups == [[f"a{i}" for i in range(5)], [f"c{i}" for i in range(5)]]


def _pairs(rows):
    a, b, w = zip(*rows)
    return pa.table({"src": list(a), "dst": list(b), "total": list(w)})


def test_tied_pairs_need_two_kinds_of_evidence_and_the_weight():
    edges = pa.table({
        "src": ["a", "a", "b", "b", "c", "c", "d"],
        "dst": ["b", "b", "c", "c", "d", "d", "e"],
        "type": ["created_wave", "user_agent_params", "user_agent_params", "request_fingerprint",
                 "created_wave", "ip_prefix", "created_wave"],
        "total": [0.7, 0.7, 0.6, 0.6, 0.39, 0.39, 0.35],
    })
    # a-b: a wave and the script; b-c: two script traits, one kind; c-d: two kinds under the weight
    assert tied_pairs(edges).to_pylist() == [{"src": "a", "dst": "b", "total": 0.7}]
    assert tied_pairs(edges, pa.array(["a", "c"])).num_rows == 0  # both ends must be among the accounts


def test_groups_join_when_half_the_smaller_ones_members_are_tied():
    units = {f"a{i}": "A" for i in range(6)} | {f"b{i}": "B" for i in range(4)} | {f"c{i}": "C" for i in range(4)}
    sizes = {"A": 6, "B": 4, "C": 4}
    # B: two of its four members tied to A (many ties each); C: one member tied to A, to three of A's
    rows = [(f"a{i}", f"b{j}", 0.7) for i in range(6) for j in (0, 1)] + [(f"a{i}", "c0", 0.7) for i in range(3)]
    assert consolidation_groups(_pairs(rows), units, sizes) == [["A", "B"]]
    rows += [("b2", "c1", 0.7), ("b3", "c2", 0.7)]  # now half of C is tied to B: C joins A and B through B
    assert consolidation_groups(_pairs(rows), units, sizes) == [["A", "B", "C"]]


def test_an_account_alone_joins_its_most_tied_group_and_never_bridges_two():
    units = {f"a{i}": "A" for i in range(4)} | {f"b{i}": "B" for i in range(4)} | {"x": "x", "y": "y", "z": "z"}
    sizes = {"A": 4, "B": 4, "x": 1, "y": 1, "z": 1}
    rows = [("a0", "x", 0.7), ("a1", "x", 0.7), ("b0", "x", 0.9)]  # x: 1.4 to A, 0.9 to B
    rows += [("y", "z", 0.9)]  # two accounts alone tied to each other: no group to join
    assert consolidation_groups(_pairs(rows), units, sizes) == [["A", "x"]]


def test_a_fingerprint_only_flagged_accounts_hold_joins_its_unlinked_holders_whatever_its_lift():
    # fp: 8 holders expected 8 times (lift 1: weight 0), every one flagged
    rows = [(f"a{i}", "fp", 3.0) for i in range(8)]
    everyone = {r[0] for r in rows}
    assert fingerprint_weight(8, 3.0) < FINGERPRINT_STRONG
    assert attribution_groups(_keys(rows), {}, everyone) == []  # without the flags: the lift alone
    assert attribution_groups(_keys(rows), {}, everyone, flagged=everyone) == [sorted(everyone)]
    # one holder not flagged: innocent settings are held by people too
    rows_p = rows + [("p0", "fp", 3.0)]
    assert attribution_groups(_keys(rows_p), {}, everyone, flagged=everyone) == []
    # most holders in a cluster: its stragglers (and whoever sends its settings) stay apart
    rows_c = rows + [(f"h{i}", "fp", 3.0) for i in range(9)]
    clusters = {f"h{i}": "C1" for i in range(9)}
    flagged = everyone | set(clusters)
    assert attribution_groups(_keys(rows_c), clusters, everyone, flagged=flagged) == []
    assert attribution_groups(_keys(rows_c[:-1]), {f"h{i}": "C1" for i in range(8)}, everyone, flagged=flagged) == [sorted(everyone)]


def test_cross_links_classify_the_evidence_between_units_only():
    edges = pa.table({
        "src": ["a0", "a0", "a0", "a1", "a0"],
        "dst": ["b0", "b0", "b0", "b1", "a1"],
        "type": ["created_wave", "ip_prefix", "user_agent_params", "request_fingerprint", "payment_fingerprint"],
    })
    units = {"a0": "A", "a1": "A", "b0": "B", "b1": "B"}
    got = sorted((r["src"], r["dst"], r["script"]) for r in cross_links(edges, units).to_pylist())
    assert got == [("a0", "b0", False), ("a0", "b0", True), ("a1", "b1", True)]  # a0-a1 is inside A


def test_groups_join_when_most_members_have_both_kinds_of_link_if_not_on_one_pair():
    units = {f"a{i}": "A" for i in range(8)} | {f"b{i}": "B" for i in range(4)}
    sizes = {"A": 8, "B": 4}
    ident = [(f"a{i}", f"b{i}", False) for i in range(3)]  # b0-b2: a creation wave with A
    script = [(f"a{i + 4}", f"b{i + 1}", True) for i in range(3)]  # b1-b3: A's user agent
    none = _pairs([("a0", "b0", 0.0)]).slice(0, 0)  # no pair is tied: no pair has both
    links = pa.table({k: list(v) for k, v in zip(("src", "dst", "script"), zip(*(ident + script)))})
    assert consolidation_groups(none, units, sizes) == []
    assert consolidation_groups(none, units, sizes, links=links) == [["A", "B"]]  # 3 of 4 each way
    fewer = links.slice(1)  # only two of B's members with an identity link: not enough
    assert consolidation_groups(none, units, sizes, links=fewer) == []


def test_exclusive_fingerprints_leave_out_what_anyone_unflagged_sends():
    from distillguard.linkage.attribution import exclusive_fingerprints

    keys = pa.table({"account_id": ["a", "b", "c", "d", "e", "f", "g", "p", "q", "r"],
                     "value": ["script", "script", "script", "common", "common", "solo", "x", "common", "y", "y"],
                     "log2_expected": [0.0] * 10})
    members = {"C1": ["a", "b", "c", "d", "e", "f"], "C2": ["q", "r"], "C3": ["g", "p"]}
    flagged = {"a", "b", "c", "d", "e", "f", "g", "q", "r"}  # p (in C3, and a holder of "common") is not
    out = exclusive_fingerprints(keys, members, flagged)
    # "common" is sent by an unflagged account, "solo" by one member only; C3 is not all flagged
    assert out == {"C1": [{"value": "script", "accounts": 3}], "C2": [{"value": "y", "accounts": 2}]}
    # flag p too: "common" is now the flagged accounts' own, and C3 takes part
    out = exclusive_fingerprints(keys, members, flagged | {"p"})
    assert out["C1"] == [{"value": "script", "accounts": 3}, {"value": "common", "accounts": 2}]
    assert out["C3"] == []
