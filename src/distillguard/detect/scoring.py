"""Scores from signal strengths, and the one operating threshold.

The score is a logistic combination of signal strengths, ``sigmoid(bias + sum(w_i * s_i))``, with
non-negative weights so that every signal can only raise suspicion and each reason's contribution is
``w_i * s_i``. The default weights and threshold ship in ``detect/default_model.json``; they were
fitted by ``distillguard train`` on simulated development traffic (seeds that the benchmark does not
report on) and the threshold chosen there for a benign false-positive rate of at most 1e-3.

>>> m = ScoreModel.default()
>>> bool(0.0 <= m.score({name: [0.0] for name in m.weights})[0] <= 1.0)
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distillguard.detect.signals import NEEDS_DAYS, SIGNALS, SIGNALS_BY_NAME, Reason
from distillguard.errors import ConfigError


@dataclass
class Threshold:
    """The operating threshold: a score at or above ``value`` is flagged.

    >>> Threshold(value=0.5).flag(np.array([0.2, 0.5, 0.9])).tolist()
    [False, True, True]
    """

    value: float = 0.5
    target_fpr: float = 1e-3

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.value}")

    def flag(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores) >= self.value

    @staticmethod
    def for_fpr(benign_scores: np.ndarray, target_fpr: float) -> "Threshold":
        """The lowest threshold whose false-positive rate on ``benign_scores`` is at most ``target_fpr``."""
        b = np.sort(np.asarray(benign_scores, dtype=np.float64))[::-1]
        allowed = int(np.floor(target_fpr * len(b)))
        # flag score >= t; choose t just above the (allowed+1)-th highest benign score
        if allowed >= len(b):
            return Threshold(value=0.0, target_fpr=target_fpr)
        t = float(np.nextafter(b[allowed], np.inf))
        return Threshold(value=min(1.0, t), target_fpr=target_fpr)


@dataclass
class ScoreModel:
    """Non-negative logistic weights over signal strengths, plus the threshold."""

    weights: dict[str, float]
    bias: float
    threshold: Threshold = field(default_factory=Threshold)
    meta: dict[str, Any] = field(default_factory=dict)
    #: The online detector's threshold (gateway, LiteLLM plugin, ``replay``). Online, an account counts
    #: as flagged if its score *ever* reaches the threshold, a maximum over time that noisy early scores
    #: push above its final score, so ``train`` chooses this one on the benign accounts' peak online
    #: scores for the same false-positive rate. ``None``: the batch threshold.
    online_threshold: Threshold | None = None
    #: Weights and bias for linked clusters in their first day (online only), fitted by ``train`` on
    #: snapshots of young clusters without the signals of :data:`~distillguard.detect.signals.NEEDS_DAYS`,
    #: its bias set so that the online threshold flags at the rate chosen for it. ``None``: these
    #: weights without those signals.
    early: ScoreModel | None = None

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(SIGNALS_BY_NAME)
        if unknown:
            raise ConfigError(f"model names unknown signals: {sorted(unknown)}")
        if any(w < 0 for w in self.weights.values()):
            raise ConfigError("signal weights must be non-negative")

    def logit(self, strengths: dict[str, Any]) -> np.ndarray:
        z = None
        for name, w in self.weights.items():
            v = np.asarray(strengths[name], dtype=np.float64) * w
            z = v if z is None else z + v
        return self.bias + (z if z is not None else 0.0)

    def score_scalar(self, strengths: dict[str, float]) -> float:
        """:meth:`score` for one account, in plain Python."""
        import math

        z = self.bias
        for name, w in self.weights.items():
            z += w * strengths[name]
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def stats_scorer(self) -> Callable[[Any], float]:
        """A function ``AccountStats -> score`` equal to ``score_scalar(strengths_scalar(features_scalar(s)))``
        but computing only the features of signals with a non-zero weight (the online hot path).

        It is generated as one Python function with each weighed feature's expression
        (:data:`~distillguard.features.stats.SCALAR_FEATURE_EXPRS`) inlined, so that a request costs one
        call instead of one per feature. The terms are added in the order of :attr:`weights`, as
        :meth:`score_scalar` adds them, so the two give the same float; a signal without data (NaN
        feature) adds nothing, as its strength 0 does.
        """
        import math

        from distillguard.features.stats import SCALAR_FEATURE_EXPRS, SCALAR_NAMESPACE

        ns: dict[str, Any] = {**SCALAR_NAMESPACE, "exp": math.exp, "bias": self.bias}
        # subexpressions that many features share, computed once
        shared = {"max(float(s.n), 1.0)": "n1", "max(float(len(s.days)), 1.0)": "days1"}
        lines = ["def score(s):", "    n = float(s.n)", *(f"    {var} = {sub}" for sub, var in shared.items()), "    z = bias"]
        for i, (name, w) in enumerate(self.weights.items()):
            if w == 0.0:
                continue
            sig = SIGNALS_BY_NAME[name]
            ns[f"lo{i}"], ns[f"span{i}"], ns[f"mr{i}"], ns[f"w{i}"] = sig.lo, sig.hi - sig.lo, sig.min_requests, w
            expr = SCALAR_FEATURE_EXPRS[sig.feature]
            for sub, var in shared.items():
                expr = expr.replace(sub, var)
            lines += [
                f"    v = {expr}  # {name}",
                "    if v == v:",
                f"        r = (v - lo{i}) / span{i}",
                "        r = 0.0 if r < 0.0 else (1.0 if r > 1.0 else r)",
                f"        c = n / mr{i}",
                f"        z += w{i} * (r * (0.0 if c < 0.0 else (1.0 if c > 1.0 else c)))",
            ]
        lines.append("    return 1.0 / (1.0 + exp(-z)) if z > -700 else 0.0")
        exec(compile("\n".join(lines), "<distillguard stats_scorer>", "exec"), ns)  # noqa: S102 (our own source)
        return ns["score"]

    def early_model(self) -> "ScoreModel":
        """The model that judges a linked cluster in its first day (see :attr:`early`)."""
        if self.early is not None:
            return self.early
        return ScoreModel(weights={k: (0.0 if k in NEEDS_DAYS else v) for k, v in self.weights.items()}, bias=self.bias)

    @property
    def online(self) -> Threshold:
        """The threshold the online detector flags at."""
        return self.online_threshold if self.online_threshold is not None else self.threshold

    def score(self, strengths: dict[str, Any]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(strengths)))

    def reasons(self, strengths: dict[str, float], feats: dict[str, float], *, top: int = 6) -> list[Reason]:
        """Reasons for one account: signals with a positive contribution, strongest first."""
        out = []
        for s in SIGNALS:
            c = self.weights.get(s.name, 0.0) * float(strengths[s.name])
            if c > 0.05:
                v = float(feats[s.feature])
                out.append(Reason(signal=s.name, value=v, detail=s.detail(v), contribution=c))
        out.sort(key=lambda r: -r.contribution)
        return out[:top]

    # -- persistence ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "weights": self.weights,
            "bias": self.bias,
            "threshold": self.threshold.value,
            "target_fpr": self.threshold.target_fpr,
            **({"online_threshold": self.online_threshold.value} if self.online_threshold is not None else {}),
            **({"early": {"weights": self.early.weights, "bias": self.early.bias}} if self.early is not None else {}),
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ScoreModel":
        try:
            return cls(
                weights={k: float(v) for k, v in d["weights"].items()},
                bias=float(d["bias"]),
                threshold=Threshold(value=float(d["threshold"]), target_fpr=float(d.get("target_fpr", 1e-3))),
                meta=d.get("meta", {}),
                online_threshold=(Threshold(value=float(d["online_threshold"]), target_fpr=float(d.get("target_fpr", 1e-3)))
                                  if d.get("online_threshold") is not None else None),
                early=(ScoreModel(weights={k: float(v) for k, v in d["early"]["weights"].items()}, bias=float(d["early"]["bias"]))
                       if d.get("early") is not None else None),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"invalid score model: {e}. Re-create it with `distillguard train`.") from e

    @classmethod
    def load(cls, path: str | Path) -> "ScoreModel":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read score model {path}: {e}") from e

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def default(cls) -> "ScoreModel":
        ref = resources.files("distillguard.detect").joinpath("default_model.json")
        if ref.is_file():
            return cls.from_json(json.loads(ref.read_text()))
        # Hand-set prior used before any training (documented in the README).
        return cls(weights={s.name: _PRIOR.get(s.level, 1.0) for s in SIGNALS}, bias=-6.0, threshold=Threshold(0.5))


_PRIOR = {"high": 4.0, "medium": 2.0, "low": 1.0}


def prior_weights() -> dict[str, float]:
    """Weights from the catalogue's levels alone: what an analyst would set without data."""
    return {s.name: _PRIOR[s.level] for s in SIGNALS}


def fit(strength_rows: dict[str, np.ndarray], labels: np.ndarray, *, l2: float = 1e-4, target_fpr: float = 1e-3,
        sample_weight: np.ndarray | None = None, prior: dict[str, float] | None = None,
        exclude: frozenset[str] | set[str] = frozenset()) -> ScoreModel:
    """Fit non-negative logistic weights (L-BFGS-B with bounds) and choose the threshold for ``target_fpr``.

    The L2 penalty pulls the weights towards ``prior`` (default: zero), so that signals which the
    training traffic happens not to exercise keep the weight the catalogue gives them. Signals in
    ``exclude`` are held at weight 0 (still computed and reported, never scored).
    """
    from scipy.optimize import minimize

    names = [s.name for s in SIGNALS]
    X = np.column_stack([np.asarray(strength_rows[n], dtype=np.float64) for n in names])
    y = np.asarray(labels, dtype=np.float64)
    sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    # balance the classes so that a few hundred extraction accounts are not drowned by benign ones
    pos = y.sum()
    neg = len(y) - pos
    if pos > 0 and neg > 0:
        sw = sw * np.where(y == 1, 0.5 / pos, 0.5 / neg) * len(y)

    unknown = set(exclude) - set(names)
    if unknown:
        raise ConfigError(f"cannot exclude unknown signals {sorted(unknown)}; the catalogue has {', '.join(names)}")
    w0 = np.asarray([0.0 if n in exclude else (prior or {}).get(n, 0.0) for n in names], dtype=np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = np.clip(X @ w + b, -50, 50)
        p = 1.0 / (1.0 + np.exp(-z))
        eps = 1e-12
        ll = -(sw * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))).sum() / len(y)
        g = sw * (p - y) / len(y)
        dw = w - w0
        grad = np.concatenate([X.T @ g + l2 * dw, [g.sum()]])
        return ll + 0.5 * l2 * (dw @ dw), grad

    theta0 = np.concatenate([np.where([n in exclude for n in names], 0.0, np.maximum(w0, 1.0)), [-3.0]])
    bounds = [(0.0, 0.0) if n in exclude else (0.0, None) for n in names] + [(None, None)]
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    w, b = res.x[:-1], float(res.x[-1])
    model = ScoreModel(weights={n: float(v) for n, v in zip(names, w)}, bias=b)
    scores = model.score({n: X[:, i] for i, n in enumerate(names)})
    model.threshold = Threshold.for_fpr(scores[y == 0], target_fpr)
    return model
