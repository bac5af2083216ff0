"""Incremental account linkage for the online detector: the batch link rules, one request at a time.

Keys and weights are those of :mod:`distillguard.linkage.graph`. Each key value keeps the accounts
that hold it (up to the key type's cap); when an account gains a value, every other holder's pair
weight for that key type grows (rarity is taken at that moment), and a pair whose total reaches
:data:`~distillguard.linkage.graph.EDGE_MIN_WEIGHT` is joined with union-find. Differences from the
batch graph, by design: weights are never taken back when a value later becomes common, and clusters
are connected components rather than Louvain communities.

Memory grows with the sharers of a value, not its square, as in batch (:data:`~distillguard.linkage.graph.DENSE_MAX`):
an account that joins a value already held by more than ``DENSE_MAX`` accounts is paired with
:data:`SPARSE_LINKS` of them (the latest few and a spread of earlier ones, chosen by position, so
the same log gives the same pairs), plus every account it is already paired with through a smaller
group that holds the value too. A pair created later through another key starts with the weight of
every large group the two accounts share. Unions are transitive, so a value that links on its own (a
payment card, a request fingerprint far above chance) joins the same accounts as the full set of
pairs would; a 5,000-account fingerprint costs 60,000 pairs instead of 12.5 million.

>>> lk = OnlineLinker()
>>> lk.add_key("a", "payment_fingerprint", "pf1"); lk.add_key("b", "payment_fingerprint", "pf1")
>>> lk.cluster_of("a") == lk.cluster_of("b") != None
True
"""

from __future__ import annotations

from collections.abc import Callable

from distillguard.linkage.graph import (DENSE_MAX, EDGE_MIN_WEIGHT, FINGERPRINT_STRONG, KEY_TYPES, SCRIPT_KEYS, SPARSE_CYCLES,
                                       cluster_id, key_weight)


ASSUME_SHARED_BY = 8
#: Earlier holders a new sharer of a large value is paired with (as many neighbours as a member of a
#: large group gets in batch, two per cycle): half the latest ones, half spread over the rest.
SPARSE_LINKS = 2 * SPARSE_CYCLES


def sparse_partners(m: int, links: int = SPARSE_LINKS) -> list[int]:
    """Positions (in join order) of the earlier holders that holder number ``m`` (0-based) is paired
    with when the group is large: the ``links // 2`` latest, then positions spread evenly over the
    rest with an offset that moves with ``m`` (so that early holders do not collect every link).

    >>> sparse_partners(200, 4)
    [199, 198, 97, 196]
    >>> len(set(sparse_partners(5000))) == SPARSE_LINKS and max(sparse_partners(5000)) < 5000
    True
    """
    recent = links // 2
    out = list(range(m - 1, m - 1 - recent, -1))
    rest = m - recent  # positions 0 .. rest-1 are not among the latest
    spread = links - recent
    step = rest / spread
    seen = set(out)
    for i in range(spread):
        p = int((i * step + (m * 7919) % max(1, int(step))) % rest)
        while p in seen:
            p = (p + 1) % rest
        seen.add(p)
        out.append(p)
    return out


def _total(typed: dict[str, float]) -> float:
    """A pair's weight as in batch: script-similarity types count as their strongest one."""
    total = strongest = 0.0
    for t, w in typed.items():  # a plain loop: this runs for every pair a new key touches
        if t in SCRIPT_KEYS:
            if w > strongest:
                strongest = w
        else:
            total += w
    return total + strongest


def _add_weight(typed: dict[str, float], kt, w: float, lifted: bool) -> None:
    """Add one shared value's weight ``w`` to a pair's typed weights: a lift-weighted type keeps its
    latest lift, any other type sums, up to its cap."""
    if lifted:
        typed[kt.name] = max(typed.get(kt.name, 0.0), w)
    else:
        typed[kt.name] = min(kt.type_cap, typed.get(kt.name, 0.0) + w)


def _kinds(typed: dict[str, float]) -> int:
    """Independent kinds of evidence in a pair's typed weights (script similarity counts once)."""
    return len(typed.keys() - SCRIPT_KEYS) + (1 if typed.keys() & SCRIPT_KEYS else 0)


class OnlineLinker:
    def __init__(self, *, on_union: Callable[[str, str], None] | None = None):
        self._holders: dict[tuple[str, str], list[str]] = {}
        self._pairs: dict[tuple[str, str], dict[str, float]] = {}
        self._parent: dict[str, str] = {}
        self._members: dict[str, list[str]] = {}
        self._keys: dict[str, set[tuple[str, str]]] = {}
        self._cid: dict[str, str] = {}
        self._lift: dict[tuple[str, str], float] = {}  # latest weight of each value weighed by weight_of
        self._in_large: dict[str, set[tuple[str, str]]] = {}  # the large values each account holds
        self.on_union = on_union

    # -- union-find -------------------------------------------------------------------------
    def _find(self, a: str) -> str:
        p = self._parent.get(a, a)
        if p == a:
            return a
        root = self._find(p)
        self._parent[a] = root
        return root

    def _union(self, a: str, b: str) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        ma, mb = self._members.get(ra, [ra]), self._members.get(rb, [rb])
        if len(ma) < len(mb):
            ra, rb, ma, mb = rb, ra, mb, ma
        self._parent[rb] = ra
        self._members[ra] = ma + mb
        self._members.pop(rb, None)
        self._cid.pop(ra, None)
        self._cid.pop(rb, None)
        if self.on_union is not None:
            self.on_union(ra, rb)

    def root(self, a: str) -> str:
        return self._find(a)

    def members(self, a: str) -> list[str]:
        r = self._find(a)
        return self._members.get(r, [r])

    def cluster_of(self, a: str) -> str | None:
        """Cluster id of ``a`` (as in batch: a hash of the smallest member id), or None when alone."""
        r = self._find(a)
        cid = self._cid.get(r)
        if cid is None:
            m = self._members.get(r, [r])
            if len(m) < 2:
                return None
            cid = self._cid[r] = cluster_id(m)
        return cid

    # -- keys -------------------------------------------------------------------------------
    def has_key(self, account: str, key_type: str, value: str) -> bool:
        return (key_type, value) in self._keys.get(account, ())

    def add_key(self, account: str, key_type: str, value: str | None, *,
                weight_of: Callable[[int], float] | None = None) -> None:
        """Give ``account`` the key; ``weight_of(m)`` (m: holders including it) overrides the key type's
        weight (request fingerprints weigh by their lift, which the caller tracks)."""
        if value is None:
            return
        mine = self._keys.setdefault(account, set())
        kv = (key_type, value)
        if kv in mine:
            return
        mine.add(kv)
        kt = KEY_TYPES[key_type]
        holders = self._holders.setdefault(kv, [])
        if len(holders) > kt.cap:
            return  # too common to link anything
        holders.append(account)
        m = len(holders)
        if weight_of is not None:
            w = min(kt.type_cap, weight_of(m)) if kt.min_share <= m <= kt.cap else 0.0
            self._lift[kv] = w
        else:
            w = self._weight(kt, m)
        if m > DENSE_MAX:
            if m == DENSE_MAX + 1:  # the group turns large: its holders learn it (see _shared_large)
                for x in holders:
                    self._in_large.setdefault(x, set()).add(kv)
            else:
                self._in_large.setdefault(account, set()).add(kv)
        if w <= 0:
            return
        if m > DENSE_MAX:
            others = self._sparse_others(account, kv, holders)
            pairs = [(x, account) for x in others]
        elif m == kt.min_share:
            pairs = [(x, y) for i, x in enumerate(holders) for y in holders[i + 1 :]]
        else:
            pairs = [(x, account) for x in holders[:-1]]
        lifted = weight_of is not None
        for x, y in pairs:
            key = (x, y) if x < y else (y, x)
            typed = self._pairs.get(key)
            if typed is None:
                typed = self._pairs[key] = self._shared_large(x, y, kv)
            _add_weight(typed, kt, w, lifted)
            if _total(typed) >= EDGE_MIN_WEIGHT and (
                "payment_fingerprint" in typed or _kinds(typed) >= 3
                or (typed.get("request_fingerprint", 0.0) >= FINGERPRINT_STRONG and _kinds(typed) >= 2)
            ):
                # Without Louvain to split them later, online unions need corroboration: a shared
                # payment method, a request fingerprint far above chance plus one more trait, or three
                # independent kinds of evidence (a template plus a user agent alone would chain
                # unrelated companies' batch jobs together).
                self._union(x, y)

    @staticmethod
    def _weight(kt, m: int) -> float:
        # Online links cannot be taken back when a value later turns out to be common (an office
        # range, a cloud region), so rarity-weighted keys are weighed as if at least
        # ASSUME_SHARED_BY accounts held them: IP evidence alone then never joins two accounts.
        return key_weight(kt.name, max(m, ASSUME_SHARED_BY) if kt.rarity else m)

    def _sparse_others(self, account: str, kv: tuple[str, str], holders: list[str]) -> list[str]:
        """The earlier holders of a large value that a new holder is paired with: SPARSE_LINKS of them
        by position, then those it already shares a small group with (which the full set of pairs
        would have strengthened), in a fixed order."""
        m = len(holders) - 1  # earlier holders
        out = [holders[p] for p in sparse_partners(m)]
        extra = set()
        for kv2 in self._keys[account]:
            h2 = self._holders.get(kv2)
            if kv2 == kv or h2 is None or len(h2) > DENSE_MAX:
                continue
            for x in h2:
                if x != account and kv in self._keys[x]:
                    extra.add(x)
        extra.difference_update(out)
        return out + sorted(extra)

    def _shared_large(self, x: str, y: str, kv: tuple[str, str]) -> dict[str, float]:
        """A new pair's typed weights from the large values both accounts hold besides ``kv``: the full
        set of pairs would have carried them, the sparse one may not have."""
        lx, ly = self._in_large.get(x), self._in_large.get(y)
        typed: dict[str, float] = {}
        if not lx or not ly:
            return typed
        for kv2 in sorted(lx & ly):
            if kv2 == kv:
                continue
            kt = KEY_TYPES[kv2[0]]
            lifted = kv2 in self._lift
            w = self._lift[kv2] if lifted else self._weight(kt, len(self._holders[kv2]))
            if w > 0:
                _add_weight(typed, kt, w, lifted)
        return typed

    def links_of(self, account: str) -> list[dict]:
        """The typed links of ``account`` to the other members of its cluster."""
        out = []
        for other in self.members(account):
            if other == account:
                continue
            key = (account, other) if account < other else (other, account)
            for t, w in self._pairs.get(key, {}).items():
                out.append({"account_id": other, "type": t, "weight": round(w, 4)})
        return out
