"""report.html: content, escaping, self-containment and size caps (the browser test is separate)."""

from __future__ import annotations

import json

import re
import shutil

import pytest

from distillguard.errors import InputError
from distillguard.report import write_report


@pytest.fixture(scope="module")
def page(scan_dir, tmp_path_factory):
    out = write_report(scan_dir, tmp_path_factory.mktemp("rep") / "report.html")
    return out.read_text(encoding="utf-8")


def test_default_path_is_in_the_scan_folder(tmp_path, scan_dir):
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    out = write_report(d)
    assert out == d / "report.html" and out.stat().st_size > 10_000


def test_summary_and_sections(page):
    for text in ("61,730", "flagged accounts", "3 / 4", "rejected lines", "0.62", "duckdb",
                 "2026-01-01 00:00 UTC", "2026-01-03 23:59 UTC"):
        assert text in page, text
    for ident in ("summary", "clusters", "signals", "accounts", "evidence", "catalogue", "rejected"):
        assert f'<section id="{ident}">' in page


def test_flagged_clusters_with_links_graphs_and_accounts(page):
    for cid in ("c-0000", "c-0001", "c-0002"):
        assert f'<span class="mono">{cid}</span>' in page
    assert "c-nat" not in page  # linked but benign: not shown as a flagged cluster
    assert page.count('<svg class="graph"') == 3
    assert "203.0.113.0/24" in page and "pf_00abababababababababab" in page
    assert "1 edge(s) lead to accounts outside this cluster" in page
    # the script's request fingerprint that only the cluster's flagged members send
    assert '<span class="mono">you are a grader 0. | 0.2|-|4096|1|0 | #00</span> (14 accounts)' in page
    # a graph has one circle per member (cluster c-0000 has 14)
    first_graph = page.split('<svg class="graph"')[1].split("</svg>")[0]
    assert first_graph.count("<circle") == 14


def test_timelines_distributions_and_prompts(page):
    assert page.count('<div class="acct"') == 30
    assert page.count('<svg class="tl"') >= 30
    # one histogram per signal with a feature column (5 of 6: sync_timing has none)
    assert page.count('<svg class="hist"') == 5
    assert "Solve the following problem and show your reasoning step by step" in page
    assert "sha256:" + "0f" * 32 in page


def test_attacker_prompt_is_escaped(page):
    assert "<script>window.__pwned" not in page
    assert "&lt;script&gt;window.__pwned = 1; fetch(&#x27;https://evil.example/x&#x27;)&lt;/script&gt;" in page
    assert '<img src=x onerror' not in page
    assert page.count("<script") == 1  # only the page's own script
    assert "{oops <b>" not in page and "{oops &lt;b&gt;" in page  # rejected raw lines are escaped too


def test_self_contained(page):
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.split("</head>")[0])
    assert not re.search(r"""<(script|img|link|iframe)[^>]+(src|href)=["']https?:""", page)
    assert "default-src 'none'" in page and "script-src 'sha256-" in page
    assert "@import" not in page and "url(http" not in page


def test_catalogue_table(page):
    cat = page.split('<section id="catalogue">')[1].split("</section>")[0]
    assert cat.count("<tr>") == 1 + 6
    assert "DG-0005" in cat and "calibration research" in cat
    assert 'href="https://atlas.mitre.org/techniques/AML.T0005.001"' in cat
    assert '<span class="lvl high">high</span>' in cat


def test_many_flagged_accounts_stay_capped(make_scan_dir):
    d = make_scan_dir(n_benign=1000, cluster_sizes=(300,) + (20,) * 24, n_flagged_singletons=220)
    html = write_report(d).read_text(encoding="utf-8")
    assert html.count('<div class="acct"') == 50
    table = html.split('id="acct-table"')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 1000  # header + every flagged account
    assert html.count('<svg class="graph"') == 20
    assert "5 more flagged clusters" in html
    biggest = html.split('<svg class="graph"')[1].split("</svg>")[0]
    assert biggest.count("<circle") == 150 and "150 best-connected of 300 accounts" in html
    assert len(html) < 3_000_000


def test_unwritable_output(tmp_path, scan_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        write_report(scan_dir, blocker / "report.html")


def test_cluster_reasons_are_shown(page):
    cluster = page.split('<section id="clusters">')[1].split("</section>")[0]
    assert cluster.count("why the cluster is flagged") == 3
    assert "14 accounts active in the same minutes" in cluster


def test_nothing_flagged(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "summary.json").write_text('{"requests": 5, "accounts": 1, "rejected": 0, "flagged_accounts": 0}')
    (d / "verdicts.jsonl").write_text('{"account_id": "a", "score": 0.1, "flagged": false, "cluster_id": null,'
                                      ' "reasons": []}\n')
    html = write_report(d).read_text()
    assert "No account was flagged." in html and "No flagged clusters." in html
    assert "Not in the scan folder" in html and "graph_edges.parquet" in html


def test_damaged_inputs_are_shown_with_the_summary(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    msg = "day1.jsonl.gz: compressed stream is corrupt or truncated after line 41 <b>"
    (d / "summary.json").write_text(json.dumps({"requests": 5, "accounts": 1, "rejected": 2, "flagged_accounts": 0,
                                                "damaged_inputs": [msg]}))
    (d / "verdicts.jsonl").write_text('{"account_id": "a", "score": 0.1, "flagged": false, "cluster_id": null,'
                                      ' "reasons": []}\n')
    html = write_report(d).read_text()
    assert "<b>Damaged inputs</b>" in html and "truncated after line 41 &lt;b&gt;" in html
    (d / "summary.json").write_text('{"requests": 5, "accounts": 1, "rejected": 0, "flagged_accounts": 0}')
    assert "Damaged inputs" not in write_report(d).read_text()


def test_odd_but_legal_values_render(tmp_path, scan_dir):
    """Nulls, missing optional keys, unknown link types and non-numeric feature columns do not break it."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    (d / "clusters.jsonl").write_text(json.dumps({"cluster_id": "c-odd", "account_ids": ["acct-x0000", "ghost"],
                                                  "score": None, "flagged": True,
                                                  "links": [{"type": "brand_new_link", "value": None}]}) + "\n")
    # one odd evidence record in place of acct-x0000's; the folder stays whole (one cluster now)
    rows = [json.loads(line) for line in (d / "evidence.jsonl").read_text().splitlines()]
    assert "acct-x0000" in {r["account_id"] for r in rows}
    odd = {"account_id": "acct-x0000", "timeline": {"counts": []}, "example_prompts": [None, ""], "indicators": {}}
    (d / "evidence.jsonl").write_text("".join(json.dumps(odd if r["account_id"] == "acct-x0000" else r) + "\n"
                                              for r in rows))
    summary = json.loads((d / "summary.json").read_text())
    (d / "summary.json").write_text(json.dumps({**summary, "clusters": 1, "flagged_clusters": 1}))
    acc = pq.read_table(d / "accounts.parquet")
    acc = acc.set_column(acc.column_names.index("cot_share"), "cot_share",
                         pa.array(["x"] * acc.num_rows))
    pq.write_table(acc, d / "accounts.parquet")
    html = write_report(d).read_text()
    assert "c-odd" in html and "brand_new_link" in html
    assert html.count('<svg class="hist"') == 4  # the text column is skipped


def test_every_internal_link_has_a_target(make_scan_dir):
    html = write_report(make_scan_dir(cluster_sizes=(60, 8), n_flagged_singletons=5), top_accounts=10).read_text()
    targets = set(re.findall(r'id="([^"]+)"', html))
    links = set(re.findall(r'href="#([^"]+)"', html))
    assert links and links <= targets
    assert len(re.findall(r'<div class="acct" id=', html)) == 10
