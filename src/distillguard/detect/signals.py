"""The signal catalogue: every behavioural signal declared once, as data (in the style of Sigma rules).

Each signal reads one feature of :mod:`distillguard.features.stats` and maps it to a *strength* in
[0, 1] with a linear ramp from ``lo`` (strength 0) to ``hi`` (strength 1); ``hi < lo`` means that low
values are suspicious. ``min_requests`` discounts a signal on accounts with little traffic (the
strength is multiplied by ``min(1, requests / min_requests)``), so that three requests never carry
the weight of three thousand. Reports, docs, reasons and the STIX export all read this catalogue.

>>> from distillguard.features.stats import FEATURE_COLUMNS
>>> feats = dict.fromkeys(FEATURE_COLUMNS, 0.0) | {"cot_share": 0.5, "requests": 100.0}
>>> strengths_scalar(feats)["cot_elicitation"]
1.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

EXTRACT = "AML.T0024.002"  # Extract AI Model via AI inference API
REPLICATE = "AML.T0005.001"  # Train Proxy via Replication
ACCOUNTS = "AML.T0021"  # Establish Accounts


@dataclass(frozen=True)
class Signal:
    id: str
    name: str
    title: str
    feature: str
    lo: float
    hi: float
    description: str
    analyst_note: str
    atlas: tuple[str, ...] = (EXTRACT,)
    level: str = "medium"
    falsepositives: tuple[str, ...] = ()
    min_requests: float = 20.0
    unit: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["atlas"] = list(self.atlas)
        d["falsepositives"] = list(self.falsepositives)
        return d

    def detail(self, value: float, *, full_at: float | None = None) -> str:
        """One line for an analyst: what the value is and how it compares to the signal's range
        (``full_at``: where a model's learned shape of the signal reaches full strength, if it has one)."""
        shown = f"{value:.0%}" if self.unit == "share" else (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}")
        bound = self.hi if full_at is None else full_at
        bshown = f"{bound:.0%}" if self.unit == "share" else (f"{bound:,.0f}" if abs(bound) >= 100 else f"{bound:.3g}")
        cmp = "<=" if self.hi < self.lo else ">="
        return f"{self.title}: {self.feature} = {shown} (full strength at {cmp} {bshown})"


SIGNALS: tuple[Signal, ...] = (
    # full strength at 2,000 requests a day, the low end of a single-account bulk harvest; the heaviest
    # benign accounts of the development seeds (resellers) reach about 1,400. Full strength at 6,000
    # left a 2,565-a-day harvest of dev seed 1001 at score 0.14, and bulk was 4 of 6 dev campaigns.
    Signal("DG-0001", "high_volume", "High daily request volume", "req_per_day", 400, 2000,
           "Requests per active day far above interactive use.",
           "Bulk harvesting needs volume; check whether a product with end users explains it.",
           level="medium", falsepositives=("API resellers and chat front-ends", "batch pipelines"), min_requests=50, unit="req/day"),
    Signal("DG-0002", "high_token_volume", "High daily token volume", "tokens_per_day", 3e5, 8e6,
           "Input plus output tokens per active day.",
           "Large output volume is what a distillation data set is made of.",
           level="medium", falsepositives=("resellers", "long-context coding assistants"), min_requests=50, unit="tokens/day"),
    Signal("DG-0003", "regular_timing", "Machine-regular request timing", "iat_cv", 1.2, 0.35,
           "Low coefficient of variation of inter-arrival times: a scheduler, not a person.",
           "Humans are bursty (CV well above 1); scripts pace themselves.",
           level="low", falsepositives=("batch pipelines", "monitoring probes"), min_requests=30, unit="cv"),
    Signal("DG-0004", "flat_daily_profile", "Flat 24-hour activity", "hour_entropy", 0.88, 0.985,
           "Activity spread evenly over all 24 hours (normalised entropy of the hour histogram).",
           "People sleep; automated harvesting runs around the clock.",
           level="low", falsepositives=("global products", "batch pipelines"), min_requests=200, unit="entropy"),
    Signal("DG-0005", "machine_speed", "Machine-speed request rate", "fast_share", 0.3, 0.9,
           "Share of requests arriving less than 2 s after the previous one.",
           "Concurrency and no reading time between answers.",
           level="low", falsepositives=("agent tool loops", "batch pipelines", "evaluation harnesses"), min_requests=30, unit="share"),
    Signal("DG-0006", "single_turn", "Single-turn requests only", "single_share", 0.8, 0.99,
           "Share of requests without any previous assistant turn: no conversation, no follow-up.",
           "Harvesting sends one prompt and keeps the answer; people converse.",
           level="low", falsepositives=("batch pipelines", "evaluation harnesses", "embedding jobs"), min_requests=30, unit="share"),
    Signal("DG-0007", "cot_elicitation", "Chain-of-thought elicitation", "cot_share", 0.04, 0.35,
           "Share of prompts asking for step-by-step or hidden reasoning, in any of several languages.",
           "Reasoning traces are the most valuable distillation data; campaigns coerce them at scale.",
           atlas=(EXTRACT, REPLICATE), level="high", falsepositives=("tutoring products", "maths homework help"), min_requests=20, unit="share"),
    Signal("DG-0008", "identity_probe", "Identity and system-prompt probing", "ident_share", 0.01, 0.15,
           "Share of prompts asking the model who made it, what it is, or to reveal its instructions.",
           "Probing identity calibrates a student model and tests whether outputs are watermarked.",
           level="medium", falsepositives=("curious users", "red-team exercises"), min_requests=20, unit="share"),
    Signal("DG-0009", "self_instruct", "Self-instruct task generation", "selfi_share", 0.005, 0.15,
           "Share of prompts asking for many new tasks or examples (the Alpaca self-instruct pattern).",
           "Generating instruction data sets is replication of the model's capabilities.",
           atlas=(REPLICATE, EXTRACT), level="high", falsepositives=("synthetic-data teams with permission",), min_requests=10, unit="share"),
    Signal("DG-0010", "templated_prompts", "One template over many prompts", "prefix_distinct_ratio", 0.5, 0.05,
           "Few distinct prompt openings relative to requests: one template filled with many items.",
           "Dataset builders wrap every item in the same instruction frame.",
           level="medium", falsepositives=("batch pipelines", "evaluation harnesses"), min_requests=30, unit="ratio"),
    Signal("DG-0011", "format_scaffold", "Dataset-format scaffolding", "fmt_share", 0.15, 0.7,
           "Share of prompts with instruction/input/response scaffolding or fixed output-format orders.",
           "Typical of prompts built to produce training pairs.",
           atlas=(REPLICATE,), level="medium", falsepositives=("structured-output products",), min_requests=20, unit="share"),
    Signal("DG-0012", "logprob_harvest", "Log-probability harvesting", "lp_share", 0.05, 0.5,
           "Share of requests asking for logprobs/top_logprobs.",
           "Log-probabilities give a student the teacher's full distribution (soft-label distillation).",
           level="high", falsepositives=("evaluation harnesses", "calibration research"), min_requests=20, unit="share"),
    Signal("DG-0013", "multi_sample", "Multiple samples per prompt", "nmulti_share", 0.1, 0.6,
           "Share of requests with n > 1.",
           "Several samples per prompt multiply the harvested data.",
           level="medium", falsepositives=("best-of-n products",), min_requests=20, unit="share"),
    Signal("DG-0014", "max_length", "Answers cut at max_tokens", "hitmax_share", 0.25, 0.75,
           "Share of responses that stopped at the output-length ceiling.",
           "Harvesters ask for the longest answers they can get.",
           level="low", falsepositives=("long-form writing tools",), min_requests=30, unit="share"),
    Signal("DG-0015", "broad_topics", "Broad, unrelated topics", "vocab_breadth", 0.42, 0.62,
           "Distinct words over total words in the account's first 64 prompts: breadth of subject matter.",
           "A product stays on its subject; a distillation prompt set covers everything.",
           level="low", falsepositives=("general chat front-ends", "resellers", "evaluation harnesses"), min_requests=20, unit="ratio"),
    Signal("DG-0016", "reasoning_effort", "Maximal reasoning requested", "effort_share", 0.2, 0.8,
           "Share of requests with reasoning_effort medium/high or reasoning tokens billed.",
           "Campaigns after reasoning traces ask for the most reasoning.",
           atlas=(EXTRACT, REPLICATE), level="low", falsepositives=("maths and coding products",), min_requests=20, unit="share"),
    Signal("DG-0017", "no_system_prompt", "No system prompt", "sys_share", 0.3, 0.02,
           "Share of requests carrying a system prompt (low share is suspicious).",
           "Products frame their requests with a system prompt; raw harvesting often does not.",
           level="low", falsepositives=("developers", "playground use"), min_requests=30, unit="share"),
)
SIGNALS = SIGNALS + (
    Signal("DG-0018", "sustained_activity", "Sustained over several days", "active_days", 1.0, 3.0,
           "Number of distinct days with traffic.",
           "Harvesting a prompt set takes days of steady traffic; an evaluation run or a one-off job is a burst.",
           level="low", falsepositives=("every long-lived product", "daily batch jobs"), min_requests=50, unit="days"),
    Signal("DG-0019", "new_accounts", "Accounts created just before use", "young_share", 0.0, 1.0,
           "Share of the accounts (one, or a linked group's members) created less than 30 days before their first request.",
           "Campaigns open fresh accounts in waves as old ones are banned; established customers have history.",
           level="medium", falsepositives=("new customers ramping up", "a company onboarding a team"), min_requests=5, unit="share"),
    Signal("DG-0020", "unverified_accounts", "Unverified accounts", "unverified_share", 0.0, 1.0,
           "Share of the accounts marked not verified in the account file.",
           "Throwaway accounts skip verification.",
           level="low", falsepositives=("new sign-ups",), min_requests=5, unit="share"),
    Signal("DG-0021", "model_pivot", "Fast pivot to a newly released model", "pivot_share", 0.2, 0.45,
           "In the 48 hours after a model release seen in the traffic, the share of the account's requests sent to "
           "the new model (customers adopt over days; the population's share is far lower).",
           "A campaign extracting the current model moves its pipeline to the new one within hours of the release, "
           "to harvest it before defences adapt.",
           level="medium", falsepositives=("evaluation harnesses", "early adopters testing the new model"), min_requests=30, unit="share"),
    Signal("DG-0022", "shared_prompts", "Prompts other accounts sent before", "repeat_share", 0.25, 0.6,
           "Share of the account's (sampled, 40+ character) prompts that a different account had already sent, word for word.",
           "Campaigns draw on public prompt sets (instruction data sets, shared chat logs) that other extractors send too; "
           "a product's traffic is mostly its own.",
           atlas=(EXTRACT, REPLICATE), level="medium",
           falsepositives=("evaluation harnesses running public benchmarks", "apps forwarding popular canned prompts"),
           min_requests=50, unit="share"),
    Signal("DG-0023", "account_farm", "Many new accounts operated together", "young_accounts", 5.0, 40.0,
           "Number of linked accounts (a cluster's members) created less than 30 days before their first request; "
           "0 or 1 for a single account.",
           "Dozens of fresh accounts tied together by payment, creation time or client fingerprint are one operator "
           "spreading a harvest below per-account limits; it shows from the first requests of each new wave, days "
           "before the group's volume or schedule does.",
           atlas=(ACCOUNTS, EXTRACT), level="high",
           falsepositives=("a large team onboarded at once on one payment method",), min_requests=20, unit="accounts"),
    Signal("DG-0024", "heavy_end_user", "One end user sending bulk traffic", "eu_top_per_day", 5.0, 25.0,
           "Requests per active day of the account's busiest end-user id (the OpenAI `user` field a reseller or "
           "product passes for its own customers); the largest member's for a linked group.",
           "An extractor can hide behind a reseller or a chat product as one of its customers: the account's "
           "traffic looks like a reseller's, but one of its end users sends as much as a harvesting script while "
           "the product's other users send a few requests a day. Ask the customer who that end user is.",
           level="medium", falsepositives=("a product's own test or monitoring user", "a power user of a chat front-end"),
           min_requests=100, unit="req/day"),
)
SIGNALS_BY_NAME = {s.name: s for s in SIGNALS}
#: Signals that need days of traffic (volume per active day, the 24-hour profile, active days): a linked
#: cluster younger than a day is judged without them (see :mod:`distillguard.detect.online`).
NEEDS_DAYS = frozenset({"high_volume", "high_token_volume", "flat_daily_profile", "sustained_activity"})


def ramp(v: Any, lo: float, hi: float) -> np.ndarray:
    """0 at ``lo``, 1 at ``hi`` (either way round), clipped; NaN gives 0."""
    return np.clip(np.nan_to_num((np.asarray(v, dtype=np.float64) - lo) / (hi - lo), nan=0.0), 0.0, 1.0)


def volume_discount(requests: Any, sig: Signal) -> np.ndarray:
    """``min(1, requests / min_requests)``: how much of its strength a signal keeps on little traffic."""
    return np.clip(np.asarray(requests, dtype=np.float64) / sig.min_requests, 0.0, 1.0)


def strengths(feats: dict[str, Any]) -> dict[str, np.ndarray]:
    """Strength in [0, 1] of every signal, for arrays (or lists) of features over accounts."""
    n = feats["requests"]
    return {s.name: ramp(feats[s.feature], s.lo, s.hi) * volume_discount(n, s) for s in SIGNALS}


def strengths_scalar(feats: dict[str, float]) -> dict[str, float]:
    """:func:`strengths` for one account, in plain Python (the online hot path)."""
    n = feats["requests"]
    out = {}
    for s in SIGNALS:
        v = feats[s.feature]
        if v != v:  # NaN: not enough data for this feature
            out[s.name] = 0.0
            continue
        r = (v - s.lo) / (s.hi - s.lo)
        r = 0.0 if r < 0.0 else (1.0 if r > 1.0 else r)
        c = n / s.min_requests
        out[s.name] = r * (0.0 if c < 0.0 else (1.0 if c > 1.0 else c))
    return out


#: Not a scoring signal: the reason given to an account flagged because its linked cluster was.
LINKED_CLUSTER = Signal(
    "DG-0100", "linked_cluster", "Member of a flagged linked group", "cluster_score", 0.0, 1.0,
    "The account shares infrastructure or content with other accounts, and their combined traffic scores as extraction.",
    "One operator spreading work over many accounts, each under every per-account limit (a hydra cluster).",
    atlas=(EXTRACT,), level="high",
    falsepositives=("a company's team accounts that share payment and office network, when their combined traffic is bulk-like",),
    min_requests=1.0, unit="score",
)


def catalogue() -> list[dict[str, Any]]:
    return [s.as_dict() for s in SIGNALS] + [LINKED_CLUSTER.as_dict()]


@dataclass
class Reason:
    signal: str
    value: float
    detail: str
    contribution: float = field(default=0.0, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "value": round(float(self.value), 6), "detail": self.detail}
