"""``distillguard export stix`` / ``export report`` through the CLI."""

from __future__ import annotations

import json

import stix2
from typer.testing import CliRunner

from distillguard.cli import app

runner = CliRunner()


def test_export_stix(scan_dir, tmp_path):
    out = tmp_path / "bundle.json"
    res = runner.invoke(app, ["export", "stix", "--scan", str(scan_dir), "--out", str(out), "--tlp", "green"])
    assert res.exit_code == 0, res.output
    bundle = stix2.parse(out.read_text(), allow_custom=True)
    assert any(o.type == "campaign" for o in bundle.objects)
    assert json.loads(out.read_text())["objects"][0]["id"] == stix2.TLP_GREEN.id


def test_export_report(scan_dir, tmp_path):
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["export", "report", "--scan", str(scan_dir), "--out", str(out), "--top-accounts", "5"])
    assert res.exit_code == 0, res.output
    assert out.read_text().count('<div class="acct"') == 5


def test_bad_scan_folder_is_a_one_line_error(tmp_path):
    res = runner.invoke(app, ["export", "stix", "--scan", str(tmp_path / "x"), "--out", str(tmp_path / "b.json")])
    assert res.exit_code == 1
    assert "not a folder" in res.output and "Traceback" not in res.output


def test_help_has_examples():
    for cmd in ("stix", "report"):
        res = runner.invoke(app, ["export", cmd, "--help"])
        assert res.exit_code == 0 and "Example: distillguard export " + cmd in res.output
