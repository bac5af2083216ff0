"""Served-log reading, the suspect test pipeline and evidence report, identity probes, CLI help."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.provenance.evidence import test_suspect as run_suspect_test
from distillguard.provenance.evidence import write_evidence
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.probes import PROBES, compare, run_probes
from distillguard.provenance.suspects import read_served
from distillguard.provenance.watermark import Watermark

V = 300


class WordTok:
    """Whitespace 'tokenizer' over integer words: text '12 7 99' <-> ids [12, 7, 99]."""

    def encode(self, text):
        return [int(w) for w in text.split()]

    def chat_ids(self, messages):
        return [1000 % V] + self.encode(messages[-1]["content"])

    def __len__(self):
        return V


def _gen(wm, rng, n=60):
    base = np.random.default_rng(9).normal(0, 2, (V, V))
    seq = [int(rng.integers(V))]
    for _ in range(n):
        lg = base[seq[-1]] if wm is None else wm.process_logits(seq[-wm.h :], base[seq[-1]])
        p = np.exp(lg - lg.max())
        seq.append(int(rng.choice(V, p=p / p.sum())))
    return seq


@pytest.fixture
def served_log(tmp_path):
    key = WatermarkKey.derive(b"m", key_id="wk-e", vocab_size=V, delta=2.5)
    wm = Watermark(key)
    rng = np.random.default_rng(0)
    lines, memory = [], {}
    for i in range(40):
        prompt = " ".join(str(int(x)) for x in rng.integers(0, V, 5))
        ans = " ".join(map(str, _gen(wm, rng)))
        memory[prompt] = ans
        rec = {"request_id": f"r{i}", "timestamp": 0, "account_id": "a", "endpoint": "/v1/chat/completions",
               "request": {"model": "m", "messages": [{"role": "user", "content": prompt}]},
               "response": {"choices": [{"message": {"role": "assistant", "content": ans}}]},
               "watermark_key_id": "wk-e" if i % 10 else "wk-old"}
        lines.append(json.dumps(rec))
    lines.append("not json")
    p = tmp_path / "served.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p, key, memory


def test_read_served_filters_by_key_and_counts_bad_lines(served_log):
    p, key, _ = served_log
    items, stats = read_served([p], key_id=key.key_id)
    assert len(items) == 36 and stats["other_key"] == 4 and stats["rejected"] == 1


def test_read_served_keeps_what_a_damaged_log_holds(served_log, tmp_path):
    """A served log cut short by a crash: the lines before the cut are used and the damage is noted
    (it was a bare EOFError, which the CLI printed as "Aborted.")."""
    import gzip

    p, key, _ = served_log
    text = p.read_bytes() * 40  # 1,640 lines, several reads of the decoder
    blob = gzip.compress(text)
    cut = tmp_path / "served.jsonl.gz"
    cut.write_bytes(blob[: int(len(blob) * 0.8)])
    items, stats = read_served([cut, p], key_id=key.key_id)
    assert len(stats["damaged"]) == 1 and "truncated" in stats["damaged"][0] and str(cut) in stats["damaged"][0]
    assert 36 < len(items) < 36 * 41  # the lines before the cut, and the whole second log


class Parrot:
    """A suspect that memorised our served answers (or, if clean, answers with unwatermarked text)."""

    open_weights = False
    name = "parrot"

    def __init__(self, memory, clean):
        self.memory, self.clean, self.rng = memory, clean, np.random.default_rng(4)

    def generate(self, convs, **kw):
        if self.clean:
            return [" ".join(map(str, _gen(None, self.rng))) for _ in convs]
        return [self.memory[c[-1]["content"]] for c in convs]


@pytest.mark.parametrize("clean", [False, True])
def test_suspect_pipeline_and_evidence_report(served_log, tmp_path, clean):
    p, key, memory = served_log
    items, _ = read_served([p], key_id=key.key_id)
    results, setup = run_suspect_test(Parrot(memory, clean), items, key, WordTok(), n_decoys=50, max_prompts=20, samples=1)
    best = min(r.p_value for r in results)
    assert (best > 1e-3) if clean else (best < 1e-6)
    assert all(r.bonferroni_p == pytest.approx(min(1, r.p_value * len(results))) for r in results)
    doc = write_evidence(tmp_path / "ev", results, setup)
    html = (tmp_path / "ev" / "evidence.html").read_text()
    assert "<svg" in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert ("No significant trace" in doc["statement"]) == clean
    assert "does not show" in doc["statement"]
    assert json.loads((tmp_path / "ev" / "evidence.json").read_text())["setup"]["key_id"] == "wk-e"


def test_probes_compare_flags_borrowed_identity():
    ours = {p.id: ("I am SmolLM, made by Hugging Face." if p.category in ("identity", "maker") else "Blue, red, green.") for p in PROBES}
    copycat = dict(ours)
    honest = {p.id: ("I am Qwen from Alibaba." if p.category in ("identity", "maker") else "Cyan; magenta; yellow!") for p in PROBES}
    a, b = compare(ours, copycat), compare(ours, honest)
    assert a["summary"]["suspect_claims_our_identity"] and not b["summary"]["suspect_claims_our_identity"]
    assert a["summary"]["mean_similarity"] > b["summary"]["mean_similarity"]
    assert {p.language for p in PROBES} >= {"en", "fr", "es", "de", "zh"}
    got = run_probes(lambda convs, **kw: [c[0]["content"][::-1] for c in convs])
    assert set(got) == {p.id for p in PROBES}


@pytest.mark.parametrize("cmd", ["keygen", "detect", "test", "probe", "experiment"])
def test_every_command_has_help_with_example(cmd):
    r = CliRunner().invoke(app, ["provenance", cmd, "--help"])
    assert r.exit_code == 0 and "Example" in r.output


def test_keygen_cli(tmp_path):
    r = CliRunner().invoke(app, ["provenance", "keygen", "--out", str(tmp_path / "k.json"), "--vocab-size", "100"])
    assert r.exit_code == 0, r.output
    kid = json.loads(r.output)["key_id"]
    assert json.loads((tmp_path / "k.json").read_text())["key_id"] == kid
    r2 = CliRunner().invoke(app, ["provenance", "keygen", "--out", str(tmp_path / "k.json")])
    assert r2.exit_code == 2 and "exists" in r2.output
