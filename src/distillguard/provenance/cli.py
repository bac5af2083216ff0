"""``distillguard provenance``: keys, watermark detection, radioactivity tests, identity probes,
and the end-to-end experiment. Heavy imports (torch, transformers) happen inside the commands."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

provenance_app = typer.Typer(
    help="Prove distillation: watermark keys, radioactivity tests, identity probes, the experiment.",
    no_args_is_help=True,
)


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code=2)


@provenance_app.command("keygen")
def keygen_command(
    out: Path = typer.Option(..., "--out", help="Key file to write (JSON), or key ring (JSON Lines) with --ring."),
    scheme: str = typer.Option("greenlist", help="greenlist (Kirchenbauer) or gumbel (Aaronson)."),
    gamma: float = typer.Option(0.25, help="Green-list fraction."),
    delta: float = typer.Option(2.0, help="Logit boost of green tokens."),
    context_width: int = typer.Option(1, help="Context window h (tokens) seeding the green list."),
    hashing: str = typer.Option("lefthash", help="lefthash or selfhash."),
    vocab_size: int = typer.Option(49152, help="Vocabulary size of the serving tokenizer."),
    tokenizer: str = typer.Option("smollm2", help="Name of the serving tokenizer (recorded in the key)."),
    key_id: Optional[str] = typer.Option(None, help="Key id (default: wk-DATE-HASH)."),
    ring: bool = typer.Option(False, "--ring", help="Append to (rotate) a key ring: older keys are retired but still verify."),
) -> None:
    """Create a watermark key (or rotate a key ring).

    Example: distillguard provenance keygen --out wm-key.json --delta 2 --context-width 1
    """
    from distillguard.errors import DistillguardError
    from distillguard.provenance.keys import KeyRing, WatermarkKey

    try:
        key = WatermarkKey.generate(key_id=key_id, scheme=scheme, gamma=gamma, delta=delta, context_width=context_width,
                                    hashing=hashing, vocab_size=vocab_size, tokenizer=tokenizer)
        if ring:
            kr = KeyRing.load(out) if out.exists() else KeyRing()
            kr.rotate(key)
            kr.save(out)
        else:
            if out.exists():
                _fail(f"{out} exists; choose another path or use --ring to rotate")
            key.save(out)
    except DistillguardError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"key_id": key.key_id, "file": str(out), "ring": ring}))


@provenance_app.command("detect")
def detect_command(
    texts: Path = typer.Argument(..., help="Traffic log (contract §1 JSONL) or a text file (one text per line)."),
    key: Path = typer.Option(..., "--key", help="Key file or key ring."),
    tokenizer: str = typer.Option("smollm2", help="Serving tokenizer: smollm2, hf:DIR, gguf:FILE or bytes."),
) -> None:
    """Is each text watermarked with this key? Prints one JSON line per text (exact p-values).

    Example: distillguard provenance detect logs/served.jsonl --key wm-key.json
    """
    from distillguard.errors import DistillguardError
    from distillguard.provenance.detect import detect_text
    from distillguard.provenance.keys import load_key
    from distillguard.provenance.suspects import load_tokenizer, read_served
    from distillguard.provenance.watermark import Watermark

    try:
        k = load_key(key)
        tok = load_tokenizer(tokenizer)
        wm = Watermark(k)
        if texts.is_dir() or texts.suffix in (".jsonl", ".gz", ".zst"):  # a log, or the gateway's log folder
            served, stats = read_served([texts], key_id=None)
            for msg in stats["damaged"]:
                typer.echo(f"warning: {msg}", err=True)
            items = [(s.request_id, tok.chat_ids(s.messages), s.answer) for s in served]
        else:
            items = _text_lines(texts)
    except DistillguardError as exc:
        _fail(str(exc))
    if not items:
        _fail(f"no text to test in {texts}: pass a traffic log (or the gateway's log folder) with answers, or a "
              "text file with one text per line")
    for rid, prompt, answer in items:
        d = detect_text(tok.encode(answer), wm, prompt_ids=prompt)
        typer.echo(json.dumps({"id": rid, **d.to_dict()}))


def _text_lines(path: Path) -> list[tuple[str, list[int], str]]:
    """``(id, [], text)`` per non-blank line of a text file; bytes that are not UTF-8 are replaced (and
    counted on stderr): a line is still tested on the rest of its tokens."""
    from distillguard.errors import InputError
    from distillguard.ingest.lines import read_all_bytes

    try:
        raw = read_all_bytes(path)  # scan's reader: a leading byte order mark dropped; damage is an InputError
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}. Pass a traffic log or a text file "
                         "(one text per line).") from e
    items, bad = [], 0
    for i, line in enumerate(raw.splitlines()):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text, bad = line.decode("utf-8", "replace"), bad + 1
        if text.strip():
            items.append((str(i), [], text))
    if bad:
        typer.echo(f"warning: {path}: {bad:,} line(s) are not valid UTF-8; their bad bytes were replaced by U+FFFD",
                   err=True)
    return items


@provenance_app.command("test")
def test_command(
    suspect: str = typer.Option(..., "--suspect", help="hf:DIR, gguf:FILE or openai:URL."),
    served: list[Path] = typer.Option(..., "--served", help="Our traffic logs (contract §1) with the served outputs."),
    key: Path = typer.Option(..., "--key", help="Key file or key ring (the active key is tested)."),
    out: Path = typer.Option(..., "--out", help="Output folder for evidence.json and evidence.html."),
    tokenizer: str = typer.Option("smollm2", help="Our serving tokenizer: smollm2, hf:DIR, gguf:FILE or bytes."),
    decoys: int = typer.Option(200, help="Number of decoy keys for calibration."),
    max_prompts: int = typer.Option(50, help="Served prompts to ask the suspect."),
    samples: int = typer.Option(4, help="Answers requested per prompt."),
    max_new_tokens: int = typer.Option(64, help="Answer length requested."),
    api_key_env: str = typer.Option("SUSPECT_API_KEY", help="Environment variable holding the suspect API key (openai:)."),
    model: str = typer.Option("default", help="Model name sent to an openai: suspect."),
    seed: int = typer.Option(0, help="Seed for prompt selection and sampling."),
) -> None:
    """Radioactivity test of a suspect model against our served, watermarked outputs.

    Example: distillguard provenance test --suspect openai:http://127.0.0.1:8000 --served logs/ --key wm-key.json --out evidence/
    """
    import os

    from distillguard.errors import DistillguardError
    from distillguard.provenance.evidence import test_suspect, write_evidence
    from distillguard.provenance.keys import load_key
    from distillguard.provenance.suspects import load_tokenizer, open_suspect, read_served

    try:
        k = load_key(key)
        items, stats = read_served(served, key_id=k.key_id)
        for msg in stats["damaged"]:
            typer.echo(f"warning: {msg}", err=True)
        if not items:
            _fail(f"no served responses for key {k.key_id} in {', '.join(map(str, served))} ({stats})")
        tok = load_tokenizer(tokenizer)
        sus = open_suspect(suspect, api_key=os.environ.get(api_key_env), model=model)
        results, setup = test_suspect(sus, items, k, tok, n_decoys=decoys, max_prompts=max_prompts, samples=samples,
                                      max_new_tokens=max_new_tokens, seed=seed, progress=lambda m: typer.echo(m, err=True))
        setup["served_log_stats"] = stats
        doc = write_evidence(out, results, setup)
    except DistillguardError as exc:
        _fail(str(exc))
    typer.echo(doc["statement"])


@provenance_app.command("probe")
def probe_command(
    suspect: str = typer.Option(..., "--suspect", help="hf:DIR, gguf:FILE or openai:URL."),
    ours: str = typer.Option("smollm2", "--ours", help="Our model: smollm2, hf:DIR, gguf:FILE or openai:URL."),
    out: Path = typer.Option(..., "--out", help="Output folder for probes.json."),
    our_name: list[str] = typer.Option([], "--our-name", help="Names our model/maker go by (e.g. SmolLM, Hugging Face)."),
) -> None:
    """Identity and fingerprint probes: compare a suspect's answers with our model's.

    Example: distillguard provenance probe --suspect openai:http://127.0.0.1:8000 --ours smollm2 --out probes/
    """
    import os

    from distillguard.errors import DistillguardError
    from distillguard.provenance.probes import compare, run_probes
    from distillguard.provenance.suspects import HFSuspect, load_smollm2, open_suspect

    try:
        if ours == "smollm2":
            m, t = load_smollm2()
            our = HFSuspect(model=m, tokenizer=t, name="smollm2")
        else:
            our = open_suspect(ours)
        sus = open_suspect(suspect, api_key=os.environ.get("SUSPECT_API_KEY"))
        res = compare(run_probes(our.generate), run_probes(sus.generate), our_names=set(our_name))
    except DistillguardError as exc:
        _fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    (out / "probes.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))
    typer.echo(json.dumps(res["summary"], ensure_ascii=False))


@provenance_app.command("experiment")
def experiment_command(
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, report.html, details.json."),
    quick: bool = typer.Option(False, "--quick", help="Tiny teacher trained in the run (under 10 minutes on 2 CPU cores)."),
    seed: int = typer.Option(0, help="Seed of the whole run."),
    n_prompts: Optional[int] = typer.Option(None, help="Override the number of prompts (smaller = faster)."),
    n_decoys: Optional[int] = typer.Option(None, help="Override the number of decoy keys per test."),
) -> None:
    """End-to-end experiment: watermarked teacher, students on mixtures, radioactivity tests (contract §5).

    Example: distillguard provenance experiment --quick --out /tmp/prov
    """
    from distillguard.provenance.experiment import ExperimentConfig, run_experiment

    kw = {"seed": seed}
    if n_prompts:
        kw["n_prompts"] = n_prompts
    if n_decoys:
        kw["n_decoys"] = n_decoys
    cfg = ExperimentConfig.quick(**kw) if quick else ExperimentConfig.full(**kw)
    t0 = time.time()
    try:
        rows = run_experiment(out, cfg, progress=sys.stderr.isatty())
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc}")
    for r in rows:
        typer.echo(f"{r['student_name']:>24} {r['test']:<22} n={r['scored_tokens']:<6} p={r['p_value']:.3g} (log10 {r['log10_p']:.1f})")
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.html'} in {time.time() - t0:.0f} s")
