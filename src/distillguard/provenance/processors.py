"""Logits processors that switch the watermark on in a provider's own serving stack.

* :func:`hf_logits_processor` -> a ``transformers.LogitsProcessor`` for ``model.generate``;
* :class:`LlamaCppWatermarkProcessor` -> a callable for ``llama-cpp-python``'s
  ``logits_processor=LogitsProcessorList([...])`` (signature ``(input_ids, scores) -> scores``
  on numpy arrays; llama-cpp-python itself is not a dependency).

Both carry ``key_id``: write it into the traffic-log record of each response as the optional
top-level field ``watermark_key_id`` (:func:`tag_record`); the secret never leaves the key file.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.watermark import Watermark


def tag_record(record: dict, key: WatermarkKey) -> dict:
    """Add ``watermark_key_id`` to a contract §1 traffic-log record (in place) and return it.

    >>> tag_record({"request_id": "r1"}, WatermarkKey.derive(b"m", key_id="wk-1"))
    {'request_id': 'r1', 'watermark_key_id': 'wk-1'}
    """
    record["watermark_key_id"] = key.key_id
    return record


class LlamaCppWatermarkProcessor:
    """Watermark for llama-cpp-python: ``llm(prompt, logits_processor=LogitsProcessorList([p]))``.

    Called with the 1-D token ids so far (prompt + generated) and the 1-D float32 scores of the
    next token; returns new scores.

    Example:
        >>> key = WatermarkKey.derive(b"m", key_id="wk-1", vocab_size=20, delta=5.0)
        >>> p = LlamaCppWatermarkProcessor(key=key)
        >>> out = p(np.array([3, 4], dtype=np.intc), np.zeros(20, dtype=np.single))
        >>> out.dtype, sorted(set(out.tolist())) == [0.0, 5.0]
        (dtype('float32'), True)
    """

    def __init__(self, *, key: WatermarkKey):
        self.key = key
        self.key_id = key.key_id
        self.wm = Watermark(key)

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        ids = np.asarray(input_ids).ravel()
        out = self.wm.process_logits(ids[-self.wm.h :].tolist(), np.asarray(scores, dtype=np.float64))
        return out.astype(np.single)


@lru_cache(maxsize=1)
def _hf_class():
    import torch
    from transformers import LogitsProcessor

    class WatermarkLogitsProcessor(LogitsProcessor):
        """Green-list / Gumbel watermark as a transformers LogitsProcessor."""

        def __init__(self, key: WatermarkKey):
            self.key = key
            self.key_id = key.key_id
            self.wm = Watermark(key)

        def __call__(self, input_ids, scores):
            h = self.wm.h
            V = scores.shape[-1]
            ids = input_ids.detach().cpu().numpy()
            if ids.shape[1] < h:
                return scores
            if self.key.scheme == "gumbel":
                rows = [self.wm.process_logits(ids[b, -h:].tolist(), scores[b].detach().float().cpu().numpy()) for b in range(len(ids))]
                return torch.tensor(np.stack(rows), dtype=scores.dtype, device=scores.device)
            masks = np.stack([self.wm.green_mask(ids[b, -h:].tolist(), V) for b in range(len(ids))])
            return scores + self.key.delta * torch.from_numpy(masks).to(device=scores.device, dtype=scores.dtype)

    return WatermarkLogitsProcessor


def hf_logits_processor(key: WatermarkKey):
    """A ``transformers.LogitsProcessor`` applying ``key``'s watermark (imports transformers)."""
    return _hf_class()(key)


def hf_generate(model, tokenizer, prompts: list[list[int]], *, wm: Watermark | None, max_new_tokens: int,
                temperature: float = 1.0, seed: int = 0) -> list[list[int]]:
    """Sample answers (new token ids, cut at EOS) for a batch of prompt token ids, left-padded."""
    import torch
    from transformers import LogitsProcessorList

    torch.manual_seed(seed)  # sampling randomness only; the watermark never uses torch RNG
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (L - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    procs = LogitsProcessorList([hf_logits_processor(wm.key)]) if wm is not None else None
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature, top_k=0,
                             max_new_tokens=max_new_tokens, logits_processor=procs, pad_token_id=pad)
    eos = tokenizer.eos_token_id
    res = []
    for row in out[:, L:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        res.append([t for t in row if t != pad])
    return res
