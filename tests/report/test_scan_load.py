"""Reading a scan folder: required files, optional files, clear errors."""

from __future__ import annotations

import shutil

import pytest

from distillguard.errors import DistillguardError, InputError
from distillguard.report import load_scan


def test_loads_flagged_parts(scan_dir):
    scan = load_scan(scan_dir)
    assert len(scan.flagged_verdicts) == scan.summary["flagged_accounts"] == 30
    assert all(v["flagged"] for v in scan.flagged_verdicts)
    scores = [v["score"] for v in scan.flagged_verdicts]
    assert scores == sorted(scores, reverse=True)
    assert [c["cluster_id"] for c in scan.flagged_clusters] == ["c-0000", "c-0001", "c-0002"]
    assert scan.accounts.num_rows == 330 and scan.edges.num_rows > 0
    assert scan.rejected_reasons["missing field account_id"] == 2
    assert scan.missing == []


def test_not_a_folder(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        load_scan(tmp_path / "nope")


def test_missing_required_file_says_what_to_do(tmp_path, scan_dir):
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    (d / "verdicts.jsonl").unlink()
    with pytest.raises(DistillguardError, match=r"verdicts.jsonl missing.*distillguard scan"):
        load_scan(d)


def test_bad_json_line_names_file_and_line(tmp_path, scan_dir):
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    with (d / "clusters.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(InputError, match=r"clusters.jsonl:5 is not valid JSON"):
        load_scan(d)


def test_optional_files_may_be_absent(tmp_path, scan_dir):
    d = tmp_path / "s"
    d.mkdir()
    for name in ("summary.json", "verdicts.jsonl"):
        shutil.copy(scan_dir / name, d / name)
    scan = load_scan(d)
    assert len(scan.flagged_verdicts) == 30
    assert set(scan.missing) == {"clusters.jsonl", "signals.json", "evidence.jsonl", "rejected.jsonl",
                                 "accounts.parquet", "graph_edges.parquet"}
