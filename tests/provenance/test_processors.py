"""Logits processors: llama-cpp-python callable (numpy) and transformers LogitsProcessor (tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest

from distillguard.provenance.detect import detect_text
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.processors import LlamaCppWatermarkProcessor, hf_logits_processor, tag_record
from distillguard.provenance.watermark import Watermark


def test_llama_cpp_processor_interface_and_watermark():
    key = WatermarkKey.derive(b"m", key_id="wk-l", vocab_size=400, delta=2.5)
    proc = LlamaCppWatermarkProcessor(key=key)
    wm = Watermark(key)
    rng = np.random.default_rng(0)
    base = np.random.default_rng(5).normal(0, 2, (400, 400)).astype(np.single)
    ids = [1]
    for _ in range(150):  # the way llama-cpp-python calls it: full id array + current scores
        scores = proc(np.asarray(ids, dtype=np.intc), base[ids[-1]].copy())
        assert scores.dtype == np.single and scores.shape == (400,)
        p = np.exp(scores - scores.max()).astype(np.float64)
        ids.append(int(rng.choice(400, p=p / p.sum())))
    assert proc.key_id == "wk-l"
    assert detect_text(ids, wm).p_value < 1e-6
    # scores unchanged apart from +delta on the green list
    s = proc(np.array([3], dtype=np.intc), np.zeros(400, dtype=np.single))
    assert np.array_equal(s > 0, wm.green_mask([3], 400))


def test_tag_record_writes_key_id_not_secret():
    key = WatermarkKey.derive(b"m", key_id="wk-t")
    rec = tag_record({"request_id": "r"}, key)
    assert rec["watermark_key_id"] == "wk-t" and key.secret.hex() not in str(rec)


@pytest.fixture(scope="module")
def tiny_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=128, n_embd=32, n_layer=1, n_head=2)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("scheme", ["greenlist", "gumbel"])
def test_hf_processor_watermarks_generation(tiny_model, scheme):
    import torch
    from transformers import LogitsProcessorList

    key = WatermarkKey.derive(b"m", key_id="wk-h", vocab_size=256, delta=4.0, scheme=scheme)
    proc = hf_logits_processor(key)
    assert proc.key_id == "wk-h"
    torch.manual_seed(1)
    prompt = torch.tensor([[5, 6, 7]] * 4)
    out = tiny_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, max_new_tokens=60, top_k=0,
                              logits_processor=LogitsProcessorList([proc]), pad_token_id=0)
    wm = Watermark(key)
    ids = sum((row[3:] for row in out.tolist()), [])
    assert detect_text(ids, wm, prompt_ids=[5, 6, 7]).p_value < 1e-6
    torch.manual_seed(1)
    clean = tiny_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, max_new_tokens=60, top_k=0, pad_token_id=0)
    cids = sum((row[3:] for row in clean.tolist()), [])
    assert detect_text(cids, wm, prompt_ids=[5, 6, 7]).p_value > 1e-3


def test_hf_processor_batch_matches_numpy_core(tiny_model):
    import torch

    key = WatermarkKey.derive(b"m", key_id="wk-h", vocab_size=256, delta=2.0, context_width=2)
    proc = hf_logits_processor(key)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    scores = torch.zeros(2, 256)
    out = proc(ids, scores).numpy()
    wm = Watermark(key)
    assert np.allclose(out[0], wm.process_logits([2, 3], np.zeros(256)))
    assert np.allclose(out[1], wm.process_logits([5, 6], np.zeros(256)))
