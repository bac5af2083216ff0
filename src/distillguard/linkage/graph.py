"""The account graph: typed, weighted links between accounts that share infrastructure or content.

Accounts get *keys* (``type``, ``value``): payment fingerprint, client IP, IP prefix (/24, /48), user
agent plus first parameter signature, creation wave (hour), rare email domain, the
template signature of an account dominated by one prompt template, and the MinHash bands of its
five-minute activity windows (synchronised activity: :mod:`distillguard.linkage.sync`). Two accounts sharing a key value
get a link whose weight falls with the number of accounts sharing it (a campus NAT or a cloud range
links little; a value shared by more than ``cap`` accounts links nothing). A pair's weight is the sum
over key types, each type capped; pairs at or above :data:`EDGE_MIN_WEIGHT` are edges, and clusters
are Louvain communities of the edge graph. A value shared by more than :data:`DENSE_MAX` accounts links
each of them to a few others of the group (a sparse expander), not every pair, so that linkage grows
with the number of sharers rather than its square. No link ever flags on its own: a cluster is scored on the
merged behaviour of its members (:mod:`distillguard.detect.scan`).

>>> round(key_weight("payment_fingerprint", 3), 2), round(key_weight("client_ip", 300), 2)
(1.0, 0.0)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

FREEMAIL = frozenset(
    "gmail.com googlemail.com yahoo.com outlook.com hotmail.com live.com icloud.com proton.me protonmail.com "
    "qq.com 163.com 126.com yandex.ru mail.ru gmx.de web.de aol.com".split()
)


@dataclass(frozen=True)
class KeyType:
    name: str
    base: float  # weight of one shared value between two accounts (before rarity)
    cap: int  # values shared by more accounts than this link nothing
    type_cap: float  # most one pair can gain from this key type
    rarity: bool = True  # divide by log2(1 + accounts sharing the value)
    min_share: int = 2  # values shared by fewer accounts link nothing (waves need a crowd)


KEY_TYPES = {
    k.name: k
    for k in (
        KeyType("payment_fingerprint", 1.0, 200, 1.0, rarity=False),
        KeyType("client_ip", 0.7, 60, 0.9),
        KeyType("ip_prefix", 0.35, 60, 0.5),
        KeyType("user_agent_params", 0.35, 150, 0.35, rarity=False),
        KeyType("template", 0.7, 300, 0.7, rarity=False),
        KeyType("created_wave", 0.35, 300, 0.35, rarity=False, min_share=5),
        KeyType("email_domain", 0.3, 30, 0.3),
        # weight from the fingerprint's lift, not from how many share it (see request_fingerprint_sql);
        # capped below an edge: independent users of one public tool (an evaluation harness with its
        # bundled system prompt and settings) share a fingerprint far above chance too, so it takes one
        # more shared trait (a user agent, a creation wave, an address) to link two accounts
        KeyType("request_fingerprint", 0.25, 5000, 0.8, rarity=False, min_share=5),
        # accounts active in the same five-minute windows (linkage/sync.py): strong, but it takes one
        # more shared trait (a creation wave, a user agent, an IP) to make an edge
        KeyType("sync_timing", 0.6, 200, 0.6, rarity=False),
    )
}
#: A request fingerprint at this weight (the type's cap: a lift of 2^3.2, nine times chance, or more) is
#: the script evidence that attribution follows between flagged accounts (:mod:`distillguard.linkage.attribution`)
#: and that online unions accept with one more kind of evidence (:mod:`distillguard.linkage.online`).
FINGERPRINT_STRONG = KEY_TYPES["request_fingerprint"].type_cap
#: Accounts need this many requests before their request fingerprint is stable enough to compare.
FINGERPRINT_MIN_REQUESTS = 20
#: Accounts with more distinct parameter signatures than this (sweeps) get no fingerprint.
FINGERPRINT_MAX_SIGNATURES = 32
EDGE_MIN_WEIGHT = 1.0
#: Key types that all describe the client's script; a pair's total counts only the strongest of them
#: (a template plus a user agent plus common settings would otherwise chain every company's batch jobs).
SCRIPT_KEYS = frozenset({"user_agent_params", "template", "request_fingerprint"})
#: Louvain resolution: well below 1 favours larger communities, so that one operator's groups of accounts
#: (a payment card each, joined by shared request fingerprints and creation waves) stay one cluster.
#: Two communities merge when the weight between them exceeds resolution x (their degrees' product) /
#: (twice the component's weight): at 0.1, a hydra campaign's three card cliques of about 50 accounts,
#: joined by a few dozen weaker links (a shared proxy IP, a creation wave), stayed three clusters (dev
#: seed 1005, ARI 0.855); at 0.02 they are one (0.955), and on seven other development seeds no
#: cluster changed. Still well above 0: two teams of ten joined by one shared IP stay apart (the
#: online linker's connected components would join them).
LOUVAIN_RESOLUTION = 0.02
#: Key values shared by at most this many accounts link every pair of them (as they always did); larger
#: groups link each member to a few others only (:data:`SPARSE_CYCLES`). A full group of m sharers is
#: m(m-1)/2 pairs: 8,128 at 128, but 12.5 million for the 5,000 accounts a request fingerprint may be
#: shared by; the full self-join took a 10-million-request scan past 15 GB. Below this size every pair
#: keeps its own exact link, so small groups (most of them: a card, an IP, a creation wave) are
#: unchanged; on a 1-million-request log only a handful of fingerprint and user-agent groups are
#: larger, and the clusters came out the same (``benchmarks/linkage_scale.py``).
DENSE_MAX = 128
#: A group of more than :data:`DENSE_MAX` sharers is linked along this many Hamiltonian cycles, each
#: through the group in the order of a differently salted hash of the account id: every member gets
#: at most 2 x SPARSE_CYCLES neighbours (12), and the union of random cycles is an expander (no
#: sparse cut), so Louvain keeps the group one community where a ring of near neighbours would be
#: cut into arcs.
SPARSE_CYCLES = 6
#: Creation waves: accounts created in the same hour, when at least ``min_share`` were (a crowd).
WAVE_S = 3600


def fingerprint_weight(shared_by: int, log2_expected: float) -> float:
    """Link weight of a request fingerprint held by ``shared_by`` accounts: base per doubling of the lift
    over chance (the SQL twin is in :func:`edges_sql`).

    >>> fingerprint_weight(64, 2.0)
    1.0
    """
    return max(0.0, KEY_TYPES["request_fingerprint"].base * (math.log2(shared_by) - log2_expected))


def key_weight(key_type: str, shared_by: int) -> float:
    """Weight of one shared value of ``key_type`` held by ``shared_by`` accounts."""
    k = KEY_TYPES[key_type]
    if shared_by < k.min_share or shared_by > k.cap:
        return 0.0
    return k.base / math.log2(1 + shared_by) if k.rarity else k.base


def ip_prefix(ip: str | None) -> str | None:
    """The /24 of an IPv4 address or the /48 of an IPv6 address, as text.

    >>> ip_prefix("203.0.113.77"), ip_prefix("2001:db8:1:2::1")
    ('203.0.113.0/24', '2001:db8:1::/48')
    """
    if not ip:
        return None
    if ":" in ip:
        parts = ip.split(":")
        return ":".join(parts[:3]) + "::/48"
    parts = ip.split(".")
    if len(parts) != 4:
        return None
    return ".".join(parts[:3]) + ".0/24"


def created_wave(created_at: float | None) -> str | None:
    return None if created_at is None else str(int(created_at // WAVE_S) * WAVE_S)


def template_key(prefix_hash: int) -> str:
    return f"{prefix_hash:016x}"


def ua_params_key(user_agent: str | None, psig: str) -> str:
    """User agent and parameter signature of an account's first request, readable (shared as an indicator)."""
    return f"{user_agent or '-'} | {psig}"


_IP_PREFIX_SQL = (
    "CASE WHEN client_ip IS NULL THEN NULL WHEN contains(client_ip, ':') "
    "THEN array_to_string(string_split(client_ip, ':')[1:3], ':') || '::/48' "
    "WHEN len(string_split(client_ip, '.')) = 4 THEN array_to_string(string_split(client_ip, '.')[1:3], '.') || '.0/24' END"
)


def request_fingerprint_sql(events: str) -> str:
    """SQL of (account_id, 'request_fingerprint', value, log2_expected) for accounts with a stable request shape.

    An account's request fingerprint is its usual system prompt plus the exact set of parameter
    signatures (temperature, top_p, max_tokens, n, logprobs) it ever sends: the settings of
    the script behind it. Many accounts run by one operator share it. How many accounts share a
    value says little by itself (a 200-account campaign makes its own fingerprint common, and 600
    people with default settings share theirs), so the link weight comes from the *lift*: the count
    of accounts sharing the fingerprint against the count expected if the system prompt and every
    signature in the set were chosen independently with their population frequencies
    (``log2_expected``). Default settings have a lift near 1 and link nothing; 200 accounts sharing
    the same four (temperature, max_tokens) pairs and a system prompt are hundreds of times more
    than chance.
    """
    from distillguard.features.derive import SYSTEM_PROMPT_CHARS, fsig_sql

    # fsig is the parameter signature without `stream`: clients stream some requests and not others,
    # and two signatures that differ only there are one setting, not two independent choices
    return f"""
WITH acc AS (
  SELECT account_id, mode(sp) AS sp, list_sort(list_distinct(list(psig))) AS ps
  FROM (SELECT account_id, lower(left(coalesce(system_prompt, ''), {SYSTEM_PROMPT_CHARS})) AS sp, {fsig_sql()} AS psig FROM {events})
  GROUP BY account_id
  HAVING count(*) >= {FINGERPRINT_MIN_REQUESTS} AND count(DISTINCT psig) <= {FINGERPRINT_MAX_SIGNATURES}
),
tot AS (SELECT count(*)::DOUBLE AS n FROM acc),
sp_p AS (SELECT sp, log2(count(*) / any_value(tot.n)) AS lp FROM acc, tot GROUP BY sp),
ps_p AS (SELECT psig, log2(count(*) / any_value(tot.n)) AS lp FROM (SELECT unnest(ps) AS psig FROM acc), tot GROUP BY psig),
acc_ps AS (SELECT account_id, sum(ps_p.lp) AS lp FROM (SELECT account_id, unnest(ps) AS psig FROM acc) JOIN ps_p USING (psig) GROUP BY account_id)
SELECT acc.account_id, 'request_fingerprint' AS type,
       printf('%s | %s | #%s', CASE WHEN acc.sp = '' THEN '(no system prompt)' ELSE left(acc.sp, 40) END,
              left(array_to_string(acc.ps, ' '), 120), left(md5(acc.sp || chr(1) || array_to_string(acc.ps, chr(1))), 8)) AS value,
       log2((SELECT n FROM tot)) + sp_p.lp + acc_ps.lp AS log2_expected
FROM acc JOIN sp_p USING (sp) JOIN acc_ps USING (account_id)
"""


def account_keys_sql(events: str, accounts: str | None, template_accounts: str) -> str:
    """SQL of (account_id, type, value, log2_expected) keys. ``template_accounts`` has (account_id, pre) of
    templated accounts. ``log2_expected`` is only set for request fingerprints."""
    from distillguard.features.derive import psig_sql
    from distillguard.linkage.sync import sync_keys_sql

    parts = [
        f"SELECT DISTINCT account_id, 'client_ip' AS type, client_ip AS value, NULL::DOUBLE AS log2_expected FROM {events} WHERE client_ip IS NOT NULL",
        f"SELECT DISTINCT account_id, 'ip_prefix', {_IP_PREFIX_SQL}, NULL::DOUBLE FROM {events} WHERE client_ip IS NOT NULL",
        f"""SELECT account_id, 'user_agent_params', coalesce(arg_min(user_agent, (ts, request_id)), '-') || ' | ' ||
               arg_min({psig_sql()}, (ts, request_id)), NULL::DOUBLE FROM {events} GROUP BY account_id""",
        f"SELECT account_id, 'template', printf('%016x', pre), NULL::DOUBLE FROM {template_accounts}",
        request_fingerprint_sql(events),
        sync_keys_sql(events),
    ]
    if accounts:
        # only accounts that appear in the traffic (the account file may list many more)
        seen = f"(SELECT * FROM {accounts} SEMI JOIN (SELECT DISTINCT account_id FROM {events}) USING (account_id))"
        parts += [
            f"SELECT account_id, 'payment_fingerprint', payment_fingerprint, NULL::DOUBLE FROM {seen} WHERE payment_fingerprint IS NOT NULL",
            f"SELECT account_id, 'created_wave', CAST(CAST(floor(created_at / {WAVE_S}) * {WAVE_S} AS BIGINT) AS VARCHAR), NULL::DOUBLE FROM {seen} WHERE created_at IS NOT NULL",
            f"SELECT account_id, 'email_domain', lower(email_domain), NULL::DOUBLE FROM {seen} WHERE email_domain IS NOT NULL "
            f"AND lower(email_domain) NOT IN ({', '.join(repr(x) for x in sorted(FREEMAIL))})",
        ]
    return "\nUNION ALL\n".join(f"({p})" for p in parts)


def edges_sql(keys: str, *, dense_max: int | None = None, sparse_cycles: int | None = None) -> str:
    """SQL of weighted pair edges (src < dst) from a keys relation, per key type, with evidence counts.

    Columns: ``src, dst, type, w, shared, example, total``. A value shared by at most
    :data:`DENSE_MAX` accounts links every pair of them; a larger group links each member only to its
    neighbours on :data:`SPARSE_CYCLES` pseudo-random cycles through the group (see
    :data:`DENSE_MAX`), so the work grows with the number of sharers, not its square. Every
    *candidate* pair (from either) then gets its exact weight: all the key values it shares, of every
    type and group size, are joined back, so ``w`` and ``total`` are what a full self-join would give.
    """
    dense_max = DENSE_MAX if dense_max is None else dense_max
    sparse_cycles = SPARSE_CYCLES if sparse_cycles is None else sparse_cycles

    def weight(k: KeyType) -> str:
        if k.name == "request_fingerprint":  # base per doubling of the lift over chance
            return f"greatest(0.0, {k.base} * (log2(m) - log2_expected))"
        return f"{k.base} / log2(1 + m)" if k.rarity else f"{k.base}"

    cases = " ".join(f"WHEN type = '{k.name}' AND m >= {k.min_share} AND m <= {k.cap} THEN {weight(k)}" for k in KEY_TYPES.values())
    kinds = ", ".join(f"('{k.name}', {i}, {k.type_cap}, {k.name in SCRIPT_KEYS})" for i, k in enumerate(KEY_TYPES.values()))
    return f"""
WITH kt(type, tid, type_cap, script) AS (VALUES {kinds}),
kv AS MATERIALIZED (SELECT DISTINCT account_id, type, value, log2_expected FROM {keys} WHERE value IS NOT NULL),
sized AS (SELECT *, count(*) OVER (PARTITION BY type, value) AS m FROM kv),
-- accounts and key values as integers (account numbers in account_id order, so src < dst holds for
-- both): the joins and aggregations below then hold no strings; names come back at the end
acc AS MATERIALIZED (SELECT account_id, row_number() OVER (ORDER BY account_id) AS aid FROM (SELECT DISTINCT account_id FROM kv)),
grp AS MATERIALIZED (SELECT type, value, row_number() OVER (ORDER BY type, value) AS gid FROM (SELECT DISTINCT type, value FROM kv)),
w AS MATERIALIZED (
  SELECT aid, gid, tid, m, CASE {cases} ELSE 0 END AS w,
         -- groups of more than {dense_max} sharers are linked sparsely (ring below): each member's place on
         -- each cycle is a salted hash of one string (hash(a, b, ...) only combines per-argument hashes,
         -- and orders salted that way keep most neighbours adjacent: the cycles would overlap)
         CASE WHEN m > {dense_max} THEN hash(concat_ws(chr(1), type, value, account_id)) END AS h
  FROM sized JOIN kt USING (type) JOIN acc USING (account_id) JOIN grp USING (type, value)
),
-- each member of a big group links to its successor on {sparse_cycles} cycles through the group, each in
-- the order of a differently salted hash: an expander, not a ring lattice, so Louvain keeps it whole
ring AS (
  SELECT aid, coalesce(lead(aid) OVER c, first_value(aid) OVER c) AS nxt
  FROM (SELECT aid, gid, h FROM w WHERE w > 0 AND m > {dense_max}), range({sparse_cycles}) AS r(s)
  WINDOW c AS (PARTITION BY gid, s ORDER BY hash(concat_ws(chr(1), s, h)), aid)
),
cand AS (
  SELECT a.aid AS src, b.aid AS dst
  FROM w a JOIN w b ON a.gid = b.gid AND a.aid < b.aid
  WHERE a.w > 0 AND a.m <= {dense_max} AND b.m <= {dense_max}
  UNION
  SELECT least(aid, nxt), greatest(aid, nxt) FROM ring WHERE aid <> nxt
),
-- every key value each candidate pair shares, whatever its group's size
pairs AS (
  -- the example is the heaviest shared value, ties going to the first in (type, value) order: without the
  -- tie-break DuckDB returns any of them, and reports and STIX exports would differ from run to run
  SELECT c.src, c.dst, a.tid, sum(a.w) AS w, count(*) AS shared, arg_max(a.gid, (a.w, -a.gid)) AS gid
  FROM cand c
  JOIN (SELECT aid, gid, tid, w FROM w WHERE w > 0) a ON a.aid = c.src
  JOIN w b ON b.aid = c.dst AND b.gid = a.gid
  GROUP BY ALL
),
typed AS MATERIALIZED (SELECT src, dst, tid, least(w, type_cap) AS w, shared, gid, script FROM pairs JOIN kt USING (tid)),
-- the script-similarity types (user agent + parameters, template, request fingerprint) all describe
-- the client's script: together they count as their strongest one, not their sum. (A GROUP BY joined
-- back, not a window over (src, dst), whose partitions do not spill.)
tot AS (
  SELECT src, dst, sum(CASE WHEN script THEN 0 ELSE w END) + max(CASE WHEN script THEN w ELSE 0 END) AS total
  FROM typed GROUP BY src, dst
)
SELECT s.account_id AS src, d.account_id AS dst, kt.type, t.w, t.shared, g.value AS example, tot.total
FROM typed t JOIN tot USING (src, dst) JOIN kt USING (tid) JOIN grp g USING (gid)
JOIN acc s ON s.aid = t.src JOIN acc d ON d.aid = t.dst
"""


def cluster_id(accounts) -> str:
    """A cluster's id: a hash of its smallest member's id, so that the same members get the same id in
    batch, online and after attribution.

    >>> cluster_id(["b", "a"]) == cluster_id(["a"])
    True
    """
    return "C" + hashlib.sha1(min(accounts).encode()).hexdigest()[:10]


def clusters_from_edges(edges: pa.Table, *, seed: int = 0, min_weight: float = EDGE_MIN_WEIGHT) -> dict[str, str]:
    """Map account → cluster id (communities of two or more accounts); ids are stable hashes."""
    import networkx as nx  # here, not at the top: it costs a quarter of a second of every command's start

    g = nx.Graph()
    # one row per pair at or above the minimum weight (edge rows are per key type, each carrying the
    # pair's total), filtered in Arrow so that only the kept pairs ever become Python objects
    t = edges.select(["src", "dst", "total"])
    t = t.filter(pc.greater_equal(t["total"], min_weight)).group_by(["src", "dst"]).aggregate([("total", "max")])
    # Deterministic input (DuckDB returns edges in any order) and weights rounded to 1e-3: Louvain's
    # local moves can otherwise oscillate for a long time between near-equal float gains.
    kept = sorted(zip(t["src"].to_pylist(), t["dst"].to_pylist(), (round(float(x), 3) for x in t["total_max"].to_pylist())))
    del t
    g.add_weighted_edges_from(kept)
    del kept
    out: dict[str, str] = {}
    if g.number_of_nodes() == 0:
        return out
    for comp in nx.connected_components(g):
        sub = g.subgraph(comp)
        if len(comp) <= 3:
            groups = [comp]
        else:
            groups = nx.community.louvain_communities(sub, weight="weight", seed=seed, resolution=LOUVAIN_RESOLUTION, threshold=1e-4)
        for grp in groups:
            if len(grp) < 2:
                continue
            cid = cluster_id(grp)
            for a in grp:
                out[a] = cid
    return out


def compute_edges(con: duckdb.DuckDBPyConnection, *, events: str, accounts: str | None, template_accounts: str) -> pa.Table:
    con.execute(f"CREATE OR REPLACE TEMP TABLE _dg_keys AS {account_keys_sql(events, accounts, template_accounts)}")
    return con.sql(edges_sql("_dg_keys")).to_arrow_table()
