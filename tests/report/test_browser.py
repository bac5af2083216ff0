"""report.html in real headless Chromium: renders, no console errors, no network, script injection inert."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distillguard.report import write_report
from distillguard.report.browser import check_page, find_chromium

pytest.importorskip("websockets", reason="the `websockets` package (test extra) drives Chromium's DevTools")
if find_chromium() is None:  # pragma: no cover - depends on the machine
    pytest.skip("chromium not installed (Debian package `chromium`)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_report_renders_offline_without_errors(scan_dir, tmp_path):
    report = write_report(scan_dir, tmp_path / "report.html")
    res = check_page(report, evaluate={
        "ready": "document.body.dataset.ready",
        "pwned": "typeof window.__pwned",
        "xss_visible": "document.body.innerText.includes(\"<script>window.__pwned = 1;\")",
        "graphs": "document.querySelectorAll('svg.graph').length",
        "graph_width": "document.querySelector('svg.graph').getBoundingClientRect().width",
        "rows": "document.querySelectorAll('#acct-table tbody tr').length",
        "sorted": ("(() => { const th = document.querySelectorAll('#acct-table th')[2]; th.click();"
                   " return document.querySelector('#acct-table tbody tr td').textContent; })()"),
        "filtered": ("(() => { const i = document.querySelector('input.filter'); i.value = 'acct-s';"
                     " i.dispatchEvent(new Event('input'));"
                     " return [...document.querySelectorAll('#acct-table tbody tr')]"
                     ".filter(r => r.style.display !== 'none').length; })()"),
    })
    assert res.console_errors == []
    assert res.requests == [report.resolve().as_uri()]  # the file itself, nothing else
    assert res.values["ready"] == "1"  # the page's own script ran (CSP hash matches)
    assert res.values["pwned"] == "undefined"  # the attacker's prompt did not run
    assert res.values["xss_visible"] is True  # ... and is shown as text
    assert res.values["graphs"] == 3 and res.values["graph_width"] > 200
    assert res.values["rows"] == 30
    assert res.values["sorted"].startswith("acct-x2003")  # ascending by score: the lowest first
    assert res.values["filtered"] == 3
    assert res.screenshot.startswith(PNG) and res.page_height > 3000
    (tmp_path / "report.png").write_bytes(res.screenshot)
    if os.environ.get("DG_UPDATE_SCREENSHOT"):  # refresh the README picture: DG_UPDATE_SCREENSHOT=1 pytest ...
        shot = check_page(report, max_height=2300)
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / "report-screenshot.png").write_bytes(shot.screenshot)


def test_a_page_with_an_error_is_caught(tmp_path):
    """The checker itself sees console errors and network attempts (so the test above can fail)."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><img src='http://127.0.0.1:9/x.png'>"
                    "<script>console.error('boom'); undefinedFunction();</script></body></html>")
    res = check_page(page, full_page=False)
    assert any("boom" in e for e in res.console_errors)
    assert any("undefinedFunction" in e for e in res.console_errors)
    assert "http://127.0.0.1:9/x.png" in res.requests



def test_the_check_leaves_no_folder_behind(tmp_path):
    """Chromium's profile and the singleton-socket folder it makes in $TMPDIR are both removed."""
    import tempfile

    page = tmp_path / "p.html"
    page.write_text("<!DOCTYPE html><html><body>hi</body></html>")
    before = set(os.listdir(tempfile.gettempdir()))
    res = check_page(page, full_page=False)
    assert res.console_errors == []
    assert set(os.listdir(tempfile.gettempdir())) == before
