"""Reports and exports of a scan folder: ``report.html`` and the STIX 2.1 bundle.

    >>> from distillguard.report import write_report, export_stix
"""

from distillguard.report._scan import JsonlRows, ScanOutput, load_scan, read_jsonl
from distillguard.report.html import render_report, write_report
from distillguard.report.stix import build_bundle, export_stix

__all__ = sorted(["JsonlRows", "ScanOutput", "read_jsonl", "build_bundle", "export_stix", "load_scan", "render_report", "write_report"])
