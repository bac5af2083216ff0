"""``distillguard export``: re-render the report or export a scan for sharing (STIX 2.1)."""

from __future__ import annotations

from pathlib import Path

import typer

export_app = typer.Typer(
    help="Export scan results: the HTML report, or a STIX 2.1 bundle for sharing.", no_args_is_help=True
)


def _fail(exc: Exception) -> None:
    typer.echo(f"distillguard export: {exc}", err=True)
    raise typer.Exit(1)


@export_app.command("stix")
def stix_command(
    scan: Path = typer.Option(..., "--scan", help="Output folder of `distillguard scan`."),
    out: Path = typer.Option(..., "--out", help="Bundle file to write (JSON)."),
    producer: str = typer.Option("distillguard", help="Name of the producing organisation (STIX identity)."),
    tlp: str = typer.Option("amber", help="TLP marking on every object: white, green, amber or red."),
    ips: bool = typer.Option(True, "--ips/--no-ips", help="Share individual client IP addresses."),
) -> None:
    """Write a STIX 2.1 bundle of a scan's flagged clusters, to share with other providers.

    Contains MITRE ATLAS attack patterns, one campaign per flagged cluster, indicators (IP prefixes,
    user agents, payment fingerprints, template signatures), relationships and sightings.

    Example: distillguard export stix --scan scan-out --out extraction.stix.json --producer "Example AI"
    """
    from distillguard.errors import DistillguardError
    from distillguard.report.stix import export_stix

    try:
        path = export_stix(scan, out, producer=producer, tlp=tlp, include_ips=ips,
                           warn=lambda msg: typer.echo(f"warning: {msg}", err=True))
    except DistillguardError as exc:
        _fail(exc)
    typer.echo(str(path))


@export_app.command("report")
def report_command(
    scan: Path = typer.Option(..., "--scan", help="Output folder of `distillguard scan`."),
    out: Path = typer.Option(None, "--out", help="HTML file to write (default: SCAN/report.html)."),
    top_accounts: int = typer.Option(50, help="Accounts that get a full evidence section."),
    top_clusters: int = typer.Option(20, help="Flagged clusters that get a graph picture."),
) -> None:
    """Render (again) the self-contained HTML report of a scan folder.

    Example: distillguard export report --scan scan-out --out /tmp/report.html
    """
    from distillguard.errors import DistillguardError
    from distillguard.report.html import write_report

    try:
        path = write_report(scan, out, top_accounts=top_accounts, top_clusters=top_clusters)
    except DistillguardError as exc:
        _fail(exc)
    typer.echo(str(path))
