"""Attribution: which flagged accounts and flagged clusters are one operator.

The link graph (:mod:`distillguard.linkage.graph`) needs two kinds of evidence for an edge, because
it runs before anything is scored and a link must never be what flags an account. One kind of
evidence is left on the table by that rule: a **request fingerprint far above chance** (the same
system prompt and set of parameter signatures, shared by many more accounts than their population
frequencies explain). It is capped below an edge because independent users of one public tool (an
evaluation harness with its bundled system prompt and settings) share such fingerprints too.

Once accounts are flagged, the other kind of evidence is there: each side's own traffic looks like
extraction. Two flagged accounts that run one script far above chance are attributed to one operator,
as an analyst correlating alerts by a shared indicator would. Attribution runs after flagging and
only joins accounts that are flagged already (unlinked, or in a flagged cluster, whole), so it
changes who is grouped with whom (the campaigns in ``clusters.jsonl``, the report, the STIX
sightings), never who is flagged. Most extraction campaigns spread over a few to a few dozen
accounts share nothing else: separate cards, consumer e-mail, residential addresses, accounts made
on different days (development seed 1001: every such campaign's accounts were unlinked singletons).

>>> import pyarrow as pa
>>> e = pa.table({"src": ["a", "b", "c"], "dst": ["b", "c", "d"], "type": ["request_fingerprint"] * 3,
...               "w": [0.8, 0.8, 0.5]})
>>> attribution_groups(e, {}, {"a", "b", "c", "d"})
[['a', 'b', 'c']]
>>> attribution_groups(e, {"b": "C1", "x": "C1"}, {"a", "b", "c", "x"})  # a cluster joins whole
[['C1', 'a', 'c']]
"""

from __future__ import annotations

import networkx as nx
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.linkage.graph import FINGERPRINT_STRONG

#: The link type attribution follows.
ATTRIBUTION_LINK = "request_fingerprint"


def strong_fingerprint_pairs(edges: pa.Table) -> pa.Table:
    """The (src, dst) pairs of ``edges`` that share a request fingerprint at :data:`FINGERPRINT_STRONG`."""
    if edges.num_rows == 0:
        return pa.table({"src": pa.array([], pa.string()), "dst": pa.array([], pa.string())})
    mask = pc.and_(pc.equal(edges["type"], ATTRIBUTION_LINK), pc.greater_equal(edges["w"], FINGERPRINT_STRONG - 1e-9))
    return edges.filter(mask).select(["src", "dst"])


def attribution_groups(edges: pa.Table, clusters: dict[str, str], eligible: set[str]) -> list[list[str]]:
    """Groups of clusters and unclustered accounts to merge into one cluster each.

    ``edges``: the link graph's typed pair rows (``src``, ``dst``, ``type``, ``w``); ``clusters``:
    account → cluster id; ``eligible``: the accounts that may be attributed (flagged, and either
    unclustered or in a flagged cluster). Each group lists cluster ids and account ids (a cluster joins
    whole), sorted; only groups of two or more parts are returned, in a stable order.
    """
    pairs = strong_fingerprint_pairs(edges)
    if pairs.num_rows == 0 or not eligible:
        return []
    keep = pa.array(sorted(eligible), pa.string())
    pairs = pairs.filter(pc.and_(pc.is_in(pairs["src"], keep), pc.is_in(pairs["dst"], keep)))
    g = nx.Graph()
    for a, b in zip(pairs["src"].to_pylist(), pairs["dst"].to_pylist()):
        na, nb = clusters.get(a, a), clusters.get(b, b)
        if na != nb:
            g.add_edge(na, nb)
    return sorted(sorted(c) for c in nx.connected_components(g) if len(c) > 1)
