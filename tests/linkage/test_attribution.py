"""attribution_groups: which flagged, unlinked accounts a request fingerprint far above chance joins."""

from __future__ import annotations

import pyarrow as pa

from distillguard.linkage.attribution import attribution_groups
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
