"""attribution_groups: which flagged parts a strong request fingerprint joins."""

from __future__ import annotations

import pyarrow as pa

from distillguard.linkage.attribution import attribution_groups
from distillguard.linkage.graph import FINGERPRINT_STRONG


def _edges(rows):
    src, dst, typ, w = zip(*rows)
    return pa.table({"src": list(src), "dst": list(dst), "type": list(typ), "w": list(w)})


def test_only_eligible_accounts_and_strong_fingerprints_join():
    s = FINGERPRINT_STRONG
    e = _edges([
        ("a", "b", "request_fingerprint", s),
        ("b", "c", "request_fingerprint", s),   # c is not eligible (not flagged): the chain stops at b
        ("c", "d", "request_fingerprint", s),
        ("d", "e", "payment_fingerprint", 1.0),  # another link type: not attribution's (the graph has it)
        ("e", "f", "request_fingerprint", s - 0.01),  # under the strong weight
        ("g", "h", "request_fingerprint", s),
    ])
    assert attribution_groups(e, {}, {"a", "b", "d", "e", "f", "g", "h"}) == [["a", "b"], ["g", "h"]]


def test_a_cluster_joins_whole_and_links_inside_one_cluster_join_nothing():
    s = FINGERPRINT_STRONG
    e = _edges([("a", "b", "request_fingerprint", s), ("x", "y", "request_fingerprint", s),
                ("y", "z", "request_fingerprint", s)])
    clusters = {"a": "C1", "b": "C1", "y": "C2", "q": "C2"}
    # a-b is inside C1; x and z join C2 (with q, which holds no fingerprint)
    assert attribution_groups(e, clusters, {"a", "b", "x", "y", "z", "q"}) == [["C2", "x", "z"]]
    assert attribution_groups(e, clusters, set()) == []
    assert attribution_groups(e.slice(0, 0), clusters, {"a"}) == []
