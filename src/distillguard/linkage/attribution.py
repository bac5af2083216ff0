"""Attribution: which flagged accounts that nothing links are one operator.

The link graph (:mod:`distillguard.linkage.graph`) needs two kinds of evidence for an edge, because
it runs before anything is scored and a link must never be what flags an account. One kind of
evidence is left on the table by that rule: a **request fingerprint far above chance** (the same
system prompt and set of parameter signatures, shared by many more accounts than their population
frequencies explain). It is capped below an edge because independent users of one public tool (an
evaluation harness with its bundled system prompt and settings) share such fingerprints too.

Once accounts are flagged, the other kind of evidence is there: each side's own traffic looks like
extraction. So flagged accounts that nothing else links, and that share a request fingerprint far
above chance, are attributed to one operator, as an analyst correlating alerts by a shared indicator
would. Most extraction campaigns of a few to a few dozen accounts share nothing else: separate cards,
consumer e-mail, residential addresses, accounts made on different days (development seed 1001:
every such campaign's accounts were unlinked singletons).

Two limits, both because a fingerprint says "same settings", not "same operator", once its rarity is
borrowed from elsewhere:

- **Clusters are left as they are.** A 250-account campaign makes its own fingerprint look far above
  chance; an unrelated account that happens to use the same few settings would then be joined to it
  on the strength of the campaign's own numbers. (Evaluation seed 3 of the first version, which
  joined flagged clusters too: a 7-account paraphrase campaign with the settings of a 247-account
  hydra campaign was joined to it.)
- **The lift is counted among the unlinked holders only**: the fingerprint must be far above chance
  (:data:`~distillguard.linkage.graph.FINGERPRINT_STRONG`, at least the type's ``min_share``
  holders) among the accounts outside every cluster, not thanks to a cluster's members.

Attribution runs after flagging and joins only flagged accounts, so it changes who is grouped with
whom (the campaigns in ``clusters.jsonl``, the report, the STIX sightings), never who is flagged.

>>> import pyarrow as pa
>>> keys = pa.table({"account_id": ["a", "b", "c", "d", "e", "x", "y"], "value": ["fp1"] * 5 + ["fp2"] * 2,
...                  "log2_expected": [-2.0] * 5 + [-9.0] * 2})
>>> attribution_groups(keys, {}, {"a", "b", "c", "x", "y"})  # fp2: two holders, under min_share
[['a', 'b', 'c']]
>>> attribution_groups(keys, {"d": "C1", "e": "C1"}, {"a", "b", "c"})  # three unlinked holders: too few
[]
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from distillguard.linkage.graph import FINGERPRINT_STRONG, KEY_TYPES, fingerprint_weight

#: The key type attribution follows.
ATTRIBUTION_KEY = "request_fingerprint"


def attribution_groups(keys: pa.Table, clusters: dict[str, str], eligible: set[str]) -> list[list[str]]:
    """Groups of flagged, unlinked accounts to make one cluster each.

    ``keys``: the request fingerprints (``account_id``, ``value``, ``log2_expected``: one row per
    account that has one, as :func:`~distillguard.linkage.graph.request_fingerprint_sql` gives them);
    ``clusters``: account → cluster id (clustered accounts are never attributed, and do not count
    towards a fingerprint's lift); ``eligible``: the flagged accounts. Groups are sorted, in a stable
    order, and disjoint (an account has one fingerprint).
    """
    kt = KEY_TYPES[ATTRIBUTION_KEY]
    holders: dict[str, list[str]] = defaultdict(list)
    expected: dict[str, float] = {}
    for a, v, le in zip(keys["account_id"].to_pylist(), keys["value"].to_pylist(), keys["log2_expected"].to_pylist()):
        if v is None or le is None or a in clusters:
            continue
        holders[v].append(a)
        expected[v] = le
    groups = []
    for v, accs in holders.items():
        m = len(accs)
        if not kt.min_share <= m <= kt.cap or fingerprint_weight(m, expected[v]) < FINGERPRINT_STRONG - 1e-9:
            continue
        grp = sorted(a for a in accs if a in eligible)
        if len(grp) >= 2:
            groups.append(grp)
    return sorted(groups)
