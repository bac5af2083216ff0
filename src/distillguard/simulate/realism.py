"""Realism statistics of a simulation, per archetype, and their printed table.

For every archetype: accounts, accounts with traffic, requests, requests per account per day,
multi-turn share (requests whose messages already hold an assistant turn), streaming share,
temperature-0 share, median prompt / completion tokens, and for benign archetypes the rate of
requests whose prompt (the last user message) is also sent by *another benign account*:

- ``exact_shared_rate``: identical prompt text;
- ``near_shared_rate``: identical normalised key (:func:`distillguard.simulate.generate.near_key`:
  lower-case words longer than 3 letters, common filler words dropped, first 10 kept), which
  catches the perturbed retypings of the same question;
- ``first_turn_exact_shared_rate``: the same restricted to first turns (no follow-ups).

Short generic follow-ups ("thanks", "continue") are shared across accounts in real logs too.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from distillguard.simulate.generate import near_key
from distillguard.simulate.table import COMPLETIONS


def _prompt_of(m) -> tuple[str, bool]:
    """(last user text, has an assistant turn) of a messages list or completions prompt."""
    if isinstance(m, str):
        return m, False
    if isinstance(m, list) and m and isinstance(m[0], str):
        return m[0], False
    last, multi = "", False
    for x in m:
        role = x.get("role")
        if role == "user":
            c = x.get("content")
            last = c if isinstance(c, str) else ""
        elif role == "assistant":
            multi = True
    return last, multi


def realism_stats(cols: dict, accounts: list[dict], days: int) -> dict:
    """Compute the statistics above from the generator's columns and account rows."""
    arch_of_acct = np.array([a["archetype"] for a in accounts], dtype=object)
    benign_acct = np.array([a["label"] == "benign" for a in accounts], dtype=bool)
    acct = cols["acct"]
    n = len(acct)
    prompts: list[str] = [""] * n
    multi = np.zeros(n, dtype=bool)
    for i, m in enumerate(cols["messages"].tolist()):
        prompts[i], multi[i] = _prompt_of(m)
    row_arch = arch_of_acct[acct]
    row_benign = benign_acct[acct]

    owner_exact: dict[str, int] = {}
    owner_near: dict[str, int] = {}
    keys: dict[str, str] = {}
    bidx = np.flatnonzero(row_benign)
    for i in bidx.tolist():
        p, a = prompts[i], int(acct[i])
        o = owner_exact.get(p)
        owner_exact[p] = a if o is None or o == a else -1
        k = keys.get(p)
        if k is None:
            k = keys[p] = near_key(p) or p
        o = owner_near.get(k)
        owner_near[k] = a if o is None or o == a else -1
    shared_exact = np.zeros(n, dtype=bool)
    shared_near = np.zeros(n, dtype=bool)
    for i in bidx.tolist():
        shared_exact[i] = owner_exact[prompts[i]] == -1
        shared_near[i] = owner_near[keys[prompts[i]]] == -1

    temp = cols["temperature"]
    per: dict[str, dict] = {}
    for arch in sorted(set(arch_of_acct.tolist())):
        rows = row_arch == arch
        k = int(rows.sum())
        n_acc = int((arch_of_acct == arch).sum())
        active = int(len(np.unique(acct[rows])))
        label = "benign" if benign_acct[arch_of_acct == arch].any() and not (~benign_acct[arch_of_acct == arch]).any() \
            else "extraction"
        d = {
            "label": label,
            "accounts": n_acc,
            "accounts_with_traffic": active,
            "requests": k,
            "requests_per_account_day": round(k / max(1, n_acc) / days, 2),
            "multi_turn_share": round(float(multi[rows].mean()), 4) if k else 0.0,
            "stream_share": round(float(cols["stream"][rows].mean()), 4) if k else 0.0,
            "temp0_share": round(float((temp[rows] == 0).mean()), 4) if k else 0.0,
            "median_prompt_tokens": int(np.median(cols["ptok"][rows])) if k else 0,
            "median_completion_tokens": int(np.median(cols["ctok"][rows])) if k else 0,
        }
        if label == "benign" and k:
            first = rows & ~multi
            d["exact_shared_rate"] = round(float(shared_exact[rows].mean()), 4)
            d["near_shared_rate"] = round(float(shared_near[rows].mean()), 4)
            d["first_turn_exact_shared_rate"] = round(float(shared_exact[first].mean()), 4) if first.any() else 0.0
        per[arch] = d
    b = row_benign
    first_b = b & ~multi
    totals = {
        "requests": int(n),
        "accounts": len(accounts),
        "benign_accounts": int(benign_acct.sum()),
        "extraction_accounts": int((~benign_acct).sum()),
        "benign_requests": int(b.sum()),
        "extraction_requests": int((~b).sum()),
        "benign_exact_shared_rate": round(float(shared_exact[b].mean()), 4) if b.any() else 0.0,
        "benign_near_shared_rate": round(float(shared_near[b].mean()), 4) if b.any() else 0.0,
        "benign_first_turn_exact_shared_rate": round(float(shared_exact[first_b].mean()), 4) if first_b.any() else 0.0,
        "benign_unique_prompts": len(owner_exact),
        "completions_endpoint_share": round(float((cols["endpoint"] == COMPLETIONS).mean()), 4) if n else 0.0,
    }
    return {"totals": totals, "archetypes": per}


def print_realism(realism: dict, console=None) -> None:
    """Print the per-archetype table with rich."""
    from rich.console import Console
    from rich.table import Table as RTable

    console = console or Console()
    t = RTable(caption="multi = multi-turn share; exact/near = prompts also sent by another benign account",
               title=f"simulated traffic ({realism.get('preset', '?')}, {realism.get('days', '?')} days, "
                     f"seed {realism.get('seed', '?')})")
    t.add_column("archetype", no_wrap=True, min_width=16)
    t.add_column("label", no_wrap=True)
    for c in ("accts", "requests", "req/acct/d", "multi", "stream", "exact", "near"):
        t.add_column(c, justify="right", no_wrap=True)
    for name, d in sorted(realism["archetypes"].items(), key=lambda kv: (kv[1]["label"], kv[0])):
        t.add_row(name, "benign" if d["label"] == "benign" else "extract", str(d["accounts"]), f"{d['requests']:,}", f"{d['requests_per_account_day']:.1f}",
                  f"{d['multi_turn_share']:.0%}", f"{d['stream_share']:.0%}",
                  f"{d['exact_shared_rate']:.1%}" if "exact_shared_rate" in d else "-",
                  f"{d['near_shared_rate']:.1%}" if "near_shared_rate" in d else "-")
    console.print(t)
    tot = realism["totals"]
    console.print(f"{tot['requests']:,} requests, {tot['accounts']:,} accounts ({tot['extraction_accounts']:,} "
                  f"extraction in {realism.get('n_campaigns', '?')} campaigns); benign prompts shared across "
                  f"accounts: {tot['benign_exact_shared_rate']:.1%} exact, {tot['benign_near_shared_rate']:.1%} near "
                  f"({tot['benign_first_turn_exact_shared_rate']:.1%} exact on first turns)")
