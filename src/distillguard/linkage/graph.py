"""The account graph: typed, weighted links between accounts that share infrastructure or content.

Accounts get *keys* (``type``, ``value``): payment fingerprint, client IP, IP prefix (/24, /48), user
agent plus first parameter signature, creation wave (hour), rare email domain, and the
template signature of an account dominated by one prompt template. Two accounts sharing a key value
get a link whose weight falls with the number of accounts sharing it (a campus NAT or a cloud range
links little; a value shared by more than ``cap`` accounts links nothing). A pair's weight is the sum
over key types, each type capped; pairs at or above :data:`EDGE_MIN_WEIGHT` are edges, and clusters
are Louvain communities of the edge graph. No link ever flags on its own: a cluster is scored on the
merged behaviour of its members (:mod:`distillguard.detect.scan`).

>>> round(key_weight("payment_fingerprint", 3), 2), round(key_weight("client_ip", 300), 2)
(1.0, 0.0)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import duckdb
import networkx as nx
import pyarrow as pa

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
        # weight from the fingerprint's lift, not from how many share it (see request_fingerprint_sql)
        KeyType("request_fingerprint", 0.25, 5000, 1.2, rarity=False, min_share=5),
    )
}
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
LOUVAIN_RESOLUTION = 0.1
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

    parts = [
        f"SELECT DISTINCT account_id, 'client_ip' AS type, client_ip AS value, NULL::DOUBLE AS log2_expected FROM {events} WHERE client_ip IS NOT NULL",
        f"SELECT DISTINCT account_id, 'ip_prefix', {_IP_PREFIX_SQL}, NULL::DOUBLE FROM {events} WHERE client_ip IS NOT NULL",
        f"""SELECT account_id, 'user_agent_params', coalesce(arg_min(user_agent, (ts, request_id)), '-') || ' | ' ||
               arg_min({psig_sql()}, (ts, request_id)), NULL::DOUBLE FROM {events} GROUP BY account_id""",
        f"SELECT account_id, 'template', printf('%016x', pre), NULL::DOUBLE FROM {template_accounts}",
        request_fingerprint_sql(events),
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


def edges_sql(keys: str) -> str:
    """SQL of weighted pair edges (src < dst) from a keys relation, per key type, with evidence counts."""
    def weight(k: KeyType) -> str:
        if k.name == "request_fingerprint":  # base per doubling of the lift over chance
            return f"greatest(0.0, {k.base} * (log2(m) - log2_expected))"
        return f"{k.base} / log2(1 + m)" if k.rarity else f"{k.base}"

    cases = " ".join(f"WHEN type = '{k.name}' AND m >= {k.min_share} AND m <= {k.cap} THEN {weight(k)}" for k in KEY_TYPES.values())
    caps = " ".join(f"WHEN type = '{k.name}' THEN {k.type_cap}" for k in KEY_TYPES.values())
    script = ", ".join(f"'{t}'" for t in sorted(SCRIPT_KEYS))
    return f"""
WITH kv AS (SELECT DISTINCT account_id, type, value, log2_expected FROM {keys} WHERE value IS NOT NULL),
sized AS (SELECT *, count(*) OVER (PARTITION BY type, value) AS m FROM kv),
w AS (SELECT *, CASE {cases} ELSE 0 END AS w FROM sized),
pairs AS (
  SELECT a.account_id AS src, b.account_id AS dst, a.type, sum(a.w) AS w, count(*) AS shared,
         arg_max(a.value, a.w) AS example
  FROM w a JOIN w b ON a.type = b.type AND a.value = b.value AND a.account_id < b.account_id
  WHERE a.w > 0
  GROUP BY ALL
),
typed AS (SELECT src, dst, type, least(w, CASE {caps} ELSE 1 END) AS w, shared, example FROM pairs)
-- the script-similarity types (user agent + parameters, template, request fingerprint) all describe
-- the client's script: together they count as their strongest one, not their sum
SELECT src, dst, type, w, shared, example,
       sum(CASE WHEN type IN ({script}) THEN 0 ELSE w END) OVER p
       + max(CASE WHEN type IN ({script}) THEN w ELSE 0 END) OVER p AS total
FROM typed
WINDOW p AS (PARTITION BY src, dst)
"""


def clusters_from_edges(edges: pa.Table, *, seed: int = 0, min_weight: float = EDGE_MIN_WEIGHT) -> dict[str, str]:
    """Map account → cluster id (communities of two or more accounts); ids are stable hashes."""
    g = nx.Graph()
    t = edges.to_pydict()
    # Deterministic input (DuckDB returns edges in any order) and weights rounded to 1e-3: Louvain's
    # local moves can otherwise oscillate for a long time between near-equal float gains.
    kept = sorted({(s, d): round(float(tot), 3) for s, d, tot in zip(t["src"], t["dst"], t["total"]) if tot >= min_weight}.items())
    for (s, d), w in kept:
        g.add_edge(s, d, weight=w)
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
            cid = "C" + hashlib.sha1(min(grp).encode()).hexdigest()[:10]
            for a in grp:
                out[a] = cid
    return out


def compute_edges(con: duckdb.DuckDBPyConnection, *, events: str, accounts: str | None, template_accounts: str) -> pa.Table:
    con.execute(f"CREATE OR REPLACE TEMP TABLE _dg_keys AS {account_keys_sql(events, accounts, template_accounts)}")
    return con.sql(edges_sql("_dg_keys")).to_arrow_table()
