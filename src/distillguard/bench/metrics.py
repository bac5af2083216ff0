"""Detection-quality metrics of the benchmark, on plain numpy arrays.

Every function takes per-account arrays aligned on the same account order (``y`` is 1 for an
extraction account and 0 for a benign one) and returns plain Python numbers, so results serialise
to JSON directly.

>>> import numpy as np
>>> y = np.array([0, 0, 0, 1, 1])
>>> s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
>>> account_metrics(y, s, s > 0.5)["roc_auc"]
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score, average_precision_score, roc_auc_score

#: The benign false-positive rates at which recall is reported.
FPR_TARGETS = (1e-2, 1e-3)


def _clean(x: float | None) -> float | None:
    """``None`` for NaN/None, else a rounded float (keeps JSON small and stable)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), 6)


def threshold_at_fpr(benign_scores: np.ndarray, fpr: float) -> float:
    """The score threshold ``t`` such that flagging ``score > t`` flags at most ``fpr`` of benign.

    At most ``floor(fpr * n_benign)`` benign scores lie strictly above ``t``; ties count against
    the detector (a benign account tied with ``t`` is not flagged, nor is a tied extraction account).

    >>> threshold_at_fpr(np.arange(100.0), 0.01)   # one benign score (99) may lie above
    98.0
    >>> threshold_at_fpr(np.arange(100.0), 1e-3)   # none may lie above
    99.0
    """
    b = np.sort(np.asarray(benign_scores, dtype=float))[::-1]
    if b.size == 0:
        return -math.inf
    k = int(math.floor(fpr * b.size + 1e-9))
    return float(b[min(k, b.size - 1)])


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, fpr: float) -> dict[str, float | None]:
    """Recall of extraction accounts at the threshold that keeps benign FPR <= ``fpr``.

    This is an *oracle* threshold set on the evaluated traffic itself (the usual "recall at FPR"
    curve point), not an operating point; the operating point is :func:`account_metrics`' ``flagged``.

    >>> recall_at_fpr(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.4, 0.9]), 0.01)["recall"]
    0.5
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, dtype=float)
    if not y.any() or y.all():
        return {"recall": None, "fpr": None, "threshold": None}
    t = threshold_at_fpr(s[~y], fpr)
    return {
        "recall": _clean(float(np.mean(s[y] > t))),
        "fpr": _clean(float(np.mean(s[~y] > t))),
        "threshold": _clean(t) if math.isfinite(t) else None,
    }


def account_metrics(y: np.ndarray, scores: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """Account-level quality: ROC-AUC, PR-AUC, recall at benign FPR targets and at ``flagged``.

    >>> m = account_metrics(np.array([0, 1]), np.array([0.2, 0.7]), np.array([False, True]))
    >>> m["recall_at_threshold"], m["fpr_at_threshold"]
    (1.0, 0.0)
    """
    y = np.asarray(y).astype(int)
    s = np.nan_to_num(np.asarray(scores, dtype=float), nan=-1e300, posinf=1e300, neginf=-1e300)
    f = np.asarray(flagged).astype(bool)
    both = 0 < y.sum() < y.size
    out: dict[str, Any] = {
        "accounts": int(y.size),
        "extraction_accounts": int(y.sum()),
        "benign_accounts": int(y.size - y.sum()),
        "roc_auc": _clean(roc_auc_score(y, s)) if both else None,
        "pr_auc": _clean(average_precision_score(y, s)) if both else None,
    }
    for fpr in FPR_TARGETS:
        r = recall_at_fpr(y, s, fpr)
        out[f"recall_at_fpr_{fpr:g}"] = r["recall"]
        out[f"achieved_fpr_{fpr:g}"] = r["fpr"]
    out["flagged_accounts"] = int(f.sum())
    out["recall_at_threshold"] = _clean(float(f[y == 1].mean())) if y.any() else None
    out["fpr_at_threshold"] = _clean(float(f[y == 0].mean())) if (y == 0).any() else None
    out["false_positives"] = int((f & (y == 0)).sum())
    return out


def campaign_metrics(
    campaign_ids: Sequence[str | None], flagged: np.ndarray, requests: np.ndarray
) -> dict[str, Any]:
    """Campaign-level quality.

    A campaign is *caught* when at least half of its accounts are flagged. ``request_share`` is the
    share of all campaign requests that were sent by flagged accounts (over the whole log).

    >>> m = campaign_metrics(["a", "a", "b", None], np.array([1, 0, 0, 1]), np.array([10, 30, 5, 1]))
    >>> m["campaigns"], m["caught"], m["request_share_flagged"]
    (2, 1, 0.222222)
    """
    cid = np.asarray([c if c is not None else "" for c in campaign_ids], dtype=object)
    f = np.asarray(flagged).astype(bool)
    req = np.asarray(requests, dtype=float)
    mask = cid != ""
    if not mask.any():
        return {"campaigns": 0, "caught": 0, "caught_share": None, "request_share_flagged": None,
                "per_campaign": {}}
    per: dict[str, dict[str, Any]] = {}
    for c in sorted(set(cid[mask])):
        m = cid == c
        per[c] = {
            "accounts": int(m.sum()),
            "flagged_accounts": int(f[m].sum()),
            "requests": int(req[m].sum()),
            "requests_flagged": int(req[m & f].sum()),
            "caught": bool(f[m].sum() * 2 >= m.sum()),
        }
    caught = sum(p["caught"] for p in per.values())
    total = req[mask].sum()
    return {
        "campaigns": len(per),
        "caught": int(caught),
        "caught_share": _clean(caught / len(per)),
        "request_share_flagged": _clean(req[mask & f].sum() / total) if total > 0 else None,
        "per_campaign": per,
    }


def cluster_metrics(
    labels: Sequence[str],
    campaign_ids: Sequence[str | None],
    cluster_ids: Sequence[str | None],
    cluster_flagged: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """Cluster quality of a detector's ``cluster_id`` against the true ``campaign_id``.

    - ``ari_extraction``: adjusted Rand index over **extraction accounts only**; an account with no
      cluster (``None``) counts as its own singleton cluster. Benign accounts are left out because
      legitimate groups (a company's several accounts, a campus NAT) have no campaign id, and linking
      them together is correct, not an error.
    - ``benign_linked``: benign accounts placed in a cluster that also holds an extraction account.
    - ``benign_in_flagged_cluster``: benign accounts in a cluster whose ``flagged`` is true.

    >>> m = cluster_metrics(["extraction"] * 4 + ["benign"], ["a", "a", "b", "b", None],
    ...                     ["c1", "c1", "c2", "c2", "c2"], {"c2": True})
    >>> m["ari_extraction"], m["benign_linked"], m["benign_in_flagged_cluster"]
    (1.0, 1, 1)
    """
    lab = np.asarray(labels, dtype=object)
    ext = lab == "extraction"
    cl = [c if c is not None else None for c in cluster_ids]
    pred = [c if c is not None else f"__single_{i}" for i, c in enumerate(cl)]
    truth = [c if c is not None else f"__single_{i}" for i, c in enumerate(campaign_ids)]
    idx = np.flatnonzero(ext)
    ari = None
    if idx.size >= 2:
        ari = _clean(adjusted_rand_score([truth[i] for i in idx], [pred[i] for i in idx]))
    ext_clusters = {cl[i] for i in idx if cl[i] is not None}
    flagged_clusters = {c for c, v in (cluster_flagged or {}).items() if v}
    benign_idx = np.flatnonzero(~ext)
    return {
        "ari_extraction": ari,
        "benign_linked": int(sum(cl[i] in ext_clusters for i in benign_idx if cl[i] is not None)),
        "benign_in_flagged_cluster": int(
            sum(cl[i] in flagged_clusters for i in benign_idx if cl[i] is not None)
        ),
        "clusters": len({c for c in cl if c is not None}),
    }


def replay_metrics(
    event_account: np.ndarray,
    event_ts: np.ndarray,
    account_campaign: dict[str, str],
    first_flag_ts: dict[str, float],
) -> dict[str, Any]:
    """Requests each campaign got served before it was first flagged in ``replay``.

    A campaign's flag time is the earliest ``flagged_at`` of any of its accounts. Requests "served
    before" are the campaign's requests (all its accounts) with a timestamp strictly earlier. A
    campaign never flagged counts all of its requests (right-censored; ``never_flagged`` says how
    many), so the median and p90 are not flattered by misses.

    >>> m = replay_metrics(np.array(["x", "x", "y", "x"]), np.array([1.0, 2.0, 3.0, 4.0]),
    ...                    {"x": "A", "y": "A"}, {"y": 3.0})
    >>> m["median_requests_before_flag"], m["median_share_before_flag"]
    (2.0, 0.5)
    """
    acc = np.asarray(event_account, dtype=object)
    ts = np.asarray(event_ts, dtype=float)
    if acc.size:
        uniq, inv = np.unique(acc.astype(str), return_inverse=True)
        camp_of_event = np.array([account_campaign.get(a, "") for a in uniq], dtype=object)[inv]
    else:
        camp_of_event = acc
    per: dict[str, dict[str, Any]] = {}
    for c in sorted(set(account_campaign.values())):
        m = camp_of_event == c
        total = int(m.sum())
        flags = [first_flag_ts[a] for a, cc in account_campaign.items() if cc == c and a in first_flag_ts]
        t0 = min(flags) if flags else None
        before = int((ts[m] < t0).sum()) if t0 is not None else total
        per[c] = {
            "requests": total,
            "flagged": t0 is not None,
            "requests_before_flag": before,
            "share_before_flag": _clean(before / total) if total else None,
        }
    if not per:
        return {"campaigns": 0, "never_flagged": 0, "median_requests_before_flag": None,
                "p90_requests_before_flag": None, "median_share_before_flag": None,
                "p90_share_before_flag": None, "per_campaign": {}}
    before = np.array([p["requests_before_flag"] for p in per.values()], dtype=float)
    share = np.array([p["share_before_flag"] or 0.0 for p in per.values()], dtype=float)
    return {
        "campaigns": len(per),
        "never_flagged": int(sum(not p["flagged"] for p in per.values())),
        "median_requests_before_flag": _clean(float(np.median(before))),
        "p90_requests_before_flag": _clean(float(np.quantile(before, 0.9))),
        "median_share_before_flag": _clean(float(np.median(share))),
        "p90_share_before_flag": _clean(float(np.quantile(share, 0.9))),
        "per_campaign": per,
    }


def per_archetype(
    archetypes: Sequence[str], labels: Sequence[str], flagged: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Per archetype: label, account count, flagged count and flagged share.

    The flagged share is the recall for an extraction archetype and the FPR for a benign one.

    >>> per_archetype(["bulk", "human", "human"], ["extraction", "benign", "benign"],
    ...               np.array([True, False, True]))["human"]
    {'label': 'benign', 'accounts': 2, 'flagged': 1, 'flagged_share': 0.5}
    """
    arch = np.asarray(archetypes, dtype=object)
    lab = np.asarray(labels, dtype=object)
    f = np.asarray(flagged).astype(bool)
    out: dict[str, dict[str, Any]] = {}
    for a in sorted(set(arch)):
        m = arch == a
        out[str(a)] = {
            "label": str(lab[m][0]),
            "accounts": int(m.sum()),
            "flagged": int(f[m].sum()),
            "flagged_share": _clean(float(f[m].mean())),
        }
    return out
