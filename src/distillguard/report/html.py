"""``report.html``: one self-contained page an analyst can open offline and act on.

The page is plain HTML with inline SVG charts and one small inline script (table sorting and
filtering). It loads nothing: a Content-Security-Policy allows no network access and runs only the
page's own script (pinned by its hash), so a prompt an attacker wrote cannot run even if escaping
were ever missed. Every value from the scan goes through :func:`html.escape`.

The page stays light with many flagged accounts: per-account sections (timeline, reasons, example
prompts) for the ``top_accounts`` highest scores, graph pictures for the ``top_clusters`` highest
clusters (at most ``graph_nodes`` nodes each), and one sortable, filterable table of every flagged
account (up to ``table_rows``; the full list is in ``verdicts.jsonl``).
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from distillguard.errors import InputError
from distillguard.report import _svg
from distillguard.report._assets import CSS, JS
from distillguard.report._scan import ScanOutput, load_scan

ATLAS_URL = "https://atlas.mitre.org/techniques/"


def _e(x: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return escape("" if x is None else str(x), quote=True)


def _ts(t: float | None) -> str:
    if t is None:
        return "?"
    return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M UTC")


def _num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return _e(x)
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1):
        return f"{int(x):,}"
    if isinstance(x, float):
        return f"{x:.3g}"
    return _e(x)


def _score(s: Any) -> str:
    v = float(s or 0.0)
    return f'<span class="score" style="background:{_svg.score_color(v)}">{v:.2f}</span>'


def _atlas(ids: list[str] | None) -> str:
    return ", ".join(
        f'<a href="{_e(ATLAS_URL + i)}" rel="noreferrer noopener" target="_blank">{_e(i)}</a>' for i in (ids or [])
    )


def _level(level: Any) -> str:
    return f'<span class="lvl {_e(level)}">{_e(level)}</span>' if level else ""


def _acct_link(account_id: str, cards: set[str]) -> str:
    """The account id, linked to its evidence card when it has one."""
    if account_id in cards:
        return f'<a href="#{_anchor("a-", account_id)}" class="mono">{_e(account_id)}</a>'
    return f'<span class="mono">{_e(account_id)}</span>'


def _anchor(prefix: str, ident: Any) -> str:
    """A safe element id for an account or cluster (ids are attacker-influenced strings)."""
    return prefix + hashlib.sha1(str(ident).encode("utf-8")).hexdigest()[:12]


class _Page:
    """Collects the sections of the page (each already-escaped HTML)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.nav: list[tuple[str, str]] = []

    def section(self, ident: str, title: str, body: str) -> None:
        self.nav.append((ident, title))
        self.parts.append(f'<section id="{ident}"><h2>{_e(title)}</h2>{body}</section>')


def _summary(scan: ScanOutput) -> str:
    s = scan.summary
    t0, t1 = (s.get("time_range") or [None, None])[:2]
    accounts = s.get("accounts") or 0
    flagged = s.get("flagged_accounts", len(scan.flagged_verdicts))
    share = f" ({flagged / accounts:.2%})" if accounts else ""
    cards = [
        ("requests", _num(s.get("requests")), False),
        ("accounts", _num(accounts), False),
        ("flagged accounts" + share, _num(flagged), bool(flagged)),
        ("flagged clusters / clusters", f"{_num(s.get('flagged_clusters'))} / {_num(s.get('clusters'))}",
         bool(s.get("flagged_clusters"))),
        ("rejected lines", _num(s.get("rejected")), bool(s.get("rejected"))),
        ("operating threshold", _num(s.get("threshold")), False),
        ("engine", _e(s.get("engine")), False),
        ("scan time", f"{float(s.get('elapsed_s') or 0):.1f} s", False),
    ]
    html = ['<div class="cards">']
    for label, value, alert in cards:
        html.append(f'<div class="card{" alert" if alert else ""}"><b>{value}</b><span>{_e(label)}</span></div>')
    html.append("</div>")
    inputs = ", ".join(f"<code>{_e(p)}</code>" for p in (s.get("inputs") or []))
    html.append(f'<p class="note">Traffic from {_e(_ts(t0))} to {_e(_ts(t1))}. Inputs: {inputs or "?"}. '
                f"distillguard {_e(s.get('version', '?'))}. Scores are in [0, 1]; an account or cluster is flagged "
                f'at score &ge; the threshold. <span class="mem">Score colour: 0 <span class="legend-score"></span> 1.</span></p>')
    damaged = s.get("damaged_inputs") or []
    if damaged:  # the scan is of what could be read: say so where the figures are
        html.append('<p class="note alert-note"><b>Damaged inputs</b>, read up to the damage (see Rejected input): '
                    + "; ".join(_e(m) for m in damaged[:5]) + (" …" if len(damaged) > 5 else "") + "</p>")
    if scan.missing:
        html.append(f'<p class="note">Not in the scan folder (parts left out): '
                    f'{", ".join(_e(m) for m in scan.missing)}.</p>')
    return "".join(html)


def _top_signals(scan: ScanOutput) -> str:
    counts: Counter = Counter()
    for v in scan.flagged_verdicts:
        counts.update({r.get("signal") for r in (v.get("reasons") or []) if r.get("signal")})
    if not counts:
        return '<p class="note">No reasons recorded for flagged accounts.</p>'
    n = len(scan.flagged_verdicts)
    cat = scan.signal_by_name()
    rows = []
    for name, c in counts.most_common(20):
        sig = cat.get(name, {})
        level = sig.get("level", "")
        rows.append(
            f"<tr><td><b>{_e(sig.get('title') or name)}</b> <span class=\"mono\">{_e(name)}</span></td>"
            f"<td>{_e(sig.get('id', ''))}</td><td>{_level(level)}</td>"
            f'<td class="num">{c:,} ({c / n:.0%})</td>'
            f'<td class="bar"><div class="b" style="width:{100 * c / n:.1f}%"></div></td></tr>'
        )
    return ('<p class="note">How many flagged accounts each signal fired for.</p><table class="bars">'
            "<thead><tr><th>signal</th><th>id</th><th>level</th><th class=\"num\">flagged accounts</th><th></th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _links_table(links: list[dict[str, Any]]) -> str:
    if not links:
        return '<p class="note">No links recorded.</p>'
    rows = "".join(
        f"<tr><td>{_svg.legend_html([str(k.get('type'))])}</td>"
        f"<td class=\"mono\">{_e(k.get('value')) if k.get('value') is not None else '<i>n/a</i>'}</td>"
        f"<td class=\"num\">{_num(k.get('accounts'))}</td><td class=\"num\">{_num(k.get('edges'))}</td></tr>"
        for k in sorted(links, key=lambda k: -(k.get("edges") or 0))
    )
    return ("<table><thead><tr><th>link</th><th>shared value</th><th class=\"num\">accounts</th>"
            f"<th class=\"num\">edges</th></tr></thead><tbody>{rows}</tbody></table>")


def _cluster_reasons(c: dict[str, Any], scan: ScanOutput) -> str:
    reasons = c.get("reasons") or []
    if not reasons:
        return ""
    cat = scan.signal_by_name()
    rows = "".join(
        f"<tr><td title=\"{_e(r.get('signal'))}\">{_e((cat.get(r.get('signal')) or {}).get('title') or r.get('signal'))}"
        f"</td><td class=\"num\">{_num(r.get('value'))}</td><td>{_e(r.get('detail'))}</td></tr>"
        for r in reasons[:6]
    )
    return ('<table><thead><tr><th>why the cluster is flagged</th><th class="num">value</th><th>detail</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>")


def _clusters(
    scan: ScanOutput, scores: dict[str, float], *, top_clusters: int, graph_nodes: int, cards: set[str]
) -> str:
    flagged = scan.flagged_clusters
    if not flagged:
        return '<p class="note">No flagged clusters.</p>'
    edges_by_cluster: dict[str, list[tuple[str, str, str, float]]] = {}
    member_of: dict[str, str] = {}
    for c in flagged[:top_clusters]:
        for a in c.get("account_ids") or []:
            member_of[str(a)] = c["cluster_id"]
    if scan.edges is not None and scan.edges.num_rows and member_of:
        cols = {k: scan.edges.column(k).to_numpy(zero_copy_only=False) for k in ("src", "dst", "type", "weight")}
        src_c = np.array([member_of.get(str(x)) for x in cols["src"]], dtype=object)
        dst_c = np.array([member_of.get(str(x)) for x in cols["dst"]], dtype=object)
        inside = (src_c == dst_c) & (src_c != None)  # noqa: E711 (element-wise)
        for i in np.nonzero(inside)[0]:
            edges_by_cluster.setdefault(src_c[i], []).append(
                (str(cols["src"][i]), str(cols["dst"][i]), str(cols["type"][i]), float(cols["weight"][i])))
        outside = Counter(c for c in np.concatenate([src_c[~inside], dst_c[~inside]]) if c is not None)
    else:
        outside = Counter()
    ev = scan.evidence
    t0, t1 = (scan.summary.get("time_range") or [0, 1])[:2]
    html = []
    for rank, c in enumerate(flagged[:top_clusters]):
        cid = c["cluster_id"]
        members = [str(a) for a in c.get("account_ids") or []]
        members.sort(key=lambda a: -scores.get(a, 0.0))
        edges = edges_by_cluster.get(cid, [])
        shown = members
        if len(members) > graph_nodes:  # keep the most connected members
            deg: Counter = Counter()
            for s, d, _t, _w in edges:
                deg[s] += 1
                deg[d] += 1
            shown = sorted(members, key=lambda a: (-deg[a], -scores.get(a, 0.0)))[:graph_nodes]
        shown_set = set(shown)
        g_edges = [e for e in edges if e[0] in shown_set and e[1] in shown_set]
        svg = _svg.graph_svg([(a, scores.get(a, 0.0)) for a in shown], g_edges, seed=rank)
        types = sorted({e[2] for e in g_edges})
        cap = (f'<p class="note">Graph shows the {len(shown)} best-connected of {len(members):,} accounts.</p>'
               if len(shown) < len(members) else "")
        out_note = (f'<p class="note">{outside[cid]:,} edge(s) lead to accounts outside this cluster.</p>'
                    if outside.get(cid) else "")
        listed = members[:40]
        mem = ", ".join(
            f'<span class="mem">{_acct_link(a, cards)}&nbsp;{scores.get(a, 0.0):.2f}'
            "</span>" for a in listed
        )
        more = f" &hellip; and {len(members) - len(listed):,} more (see the accounts table)" if len(members) > 40 else ""
        tl_rows = []
        for a in members[:8]:
            tl = (ev.get(a) or {}).get("timeline")
            if tl and tl.get("counts"):
                tl_rows.append(
                    f'<div class="tlrow"><span class="lab mono">{_e(a)}</span>'
                    + _svg.timeline_svg(tl["counts"], start=tl.get("start", t0), bucket_s=tl.get("bucket_s", 3600),
                                        t0=t0, t1=t1, width=520, height=26)
                    + "</div>"
                )
        tl_html = (f'<h3>Member activity</h3><p class="note">Requests per bucket on the scan\'s time axis '
                   f"({_e(_ts(t0))} &ndash; {_e(_ts(t1))}); top {len(tl_rows)} members by score.</p>"
                   + "".join(tl_rows)) if tl_rows else ""
        parts = ""
        if c.get("combined_score") is not None and c.get("members_score") is not None:
            parts = (f'<p class="note">Score: its combined traffic\'s ({float(c["combined_score"]):.2f}) where its members\' '
                     f'own requests ({float(c["members_score"]):.2f}: their scores without the small-traffic discount, '
                     "weighted by requests) reach the threshold, else at most theirs. Linkage and pooled volume alone "
                     "never flag.</p>")
        if c.get("joined_clusters"):
            joined, graph = c.get("attributed_from") or [], c["joined_clusters"]
            parts += (f'<p class="note">Attributed after flagging: {len(graph)} clusters of the link graph (and any '
                      "flagged accounts outside them) joined, because their members are tied member by member: at "
                      "least half of the smaller group's accounts share two kinds of evidence with the other (a "
                      "creation wave, an address or a card, plus the script) on one pair, under the weight of a link, "
                      "or three quarters of them have each kind with it. Every member "
                      f"was flagged on its own. Joined to the largest: <span class=\"mono\">{_e(', '.join(joined[:12]))}"
                      f"{' …' if len(joined) > 12 else ''}</span></p>")
        elif c.get("attributed_from"):
            joined = c["attributed_from"]
            because = ("no account but a flagged one holds" if c.get("attributed_by") == "request_fingerprint_flagged_only"
                       else "far above chance")
            parts += (f'<p class="note">Attributed after flagging: {len(joined)} flagged accounts that nothing else links, '
                      f"joined because they share a request fingerprint {because} (the same system prompt and "
                      "parameter settings): one script, one operator. The fingerprint alone links no account that "
                      f"is not flagged. Accounts: <span class=\"mono\">{_e(', '.join(joined[:12]))}"
                      f"{' …' if len(joined) > 12 else ''}</span></p>")
        fps = c.get("fingerprints") or []
        if fps:
            parts += ('<p class="note">Request fingerprints that only its flagged members send (no unflagged account '
                      "of the scan does; shared in the STIX export): " + "; ".join(
                          f'<span class="mono">{_e(f.get("value"))}</span> ({_num(f.get("accounts"))} accounts)'
                          for f in fps[:5]) + (" …" if len(fps) > 5 else "") + "</p>")
        html.append(
            f'<div class="cluster" id="{_anchor("c-", cid)}"><h3>Cluster <span class="mono">{_e(cid)}</span> '
            f"{_score(c.get('score'))} &middot; {len(members):,} accounts</h3>{parts}"
            f'<div class="row"><div>{_cluster_reasons(c, scan)}{_links_table(c.get("links") or [])}'
            f'<p><b>Accounts</b> (score): {mem}{more}</p>{tl_html}</div>'
            f'<div>{svg}<div>{_svg.legend_html(types)}</div>{cap}{out_note}</div></div></div>'
        )
    if len(flagged) > top_clusters:
        rows = "".join(
            f"<tr><td class=\"mono\">{_e(c['cluster_id'])}</td><td class=\"num\" data-v=\"{float(c.get('score') or 0)}\">"
            f"{_score(c.get('score'))}</td><td class=\"num\">{len(c.get('account_ids') or []):,}</td>"
            f"<td>{_e(', '.join(sorted({str(k.get('type')) for k in c.get('links') or []})))}</td></tr>"
            for c in flagged[top_clusters:]
        )
        html.append(f"<h3>{len(flagged) - top_clusters:,} more flagged clusters</h3>"
                    '<div class="scroll"><table class="sortable"><thead><tr><th>cluster</th><th class="num">score</th>'
                    f'<th class="num">accounts</th><th>links</th></tr></thead><tbody>{rows}</tbody></table></div>')
    return "".join(html)


def _reasons_short(reasons: list[dict[str, Any]], n: int = 3) -> str:
    return "; ".join(_e(r.get("signal")) for r in (reasons or [])[:n])


def _accounts_table(scan: ScanOutput, requests: dict[str, float], *, table_rows: int, cards: set[str]) -> str:
    vs = scan.flagged_verdicts
    if not vs:
        return '<p class="note">No account was flagged.</p>'
    rows = []
    for v in vs[:table_rows]:
        a = str(v.get("account_id"))
        cid = v.get("cluster_id")
        req = requests.get(a)
        rows.append(
            f'<tr><td class="mono">{_acct_link(a, cards)}</td>'
            f'<td class="mono">{_e(cid) if cid is not None else ""}</td>'
            f'<td class="num" data-v="{float(v.get("score") or 0):.6f}">{_score(v.get("score"))}</td>'
            f'<td class="num" data-v="{req if req is not None else -1}">{_num(req) if req is not None else ""}</td>'
            f"<td>{_reasons_short(v.get('reasons'))}</td></tr>"
        )
    more = (f'<p class="note">Showing the {table_rows:,} highest of {len(vs):,} flagged accounts; '
            "the full list is in verdicts.jsonl.</p>") if len(vs) > table_rows else ""
    return (f'<p class="note">Every flagged account. Click a column to sort; type to filter.</p>{more}'
            '<input class="filter" data-table="acct-table" placeholder="filter accounts, clusters, signals">'
            '<div class="scroll"><table class="sortable" id="acct-table"><thead><tr><th>account</th><th>cluster</th>'
            '<th class="num">score</th><th class="num">requests</th><th>top reasons</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _account_cards(scan: ScanOutput, *, top_accounts: int) -> str:
    vs = scan.flagged_verdicts[:top_accounts]
    cards = {str(v.get("account_id")) for v in vs}
    if not vs:
        return '<p class="note">No account was flagged.</p>'
    cat = scan.signal_by_name()
    t0, t1 = (scan.summary.get("time_range") or [0, 1])[:2]
    out = [f'<p class="note">The {len(vs)} highest-scoring flagged accounts (of {len(scan.flagged_verdicts):,}). '
           f"Timelines share one axis: {_e(_ts(t0))} &ndash; {_e(_ts(t1))}. "
           "Prompts are shown as text, truncated by the scan; <code>sha256:</code> means redacted.</p>"
           '<div class="acct-grid">']
    for v in vs:
        a = str(v.get("account_id"))
        ev = scan.evidence.get(a) or {}
        cid = v.get("cluster_id")
        clink = f' &middot; cluster <a class="mono" href="#{_anchor("c-", cid)}">{_e(cid)}</a>' if cid else ""
        reasons = "".join(
            f"<tr><td title=\"{_e(r.get('signal'))}\">{_e((cat.get(r.get('signal')) or {}).get('title') or r.get('signal'))}"
            f"</td><td class=\"num\">{_num(r.get('value'))}</td>"
            f"<td>{_e(r.get('detail'))}</td></tr>"
            for r in v.get("reasons") or []
        )
        tl = ev.get("timeline") or {}
        tl_svg = (_svg.timeline_svg(tl["counts"], start=tl.get("start", t0), bucket_s=tl.get("bucket_s", 3600),
                                    t0=t0, t1=t1, width=600) if tl.get("counts") else '<p class="note">No timeline.</p>')
        prompts = "".join(f'<div class="prompt">{_e(p)}</div>' for p in (ev.get("example_prompts") or [])[:3])
        ind = ev.get("indicators") or {}
        ind_rows = "".join(
            f"<tr><td>{_e(k.replace('_', ' '))}</td><td class=\"mono\">{_e(', '.join(map(str, vals[:10])))}"
            f"{' &hellip;' if len(vals) > 10 else ''}</td></tr>"
            for k, vals in ind.items() if vals
        )
        links = ev.get("links") or []
        link_rows = "".join(
            f"<tr><td class=\"mono\">{_acct_link(str(lk.get('account_id')), cards)}"
            f"</td><td>{_svg.legend_html([str(lk.get('type'))])}</td><td class=\"mono\">{_e(lk.get('value'))}</td>"
            f"<td class=\"num\">{_num(lk.get('weight'))}</td></tr>"
            for lk in links[:15]
        )
        out.append(
            f'<div class="acct" id="{_anchor("a-", a)}"><h3><span class="mono">{_e(a)}</span> '
            f"{_score(v.get('score'))}{clink}</h3>"
            + (f'<table><thead><tr><th>reason</th><th class="num">value</th><th>detail</th></tr></thead>'
               f"<tbody>{reasons}</tbody></table>" if reasons else "")
            + tl_svg
            + (f"<details open><summary>example prompts ({len(ev.get('example_prompts') or [])})</summary>"
               f"{prompts}</details>" if prompts else "")
            + (f"<details><summary>indicators</summary><table><tbody>{ind_rows}</tbody></table></details>"
               if ind_rows else "")
            + (f"<details><summary>links to other accounts ({len(links)})</summary><table><thead><tr>"
               "<th>account</th><th>link</th><th>value</th><th class=\"num\">weight</th></tr></thead>"
               f"<tbody>{link_rows}</tbody></table></details>" if link_rows else "")
            + "</div>"
        )
    out.append("</div>")
    return "".join(out)


def _distributions(scan: ScanOutput) -> str:
    acc = scan.accounts
    if acc is None or not scan.signals:
        return '<p class="note">accounts.parquet or signals.json missing: no distributions.</p>'
    if "flagged" not in acc.column_names:
        return '<p class="note">accounts.parquet has no flagged column.</p>'
    flagged = np.asarray(acc.column("flagged").to_numpy(zero_copy_only=False), dtype=bool)
    figs = []
    seen = set()
    for sig in scan.signals:
        feat = sig.get("feature")
        if not feat or feat in seen or feat not in acc.column_names:
            continue
        seen.add(feat)
        try:
            vals = np.asarray(acc.column(feat).to_numpy(zero_copy_only=False), dtype=float)
        except (TypeError, ValueError):
            continue
        curve = sig.get("model") or {}
        strength = (curve["x"], curve["y"]) if curve.get("x") and curve.get("y") else None
        svg = _svg.histogram_svg(vals[~flagged], vals[flagged], title=f"{sig.get('title') or sig.get('name')}", strength=strength)
        weight = (f" Weight {_num(curve.get('weight'))}" + ("; strength learned by <code>train</code>." if curve.get("learned") else
                                                           "; the catalogue's ramp.")) if curve else ""
        figs.append(f"<figure>{svg}<figcaption>{_e(sig.get('id'))} <span class=\"mono\">{_e(feat)}</span>: "
                    f"{_e(sig.get('description'))}{weight}</figcaption></figure>")
    if not figs:
        return '<p class="note">No signal feature column found in accounts.parquet.</p>'
    return (f'<p class="note">Share of accounts per bin: <span style="color:{_svg.BENIGN_COLOR}">&#9632; not flagged '
            f"({int((~flagged).sum()):,})</span> vs <span style=\"color:{_svg.FLAGGED_COLOR}\">&#9632; flagged "
            f"({int(flagged.sum()):,})</span>; dashed lines are medians; the solid line is the signal's strength "
            f"under the scan's model, from 0 (bottom) to 1 (top).</p>"
            f'<div class="hists">{"".join(figs)}</div>')


def _catalogue(signals: list[dict[str, Any]]) -> str:
    if not signals:
        return '<p class="note">signals.json missing.</p>'
    rows = "".join(
        f"<tr><td class=\"mono\">{_e(s.get('id'))}</td><td><b>{_e(s.get('title') or s.get('name'))}</b><br>"
        f"<span class=\"mono\">{_e(s.get('name'))}</span></td><td>{_atlas(s.get('atlas'))}</td>"
        f"<td>{_level(s.get('level'))}</td>"
        f"<td>{_e(s.get('description'))}"
        + (f"<br><span class=\"note\">{_e(s.get('analyst_note'))}</span>" if s.get("analyst_note") else "")
        + f"</td><td>{'<br>'.join(_e(f) for f in s.get('falsepositives') or [])}</td></tr>"
        for s in signals
    )
    return ('<table class="sortable"><thead><tr><th>id</th><th>signal</th><th>ATLAS</th><th>level</th>'
            f"<th>description</th><th>false positives</th></tr></thead><tbody>{rows}</tbody></table>")


def _rejected(scan: ScanOutput) -> str:
    total = scan.summary.get("rejected", sum(scan.rejected_reasons.values()))
    if not total:
        return '<p class="note">No input line was rejected.</p>'
    rows = "".join(f"<tr><td>{_e(r)}</td><td class=\"num\">{c:,}</td></tr>"
                   for r, c in scan.rejected_reasons.most_common(15))
    redacted = bool(scan.summary.get("redacted"))

    def raw(r: dict) -> str:  # a rejected line is input text too: hashed in a redacted report (rejected.jsonl keeps it)
        text = r.get("raw")
        if text is None:
            return ""
        return "sha256:" + hashlib.sha256(str(text).encode("utf-8")).hexdigest() if redacted else str(text)[:200]

    ex = "".join(
        f"<tr><td class=\"mono\">{_e(r.get('source'))}:{_e(r.get('line'))}</td><td>{_e(r.get('reason'))}</td>"
        f"<td class=\"mono\">{_e(raw(r))}</td></tr>"
        for r in scan.rejected_examples[:10]
    )
    return (f'<p class="note">{_num(total)} input line(s) were rejected and skipped; all are in rejected.jsonl.</p>'
            f'<table><thead><tr><th>reason</th><th class="num">lines</th></tr></thead><tbody>{rows}</tbody></table>'
            + (f"<details><summary>first examples</summary><table><tbody>{ex}</tbody></table></details>" if ex else ""))


def render_report(
    scan: ScanOutput, *, top_accounts: int = 50, top_clusters: int = 20, graph_nodes: int = 150, table_rows: int = 5000
) -> str:
    """The report page as a string (see :func:`write_report`)."""
    scores: dict[str, float] = {}
    requests: dict[str, float] = {}
    flagged_ids = {str(v.get("account_id")) for v in scan.flagged_verdicts}
    cards = {str(v.get("account_id")) for v in scan.flagged_verdicts[:top_accounts]}
    for v in scan.flagged_verdicts:
        scores[str(v.get("account_id"))] = float(v.get("score") or 0.0)
    acc = scan.accounts
    if acc is not None and "account_id" in acc.column_names:
        import pyarrow as pa
        import pyarrow.compute as pc

        member_ids = {str(a) for c in scan.flagged_clusters[:top_clusters] for a in c.get("account_ids") or []}
        wanted = pa.array(sorted(member_ids | flagged_ids), type=pa.string())
        ids_col = acc.column("account_id").cast(pa.string())
        sub = acc.filter(pc.is_in(ids_col, value_set=wanted))
        ids = sub.column("account_id").to_pylist()
        if "score" in sub.column_names:
            for a, s in zip(ids, sub.column("score").to_pylist()):
                scores.setdefault(str(a), float(s or 0.0))
        if "requests" in sub.column_names:
            requests = {str(a): r for a, r in zip(ids, sub.column("requests").to_pylist()) if r is not None}
    page = _Page()
    page.section("summary", "Summary", _summary(scan) + _top_signals(scan))
    page.section("clusters", f"Flagged clusters ({len(scan.flagged_clusters):,})",
                 _clusters(scan, scores, top_clusters=top_clusters, graph_nodes=graph_nodes, cards=cards))
    page.section("signals", "Signal distributions: flagged vs the rest", _distributions(scan))
    page.section("accounts", f"Flagged accounts ({len(scan.flagged_verdicts):,})",
                 _accounts_table(scan, requests, table_rows=table_rows, cards=cards))
    page.section("evidence", "Account evidence: timelines, reasons, example prompts",
                 _account_cards(scan, top_accounts=top_accounts))
    page.section("catalogue", "Signal catalogue", _catalogue(scan.signals))
    page.section("rejected", "Rejected input", _rejected(scan))

    script_hash = base64.b64encode(hashlib.sha256(JS.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{script_hash}'; "
           "base-uri 'none'; form-action 'none'")
    nav = "".join(f'<a href="#{i}">{_e(t.split(":")[0].split(" (")[0])}</a>' for i, t in page.nav)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>distillguard scan report</title><style>{CSS}</style></head><body>"
        f'<header><h1>distillguard scan report</h1><div class="sub">{_e(scan.path)} &middot; generated {generated}'
        "</div></header>"
        f"<nav>{nav}</nav><main>{''.join(page.parts)}</main><script>{JS}</script></body></html>\n"
    )


def write_report(scan_dir: Path, out_path: Path | None = None, **options: int) -> Path:
    """Render ``scan_dir/report.html`` (or ``out_path``) from a scan folder and return its path.

    ``options`` are the caps of :func:`render_report` (``top_accounts``, ``top_clusters``,
    ``graph_nodes``, ``table_rows``).
    """
    scan = load_scan(Path(scan_dir))
    html = render_report(scan, **options)
    out = Path(out_path) if out_path is not None else Path(scan_dir) / "report.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:
        raise InputError(f"cannot write {out} ({exc}); pass a writable path") from exc
    return out
