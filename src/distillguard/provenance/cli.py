"""``distillguard provenance``: watermark, test and the end-to-end experiment (being built)."""

import typer

provenance_app = typer.Typer(help="Prove distillation: watermarks, radioactivity tests, identity probes.", no_args_is_help=True)
