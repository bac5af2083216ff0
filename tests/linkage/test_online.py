"""The online linker: exact pairs for small groups, sparse pairs for large ones, same unions."""

import random

from distillguard.linkage.graph import DENSE_MAX, EDGE_MIN_WEIGHT, KEY_TYPES, key_weight
from distillguard.linkage.online import ASSUME_SHARED_BY, SPARSE_LINKS, OnlineLinker, _kinds, _total, sparse_partners


class AllPairsLinker:
    """The definition the online linker approximates for large groups: every two holders of a value
    are a pair (what OnlineLinker did before it went sparse above DENSE_MAX)."""

    def __init__(self):
        self.holders, self.pairs, self.keys, self.parent = {}, {}, {}, {}

    def find(self, a):
        while self.parent.get(a, a) != a:
            a = self.parent[a]
        return a

    def add_key(self, account, key_type, value):
        kv = (key_type, value)
        if kv in self.keys.setdefault(account, set()):
            return
        self.keys[account].add(kv)
        kt = KEY_TYPES[key_type]
        holders = self.holders.setdefault(kv, [])
        if len(holders) > kt.cap:
            return
        holders.append(account)
        m = len(holders)
        w = key_weight(key_type, max(m, ASSUME_SHARED_BY) if kt.rarity else m)
        if w <= 0:
            return
        pairs = [(x, y) for i, x in enumerate(holders) for y in holders[i + 1:]] if m == kt.min_share else [(x, account) for x in holders[:-1]]
        for x, y in pairs:
            typed = self.pairs.setdefault((min(x, y), max(x, y)), {})
            typed[key_type] = min(kt.type_cap, typed.get(key_type, 0.0) + w)
            if _total(typed) >= EDGE_MIN_WEIGHT and ("payment_fingerprint" in typed or _kinds(typed) >= 3):
                self.parent[self.find(x)] = self.find(y)

    def components(self, accounts):
        groups = {}
        for a in accounts:
            groups.setdefault(self.find(a), set()).add(a)
        return {frozenset(g) for g in groups.values() if len(g) > 1}


def _components(lk: OnlineLinker, accounts) -> set[frozenset]:
    groups = {}
    for a in accounts:
        groups.setdefault(lk.root(a), set()).add(a)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def _feed(events, *linkers):
    for args in events:
        for lk in linkers:
            lk.add_key(*args)


def _random_keys(rnd: random.Random, n_accounts: int, n_values: int) -> list[tuple[str, str, str]]:
    types = ["payment_fingerprint", "client_ip", "ip_prefix", "template", "created_wave", "email_domain"]
    return [(f"a{rnd.randrange(n_accounts):04d}", t, f"{t}{rnd.randrange(n_values)}") for t in types for _ in range(n_accounts)]


def test_small_groups_get_exactly_the_full_pairs():
    rnd = random.Random(3)
    events = _random_keys(rnd, 400, 60)  # values held by about 7 accounts: all dense
    rnd.shuffle(events)
    lk, ref = OnlineLinker(), AllPairsLinker()
    _feed(events, lk, ref)
    assert max(len(h) for h in lk._holders.values()) <= DENSE_MAX
    assert lk._pairs == ref.pairs
    accounts = {e[0] for e in events}
    assert _components(lk, accounts) == ref.components(accounts) != set()


def test_a_large_group_costs_pairs_in_proportion_to_its_size_and_joins_the_same_accounts():
    n = 200  # a payment card shared by 200 accounts (its cap): links on its own
    lk, ref = OnlineLinker(), AllPairsLinker()
    _feed([(f"a{i:04d}", "payment_fingerprint", "card") for i in range(n)], lk, ref)
    assert len(ref.pairs) == n * (n - 1) // 2
    dense = DENSE_MAX * (DENSE_MAX - 1) // 2
    assert dense < len(lk._pairs) <= dense + (n - DENSE_MAX) * SPARSE_LINKS
    assert _components(lk, [f"a{i:04d}" for i in range(n)]) == ref.components([f"a{i:04d}" for i in range(n)])
    assert len(lk.members("a0000")) == n


def test_a_pair_made_later_carries_the_large_group_it_was_not_sampled_in():
    """x and y share a template held by 200 accounts, but y joined it late and was paired with other
    holders. When x and y then share an IP and a company domain, the pair made by the IP must count the
    template too: three kinds of evidence, as with every pair kept."""
    lk, ref = OnlineLinker(), AllPairsLinker()
    events = [(f"t{i:04d}", "template", "tpl") for i in range(199)] + [("y", "template", "tpl")]
    events += [("t0000", "client_ip", "198.51.100.7"), ("y", "client_ip", "198.51.100.7"),
               ("t0000", "email_domain", "example.org"), ("y", "email_domain", "example.org")]
    _feed(events, lk, ref)
    assert ("t0000", "y") not in {(lk._holders[("template", "tpl")][p], "y") for p in sparse_partners(199)}
    assert ref.find("t0000") == ref.find("y")  # the definition joins them
    assert lk.root("t0000") == lk.root("y")
    assert lk._pairs[("t0000", "y")] == ref.pairs[("t0000", "y")]


def test_joining_a_large_group_strengthens_pairs_already_made_through_small_ones():
    """The other order: x and y already share an IP and a domain (two kinds); y then joins the template
    that x and 199 others hold. The full set of pairs would add the template to (x, y)."""
    lk, ref = OnlineLinker(), AllPairsLinker()
    events = [("t0000", "client_ip", "198.51.100.7"), ("y", "client_ip", "198.51.100.7"),
              ("t0000", "email_domain", "example.org"), ("y", "email_domain", "example.org")]
    events += [(f"t{i:04d}", "template", "tpl") for i in range(199)] + [("y", "template", "tpl")]
    _feed(events, lk, ref)
    assert ref.find("t0000") == ref.find("y")
    assert lk.root("t0000") == lk.root("y")
    assert lk._pairs[("t0000", "y")] == ref.pairs[("t0000", "y")]


def test_sparse_partners_are_distinct_earlier_positions_and_reach_back():
    for m in (DENSE_MAX, DENSE_MAX + 1, 300, 4999):
        p = sparse_partners(m)
        assert len(p) == len(set(p)) == SPARSE_LINKS and all(0 <= x < m for x in p)
        assert m - 1 in p and min(p) < m // 4  # the latest holder, and one far back


def test_a_request_fingerprint_unions_accounts_online_only_with_one_more_trait():
    """As in batch: a fingerprint far above chance is shared by independent users of one tool's defaults
    too, so it unions accounts only together with another kind of shared trait."""
    lk = OnlineLinker()
    tool_users = [f"eval{i}" for i in range(8)]
    for a in tool_users:
        lk.add_key(a, "request_fingerprint", "fp-tool", weight_of=lambda m: 5.0)  # lift far above the cap
    assert _components(lk, tool_users) == set()
    operator = [f"op{i}" for i in range(8)]
    for a in operator:
        lk.add_key(a, "request_fingerprint", "fp-op", weight_of=lambda m: 5.0)
        lk.add_key(a, "created_wave", "wave-1")
    assert _components(lk, tool_users + operator) == {frozenset(operator)}
