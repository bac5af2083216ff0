"""Baseline detectors: what a provider can run today, scored by the same harness as distillguard.

Each baseline follows the scikit-learn split of score and threshold: ``fit(tune)`` learns what it
needs and its threshold ``threshold_`` on *tuning* traffic (a seed the benchmark does not report on),
``score_samples(traffic)`` returns one score per account (aligned on ``traffic.account_ids``, higher =
more likely extraction), and an account is flagged when ``score > threshold_``.

Tuned thresholds are set at the benign false-positive rate ``tune_fpr`` (default 1e-3, the
detector's own target) on the tuning traffic's benign accounts; nothing is tuned on the reported seed.
Baselines that learn from the tuning traffic (embeddings, MMD reference, IsolationForest) learn on
one half of its accounts and set the threshold on the other (:func:`tuning_split`).

====================  ===========================================================================
``ratelimit-60rpm``   per-key limits as LiteLLM applies them (sliding 60 s RPM/TPM windows, tokens
``ratelimit-20rpm``   per day over a sliding 24 h): flagged if a key ever exceeds one; score = the
                      highest utilisation reached. Fixed tier values, not tuned.
``top-requests``      requests per account; threshold at a top percentile of benign (tuned).
``top-tokens``        prompt + completion tokens per account; same.
``prada``             PRADA (Juuti et al. 2019): per account, the minimum L2 distance of each query
                      embedding to all earlier ones; Shapiro-Wilk W of those distances; score = 1 - W.
``mmd``               windowed two-sample test: unbiased MMD^2 (RBF kernel, median bandwidth) of each
                      window of an account's prompt embeddings against a benign reference sample;
                      score = the largest window MMD^2.
``iforest``           IsolationForest on simple per-account features (volume, tokens, inter-arrival
                      CV, distinct-prompt share, single-turn share, active hours, n, logprobs).
====================  ===========================================================================
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from distillguard.bench.data import Traffic
from distillguard.bench.embed import FIT_SAMPLE, PROMPTS_PER_ACCOUNT, HashedNgramEmbedder, first_per_account
from distillguard.bench.metrics import threshold_at_fpr

DEFAULT_TUNE_FPR = 1e-3


def tuning_split(tune: Traffic) -> np.ndarray:
    """Deterministic half of the tuning accounts (True: *fit* half, False: *calibration* half).

    Baselines that learn (embeddings, reference samples, IsolationForest) learn on the fit half and
    set their threshold on the calibration half. The split alternates along a fixed permutation of
    the accounts, so it holds for benign and extraction accounts alike.

    >>> import types
    >>> t = types.SimpleNamespace(account_ids=np.array(["a", "b", "c", "d"]), cache={})
    >>> int(tuning_split(t).sum())
    2
    """
    if "tuning_split" not in tune.cache:
        perm = np.random.default_rng(20260101).permutation(tune.account_ids.size)
        mask = np.zeros(tune.account_ids.size, dtype=bool)
        mask[perm[::2]] = True
        tune.cache["tuning_split"] = mask
    return tune.cache["tuning_split"]


class Baseline(ABC):
    """Base class: ``fit`` on tuning traffic, ``score_samples`` per account, ``predict`` = flagged."""

    name = "baseline"
    description = ""
    tuned = True

    def __init__(self, *, tune_fpr: float = DEFAULT_TUNE_FPR, seed: int = 0):
        self.tune_fpr = tune_fpr
        self.seed = seed

    #: whether ``_learn`` learns from the tuning accounts (then the threshold uses the other half)
    learns = False

    def _learn(self, tune: Traffic, fit_mask: np.ndarray) -> None:
        """Learn what the scores need (models, reference samples) from the ``fit_mask`` accounts."""

    def _threshold_accounts(self, tune: Traffic) -> np.ndarray:
        """Mask of the tuning accounts whose scores set the threshold.

        The benign accounts; for a baseline that learns from the tuning traffic, only those of the
        calibration half (:func:`tuning_split`), so no threshold is set on in-sample scores.
        """
        if not self.learns:
            return tune.y == 0
        return (tune.y == 0) & ~tuning_split(tune)

    def fit(self, tune: Traffic) -> Baseline:
        self._learn(tune, tuning_split(tune))
        s = self.score_samples(tune)
        self.threshold_ = threshold_at_fpr(s[self._threshold_accounts(tune)], self.tune_fpr)
        return self

    @abstractmethod
    def score_samples(self, traffic: Traffic) -> np.ndarray:
        """Per-account scores (higher = more likely extraction), in ``traffic``'s account order."""

    def predict(self, traffic: Traffic, scores: np.ndarray | None = None) -> np.ndarray:
        s = self.score_samples(traffic) if scores is None else scores
        return s > self.threshold_


# --------------------------------------------------------------------------- rate limits


def window_max(group: np.ndarray, ts: np.ndarray, weight: np.ndarray | None, window: float) -> np.ndarray:
    """Per event: the sum of ``weight`` (or the count) of its group's events in ``(ts - window, ts]``.

    ``group`` and ``ts`` must be sorted by (group, ts).

    >>> window_max(np.array([0, 0, 0, 1]), np.array([0.0, 30.0, 70.0, 75.0]), None, 60.0).tolist()
    [1.0, 2.0, 2.0, 1.0]
    """
    if ts.size == 0:
        return np.zeros(0)
    span = float(ts.max() - ts.min()) + 2 * window + 1.0
    key = group.astype(np.float64) * span + (ts - ts.min())
    lo = np.searchsorted(key, key - window, side="right")
    if weight is None:
        return (np.arange(key.size) - lo + 1).astype(float)
    cs = np.concatenate([[0.0], np.cumsum(weight, dtype=np.float64)])
    return cs[np.arange(key.size) + 1] - cs[lo]


@dataclass(frozen=True)
class Tier:
    """Per-key limits of one pricing tier; ``None`` means no such limit."""

    rpm: float | None = None
    tpm: float | None = None
    tpd: float | None = None


class RateLimit(Baseline):
    """Per-key RPM/TPM/TPD limits in sliding windows, as an AI gateway applies them.

    Score: the highest utilisation (requests or tokens in a window / limit) any key of the account
    reached; flagged when it exceeds 1 (the gateway would have refused a request). Not tuned.

    >>> RateLimit(tier=Tier(rpm=60)).tier.rpm
    60
    """

    tuned = False

    def __init__(self, *, tier: Tier, name: str = "ratelimit", tune_fpr: float = DEFAULT_TUNE_FPR,
                 seed: int = 0):
        super().__init__(tune_fpr=tune_fpr, seed=seed)
        self.tier = tier
        self.name = name
        self.description = "per-key limits " + ", ".join(
            f"{v:g} {k}" for k, v in (("rpm", tier.rpm), ("tpm", tier.tpm), ("tpd", tier.tpd)) if v
        )

    def fit(self, tune: Traffic) -> RateLimit:
        self.threshold_ = 1.0
        return self

    def score_samples(self, traffic: Traffic) -> np.ndarray:
        import pyarrow.compute as pc

        keys = traffic.table.column("api_key_id").combine_chunks()
        keys = pc.if_else(pc.is_null(keys), traffic.table.column("account_id").combine_chunks(), keys)
        kidx = pc.dictionary_encode(keys).indices.to_numpy().astype(np.int64)
        order = np.lexsort((traffic.ts, kidx))
        g, t = kidx[order], traffic.ts[order]
        tok = traffic.tokens()[order]
        util = np.zeros(g.size)
        for limit, window, weight in ((self.tier.rpm, 60.0, None), (self.tier.tpm, 60.0, tok),
                                      (self.tier.tpd, 86400.0, tok)):
            if limit:
                util = np.maximum(util, window_max(g, t, weight, window) / limit)
        per_event = np.empty_like(util)
        per_event[order] = util
        score = np.zeros(traffic.account_ids.size)
        np.maximum.at(score, traffic.acc, per_event)
        return score


# --------------------------------------------------------------------------- per-account features


def account_features(traffic: Traffic) -> dict[str, np.ndarray]:
    """Simple per-account features, computed in DuckDB over the event table, aligned on accounts.

    ``requests``, ``tokens``, ``mean_prompt_chars``, ``gap_cv`` (inter-arrival coefficient of
    variation), ``distinct_share`` (distinct prompts / requests), ``single_turn_share``,
    ``active_hours`` (distinct hours of day), ``mean_n``, ``logprobs_share``, ``stream_share``,
    ``temperature_std``.
    """
    if "features" in traffic.cache:
        return traffic.cache["features"]
    import duckdb
    import pyarrow as pa

    t = traffic.table.select(["account_id", "ts", "prompt", "prompt_chars", "n_assistant_msgs", "n",
                              "logprobs", "stream", "temperature"])
    t = t.append_column("acc", pa.array(traffic.acc.astype(np.int64)))
    t = t.append_column("tok", pa.array(traffic.tokens()))
    con = duckdb.connect()
    con.register("ev", t)
    rows = con.sql(
        """
        with e as (
          select acc, ts, tok, prompt, prompt_chars, n_assistant_msgs, n, logprobs, stream, temperature,
                 ts - lag(ts) over (partition by acc order by ts) as gap
          from ev)
        select acc,
               count(*)::double as requests,
               sum(tok)::double as tokens,
               avg(prompt_chars)::double as mean_prompt_chars,
               coalesce(stddev_pop(gap) / nullif(avg(gap), 0), 0)::double as gap_cv,
               (count(distinct hash(prompt)) / count(*))::double as distinct_share,
               avg(case when coalesce(n_assistant_msgs, 0) = 0 then 1 else 0 end)::double as single_turn_share,
               count(distinct floor((ts % 86400) / 3600))::double as active_hours,
               avg(coalesce(n, 1))::double as mean_n,
               avg(case when logprobs then 1 else 0 end)::double as logprobs_share,
               avg(case when stream then 1 else 0 end)::double as stream_share,
               coalesce(stddev_pop(temperature), 0)::double as temperature_std
        from e group by acc order by acc
        """
    ).to_arrow_table()
    con.close()
    acc = rows.column("acc").to_numpy()
    out = {}
    for name in rows.column_names[1:]:
        v = np.zeros(traffic.account_ids.size)
        v[acc] = np.nan_to_num(rows.column(name).to_numpy(zero_copy_only=False).astype(float))
        out[name] = v
    traffic.cache["features"] = out
    return out


class TopVolume(Baseline):
    """Flag the heaviest accounts: score = requests (or tokens); threshold at a top benign percentile.

    >>> TopVolume(by="tokens").name
    'top-tokens'
    """

    def __init__(self, *, by: str = "requests", tune_fpr: float = DEFAULT_TUNE_FPR, seed: int = 0):
        super().__init__(tune_fpr=tune_fpr, seed=seed)
        if by not in ("requests", "tokens"):
            raise ValueError("by must be 'requests' or 'tokens'")
        self.by = by
        self.name = f"top-{by}"
        self.description = f"{by} per account above a top percentile of benign accounts"

    def score_samples(self, traffic: Traffic) -> np.ndarray:
        return account_features(traffic)[self.by].copy()


class IForest(Baseline):
    """IsolationForest (scikit-learn) on :func:`account_features`, fitted on tuning traffic.

    >>> IForest(seed=1).seed
    1
    """

    name = "iforest"
    description = "IsolationForest on per-account volume, timing and parameter features"
    FEATURES = ("requests", "tokens", "mean_prompt_chars", "gap_cv", "distinct_share", "single_turn_share",
                "active_hours", "mean_n", "logprobs_share", "stream_share", "temperature_std")

    def _matrix(self, traffic: Traffic) -> np.ndarray:
        f = account_features(traffic)
        x = np.column_stack([f[k] for k in self.FEATURES])
        x[:, :3] = np.log1p(x[:, :3])
        return x

    learns = True

    def _learn(self, tune: Traffic, fit_mask: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest

        self.model_ = IsolationForest(n_estimators=200, random_state=self.seed).fit(self._matrix(tune)[fit_mask])

    def score_samples(self, traffic: Traffic) -> np.ndarray:
        return -self.model_.score_samples(self._matrix(traffic))


# --------------------------------------------------------------------------- content baselines


@dataclass
class Embedded:
    """Embeddings of the first prompts of every account: ``vec[starts[a]:starts[a+1]]`` is account ``a``."""

    vec: np.ndarray
    acc: np.ndarray
    starts: np.ndarray


def embed_traffic(traffic: Traffic, embedder: HashedNgramEmbedder, cap: int = PROMPTS_PER_ACCOUNT) -> Embedded:
    """Embed the first ``cap`` prompts of every account (cached on ``traffic`` per embedder)."""
    key = ("embedded", id(embedder), cap)
    if key not in traffic.cache:
        idx = first_per_account(traffic.acc, traffic.starts, cap)
        vec = np.concatenate([embedder.transform(traffic.prompts(idx[i:i + 50_000]))
                              for i in range(0, idx.size, 50_000)]) \
            if idx.size else np.zeros((0, embedder.dim), dtype=np.float32)
        acc = traffic.acc[idx]
        starts = np.searchsorted(acc, np.arange(traffic.account_ids.size + 1))
        traffic.cache[key] = Embedded(vec=vec, acc=acc, starts=starts)
    return traffic.cache[key]


def fit_embedder(tune: Traffic, *, dim: int = 64, seed: int = 0) -> HashedNgramEmbedder:
    """An embedder fitted on the first prompts of the *fit* half of the tuning accounts."""
    idx = first_per_account(tune.acc, tune.starts, PROMPTS_PER_ACCOUNT)
    idx = idx[tuning_split(tune)[tune.acc[idx]]]
    if idx.size > FIT_SAMPLE:
        idx = np.sort(np.random.default_rng(seed).choice(idx, FIT_SAMPLE, replace=False))
    return HashedNgramEmbedder(dim=dim, seed=seed).fit(tune.prompts(idx))


class _ContentBaseline(Baseline):
    def __init__(self, *, embedder: HashedNgramEmbedder | None = None, tune_fpr: float = DEFAULT_TUNE_FPR,
                 seed: int = 0):
        super().__init__(tune_fpr=tune_fpr, seed=seed)
        self.embedder = embedder

    learns = True

    def _learn(self, tune: Traffic, fit_mask: np.ndarray) -> None:
        self.embedder_ = self.embedder or fit_embedder(tune, seed=self.seed)


class Prada(_ContentBaseline):
    """PRADA: Shapiro-Wilk test on each account's minimum distances between successive queries.

    Accounts with fewer than 8 embedded queries cannot be tested and score 0; an account whose
    distances are all equal (e.g. one prompt repeated) scores 0 too (the test is undefined).

    >>> Prada(seed=0).name
    'prada'
    """

    name = "prada"
    description = "Shapiro-Wilk W of min L2 distances between each query and earlier ones (score 1 - W)"
    MIN_QUERIES = 8

    def score_samples(self, traffic: Traffic) -> np.ndarray:
        from scipy.stats import shapiro

        e = embed_traffic(traffic, self.embedder_)
        score = np.zeros(traffic.account_ids.size)
        counts = np.diff(e.starts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for a in np.flatnonzero(counts >= self.MIN_QUERIES):
                x = e.vec[e.starts[a]:e.starts[a + 1]].astype(np.float64)
                sq = (x * x).sum(1)
                d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
                d2[np.triu_indices(len(x))] = np.inf  # only earlier queries count
                dmin = np.sqrt(d2[1:].min(axis=1))
                if np.ptp(dmin) <= 1e-9:
                    continue
                w = shapiro(dmin).statistic
                score[a] = 0.0 if not np.isfinite(w) else 1.0 - float(w)
        return score


class Mmd(_ContentBaseline):
    """Windowed MMD two-sample test of an account's prompt embeddings against benign reference prompts.

    The reference is up to ``reference_size`` prompts (two per account) from benign accounts of the
    fit half of the tuning traffic; the threshold is set on the calibration half. Windows: an account's embedded prompts (first 64 in time order) are cut into consecutive
    windows of at most ``window`` prompts; each window gets the unbiased MMD^2 estimate with an RBF
    kernel whose bandwidth is the median pairwise distance of the reference. Accounts with fewer
    than 2 embedded prompts score 0 (the unbiased estimate needs two).

    >>> Mmd(window=16).window
    16
    """

    name = "mmd"
    description = "max windowed unbiased MMD^2 (RBF) of prompt embeddings vs a benign reference sample"

    def __init__(self, *, window: int = 32, reference_size: int = 512,
                 embedder: HashedNgramEmbedder | None = None, tune_fpr: float = DEFAULT_TUNE_FPR, seed: int = 0):
        super().__init__(embedder=embedder, tune_fpr=tune_fpr, seed=seed)
        self.window = window
        self.reference_size = reference_size

    def _learn(self, tune: Traffic, fit_mask: np.ndarray) -> None:
        super()._learn(tune, fit_mask)
        e = embed_traffic(tune, self.embedder_)
        rng = np.random.default_rng(self.seed)
        # the reference comes from benign accounts of the fit half; the threshold is set on the
        # calibration half, so no account is compared with a sample of its own prompts
        benign = np.flatnonzero((tune.y == 0) & fit_mask & (np.diff(e.starts) > 0))
        n_ref = min(benign.size, self.reference_size)
        ref_accounts = rng.choice(benign, size=n_ref, replace=False) if n_ref else benign[:0]
        # up to two prompts from each, so heavy accounts do not dominate the reference
        rows = []
        for a in np.sort(ref_accounts):
            lo, hi = e.starts[a], e.starts[a + 1]
            if hi > lo:
                rows.extend(rng.choice(np.arange(lo, hi), size=min(2, hi - lo), replace=False).tolist())
        rows = np.asarray(rows, dtype=int)
        if rows.size > self.reference_size:
            rows = rng.choice(rows, self.reference_size, replace=False)
        if rows.size < 2:
            from distillguard.errors import InputError

            raise InputError("the MMD baseline needs benign prompts in the tuning traffic; none found")
        self.reference_ = e.vec[rows].astype(np.float64)
        r = self.reference_
        sq = (r * r).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * r @ r.T, 0.0)
        off = ~np.eye(len(r), dtype=bool)
        med = float(np.median(d2[off]))
        self.gamma_ = 1.0 / med if med > 0 else 1.0
        krr = np.exp(-self.gamma_ * d2)
        self.krr_mean_ = float(krr[off].mean())
        self.ref_sq_ = sq

    def _kxr_row_means(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for i in range(0, len(x), 20_000):
            xi = x[i:i + 20_000].astype(np.float64)
            d2 = np.maximum((xi * xi).sum(1)[:, None] + self.ref_sq_[None, :] - 2 * xi @ self.reference_.T, 0.0)
            out[i:i + 20_000] = np.exp(-self.gamma_ * d2).mean(1)
        return out

    def score_samples(self, traffic: Traffic) -> np.ndarray:
        e = embed_traffic(traffic, self.embedder_)
        kxr = self._kxr_row_means(e.vec)
        score = np.zeros(traffic.account_ids.size)
        counts = np.diff(e.starts)
        for a in np.flatnonzero(counts >= 2):
            lo, hi = e.starts[a], e.starts[a + 1]
            n_win = int(np.ceil((hi - lo) / self.window))
            best = -np.inf
            for idx in np.array_split(np.arange(lo, hi), n_win):
                if idx.size < 2:
                    continue
                x = e.vec[idx].astype(np.float64)
                sq = (x * x).sum(1)
                k = np.exp(-self.gamma_ * np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0))
                m = idx.size
                kxx = (k.sum() - np.trace(k)) / (m * (m - 1))
                best = max(best, kxx + self.krr_mean_ - 2 * kxr[idx].mean())
            score[a] = best if np.isfinite(best) else 0.0
        return score


def default_baselines(*, tune_fpr: float = DEFAULT_TUNE_FPR, seed: int = 0,
                      embedder: HashedNgramEmbedder | None = None) -> list[Baseline]:
    """The benchmark's baselines, in table order."""
    return [
        RateLimit(tier=Tier(rpm=60, tpd=1_000_000), name="ratelimit-60rpm-1Mtpd", seed=seed),
        RateLimit(tier=Tier(rpm=20, tpd=200_000), name="ratelimit-20rpm-200ktpd", seed=seed),
        TopVolume(by="requests", tune_fpr=tune_fpr, seed=seed),
        TopVolume(by="tokens", tune_fpr=tune_fpr, seed=seed),
        Prada(embedder=embedder, tune_fpr=tune_fpr, seed=seed),
        Mmd(embedder=embedder, tune_fpr=tune_fpr, seed=seed),
        IForest(tune_fpr=tune_fpr, seed=seed),
    ]
