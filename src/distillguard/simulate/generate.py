"""The generators: accounts and requests for every archetype, on real prompts and real traces.

Timing model
    *Human* archetypes draw session starts from a local-time activity profile (:data:`HUMAN_PROFILE`,
    weekdays slightly above weekends) in the account's timezone; turns inside a conversation follow
    after a log-normal think time (median ``think_s``) plus reading time proportional to the answer.
    *Service* archetypes (products, resellers, agents, 24/7 campaigns) get arrivals by time-rescaling
    the real Azure LLM inference 2023 inter-arrival gaps (normalised to mean 1, so their burstiness is
    kept) through the account's hourly intensity (diurnal, office-hours or flat).
Token lengths
    Prompt tokens are ~chars/4 of the logged messages (+4 per message); completion tokens are the
    real answer's length where the source has one, otherwise drawn from the Azure conv trace (chat),
    Azure code trace (coding) or Mooncake (long context agents), with a real stand-in answer of about
    that length. Long contexts (coding, RAG) are logged capped at a few thousand characters while
    ``usage.prompt_tokens`` keeps the trace's value.
Prompt reuse
    A few thousand human prompts serve hundreds of thousands of benign requests, so reuse is handled
    on purpose: ~55% of first turns are perturbed the way people retype questions (greeting prefixes,
    suffixes, case, one typo), most requests are follow-up turns, and batch / product traffic wraps
    real items in templates. The realism report measures the resulting exact and near-duplicate rates.
Models
    ``orion-2-mini``, ``orion-2``, ``orion-2-think`` (reasoning) and ``orion-3``, released inside the
    window (see :attr:`Ctx.release_ts`); benign accounts adopt it gradually, eval harnesses within hours.
"""

from __future__ import annotations

import bisect
import math
import random
import re
from dataclasses import dataclass, field

import numpy as np

from distillguard.simulate import texts as T
from distillguard.simulate.archetypes import BENIGN, EXTRACTION, Archetype
from distillguard.simulate.sources import _CODE_RE, Sources
from distillguard.simulate.table import CHAT, COMPLETIONS, Table, rep

MINI, STD, THINK, NEW, INSTRUCT = "orion-2-mini", "orion-2", "orion-2-think", "orion-3", "orion-2-instruct"
DAY = 86400.0

#: Relative request activity by local hour for people (0h..23h).
HUMAN_PROFILE = np.array([1.2, 0.7, 0.4, 0.25, 0.2, 0.25, 0.5, 1.2, 2.5, 3.6, 4.2, 4.4, 3.8, 4.0, 4.4, 4.5,
                          4.2, 3.6, 3.0, 3.0, 3.2, 3.1, 2.6, 1.9])
OFFICE_PROFILE = np.array([0.05, 0.03, 0.03, 0.03, 0.03, 0.05, 0.2, 0.8, 3.0, 4.5, 4.8, 4.6, 3.0, 4.2, 4.8, 4.7,
                           4.3, 3.2, 1.2, 0.5, 0.3, 0.2, 0.1, 0.08])
FLAT_PROFILE = np.ones(24)
HUMAN_WEEK = np.array([1.0, 1.05, 1.05, 1.0, 0.95, 0.7, 0.65])
OFFICE_WEEK = np.array([1.0, 1.0, 1.0, 1.0, 0.9, 0.2, 0.15])
FLAT_WEEK = np.ones(7)

_WORD_RE = re.compile(r"[a-z0-9]+")


class FastRng:
    """numpy ``Generator`` for array draws, Python ``random.Random`` for scalar draws (~30x faster).

    Both are seeded from the numpy generator, so a seed still fixes every draw.

    >>> r = FastRng(np.random.default_rng(0)); isinstance(r.integers(3), int), r.random(2).shape
    (True, (2,))
    """

    def __init__(self, g: np.random.Generator):
        self.g = g
        self.py = random.Random(int(g.integers(0, 2**62)))

    def integers(self, low, high=None, size=None, **kw):
        if size is None and not kw:
            if high is None:
                return int(self.py.random() * low)
            return low + int(self.py.random() * (high - low))
        return self.g.integers(low, high, size, **kw)

    def random(self, size=None):
        return self.py.random() if size is None else self.g.random(size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self.py.uniform(low, high) if size is None else self.g.uniform(low, high, size)

    def standard_normal(self, size=None):
        return self.py.gauss(0.0, 1.0) if size is None else self.g.standard_normal(size)

    def geometric(self, p, size=None):
        if size is None:
            return int(math.log(1.0 - self.py.random()) / math.log(1.0 - p)) + 1 if p < 1 else 1
        return self.g.geometric(p, size)

    def exponential(self, scale=1.0, size=None):
        return self.py.expovariate(1.0 / scale) if size is None else self.g.exponential(scale, size)

    def __getattr__(self, name):  # choice, poisson, permutation, lognormal, ...: numpy
        return getattr(self.g, name)


@dataclass
class Accounts:
    """Accounts built so far (ground truth and hidden attributes kept beside the public fields)."""

    rows: list[dict] = field(default_factory=list)
    tz: list[float] = field(default_factory=list)
    ips: list[list[str]] = field(default_factory=list)
    ua: list[str] = field(default_factory=list)

    def add(self, *, archetype: str, label: str, campaign_id=None, group_id=None, created_at: float,
            payment: str, email_domain: str, country: str, tz: float, tier: str, verified: bool,
            ips: list[str], ua: str) -> int:
        self.rows.append({"archetype": archetype, "label": label, "campaign_id": campaign_id, "group_id": group_id,
                          "created_at": created_at, "payment_fingerprint": payment, "email_domain": email_domain,
                          "country": country, "tier": tier, "verified": verified})
        self.tz.append(tz)
        self.ips.append(ips)
        self.ua.append(ua)
        return len(self.rows) - 1


@dataclass
class Ctx:
    """Everything a generator needs: the random source, the window, the data and the outputs."""

    rng: FastRng
    src: Sources
    t0: float
    days: int
    release_ts: float
    acc: Accounts = field(default_factory=Accounts)
    tab: Table = field(default_factory=Table)

    @property
    def span(self) -> float:
        return self.days * DAY

    # ---------------------------------------------------------------- small random helpers
    def hexid(self, k: int = 16) -> str:
        return "".join("0123456789abcdef"[i] for i in self.rng.integers(0, 16, k))

    def payment(self) -> str:
        return "pm_" + self.hexid(20)

    def choice_w(self, items: list[tuple], size=None):
        w = np.array([x[1] for x in items], dtype=float)
        i = self.rng.choice(len(items), size=size, p=w / w.sum())
        return items[i][0] if size is None else [items[k][0] for k in i]

    def country(self) -> tuple[str, float]:
        i = self.rng.choice(len(T.COUNTRIES), p=_COUNTRY_P)
        c, _, tz = T.COUNTRIES[i]
        return c, tz

    def residential_ip(self) -> str:
        r = self.rng
        if r.random() < 0.18:
            return f"2a02:{r.integers(0x1000, 0xffff):x}:{r.integers(0, 0xffff):x}:{r.integers(0, 0xffff):x}::{r.integers(1, 0xffff):x}"
        return f"{r.choice(_RESI_FIRST)}.{r.integers(0, 256)}.{r.integers(0, 256)}.{r.integers(1, 255)}"

    def cloud_ip(self) -> str:
        r = self.rng
        return f"{r.choice(_CLOUD_FIRST)}.{r.integers(0, 256)}.{r.integers(0, 256)}.{r.integers(1, 255)}"

    def created_before(self, lo_days: float, hi_days: float) -> float:
        return self.t0 - self.rng.uniform(lo_days, hi_days) * DAY

    def lognormal_rate(self, a: Archetype, size: int) -> np.ndarray:
        med, sigma = a.per_day
        return med * np.exp(sigma * self.rng.standard_normal(size))

    # ---------------------------------------------------------------- time
    def intensity(self, profile: np.ndarray, week: np.ndarray, tz: float, start: float = None, end: float = None):
        """Hourly intensity over the window for a local-time profile shifted to UTC."""
        hours = np.arange(self.days * 24)
        local = (hours + tz) % 24
        local_day = ((hours + tz) // 24 + 0).astype(int) % 7  # t0 is a Monday
        w = profile[local.astype(int)] * week[local_day]
        if start is not None or end is not None:
            t = self.t0 + hours * 3600.0
            lo = self.t0 if start is None else start
            hi = self.t0 + self.span if end is None else end
            w = w * ((t + 3600 > lo) & (t < hi))
        return w

    def trace_arrivals(self, n: int, weights: np.ndarray, gaps: np.ndarray | None = None) -> np.ndarray:
        """n arrival times: real trace gaps (burstiness kept) time-rescaled through hourly ``weights``."""
        if n <= 0 or weights.sum() <= 0:
            return np.zeros(0)
        gaps = self.src.conv_gaps if gaps is None else gaps
        start = self.rng.integers(len(gaps))
        g = gaps[(start + np.arange(n + 1)) % len(gaps)]
        u = np.cumsum(g)[:-1] + g[0] * (self.rng.random() - 1)
        u = np.clip(u / g.sum(), 0, 1) * weights.sum()
        lam = np.concatenate([[0.0], np.cumsum(weights)])
        grid = np.arange(len(lam)) * 3600.0
        return self.t0 + np.interp(u, lam, grid)

    def local_times(self, n: int, tz: np.ndarray, profile=HUMAN_PROFILE, week=HUMAN_WEEK) -> np.ndarray:
        """n independent times at local hours drawn from ``profile`` (vectorised over accounts)."""
        r = self.rng
        dayw = np.array([week[d % 7] for d in range(self.days)])
        day = r.choice(self.days, size=n, p=dayw / dayw.sum())
        hour = r.choice(24, size=n, p=profile / profile.sum())
        t = day * DAY + (hour - tz) * 3600.0 + r.random(n) * 3600.0
        return self.t0 + np.mod(t, self.span)

    # ---------------------------------------------------------------- content
    def standin(self, chars: float, coding: bool = False) -> str:
        """A real model answer of about ``chars`` characters (at most :data:`MAX_ANSWER_CHARS`)."""
        lens, texts = _answer_index(self.src, coding)
        i = bisect.bisect_left(lens, min(chars, MAX_ANSWER_CHARS)) + self.rng.integers(-25, 26)
        i = min(max(i, 0), len(texts) - 1)
        return texts[i][:MAX_ANSWER_CHARS]

    def chat_tokens(self, kind: str = "conv") -> tuple[int, int]:
        tok = _token_lists(self.src)[kind]
        row = tok[self.rng.integers(len(tok))]
        return row[0], max(1, row[1])

    def perturb(self, text: str, p: float) -> str:
        """Retype a question the way people do (prefix/suffix, case, one typo), with probability p."""
        r = self.rng
        if r.random() >= p:
            return text
        pre = T.PREFIXES[r.integers(len(T.PREFIXES))]
        suf = T.SUFFIXES[r.integers(len(T.SUFFIXES))]
        if r.random() < 0.4:
            ctx_s = T.CONTEXTS[r.integers(len(T.CONTEXTS))]
            pre = f"{ctx_s} {pre}" if r.random() < 0.6 else pre
            suf = f"{suf} {ctx_s}" if not pre.startswith(ctx_s) else suf
        t = text
        u = r.random()
        if u < 0.25 and len(t) > 1:
            t = t[0].lower() + t[1:]
        elif u < 0.35:
            t = t.rstrip("?.! ")
        if r.random() < 0.5:
            words = t.split(" ")
            k = int(r.integers(len(words)))
            w = words[k]
            if len(w) > 3:
                m = int(r.integers(1, len(w) - 1))
                words[k] = w[:m - 1] + w[m] + w[m - 1] + w[m + 1:]
                t = " ".join(words)
        return f"{pre}{t}{suf}"

    def human_prompt(self, coding: bool = False) -> tuple[str, int]:
        s = self.src
        if coding and s.human_coding.any() and self.rng.random() < 0.85:
            pool = _coding_idx(s)
            i = pool[self.rng.integers(len(pool))]
        else:
            i = int(self.rng.integers(len(s.human)))
        return s.human[i], i

    def new_model_share(self, ts: np.ndarray, cap: float = 0.35, tau_days: float = 2.5) -> np.ndarray:
        d = np.clip((ts - self.release_ts) / DAY, 0, None)
        return np.where(ts > self.release_ts, cap * (1 - np.exp(-d / tau_days)), 0.0)

    def models_for(self, ts: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Per-row model: the account's usual one, with gradual adoption of the new model."""
        adopt = self.rng.random(len(ts)) < self.new_model_share(ts)
        out = base.astype(object).copy()
        out[adopt] = NEW
        return out


_COUNTRY_P = np.array([c[1] for c in T.COUNTRIES]) / sum(c[1] for c in T.COUNTRIES)
_RESI_FIRST = [24, 47, 67, 68, 71, 73, 76, 98, 99, 108, 174, 2, 5, 31, 37, 46, 78, 79, 80, 81, 82, 83, 84, 85, 86,
               87, 88, 89, 90, 91, 92, 93, 94, 95, 109, 112, 114, 115, 116, 117, 118, 121, 122, 123, 124, 125, 171,
               175, 176, 177, 178, 179, 180, 181, 182, 183, 186, 187, 188, 189, 190, 191, 200, 201]
_CLOUD_FIRST = [3, 13, 18, 20, 34, 35, 40, 44, 52, 54, 104, 130, 138, 146, 157, 159, 167]
_CODING_CACHE: dict[int, np.ndarray] = {}
_ANSWER_CACHE: dict[tuple, tuple[list, list]] = {}
#: Logged stand-in answers are capped (log size); ``usage`` keeps the sampled token count.
MAX_ANSWER_CHARS = 1200


_TOKEN_CACHE: dict[int, dict] = {}


def _token_lists(s: Sources) -> dict:
    k = id(s)
    if k not in _TOKEN_CACHE:
        _TOKEN_CACHE[k] = {"conv": s.conv_tokens.tolist(), "code": s.code_tokens.tolist(), "long": s.long_tokens.tolist()}
    return _TOKEN_CACHE[k]


def _answer_index(s: Sources, coding: bool) -> tuple[list, list]:
    k = (id(s), coding)
    if k not in _ANSWER_CACHE:
        pool = s.standin_code if coding else s.standin_general
        pool = sorted(pool, key=len)
        _ANSWER_CACHE[k] = ([len(x) for x in pool], pool)
    return _ANSWER_CACHE[k]


def _coding_idx(s: Sources) -> np.ndarray:
    k = id(s)
    if k not in _CODING_CACHE:
        _CODING_CACHE[k] = np.flatnonzero(s.human_coding).tolist()
    return _CODING_CACHE[k]


def msg_tokens(messages) -> int:
    if isinstance(messages, str):
        return max(1, len(messages) // 4)
    if isinstance(messages, list) and messages and isinstance(messages[0], str):
        return sum(max(1, len(m) // 4) for m in messages)
    n = 0
    for m in messages:
        c = m["content"]
        n += 4 + (len(c) >> 2 if c.__class__ is str else 40)
    return n


def near_key(text: str) -> str:
    """Normalised key for near-duplicate detection: lowercase long words, first 10.

    >>> near_key("Hey, What is the CAPITAL of France?? thanks") == near_key("what is the capital of france")
    True
    """
    words = [w for w in _WORD_RE.findall(text[:300].lower()) if len(w) > 3 and w not in _STOP]
    return " ".join(words[:10])


_STOP = {"thanks", "please", "hello", "question", "help", "quick", "thank", "need", "simple", "terms", "brief",
         "step", "explain", "asap", "honest", "answer", "school", "project", "asked"}


# ====================================================================== account factories
def make_benign_account(ctx: Ctx, archetype: str, *, group_id=None, country=None, tz=None, payment=None,
                        email_domain=None, ips=None, ua=None, created_at=None, tier=None) -> int:
    r = ctx.rng
    if country is None:
        country, tz = ctx.country()
    kind_cloud = archetype in ("product", "reseller", "batch_pipeline", "agent_framework")
    if ips is None:
        if kind_cloud:
            ips = [ctx.cloud_ip() for _ in range(int(r.integers(1, 4)))]
        elif r.random() < BENIGN["individual"].params["cgnat_share"] and archetype == "individual":
            ips = [_CGNAT[int(i)] for i in r.integers(0, len(_CGNAT), 2)]
        elif r.random() < BENIGN["individual"].params["mobile_share"] / 0.9:
            base = f"{r.choice(_RESI_FIRST)}.{r.integers(0, 256)}"  # mobile / dynamic: many addresses of one ISP
            ips = [f"{base}.{r.integers(0, 256)}.{r.integers(1, 255)}" for _ in range(int(r.integers(4, 16)))]
        else:
            ips = [ctx.residential_ip() for _ in range(int(r.integers(1, 4)))]
    if ua is None:
        if archetype == "coding_assistant":
            ua = T.CODING_UAS[int(r.integers(len(T.CODING_UAS)))]
        elif archetype == "agent_framework":
            ua = T.AGENT_UAS[int(r.integers(len(T.AGENT_UAS)))]
        else:
            ua = ctx.choice_w(T.USER_AGENTS)
    age = r.uniform(2, 900) if archetype != "reseller" else r.uniform(60, 900)
    return ctx.acc.add(
        archetype=archetype, label="benign", group_id=group_id,
        created_at=created_at if created_at is not None else ctx.t0 - age * DAY,
        payment=payment or ctx.payment(),
        email_domain=email_domain or ctx.choice_w(T.CONSUMER_DOMAINS),
        country=country, tz=tz, tier=tier or _tier(r, archetype), verified=bool(r.random() < 0.8),
        ips=ips, ua=ua)


def _tier(r, archetype: str) -> str:
    heavy = archetype in ("product", "reseller", "batch_pipeline", "eval_harness", "agent_framework")
    return f"tier-{int(r.choice([1, 2, 3, 4, 5], p=[0.1, 0.2, 0.3, 0.25, 0.15] if heavy else [0.45, 0.3, 0.15, 0.07, 0.03]))}"


_CGNAT = [f"100.{64 + i % 64}.{(i * 37) % 256}.{(i * 91) % 254 + 1}" for i in range(40)] + \
         [f"172.{56 + i % 8}.{(i * 53) % 256}.{(i * 29) % 254 + 1}" for i in range(20)]


def account_rows(ctx: Ctx, acct: np.ndarray) -> dict:
    """Per-row IP (account's first IP preferred) and UA."""
    r = ctx.rng
    ips = ctx.acc.ips
    u = r.random(len(acct))
    ip = [ips[a][0] if (uu < 0.7 or len(ips[a]) == 1) else ips[a][int(uu * 1000) % len(ips[a])]
          for a, uu in zip(acct.tolist(), u.tolist())]
    ua = [ctx.acc.ua[a] for a in acct.tolist()]
    return {"ip": ip, "ua": ua}


def _acct_style(ctx: Ctx, accts: np.ndarray, a: Archetype, think_share=0.1) -> dict:
    r = ctx.rng
    m = len(accts)
    base = r.choice([MINI, STD, THINK], size=m, p=[0.55 - think_share / 2, 0.45 - think_share / 2, think_share])
    temp = r.choice([np.nan, np.nan, np.nan, 0.7, 1.0, 0.2, 0.0], size=m)
    maxt = r.choice([-1, -1, -1, 512, 1024, 2048, 4096], size=m)
    stream = r.random(m) < a.stream
    return {"base": dict(zip(accts.tolist(), base)), "temp": dict(zip(accts.tolist(), temp)),
            "maxt": dict(zip(accts.tolist(), maxt)), "stream": dict(zip(accts.tolist(), stream))}


def _emit_chat(ctx: Ctx, rows: dict, style: dict | None = None, **fixed) -> None:
    """Emit accumulated chat rows (lists) with per-account style where a column is not given."""
    n = len(rows["ts"])
    if n == 0:
        return
    ts = np.asarray(rows["ts"], dtype=float)
    acct = np.asarray(rows["acct"], dtype=np.int32)
    cols = dict(rows)
    cols["ts"], cols["acct"] = ts, acct
    if style is not None:
        al = acct.tolist()
        if "model" not in cols:
            cols["model"] = ctx.models_for(ts, np.array([style["base"][a] for a in al], dtype=object))
        if "temperature" not in cols:
            cols["temperature"] = np.array([style["temp"][a] for a in al], dtype=float)
        if "max_tokens" not in cols:
            cols["max_tokens"] = np.array([style["maxt"][a] for a in al], dtype=np.int64)
        if "stream" not in cols:
            flip = ctx.rng.random(n) < 0.08
            cols["stream"] = np.array([style["stream"][a] for a in al], dtype=bool) ^ flip
        if "effort" not in cols:
            m = cols["model"]
            eff = np.full(n, None, dtype=object)
            think = np.array([x == THINK for x in m], dtype=bool)
            eff[think & (ctx.rng.random(n) < 0.6)] = "medium"
            cols["effort"] = eff
    if "ip" not in cols or "ua" not in cols:
        ar = account_rows(ctx, acct)
        cols.setdefault("ip", ar["ip"])
        cols.setdefault("ua", ar["ua"])
    if "max_tokens" in cols and "ctok" in cols:
        mt = np.asarray(cols["max_tokens"], dtype=np.int64)
        ct = np.asarray(cols["ctok"], dtype=np.int64)
        cols["ctok"] = np.where(mt > 0, np.minimum(ct, mt), ct)
    cols.update(fixed)
    ctx.tab.add(n, **cols)


def _new_rows() -> dict:
    return {"ts": [], "acct": [], "messages": [], "answer": [], "ptok": [], "ctok": []}


def _push(rows: dict, ts: float, acct: int, messages, answer, ptok: int, ctok: int, **extra) -> None:
    rows["ts"].append(ts)
    rows["acct"].append(acct)
    rows["messages"].append(messages)
    rows["answer"].append(answer)
    rows["ptok"].append(ptok)
    rows["ctok"].append(ctok)
    for k, v in extra.items():
        rows.setdefault(k, []).append(v)


# ====================================================================== benign generators
def gen_chat_users(ctx: Ctx, accts: np.ndarray, a: Archetype, *, homework: dict | None = None,
                   coding: bool = False) -> None:
    """Individuals, company staff and students: bursty sessions of multi-turn conversations."""
    if len(accts) == 0:
        return
    r, s = ctx.rng, ctx.src
    p = BENIGN["individual"].params | a.params
    rate = ctx.lognormal_rate(a, len(accts))
    mean_turns = 1.0 / p.get("turns_geom_p", 0.45)
    n_conv = r.poisson(rate * ctx.days * p.get("active_day_prob", 0.45) / mean_turns + 0.3)
    n_sess = np.maximum(1, np.ceil(n_conv / r.uniform(1.0, 3.0, len(accts)))).astype(int)
    n_sess[n_conv == 0] = 0
    sess_acct = np.repeat(accts, n_sess)
    tz = np.array([ctx.acc.tz[x] for x in sess_acct.tolist()], dtype=float)
    sess_start = ctx.local_times(len(sess_acct), tz)
    sess_off = np.cumsum(n_sess) - n_sess
    conv_owner = np.repeat(np.arange(len(accts)), n_conv)
    conv_sess = sess_off[conv_owner] + np.floor(r.random(len(conv_owner)) * n_sess[conv_owner]).astype(int)
    conv_start = sess_start[conv_sess] + r.random(len(conv_owner)) * 1500.0
    style = _acct_style(ctx, accts, a)
    # a quarter of SDK users send a generic system prompt (SDK examples do)
    sys_of = {int(x): T.GENERIC_SYSTEMS[int(r.integers(len(T.GENERIC_SYSTEMS)))]
              for x in accts.tolist() if r.random() < 0.25}
    rows = _new_rows()
    follow = T.CODING_FOLLOW_UPS if coding else T.FOLLOW_UPS
    geo = p.get("turns_geom_p", 0.45)
    hh = p.get("hh_dialogue_share", 0.3) if s.dialogues else 0.0
    perturb_p = p.get("perturb", 0.85)
    for ci, t in zip(conv_owner.tolist(), conv_start.tolist()):
        acct = int(accts[ci])
        turns: list[tuple[str, str, int]] = []
        if not coding and r.random() < hh:
            d = s.dialogues[int(r.integers(len(s.dialogues)))]
            k = min(len(d), 1 + int(r.geometric(geo)) - 1 or 1)
            for j, (h, ans) in enumerate(d[:k]):
                turns.append((ctx.perturb(h, perturb_p) if j == 0 else h, ans, max(1, len(ans) // 4)))
        else:
            hw = homework.get(acct) if homework else None
            if hw and r.random() < BENIGN["campus"].params["homework_share"]:
                first = hw[int(r.integers(len(hw)))]
                is_code = False
                is_code = coding
            else:
                first, hi = ctx.human_prompt(coding)
                is_code = coding or bool(s.human_coding[hi])
            if r.random() < 0.02:
                first = first + " Think step by step."
            k = min(int(r.geometric(geo)), 8)
            for j in range(k):
                u = ctx.perturb(first, perturb_p) if j == 0 else ctx.perturb(follow[int(r.integers(len(follow)))], 0.5)
                _, ct = ctx.chat_tokens("code" if coding else "conv")
                ct = int(ct * (0.6 if j else 1.0)) + 5
                turns.append((u, ctx.standin(ct * 4, is_code), ct))
        sysp = sys_of.get(acct)
        history: list[dict] = [{"role": "system", "content": sysp}] if sysp else []
        for u, ans, ct in turns:
            msgs = history + [{"role": "user", "content": u}]
            _push(rows, t, acct, msgs, ans, msg_tokens(msgs), ct)
            history = (msgs[:1] + msgs[1:][-5:] if sysp else msgs[-5:]) + [{"role": "assistant", "content": ans}]
            t += p.get("think_s", 40.0) * float(np.exp(0.8 * r.standard_normal())) + len(ans) / 30.0 + 2.0
    _emit_chat(ctx, rows, style)


def gen_products(ctx: Ctx, accts: np.ndarray, a: Archetype) -> None:
    """Products: system prompt, end_user ids, diurnal trace-shaped load, optional RAG context."""
    r, s = ctx.rng, ctx.src
    p = a.params
    rate = ctx.lognormal_rate(a, len(accts))
    style = _acct_style(ctx, accts, a, think_share=0.03)
    rows = _new_rows()
    rows["end_user"] = []
    for acct, rt in zip(accts.tolist(), rate.tolist()):
        sysp, topic = T.PRODUCT_SYSTEM_PROMPTS[int(r.integers(len(T.PRODUCT_SYSTEM_PROMPTS)))]
        rag = r.random() < p["rag_share"]
        n = int(r.poisson(rt * ctx.days))
        w = ctx.intensity(HUMAN_PROFILE, HUMAN_WEEK, ctx.acc.tz[acct])
        ts = np.sort(ctx.trace_arrivals(n, w))
        n_users = max(3, int(n * p["end_users_per_100_req"] / 100))
        uid_pre = ctx.hexid(4)
        i = 0
        while i < len(ts):
            eu = f"user_{uid_pre}{int(r.integers(n_users)):06d}"
            first, hi = ctx.human_prompt(topic == "code")
            is_code = bool(s.human_coding[hi])
            k = min(int(r.geometric(p["turns_geom_p"])), 6, len(ts) - i)
            history = [{"role": "system", "content": sysp}]
            for j in range(k):
                u = ctx.perturb(first, p["perturb"]) if j == 0 else T.FOLLOW_UPS[int(r.integers(len(T.FOLLOW_UPS)))]
                pt, ct = ctx.chat_tokens("conv")
                ans = ctx.standin(ct * 4, is_code)
                content = u
                if rag:
                    content = "Context:\n" + ctx.standin(min(pt * 4, 1500))[:1500] + "\n\nQuestion: " + u
                msgs = history + [{"role": "user", "content": content}]
                ptok = max(msg_tokens(msgs), pt if rag else 0)
                _push(rows, float(ts[i]), acct, msgs, ans, ptok, ct, end_user=eu)
                history = msgs[:1] + msgs[1:][-5:] + [{"role": "assistant", "content": ans}]
                i += 1
    _emit_chat(ctx, rows, style)


def gen_batch(ctx: Ctx, accts: np.ndarray, a: Archetype) -> None:
    """Batch pipelines: one template, real items, cron runs or Batch API files, temperature 0."""
    r, s = ctx.rng, ctx.src
    p = a.params
    rate = ctx.lognormal_rate(a, len(accts))
    for acct, rt in zip(accts.tolist(), rate.tolist()):
        tmpl, item_kind, ans_kind, mt = T.BATCH_TEMPLATES[int(r.integers(len(T.BATCH_TEMPLATES)))]
        use_batch = r.random() < p["batch_api_share"]
        completions = (not use_batch) and r.random() < 0.15
        runs_per_day = int(r.integers(*p["runs_per_day"]) + 1) - 1 or 1
        hour0 = float(r.uniform(0, 24))
        total = int(r.poisson(rt * ctx.days))
        n_runs = max(1, runs_per_day * ctx.days)
        per_run = np.bincount(r.integers(0, n_runs, total), minlength=n_runs)
        model = r.choice([MINI, MINI, STD])
        seed = int(r.integers(0, 10000)) if r.random() < 0.3 else -1
        rformat = "json_object" if ans_kind.startswith("json") and r.random() < 0.7 else None
        ts_l, msgs_l, ans_l, pt_l, ct_l, bid_l = [], [], [], [], [], []
        pool = s.human if item_kind == "human" else s.answers
        for run in range(n_runs):
            k = int(per_run[run])
            if k == 0:
                continue
            start = ctx.t0 + (run // runs_per_day) * DAY + ((hour0 + (run % runs_per_day) * 24 / runs_per_day) % 24) * 3600
            gap = float(r.uniform(0.05, 2.0)) if not use_batch else float(r.uniform(0.01, 0.2))
            times = start + np.cumsum(gap * (0.7 + 0.6 * r.random(k)))
            bid = ("batch_" + ctx.hexid(24)) if use_batch else None
            items = r.integers(0, len(pool), k)
            for t, it in zip(times.tolist(), items.tolist()):
                item = ctx.perturb(pool[it][:1200], 0.7)
                prompt = tmpl.format(item=item)
                if ans_kind.startswith("label:"):
                    labels = ans_kind[6:].split(",")
                    ans = labels[int(r.integers(len(labels)))]
                elif ans_kind == "json:category":
                    ans = '{"category": "%s"}' % ["billing", "technical", "account", "feature_request", "other"][int(r.integers(5))]
                elif ans_kind == "json:entities":
                    ans = '{"products": [], "people": [], "organisations": []}'
                elif ans_kind == "same":
                    ans = ctx.standin(len(item))
                else:
                    ans = ctx.standin(mt * 3)[: mt * 4]
                msgs = prompt if completions else [{"role": "user", "content": prompt}]
                ts_l.append(t); msgs_l.append(msgs); ans_l.append(ans)
                pt_l.append(msg_tokens(msgs)); ct_l.append(max(1, min(mt, len(ans) // 4 + 1))); bid_l.append(bid)
        n = len(ts_l)
        if n == 0:
            continue
        tsa = np.array(ts_l)
        ar = account_rows(ctx, np.full(n, acct))
        ctx.tab.add(n, ts=tsa, acct=np.full(n, acct), model=np.where(tsa > ctx.release_ts + 5 * DAY, NEW, model).astype(object)
                    if r.random() < 0.2 else (INSTRUCT if completions else model),
                    endpoint=COMPLETIONS if completions else CHAT, messages=msgs_l, answer=ans_l,
                    temperature=0.0, max_tokens=mt, seed=seed, rformat=rformat, batch_id=bid_l,
                    ptok=pt_l, ctok=ct_l, ip=ar["ip"], ua=ar["ua"] if not use_batch else "OpenAI/Python 1.54.4")


def gen_eval(ctx: Ctx, accts: np.ndarray, a: Archetype) -> None:
    """Evaluation harnesses: a public question set in bursts at temperature 0, model sweeps."""
    r, s = ctx.rng, ctx.src
    p = a.params
    for acct in accts.tolist():
        n_runs = int(r.integers(p["runs"][0], p["runs"][1] + 1))
        models = list(r.choice([MINI, STD, THINK], size=int(r.integers(p["models"][0], p["models"][1] + 1)), replace=False))
        early = r.random() < p["early_adopter_share"]
        passk = r.random() < p["passk_share"]
        mc = (not passk) and r.random() < p["logprob_mc_share"]
        system = T.EVAL_SYSTEMS[int(r.integers(len(T.EVAL_SYSTEMS)))]
        qset = s.benchmark
        q_lo, q_hi = p["questions"]
        sub = r.choice(len(qset), size=min(len(qset), int(r.integers(q_lo, q_hi + 1))), replace=False)
        mt = int(r.choice([1, 5] if mc else [1024, 2048, 4096]))
        run_starts = [ctx.t0 + float(r.uniform(0, ctx.span - 4 * 3600)) for _ in range(n_runs)]
        run_models = [models] * n_runs
        if early and ctx.release_ts < ctx.t0 + ctx.span - 6 * 3600:
            run_starts.append(ctx.release_ts + float(r.uniform(0.5, 10)) * 3600)
            run_models.append([NEW] + models[:1])
        conc = int(r.choice([4, 8, 16, 32]))
        for start, ms in zip(run_starts, run_models):
            for mdl in ms:
                k = len(sub)
                gaps = r.exponential(float(r.uniform(1.0, 6.0)) / conc, k)
                ts = start + np.cumsum(gaps)
                start = float(ts[-1]) + float(r.uniform(5, 120))
                msgs_l, ans_l, pt_l, ct_l = [], [], [], []
                for qi in sub.tolist():
                    q = qset[qi]
                    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
                    if mc:
                        msgs = msgs[:-1] + [{"role": "user", "content": q + "\n\nAnswer with the letter of the correct option only."}]
                        ans = "ABCD"[int(r.integers(4))]
                        ct = 1
                    else:
                        _, ct = ctx.chat_tokens("conv")
                        ct = min(mt, int(ct * 1.5))
                        ans = ctx.standin(ct * 4, bool(_CODE_RE.search(q[:500])))
                    msgs_l.append(msgs); ans_l.append(ans); pt_l.append(msg_tokens(msgs)); ct_l.append(ct)
                ar = account_rows(ctx, np.full(k, acct))
                n_val = int(r.choice([5, 10])) if passk else -1
                ctx.tab.add(k, ts=ts, acct=np.full(k, acct), model=mdl, messages=msgs_l, answer=ans_l,
                            temperature=0.8 if passk else 0.0, max_tokens=mt, n=n_val, logprobs=mc,
                            top_logprobs=5 if mc else -1, seed=1234 if r.random() < 0.5 else -1,
                            effort="high" if mdl == THINK else None, ptok=pt_l, ctok=ct_l, ip=ar["ip"], ua=ar["ua"])


def _code_context(ctx: Ctx, chars: int) -> str:
    s = ctx.src
    cands = np.flatnonzero(s.distill_coding) if s.distill_coding.any() else np.arange(len(s.distill))
    parts, n = [], 0
    while n < chars:
        _, code = s.distill[int(cands[ctx.rng.integers(len(cands))])]
        code = code or "pass"
        parts.append(code)
        n += len(code) + 20
    fname = ["src/app.py", "lib/utils.ts", "main.go", "server/routes.js", "core/models.py"][int(ctx.rng.integers(5))]
    return f"<file path=\"{fname}\">\n" + "\n\n".join(parts)[:chars] + "\n</file>"


def gen_coding(ctx: Ctx, accts: np.ndarray, a: Archetype) -> None:
    """Coding assistants: work-hours sessions with long, growing contexts; mostly streaming."""
    r = ctx.rng
    p = a.params
    rate = ctx.lognormal_rate(a, len(accts))
    style = _acct_style(ctx, accts, a, think_share=0.15)
    rows = _new_rows()
    for acct, rt in zip(accts.tolist(), rate.tolist()):
        n_target = int(r.poisson(rt * ctx.days * 0.6))
        tz = ctx.acc.tz[acct]
        n_sess = max(1, n_target // int(np.mean(p["turns"])))
        starts = ctx.local_times(n_sess, np.full(n_sess, tz), OFFICE_PROFILE, OFFICE_WEEK) if n_target else []
        for t in np.asarray(starts).tolist():
            first, _ = ctx.human_prompt(coding=True)
            k = int(r.integers(*p["turns"]))
            use_long = r.random() < 0.4
            ctx_chars = int(r.uniform(600, p["context_chars_cap"]))
            context = _code_context(ctx, ctx_chars)
            history = [{"role": "system", "content": T.CODING_SYSTEM + "\n\n" + context}]
            for j in range(k):
                u = ctx.perturb(first, 0.85) if j == 0 else ctx.perturb(T.CODING_FOLLOW_UPS[int(r.integers(len(T.CODING_FOLLOW_UPS)))], 0.5)
                pt, ct = ctx.chat_tokens("long" if use_long else "code")
                ct = max(ct, 20) if not use_long else ct
                ans = ctx.standin(ct * 4, True)
                msgs = history + [{"role": "user", "content": u}]
                _push(rows, t, acct, msgs, ans, max(msg_tokens(msgs), int(pt * (1 + 0.15 * j))), ct)
                history = msgs[:1] + msgs[1:][-5:] + [{"role": "assistant", "content": ans}]
                t += 20.0 * float(np.exp(0.9 * r.standard_normal())) + 5.0
    _emit_chat(ctx, rows, style)


def gen_agents(ctx: Ctx, accts: np.ndarray, a: Archetype) -> None:
    """Agent frameworks: tool-call loops (assistant tool_calls, tool results), 24/7 or diurnal."""
    r = ctx.rng
    p = a.params
    rate = ctx.lognormal_rate(a, len(accts))
    style = _acct_style(ctx, accts, a, think_share=0.1)
    rows = _new_rows()
    rows["tools"] = []
    for acct, rt in zip(accts.tolist(), rate.tolist()):
        tools = [T.TOOLS[i] for i in sorted(r.choice(len(T.TOOLS), int(r.integers(*p["tools"]) + 1), replace=False))]
        mean_steps = np.mean(p["steps"]) + 1
        n_tasks = int(r.poisson(rt * ctx.days / mean_steps))
        prof = FLAT_PROFILE if r.random() < 0.4 else HUMAN_PROFILE
        starts = ctx.trace_arrivals(n_tasks, ctx.intensity(prof, HUMAN_WEEK, ctx.acc.tz[acct]))
        for t in starts.tolist():
            task = ctx.perturb(ctx.human_prompt()[0], 0.85)
            msgs = [{"role": "system", "content": T.AGENT_SYSTEM}, {"role": "user", "content": task}]
            steps = int(r.integers(*p["steps"]))
            for j in range(steps + 1):
                final = j == steps
                if final:
                    _, ct = ctx.chat_tokens("conv")
                    ans = ctx.standin(ct * 4)
                else:
                    tool = tools[int(r.integers(len(tools)))]["function"]
                    arg = list(tool["parameters"]["properties"])[0]
                    call_id = "call_" + ctx.hexid(12)
                    ans = {"role": "assistant", "content": None, "tool_calls": [
                        {"id": call_id, "type": "function",
                         "function": {"name": tool["name"], "arguments": '{"%s": "%s"}' % (arg, task[:60].replace('"', "'").replace("\\", " ").replace("\n", " "))}}]}
                    ct = int(r.integers(15, 90))
                _push(rows, t, acct, list(msgs), ans, msg_tokens(msgs) + 60 * len(tools), ct, tools=tools)
                if final:
                    break
                result = ctx.standin(float(r.uniform(100, 900)))[:900]
                msgs = msgs + [ans, {"role": "tool", "tool_call_id": ans["tool_calls"][0]["id"], "content": result}]
                t += float(r.uniform(0.8, 6.0)) + ct * 0.02
    _emit_chat(ctx, rows, style)


def gen_resellers(ctx: Ctx, accts: np.ndarray, a: Archetype, *, scale: float = 1.0) -> None:
    """Resellers / chat front-ends: broad human prompts at very high volume, many end users."""
    r, s = ctx.rng, ctx.src
    rate = ctx.lognormal_rate(a, len(accts)) * scale
    style = _acct_style(ctx, accts, a, think_share=0.12)
    rows = _new_rows()
    rows["end_user"] = []
    for acct, rt in zip(accts.tolist(), rate.tolist()):
        n = int(r.poisson(rt * ctx.days))
        ts = np.sort(ctx.trace_arrivals(n, ctx.intensity(HUMAN_PROFILE * 0.5 + 1.0, HUMAN_WEEK, ctx.acc.tz[acct])))
        with_eu = r.random() < a.params["end_user_share"]
        pre = ctx.hexid(6)
        n_users = max(10, n // 6)
        i = 0
        while i < n:
            eu = f"{pre}-{int(r.integers(n_users))}" if with_eu else None
            if r.random() < 0.25 and s.dialogues:
                d = s.dialogues[int(r.integers(len(s.dialogues)))]
                turns = [(h, ans, max(1, len(ans) // 4)) for h, ans in d[: int(r.integers(1, len(d) + 1))]]
            else:
                first, hi = ctx.human_prompt(coding=r.random() < 0.2)
                is_code = bool(s.human_coding[hi])
                k = min(int(r.geometric(0.5)), 5)
                turns = []
                for j in range(k):
                    u = ctx.perturb(first, 0.6) if j == 0 else T.FOLLOW_UPS[int(r.integers(len(T.FOLLOW_UPS)))]
                    _, ct = ctx.chat_tokens("conv")
                    turns.append((u, ctx.standin(ct * 4, is_code), ct))
            history: list[dict] = []
            for u, ans, ct in turns[: n - i]:
                msgs = history + [{"role": "user", "content": u}]
                _push(rows, float(ts[i]), acct, msgs, ans, msg_tokens(msgs), ct, end_user=eu)
                history = msgs[-5:] + [{"role": "assistant", "content": ans}]
                i += 1
    _emit_chat(ctx, rows, style)


def make_groups(ctx: Ctx, n_company_accts: int, n_campus_accts: int) -> tuple[dict, dict]:
    """Create company and campus accounts; return {member kind: [accts]} and campus homework."""
    r, s = ctx.rng, ctx.src
    kinds: dict[str, list[int]] = {"individual": [], "product": [], "batch_pipeline": [], "coding_assistant": []}
    made = 0
    g = 0
    while made < n_company_accts:
        k = int(r.integers(BENIGN["company"].params["size"][0], BENIGN["company"].params["size"][1] + 1))
        k = min(k, n_company_accts - made) if n_company_accts - made >= 2 else 2
        country, tz = ctx.country()
        domain = f"{T.COMPANY_WORDS[int(r.integers(len(T.COMPANY_WORDS)))]}{T.COMPANY_SUFFIX[int(r.integers(len(T.COMPANY_SUFFIX)))]}.{r.choice(['com', 'io', 'ai', 'de', 'co.uk', 'fr'])}"
        pay = ctx.payment()
        prefix = f"{r.choice(_RESI_FIRST + _CLOUD_FIRST)}.{r.integers(0, 256)}.{r.integers(0, 256)}"
        gid = "grp_" + ctx.hexid(10)
        created = ctx.created_before(30, 700)
        for _ in range(k):
            kind = str(r.choice(BENIGN["company"].params["member_kinds"], p=[0.45, 0.15, 0.15, 0.25]))
            ips = [f"{prefix}.{int(r.integers(2, 254))}" for _ in range(int(r.integers(1, 3)))]
            ai = make_benign_account(ctx, "company", group_id=gid, country=country, tz=tz, payment=pay,
                                     email_domain=domain, ips=ips, created_at=created + r.uniform(0, 200) * DAY)
            kinds[kind].append(ai)
        made += k
        g += 1
    homework: dict[int, list[str]] = {}
    campus_accts: list[int] = []
    made = 0
    while made < n_campus_accts:
        k = int(r.integers(BENIGN["campus"].params["size"][0], BENIGN["campus"].params["size"][1] + 1))
        k = max(2, min(k, n_campus_accts - made))
        country, tz = ctx.country()
        uni = T.UNIVERSITIES[int(r.integers(len(T.UNIVERSITIES)))]
        nat = [f"{r.choice(_RESI_FIRST)}.{r.integers(0, 256)}.{r.integers(0, 256)}.{r.integers(1, 255)}"]
        if r.random() < 0.4:
            base = nat[0].rsplit(".", 1)[0]
            nat.append(f"{base}.{int(r.integers(1, 255))}")
        gid = "grp_" + ctx.hexid(10)
        hw_n = int(r.integers(*BENIGN["campus"].params["homework_prompts"]))
        hw = [s.human[int(i)] for i in r.integers(0, len(s.human), hw_n)]
        for _ in range(k):
            ai = make_benign_account(ctx, "campus", group_id=gid, country=country, tz=tz,
                                     email_domain=uni if r.random() < 0.7 else None, ips=nat,
                                     created_at=ctx.created_before(1, 400), tier="tier-1")
            homework[ai] = hw
            campus_accts.append(ai)
        made += k
    kinds["campus"] = campus_accts
    return kinds, homework


# ====================================================================== extraction
@dataclass
class Campaign:
    """One extraction operator: its accounts, prompt items and style."""

    cid: str
    arch: Archetype
    accts: list[int]
    items: list[tuple[str, str]]
    style: dict


def _campaign_items(ctx: Ctx, n: int, human_mix: float, coding_bias: float = 0.0) -> list[tuple[str, str]]:
    """A campaign's prompt set: a random subset of the real distillation prompts plus human prompts."""
    r, s = ctx.rng, ctx.src
    subset = r.permutation(len(s.distill))[: max(50, int(len(s.distill) * r.uniform(0.4, 0.8)))]
    if coding_bias > 0:
        cod = subset[s.distill_coding[subset]]
        subset = np.concatenate([subset, np.repeat(cod, 2)]) if len(cod) else subset
    n_h = int(n * human_mix)
    out: list[tuple[str, str]] = []
    order = r.permutation(len(subset))
    for j in range(n - n_h):  # walk the subset in order, wrap with a light variation on repeats
        p, ans = s.distill[int(subset[order[j % len(order)]])]
        if j >= len(order):
            p = ctx.perturb(p, 0.9)
        out.append((p, ans))
    for _ in range(n_h):
        h, _ = ctx.human_prompt()
        out.append((h, ""))
    perm = r.permutation(len(out))
    return [out[i] for i in perm]


def _operator_style(ctx: Ctx, a: Archetype) -> dict:
    r = ctx.rng
    return {
        "temps": [[np.nan], [0.7], [0.0, 0.7, 1.0], [1.0], [0.2], [np.nan, 0.7]][int(r.integers(6))],
        "maxt": [[-1], [2048], [4096], [1024, 2048], [-1, 4096]][int(r.integers(5))],
        "stream_p": min(0.95, a.stream * float(r.uniform(0.3, 1.6))),
        "schedule": str(r.choice(["24/7", "office", "human"], p=[0.35, 0.3, 0.35])),
        "tz": float(r.choice([8, 8, 3, 1, -5, 5.5, 9])),
        "models": [STD] if r.random() < 0.6 else [STD, MINI],
        "system": [None, None, "You are a helpful assistant.", "You are a world-class expert. Answer accurately and "
                   "completely.", "You are ChatGPT, a large language model. Answer as helpfully as possible."][int(r.integers(5))],
        "seed": r.random() < 0.15,
        "human_mix": float(r.uniform(0.1, 0.4)),
        "followup_share": float(r.uniform(0.0, 0.35)) if a.name not in ("self_instruct", "logprob_harvest") else 0.0,
    }


def _extraction_account(ctx: Ctx, arch: str, cid: str, *, created_at: float, payment: str | None = None,
                        ips=None, ua=None, old: bool = False) -> int:
    r = ctx.rng
    country = str(r.choice(["US", "US", "SG", "GB", "JP", "DE", "HK", "CA", "KR", "NL", "IN", "BR"]))
    tz = dict((c, z) for c, _, z in T.COUNTRIES).get(country, 0)
    dom = ctx.choice_w(T.CONSUMER_DOMAINS) if r.random() < 0.85 else (
        f"{T.COMPANY_WORDS[r.integers(len(T.COMPANY_WORDS))]}{T.COMPANY_SUFFIX[r.integers(len(T.COMPANY_SUFFIX))]}"
        f".{r.choice(['com', 'net', 'io', 'ai', 'co'])}")
    return ctx.acc.add(archetype=arch, label="extraction", campaign_id=cid, created_at=created_at,
                       payment=payment or ctx.payment(), email_domain=dom, country=country, tz=tz,
                       tier=f"tier-{int(r.choice([1, 2, 3, 4]) if old else r.choice([1, 1, 2]))}",
                       verified=bool(r.random() < (0.85 if old else 0.55)),
                       ips=ips or [ctx.residential_ip() for _ in range(int(r.integers(1, 3)))],
                       ua=ua or ctx.choice_w(T.USER_AGENTS))


def _schedule_weights(ctx: Ctx, st: dict, start=None, end=None) -> np.ndarray:
    prof = {"24/7": (FLAT_PROFILE, FLAT_WEEK), "office": (OFFICE_PROFILE, OFFICE_WEEK),
            "human": (HUMAN_PROFILE, HUMAN_WEEK)}[st["schedule"]]
    w = ctx.intensity(prof[0], prof[1], st["tz"], start, end)
    if st["schedule"] == "human":  # emulate a person: a few active hours per day, not the whole day
        r = ctx.rng
        mask = np.zeros_like(w)
        for d in range(ctx.days):
            day = w[d * 24:(d + 1) * 24]
            if day.sum() <= 0:
                continue
            k = int(r.integers(2, 7))
            hours = r.choice(24, size=min(k, int((day > 0).sum())), replace=False, p=day / day.sum())
            mask[d * 24 + hours] = 1.0
        w = w * mask
    return w


def _wrap_cot(ctx: Ctx, p: str, non_en: float) -> str:
    r = ctx.rng
    langs = list(T.COT_INSTRUCTIONS)
    lang = "en" if r.random() >= non_en else langs[1 + int(r.integers(len(langs) - 1))]
    opts = T.COT_INSTRUCTIONS[lang]
    pre, suf = opts[int(r.integers(len(opts)))]
    return f"{pre}{p}{suf}"


def _wrap_para(ctx: Ctx, p: str) -> str:
    r = ctx.rng
    o = T.PARA_OPENERS[int(r.integers(len(T.PARA_OPENERS)))]
    t = T.PARA_TASKS[int(r.integers(len(T.PARA_TASKS)))]
    f = T.PARA_FORMATS[int(r.integers(len(T.PARA_FORMATS)))]
    head = " ".join(x for x in ([o, t] if r.random() < 0.7 else [t, o]) if x)
    sep = ["\n\n", "\n", " ", "\n---\n"][int(r.integers(4))]
    body = f"{head}{sep}{p}"
    if f:
        body = f"{body}\n\n{f}" if r.random() < 0.6 else f"{f} {body}"
    return body


def encode_self_instruct(template: str, tasks: list[tuple[str, str, str]]) -> str:
    """The Alpaca ``generate_instruction.encode_prompt``: prompt.txt + numbered seed tasks.

    >>> encode_self_instruct("List of 20 tasks:", [("Say hi:", "", "hi")]).splitlines()[-1]
    '2. Instruction:'
    """
    prompt = template + "\n"
    idx = 0
    for idx, (instruction, inp, output) in enumerate(tasks):
        instruction = re.sub(r"\s+", " ", instruction).strip().rstrip(":")
        inp = "<noinput>" if inp.lower() == "" else inp
        prompt += "###\n"
        prompt += f"{idx + 1}. Instruction: {instruction}\n"
        prompt += f"{idx + 1}. Input:\n{inp}\n"
        prompt += f"{idx + 1}. Output:\n{output}\n"
    prompt += "###\n"
    prompt += f"{idx + 2}. Instruction:"
    return prompt


_TRIPLES: dict[int, list] = {}


def _triples(s: Sources) -> list[tuple[str, str, str]]:
    if id(s) not in _TRIPLES:
        _TRIPLES[id(s)] = s.alpaca_triples or [
            (p.split("\n\n")[0], p.split("\n\n", 1)[1] if "\n\n" in p else "", a) for p, a in s.distill[:2000]]
    return _TRIPLES[id(s)]


def _self_instruct_reply(ctx: Ctx, start: int, k: int) -> str:
    s, r = ctx.src, ctx.rng
    pool = _triples(s)
    out = []
    for j in range(k):
        ins, inp, o = pool[int(r.integers(len(pool)))]
        num = start + j
        head = f" {ins}" if j == 0 else f"{num}. Instruction: {ins}"
        out.append(f"{head}\n{num}. Input:\n{inp or '<noinput>'}\n{num}. Output:\n{o[:300]}\n###")
    return "\n".join(out)


def gen_campaign(ctx: Ctx, arch_name: str, scale: float) -> None:
    """Create one campaign's accounts and requests."""
    r, s = ctx.rng, ctx.src
    a = EXTRACTION[arch_name]
    cid = "camp_" + ctx.hexid(10)
    st = _operator_style(ctx, a)
    lo, hi = a.accounts
    n_acc = max(min(lo, 2), int(round(r.integers(lo, hi + 1) * (scale if hi > 2 else 1.0))))
    if arch_name == "hydra":
        n_acc = max(20, n_acc)
    span = ctx.span
    accts: list[int] = []
    active: list[tuple[float, float]] = []
    if arch_name == "hydra":
        p = a.params
        cards = [ctx.payment() for _ in range(int(r.integers(*p["cards"])))]
        n_waves = int(r.integers(p["waves"][0], p["waves"][1] + 1))
        wave_t = np.sort(ctx.t0 + r.uniform(-5 * DAY, span * 0.7, n_waves))
        pool_n = int(r.integers(*p["proxy_pool"]) * max(0.3, scale))
        st["proxy_pool"] = [ctx.residential_ip() for _ in range(pool_n)]
        for i in range(n_acc):
            wt = float(wave_t[i % n_waves])
            created = wt + float(r.uniform(0, 3 * 3600))
            pay = cards[int(r.integers(len(cards)))] if r.random() < p["card_reuse"] else None
            ai = _extraction_account(ctx, arch_name, cid, created_at=created, payment=pay, ips=["0.0.0.0"])
            start = max(ctx.t0, created + float(r.uniform(600, 6 * 3600)))
            end = start + float(r.uniform(*p["lifetime_days"])) * DAY
            accts.append(ai)
            active.append((start, end))
    elif arch_name == "reseller_mixed":
        for _ in range(n_acc):
            ai = _extraction_account(ctx, arch_name, cid, created_at=ctx.created_before(60, 700),
                                     ips=[ctx.cloud_ip() for _ in range(int(r.integers(1, 4)))], old=True,
                                     ua=ctx.choice_w(T.USER_AGENTS))
            accts.append(ai)
            active.append((ctx.t0, ctx.t0 + span))
    else:
        old = arch_name in ("low_and_slow", "bulk", "model_pivot", "reseller_mixed")
        for _ in range(n_acc):
            created = ctx.created_before(120, 600) if arch_name == "low_and_slow" else ctx.created_before(1, 300 if old else 60)
            ips = [ctx.cloud_ip() for _ in range(int(r.integers(1, 3)))] if arch_name == "bulk" else None
            ai = _extraction_account(ctx, arch_name, cid, created_at=created, ips=ips, old=old)
            start = max(ctx.t0, created) + (0 if arch_name in ("low_and_slow", "model_pivot") else float(r.uniform(0, span * 0.3)))
            accts.append(ai)
            active.append((start, ctx.t0 + span))

    acct_arr = np.array(accts)
    # -------- volume per account and arrival times
    rate = ctx.lognormal_rate(a, len(accts))
    if arch_name == "hydra":
        rate = np.minimum(rate, 900)
    ts_all, acct_all = [], []
    for ai, (start, end), rt in zip(accts, active, rate.tolist()):
        end = min(end, ctx.t0 + span)
        if end <= start:
            continue
        share = 1.0
        if arch_name == "reseller_mixed":
            share = float(r.uniform(*a.params["extraction_share"]))
        w = _schedule_weights(ctx, st, start, end)
        n = int(r.poisson(rt * share * (end - start) / DAY))
        t = np.sort(ctx.trace_arrivals(n, w))
        if arch_name == "hydra" and len(t):
            k = np.arange(len(t)) * 1.05
            t = np.maximum.accumulate(t - k) + k  # keeps every account under 60 requests/minute
        ts_all.append(t)
        acct_all.append(np.full(len(t), ai))
    if not ts_all:
        return
    ts = np.concatenate(ts_all)
    acct = np.concatenate(acct_all).astype(np.int32)
    n = len(ts)
    if n == 0:
        return
    # -------- content: shard one prompt set between the accounts (disjoint slices)
    items = _campaign_items(ctx, n, st["human_mix"], coding_bias=0.5 if r.random() < 0.3 else 0.0)
    order = np.lexsort((ts, acct))  # account-major: account k gets a contiguous, disjoint slice
    item_of = np.empty(n, dtype=np.int64)
    item_of[order] = np.arange(n)
    temps = np.array(st["temps"], dtype=float)
    temperature = temps[r.integers(0, len(temps), n)]
    maxt = np.array(st["maxt"])[r.integers(0, len(st["maxt"]), n)].astype(np.int64)
    stream = r.random(n) < st["stream_p"]
    model = np.array(st["models"], dtype=object)[r.integers(0, len(st["models"]), n)]
    effort = np.full(n, None, dtype=object)
    n_col = np.full(n, -1, dtype=np.int32)
    logprobs = np.zeros(n, dtype=bool)
    top_lp = np.full(n, -1, dtype=np.int32)
    rtok = np.zeros(n, dtype=np.int64)
    endpoint = np.full(n, CHAT, dtype=object)
    extra = np.full(n, None, dtype=object)
    stop = np.full(n, None, dtype=object)
    end_user = np.full(n, None, dtype=object)
    top_p = np.full(n, np.nan)
    msgs_l, ans_l, pt_l, ct_l = [], [], [], []
    system = st["system"]

    if arch_name == "cot_elicitation":
        non_en = float(r.uniform(*a.params["non_english_share"]))
        reasoning = r.random(n) < a.params["reasoning_model_share"]
        model[reasoning] = THINK
        effort[reasoning] = "high"
    if arch_name == "logprob_harvest":
        p = a.params
        logprobs[:] = True
        top_lp[:] = np.array(p["top_logprobs"])[r.integers(0, 3, n)]
        n_col[:] = np.array(p["n"])[r.integers(0, 4, n)]
        stream[:] = False
        sweep = np.array(p["temperatures"])
        temperature = sweep[np.arange(n) % len(sweep)]
        item_of = item_of // len(sweep)  # each prompt is sent at every temperature of the sweep
        maxt[:] = int(r.choice([1024, 4096]))
    if arch_name == "model_pivot":
        delay = float(r.uniform(*a.params["pivot_delay_h"])) * 3600
        after = ts > ctx.release_ts + delay + r.exponential(4 * 3600, n)
        move = after & (r.random(n) < a.params["pivot_share"])
        model[:] = STD
        model[move] = NEW
    if arch_name == "self_instruct":
        p = a.params
        endpoint[:] = COMPLETIONS
        model[:] = INSTRUCT
        temperature[:] = p["temperature"]
        top_p[:] = p["top_p"]
        maxt[:] = p["max_tokens"]
        n_col[:] = 1
        stream[:] = False
        extra[:] = [{"logit_bias": {"50256": -100}}] * n
        stop[:] = [p["stop"]] * n
    if arch_name == "reseller_mixed":
        eu_pool = [f"{ctx.hexid(6)}-{int(r.integers(10 ** 6))}" for _ in range(int(r.integers(1, 6)))]
        for i in range(n):
            if r.random() < 0.6:
                end_user[i] = eu_pool[int(r.integers(len(eu_pool)))]

    fu_share = st["followup_share"]
    seeds = s.seeds or [(p.split("\n\n")[0], "", a_) for p, a_ in s.distill[:100]]
    for i in range(n):
        prompt, ans = items[int(item_of[i]) % len(items)]
        if arch_name == "self_instruct":
            prompts = []
            for _ in range(a.params["request_batch_size"]):
                tasks = [seeds[int(j)] for j in r.choice(len(seeds), a.params["num_prompt_instructions"], replace=False)]
                prompts.append(encode_self_instruct(s.template or "List of 20 tasks:", tasks))
            replies = [_self_instruct_reply(ctx, 4, int(r.integers(6, 17))) for _ in prompts]
            msgs_l.append(prompts)
            ans_l.append(replies)
            pt_l.append(sum(len(x) for x in prompts) // 4)
            ct_l.append(int(np.mean([len(x) for x in replies]) // 4))
            continue
        prompt = ctx.perturb(prompt, 0.3)  # operators vary wording too, against exact-match dedup
        if arch_name == "cot_elicitation":
            prompt = _wrap_cot(ctx, prompt, non_en)
        elif arch_name == "paraphrase" or (arch_name in ("hydra", "reseller_mixed") and r.random() < 0.3):
            prompt = _wrap_para(ctx, prompt)
        if not ans:
            _, ct = ctx.chat_tokens("conv")
            ans = ctx.standin(ct * 4 * 1.5)
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        if fu_share and r.random() < fu_share:  # ask for more on the same item: longer, multi-turn outputs
            msgs = msgs + [{"role": "assistant", "content": ans},
                           {"role": "user", "content": ctx.perturb(T.EXTRACT_FOLLOW_UPS[r.integers(len(T.EXTRACT_FOLLOW_UPS))], 0.5)}]
            ans = ctx.standin(len(ans) * 1.3 + 200)
        msgs_l.append(msgs)
        ans_l.append(ans)
        pt_l.append(msg_tokens(msgs))
        ct = max(1, len(ans) // 4)
        if arch_name == "cot_elicitation":
            if model[i] == THINK:
                rtok[i] = int(600 * np.exp(0.7 * r.standard_normal())) + 100
                ct += int(rtok[i])
            else:
                ct = int(ct * 2.2)
        ct_l.append(ct)
    ar = account_rows(ctx, acct)
    ip = ar["ip"]
    if arch_name == "hydra":
        pool = st["proxy_pool"]
        sticky = int(r.integers(*a.params["sticky_requests"]))
        sess = (np.arange(n) // sticky) * 7919 + acct.astype(np.int64) * 104729
        ip = [pool[int(x) % len(pool)] for x in sess.tolist()]
    ct_arr = np.array(ct_l, dtype=np.int64)
    ct_arr = np.where(maxt > 0, np.minimum(ct_arr, maxt), ct_arr)
    rtok = np.minimum(rtok, np.maximum(ct_arr - 1, 0))
    ctx.tab.add(n, ts=ts, acct=acct, model=model, endpoint=endpoint, messages=msgs_l, answer=ans_l,
                temperature=temperature, top_p=top_p, max_tokens=maxt, n=n_col, logprobs=logprobs,
                top_logprobs=top_lp, stream=stream, seed=(np.full(n, 42) if st["seed"] else -1), effort=effort,
                stop=stop, extra=extra, end_user=end_user, ip=ip, ua=ar["ua"], ptok=pt_l, ctok=ct_arr, rtok=rtok)
    if arch_name == "reseller_mixed":  # the legitimate traffic of the same reseller accounts
        gen_resellers(ctx, acct_arr, BENIGN["reseller"], scale=float(r.uniform(1.5, 3.0)))
