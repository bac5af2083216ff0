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


def test_a_verdicts_file_cut_short_is_an_error_not_a_shorter_list(tmp_path, scan_dir):
    """A scan stopped mid-write: the last line cut inside an unflagged record (which the fast path
    does not parse) used to read as a folder with fewer accounts, and the export said nothing."""
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    data = (d / "verdicts.jsonl").read_bytes()
    cut = data.index(b'"flagged": false') + 5  # inside the first unflagged record
    (d / "verdicts.jsonl").write_bytes(data[:cut])
    with pytest.raises(InputError, match=r"verdicts.jsonl:\d+ is not valid JSON"):
        load_scan(d)


@pytest.mark.parametrize("name, what", [
    ("verdicts.jsonl", "accounts"),
    ("clusters.jsonl", "clusters"),
    ("evidence.jsonl", "evidence records"),
])
def test_a_file_missing_whole_lines_does_not_match_the_summary(tmp_path, scan_dir, name, what):
    """Cut at a line boundary, the file parses; its count against summary.json's gives it away."""
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    lines = (d / name).read_bytes().splitlines(keepends=True)
    (d / name).write_bytes(b"".join(lines[:-1]))
    with pytest.raises(InputError, match=rf"{name} holds [\d,]+ {what}.*summary.json says.*distillguard scan"):
        load_scan(d)


def test_flagged_rows_are_checked_against_the_summary(tmp_path, scan_dir):
    d = tmp_path / "s"
    shutil.copytree(scan_dir, d)
    text = (d / "verdicts.jsonl").read_text()
    (d / "verdicts.jsonl").write_text(text.replace('"flagged": true', '"flagged": false', 1))
    with pytest.raises(InputError, match=r"holds 29 flagged accounts, but summary.json says the scan wrote 30"):
        load_scan(d)
