"""The radioactivity test of one suspect, as an evidence report (``evidence.json`` + ``evidence.html``)."""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path

import numpy as np

from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.radioactivity import (
    TestResult,
    blackbox_pairs,
    bonferroni,
    reading_pairs,
    run_test,
    served_windows,
)
from distillguard.provenance.svg import histogram


def test_suspect(suspect, served, key: WatermarkKey, tokenizer, *, n_decoys: int = 200, max_prompts: int = 50,
                 samples: int = 4, max_new_tokens: int = 64, max_reading_texts: int = 200, seed: int = 0,
                 progress=None) -> tuple[list[TestResult], dict]:
    """Run the black-box (supervised and unsupervised) and, for open weights, reading-mode tests.

    ``tokenizer`` is our serving tokenizer (the watermark lives in its token ids):
    ``encode(text) -> ids`` and ``chat_ids(messages) -> ids``.
    """
    h = key.context_width
    texts = [(tokenizer.chat_ids(s.messages), tokenizer.encode(s.answer)) for s in served]
    filt = served_windows(texts, h)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.permutation(len(served))[:max_prompts].tolist())
    convs = [served[i].messages for i in pick for _ in range(samples)]
    if progress:
        progress(f"asking the suspect {len(convs)} prompts")
    answers = suspect.generate(convs, max_new_tokens=max_new_tokens, seed=seed)
    qa = [(tokenizer.chat_ids(c), tokenizer.encode(a)) for c, a in zip(convs, answers)]
    results = []
    results.append(run_test("blackbox_supervised", blackbox_pairs(qa, h, served_filter=filt), key, n_decoys=n_decoys, seed=seed))
    results.append(run_test("blackbox_unsupervised", blackbox_pairs(qa, h), key, n_decoys=n_decoys, seed=seed + 1))
    reading_note = "not run: the suspect is only reachable through an API"
    if getattr(suspect, "open_weights", False):
        sv = getattr(suspect, "tokenizer", None)
        if sv is not None and len(sv) != (key.vocab_size or len(sv)):
            reading_note = f"not run: the suspect's vocabulary ({len(sv)}) differs from the key's ({key.vocab_size})"
        else:
            if progress:
                progress("reading mode: teacher-forcing our served texts")
            rd = [texts[i] for i in sorted(rng.permutation(len(texts))[:max_reading_texts].tolist())]
            results.append(run_test("reading", reading_pairs(rd, suspect.top1, h), key, n_decoys=n_decoys, seed=seed + 2))
            reading_note = "run"
    bonferroni(results)
    setup = {"suspect": getattr(suspect, "name", str(suspect)), "key_id": key.key_id, "scheme": key.scheme,
             "gamma": key.gamma, "delta": key.delta, "context_width": h, "hashing": key.hashing,
             "served_responses": len(served), "prompts_asked": len(convs), "samples_per_prompt": samples,
             "decoys": n_decoys, "reading_mode": reading_note,
             "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
             "suspect_answer_examples": answers[:3]}
    return results, setup


def statement(results: list[TestResult], setup: dict, *, alpha: float = 1e-3) -> str:
    """Plain-language statement of what the tests show and do not show."""
    best = min(results, key=lambda r: r.bonferroni_p if r.bonferroni_p is not None else 1.0)
    bp = best.bonferroni_p if best.bonferroni_p is not None else best.p_value
    calib = all((r.ks_pvalue or 1.0) > 0.001 for r in results)
    if bp <= alpha:
        head = (f"The suspect's outputs carry our watermark (key {setup['key_id']}): in the '{best.test}' test, "
                f"{best.scored_tokens} distinct (context, token) pairs were scored and the chance that a model that never "
                f"learned from text watermarked with this key scores as high is p = {best.p_value:.3g} "
                f"({best.log10_p:.1f} in log10; {bp:.3g} after Bonferroni correction over {len(results)} tests). "
                f"This key's result ranks {best.decoy_rank_p:.3g} against {len(best.decoy_pvalues)} decoy keys.")
    else:
        head = (f"No significant trace of our watermark (key {setup['key_id']}) was found: the smallest corrected p-value "
                f"is {bp:.3g} ('{best.test}', {best.scored_tokens} pairs).")
    tail = (" What this shows: the suspect's token choices depend on our secret key, which is only possible if it learned "
            "(directly or indirectly) from text generated with that key. What it does not show: who trained the suspect, "
            "how much of its training data came from us, or that a non-significant result means it did not learn from us "
            "(too few scored pairs, paraphrasing, or a small watermarked share weaken the test).")
    tail += (" The decoy-key p-values are consistent with uniform, so the test is calibrated on this suspect." if calib
             else " WARNING: the decoy-key p-values are not uniform (KS p <= 0.001); treat the result with caution.")
    return head + tail


def write_evidence(out_dir: str | Path, results: list[TestResult], setup: dict) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = statement(results, setup)
    doc = {"setup": setup, "statement": text, "tests": [r.to_dict() for r in results]}
    (out / "evidence.json").write_text(json.dumps(doc, indent=1, default=float))
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(r.test)}</td><td>{r.scored_tokens}</td><td>{r.score:.1f}</td><td>{r.p_value:.3g}</td><td>{r.log10_p:.1f}</td>"
        f"<td>{r.bonferroni_p:.3g}</td><td>{(r.decoy_rank_p or float('nan')):.3g}</td><td>{(r.ks_pvalue or float('nan')):.3f}</td></tr>"
        for r in results)
    plots = "".join(histogram(r.decoy_pvalues, title=f"{r.test}: decoy p-values (orange: our key, dashed: uniform)", marker=r.p_value) for r in results)
    setup_rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in setup.items())
    (out / "evidence.html").write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>distillguard evidence</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:1em auto}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}
.note{{background:#f6f6ee;padding:.6em 1em;border-left:4px solid #bb8}}</style></head><body>
<h1>Watermark radioactivity evidence</h1><div class="note"><p>{e(text)}</p></div>
<h2>Setup</h2><table>{setup_rows}</table>
<h2>Tests</h2><table><tr><th>test</th><th>scored pairs</th><th>score</th><th>p-value (exact)</th><th>log10 p</th><th>Bonferroni p</th><th>rank vs decoys</th><th>decoy KS p</th></tr>{rows}</table>
<h2>Decoy-key distributions</h2>{plots}
<p>Method: each distinct (context window, token) pair is scored once; windows overlapping or repeating the prompt are excluded;
green-list tests use the exact binomial tail (regularised incomplete beta), Gumbel tests the exact Gamma tail.</p></body></html>""")
    return doc
