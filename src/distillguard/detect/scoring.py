"""Scores from signal strengths, and the one operating threshold.

The score is a logistic combination of signal strengths, ``sigmoid(bias + sum(w_i * s_i))``, with
non-negative weights so that every signal can only raise suspicion and each reason's contribution is
``w_i * s_i``. A model may replace a signal's catalogue ramp by a learned *shape* (:class:`Shape`): a
monotone piecewise-linear strength in the catalogue's direction, so that ``train`` can learn, say, that
a single-turn share of 0.7 already means something while the catalogue ramp starts at 0.8, without any
signal ever lowering a score. The default weights and threshold ship in ``detect/default_model.json``; they were
fitted by ``distillguard train`` on simulated development traffic (seeds that the benchmark does not
report on) and the threshold chosen there for a benign false-positive rate of at most 1e-3.

>>> m = ScoreModel.default()
>>> bool(0.0 <= m.score({name: [0.0] for name in m.weights})[0] <= 1.0)
True
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distillguard.detect.signals import (NEEDS_DAYS, SIGNALS, SIGNALS_BY_NAME, Reason, ramp, strengths, strengths_scalar,
                                        volume_discount)
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
    def allowed(n_benign: int, target_fpr: float, confidence: float | None = None) -> int:
        """How many of ``n_benign`` benign accounts a threshold may flag for a false-positive rate of at most
        ``target_fpr``: the rate itself, or with ``confidence`` (e.g. 0.95), so that the one-sided
        Clopper-Pearson upper bound of the rate stays within the target: a threshold chosen at exactly the
        target on one sample exceeds it on about half of the traffic it meets next.

        >>> Threshold.allowed(20_000, 1e-3), Threshold.allowed(20_000, 1e-3, 0.95)
        (20, 12)
        """
        at_rate = int(np.floor(target_fpr * n_benign))
        if confidence is None or n_benign == 0:
            return at_rate
        from scipy.stats import beta

        k = at_rate
        while k >= 0 and beta.ppf(confidence, k + 1, n_benign - k) > target_fpr:
            k -= 1
        return k  # -1: no flag at all keeps the bound within the target (too few benign accounts)

    @staticmethod
    def for_fpr(benign_scores: np.ndarray, target_fpr: float, confidence: float | None = None) -> "Threshold":
        """The lowest threshold that flags at most :meth:`allowed` of ``benign_scores``."""
        b = np.sort(np.asarray(benign_scores, dtype=np.float64))[::-1]
        allowed = max(Threshold.allowed(len(b), target_fpr, confidence), 0)  # -1: flag none, as 0 does
        # flag score >= t; choose t just above the (allowed+1)-th highest benign score
        if allowed >= len(b):
            return Threshold(value=0.0, target_fpr=target_fpr)
        t = float(np.nextafter(b[allowed], np.inf))
        return Threshold(value=min(1.0, t), target_fpr=target_fpr)


@dataclass(frozen=True)
class Shape:
    """A signal's learned strength: linear interpolation of ``ys`` at feature values ``xs`` (strictly ascending),
    constant beyond the ends, monotone in the catalogue's direction and reaching 1; NaN gives 0.

    ``train`` makes it from non-negative weights on the catalogue ramp plus ramps between quantiles of
    the feature (:func:`shape_knots`): a sum of such ramps is monotone and piecewise linear.

    >>> sh = Shape(xs=(0.5, 0.8, 0.99), ys=(0.0, 0.4, 1.0))
    >>> sh(np.array([0.2, 0.65, 0.9, 1.0, np.nan])).round(3).tolist()
    [0.0, 0.2, 0.716, 1.0, 0.0]
    >>> sh.scalar(0.65), round(sh.full_at, 4)
    (0.2, 0.9742)
    """

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.xs) != len(self.ys) or len(self.xs) < 2:
            raise ConfigError("a signal shape needs at least two (x, y) knots")
        if any(b <= a for a, b in zip(self.xs, self.xs[1:])):
            raise ConfigError("a signal shape's x knots must be strictly ascending")
        if any(not 0.0 <= y <= 1.0 for y in self.ys):
            raise ConfigError("a signal shape's strengths must be in [0, 1]")

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return np.where(np.isnan(v), 0.0, np.interp(np.nan_to_num(v, nan=0.0), self.xs, self.ys))

    def scalar(self, v: float) -> float:
        if v != v:
            return 0.0
        xs, ys = self.xs, self.ys
        j = bisect_right(xs, v)
        if j == 0:
            return ys[0]
        if j == len(xs):
            return ys[-1]
        return ys[j - 1] + (v - xs[j - 1]) * (ys[j] - ys[j - 1]) / (xs[j] - xs[j - 1])

    @property
    def full_at(self) -> float:
        """The feature value, nearest the benign side, at which the strength reaches 0.95: what a reason
        calls full strength (a fitted shape often creeps over its last stretch towards 1)."""
        pts = list(zip(self.xs, self.ys)) if self.ys[-1] >= self.ys[0] else list(zip(self.xs, self.ys))[::-1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if y1 >= 0.95:
                return x1 if y0 >= 0.95 or y1 == y0 else x0 + (0.95 - y0) * (x1 - x0) / (y1 - y0)
        return pts[0][0] if pts[0][1] >= 0.95 else pts[-1][0]


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
    #: Weights and bias for an account in its first day (online only), fitted by ``train`` on snapshots
    #: of accounts in their first hours without the signals of
    #: :data:`~distillguard.detect.signals.NEEDS_DAYS`, its bias set so that at the online threshold it
    #: flags no more benign training accounts than the target rate leaves room for. The online detector
    #: flags a young account when these weights *or* the main ones score it at the threshold. ``None``:
    #: the main weights alone.
    early_account: ScoreModel | None = None
    #: Learned strengths that replace the catalogue ramps of these signals (see :class:`Shape`).
    shapes: dict[str, Shape] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = (set(self.weights) | set(self.shapes)) - set(SIGNALS_BY_NAME)
        if unknown:
            raise ConfigError(f"model names unknown signals: {sorted(unknown)}")
        if any(w < 0 for w in self.weights.values()):
            raise ConfigError("signal weights must be non-negative")
        for name, shape in self.shapes.items():
            sig = SIGNALS_BY_NAME[name]
            steps = np.diff(shape.ys) * (1.0 if sig.hi > sig.lo else -1.0)
            if (steps < -1e-9).any() or max(shape.ys) < 1.0 - 1e-6:
                raise ConfigError(f"the shape of {name} must rise to 1 in the catalogue's direction "
                                  f"({'higher' if sig.hi > sig.lo else 'lower'} {sig.feature} is more suspicious)")

    def strengths(self, feats: dict[str, Any], *, discount: bool = True) -> dict[str, np.ndarray]:
        """Signal strengths under this model: the catalogue's ramps, or the model's shapes where it has them.

        ``discount=False``: without the small-traffic discount (:func:`volume_discount`), what an account's
        requests look like whatever their number (see :func:`member_scores`)."""
        if not discount:
            feats = {**feats, "requests": np.full(np.shape(feats["requests"]), np.inf)}
        out = strengths(feats)
        for name, shape in self.shapes.items():
            sig = SIGNALS_BY_NAME[name]
            out[name] = shape(feats[sig.feature]) * volume_discount(feats["requests"], sig)
        return out

    def strength_curve(self, name: str) -> dict[str, Any]:
        """How this model turns the signal's feature into a strength, as knots for a plot: the learned
        shape, or the catalogue ramp (``x`` ascending, ``y`` in [0, 1]), with the signal's weight."""
        shape = self.shapes.get(name)
        if shape is not None:
            xs, ys, learned = list(shape.xs), list(shape.ys), True
        else:
            sig = SIGNALS_BY_NAME[name]
            xs, ys, learned = ([sig.lo, sig.hi], [0.0, 1.0], False) if sig.hi > sig.lo else ([sig.hi, sig.lo], [1.0, 0.0], False)
        return {"weight": float(self.weights.get(name, 0.0)), "x": xs, "y": ys, "learned": learned}

    def strengths_scalar(self, feats: dict[str, float], *, discount: bool = True) -> dict[str, float]:
        """:meth:`strengths` for one account, in plain Python."""
        if not discount:
            feats = {**feats, "requests": math.inf}
        out = strengths_scalar(feats)
        for name, shape in self.shapes.items():
            sig = SIGNALS_BY_NAME[name]
            c = feats["requests"] / sig.min_requests
            out[name] = shape.scalar(feats[sig.feature]) * (0.0 if c < 0.0 else (1.0 if c > 1.0 else c))
        return out

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

    def stats_scorer(self, *, undiscounted: bool = False, also: "ScoreModel | None" = None) -> Callable[..., Any]:
        """A function ``AccountStats -> score`` equal to ``score_scalar(strengths_scalar(features_scalar(s)))``
        but computing only the features of signals with a non-zero weight (the online hot path).
        ``undiscounted``: it returns ``(score, score without the small-traffic discount)`` (the second as
        ``score_scalar(strengths_scalar(feats, discount=False))``), both from one pass over the features.
        ``also``: a second model (the first-day weights) scored in the same pass when the function's second
        argument is true, and 0.0 when it is not; its score comes last in the returned tuple.

        It is generated as one Python function with each weighed feature's expression
        (:data:`~distillguard.features.stats.SCALAR_FEATURE_EXPRS`) inlined, so that a request costs one
        call instead of one per feature. The terms are added in the order of :attr:`weights`, as
        :meth:`score_scalar` adds them, so the two give the same float; a signal without data (NaN
        feature) adds nothing, as its strength 0 does.
        """
        import math

        from distillguard.features.stats import SCALAR_FEATURE_EXPRS, SCALAR_NAMESPACE

        ns: dict[str, Any] = {**SCALAR_NAMESPACE, "exp": math.exp, "bisect_right": bisect_right}
        # Constants are written into the source (a float's repr reads back as the same float), and the
        # helpers bound as defaults, so that each is a constant or a local, not a global lookup; the
        # discount n / min_requests is computed once per distinct min_requests, and each feature once.
        helpers = ("nan", "_iat_cv", "_hour_entropy", "kmv_estimate", "exp", "bisect_right")
        shared = {"max(float(s.n), 1.0)": "n1", "max(float(len(s.days)), 1.0)": "days1"}
        active = [(name, w) for name, w in self.weights.items() if w != 0.0]
        also_active = [(name, w) for name, w in also.weights.items() if w != 0.0] if also is not None else []
        args = ["s", *(["young=False"] if also is not None else []), *(f"{h}={h}" for h in helpers)]
        lines = [f"def score({', '.join(args)}):", "    n = float(s.n)",
                 *(f"    {var} = {sub}" for sub, var in shared.items()), f"    z = {self.bias!r}"]
        if undiscounted:
            lines.append(f"    u = {self.bias!r}")
        discounts: dict[float, str] = {}
        for name, w in active + also_active:
            mr = SIGNALS_BY_NAME[name].min_requests
            if mr not in discounts:
                var = discounts[mr] = f"c{len(discounts)}"
                lines += [f"    {var} = n / {mr!r}", f"    {var} = 0.0 if {var} < 0.0 else (1.0 if {var} > 1.0 else {var})"]
        feature_var: dict[str, str] = {}

        def feature(name: str, indent: str) -> list[str]:
            """The line that computes the signal's feature into a local, the first time it is needed."""
            f = SIGNALS_BY_NAME[name].feature
            if f in feature_var:
                return []
            var = feature_var[f] = f"v{len(feature_var)}"
            expr = SCALAR_FEATURE_EXPRS[f]
            for sub, sv in shared.items():
                expr = expr.replace(sub, sv)
            return [f"{indent}{var} = {expr}  # {f}"]

        def term(model: "ScoreModel", name: str, w: float, acc: str, indent: str, *, raw: str | None = None) -> list[str]:
            sig = SIGNALS_BY_NAME[name]
            v = feature_var[sig.feature]
            if name in model.shapes:  # Shape.scalar inlined, the same expression (so the same float)
                sh = model.shapes[name]
                xs, ys = tuple(map(float, sh.xs)), tuple(map(float, sh.ys))
                ramp = [f"j = bisect_right({xs!r}, {v})",
                        f"r = {ys[0]!r} if j == 0 else ({ys[-1]!r} if j == {len(xs)} else {ys!r}[j - 1] + ({v} - {xs!r}[j - 1])"
                        f" * ({ys!r}[j] - {ys!r}[j - 1]) / ({xs!r}[j] - {xs!r}[j - 1]))"]
            else:
                ramp = [f"r = ({v} - {sig.lo!r}) / {sig.hi - sig.lo!r}", "r = 0.0 if r < 0.0 else (1.0 if r > 1.0 else r)"]
            body = [*ramp, f"{acc} += {w!r} * (r * {discounts[sig.min_requests]})", *([f"{raw} += {w!r} * r"] if raw else [])]
            return [f"{indent}if {v} == {v}:", *(f"{indent}    {b}" for b in body)]

        for name, w in active:
            lines += feature(name, "    ")
            lines += term(self, name, w, "z", "    ", raw="u" if undiscounted else None)
        out = ["(1.0 / (1.0 + exp(-z)) if z > -700 else 0.0)"]
        if undiscounted:
            out.append("(1.0 / (1.0 + exp(-u)) if u > -700 else 0.0)")
        if also is not None:
            lines += ["    e = 0.0", "    if young:", f"        e = {also.bias!r}"]
            for name, w in also_active:
                lines += feature(name, "        ")
                lines += term(also, name, w, "e", "        ")
            lines.append("        e = 1.0 / (1.0 + exp(-e)) if e > -700 else 0.0")
            out.append("e")
        lines.append(f"    return {', '.join(out)}" if len(out) > 1 else f"    return {out[0]}")
        exec(compile("\n".join(lines), "<distillguard stats_scorer>", "exec"), ns)  # noqa: S102 (our own source)
        return ns["score"]

    def early_model(self) -> "ScoreModel":
        """The model that judges a linked cluster in its first day (see :attr:`early`)."""
        if self.early is not None:
            return self.early
        return ScoreModel(weights={k: (0.0 if k in NEEDS_DAYS else v) for k, v in self.weights.items()}, bias=self.bias,
                          shapes=self.shapes)

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
                shape = self.shapes.get(s.name)
                out.append(Reason(signal=s.name, value=v, detail=s.detail(v, full_at=shape.full_at if shape else None),
                                  contribution=c))
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
            **({"early_account": {"weights": self.early_account.weights, "bias": self.early_account.bias}}
               if self.early_account is not None else {}),
            **({"shapes": {k: {"x": list(v.xs), "y": list(v.ys)} for k, v in self.shapes.items()}} if self.shapes else {}),
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ScoreModel":
        if not isinstance(d, dict):
            raise ConfigError(f"invalid score model: a JSON object was expected, not {type(d).__name__}. "
                              "Re-create it with `distillguard train`.")
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
                early_account=(ScoreModel(weights={k: float(v) for k, v in d["early_account"]["weights"].items()},
                                          bias=float(d["early_account"]["bias"]))
                               if d.get("early_account") is not None else None),
                shapes={k: Shape(xs=tuple(float(x) for x in v["x"]), ys=tuple(float(y) for y in v["y"]))
                        for k, v in (d.get("shapes") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise ConfigError(f"invalid score model: {what}. Re-create it with `distillguard train`.") from e

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


#: ``train`` offers each signal ramps between this many quantiles of its feature (see :func:`shape_knots`).
SHAPE_QUANTILES = 8


def shape_knots(feats: dict[str, Any], *, k: int = SHAPE_QUANTILES,
                exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, list[tuple[float, float]]]:
    """Extra ramps per signal, between consecutive quantiles of its feature over ``feats`` (the training
    accounts), on the suspicious half of the distribution: from the median up to the 99.9th percentile
    where high values are suspicious, from the 0.1th percentile up to the median where low ones are. Each
    ramp runs in the catalogue's direction (``lo`` is the benign end).

    >>> kn = shape_knots({"requests": np.full(1000, 100.0), "single_share": np.linspace(0, 1, 1000)}, k=3)
    >>> [(round(lo, 3), round(hi, 3)) for lo, hi in kn["single_turn"]]
    [(0.5, 0.75), (0.75, 0.999)]
    """
    out: dict[str, list[tuple[float, float]]] = {}
    for sig in SIGNALS:
        if sig.name in exclude or sig.feature not in feats:
            continue
        v = np.asarray(feats[sig.feature], dtype=np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            continue
        up = sig.hi > sig.lo
        q = np.quantile(v, np.linspace(0.5, 0.999, k) if up else np.linspace(0.001, 0.5, k))
        ramps = [(float(a), float(b)) if up else (float(b), float(a)) for a, b in zip(q[:-1], q[1:]) if b > a]
        if ramps:
            out[sig.name] = ramps
    return out


def _shape_of(ramps: list[tuple[float, float, float]]) -> tuple[float, Shape | None]:
    """(weight, shape) of a sum of weighted ramps: the weight is the sum's maximum, the shape the sum over it."""
    ramps = [(lo, hi, w) for lo, hi, w in ramps if w > 1e-9]
    if not ramps:
        return 0.0, None
    xs = np.unique(np.asarray([x for lo, hi, _ in ramps for x in (lo, hi)], dtype=np.float64))
    f = sum(w * ramp(xs, lo, hi) for lo, hi, w in ramps)
    top = float(f.max())
    if top <= 0.0:
        return 0.0, None
    return top, Shape(xs=tuple(float(x) for x in xs), ys=tuple(float(y) for y in np.clip(f / top, 0.0, 1.0)))


def fit(strength_rows: dict[str, np.ndarray], labels: np.ndarray, *, l2: float = 1e-4, target_fpr: float = 1e-3,
        sample_weight: np.ndarray | None = None, prior: dict[str, float] | None = None,
        exclude: frozenset[str] | set[str] = frozenset(), feature_rows: dict[str, np.ndarray] | None = None,
        knots: dict[str, list[tuple[float, float]]] | None = None) -> ScoreModel:
    """Fit non-negative logistic weights (L-BFGS-B with bounds) and choose the threshold for ``target_fpr``.

    The L2 penalty pulls the weights towards ``prior`` (default: zero), so that signals which the
    training traffic happens not to exercise keep the weight the catalogue gives them. Signals in
    ``exclude`` are held at weight 0 (still computed and reported, never scored).

    With ``knots`` (from :func:`shape_knots`) and the ``feature_rows`` of the same rows, each signal
    also gets its extra ramps as columns with non-negative weights (prior 0): the fitted sum of a signal's
    ramps becomes its :class:`Shape` in the model, monotone in the catalogue's direction.
    """
    from scipy.optimize import minimize

    names = [s.name for s in SIGNALS]
    cols = [np.asarray(strength_rows[n], dtype=np.float64) for n in names]
    owner = list(range(len(names)))  # column -> signal index
    extra: list[tuple[int, float, float]] = []  # (signal index, lo, hi) of the columns after the catalogue's
    if knots:
        if feature_rows is None:
            raise ConfigError("fit with knots needs the feature rows")
        for i, n in enumerate(names):
            if n in exclude:
                continue
            sig = SIGNALS_BY_NAME[n]
            c = volume_discount(feature_rows["requests"], sig)
            for lo, hi in knots.get(n, ()):
                cols.append(ramp(feature_rows[sig.feature], lo, hi) * c)
                owner.append(i)
                extra.append((i, lo, hi))
    X = np.column_stack(cols)
    y = np.asarray(labels, dtype=np.float64)
    sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    # balance the classes so that a few hundred extraction accounts are not drowned by benign ones. By
    # their rows: with campaign weights the extraction class then weighs its campaigns, well under half,
    # and the fit leans to the benign side, as the low target rate wants (balanced by the weights, a
    # model trained on the shipped model's seeds recalled 0.966 of their extraction accounts instead of
    # 0.972, at the same benign rate)
    pos = y.sum()
    neg = len(y) - pos
    if pos > 0 and neg > 0:
        sw = sw * np.where(y == 1, 0.5 / pos, 0.5 / neg) * len(y)

    unknown = set(exclude) - set(names)
    if unknown:
        raise ConfigError(f"cannot exclude unknown signals {sorted(unknown)}; the catalogue has {', '.join(names)}")
    w0 = np.asarray([0.0 if n in exclude else (prior or {}).get(n, 0.0) for n in names] + [0.0] * len(extra), dtype=np.float64)
    held = [names[i] in exclude for i in owner]

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

    start = [0.0 if h else (max(w0[j], 1.0) if j < len(names) else 1.0) for j, h in enumerate(held)]
    theta0 = np.asarray(start + [-3.0], dtype=np.float64)
    bounds = [(0.0, 0.0) if h else (0.0, None) for h in held] + [(None, None)]
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
    w, b = res.x[:-1], float(res.x[-1])
    weights = {n: float(v) for n, v in zip(names, w[: len(names)])}
    shapes: dict[str, Shape] = {}
    for i, n in enumerate(names):
        mine = [(lo, hi, float(w[len(names) + j])) for j, (k, lo, hi) in enumerate(extra) if k == i]
        if any(wk > 1e-9 for _, _, wk in mine):
            sig = SIGNALS_BY_NAME[n]
            weights[n], shape = _shape_of([(sig.lo, sig.hi, weights[n]), *mine])
            if shape is not None:
                shapes[n] = shape
    model = ScoreModel(weights=weights, bias=b, shapes=shapes)
    scores = 1.0 / (1.0 + np.exp(-np.clip(X @ w + b, -50, 50)))
    model.threshold = Threshold.for_fpr(scores[y == 0], target_fpr)
    return model
