"""Load the real data the simulator is built on: prompts, answers, templates and serving traces.

The folder layout is that of ``../shared/data/raw`` (see its ``SOURCES.md``); the shipped sample in
``distillguard/data/sample`` uses the same layout with fewer records and gzip-compressed files, so
every file is looked up as ``NAME`` or ``NAME.gz``. Files that are absent are skipped; what is
needed at minimum is one human-prompt source, one distillation source and one Azure trace.

Pools built here (all plain Python lists / numpy arrays, indexed by the generators):

- ``human``: real human prompts (Arena-Hard, OpenAssistant, InstructionWild user_1/user_3 and
  the first human turn of HH-RLHF dialogues), with a source tag and a *coding* flag.
- ``dialogues``: real multi-turn HH-RLHF conversations ``[(human, assistant), ...]``.
- ``distill``: instruction/input/answer triples from the prompt sets that were really sent to
  commercial APIs to build distillation data (Alpaca, Code Alpaca, GPTeacher).
- ``seeds`` + ``template``: the real Alpaca self-instruct request template (``prompt.txt``) and its
  human-written seed tasks.
- ``answers``: every real answer text (documents for batch items and RAG contexts);
  ``standin_general`` / ``standin_code``: real model answers from the distillation sets, from which a
  stand-in of the right length is drawn for prompts whose source has no answer.
- traces: Azure LLM inference 2023 (conv, code) inter-arrival gaps and token counts; Mooncake
  conversation trace token counts (long contexts).

>>> from distillguard.simulate.sources import load_sources, shipped_sample_dir
>>> src = load_sources(shipped_sample_dir())
>>> len(src.human) > 100 and len(src.distill) > 100 and src.template.startswith("You are asked")
True
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distillguard.errors import InputError

_CODE_RE = re.compile(
    r"```|\bdef |\bclass |\bfunction\b|\bimport |#include|\bSQL\b|\bpython\b|\bjava(script)?\b|\bc\+\+|"
    r"\brust\b|\bcode\b|\bregex\b|\bbash\b|\bscript\b|\bAPI\b|\bjson\b|\bhtml\b|\bcss\b|\bdocker",
    re.IGNORECASE,
)


def shipped_sample_dir() -> Path:
    """The small permissively licensed sample shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "data" / "sample"


def default_data_dir(cwd: Path | None = None) -> Path:
    """``../shared/data/raw`` relative to the working directory or the repository, else the sample."""
    here = Path(__file__).resolve()
    candidates = [(cwd or Path.cwd()) / ".." / "shared" / "data" / "raw"]
    candidates += [p.parent / "shared" / "data" / "raw" for p in here.parents[2:5]]
    for c in candidates:
        if (c / "SOURCES.md").is_file() or (c / "arena_hard_auto").is_dir():
            return c.resolve()
    return shipped_sample_dir()


def _open_text(folder: Path, name: str):
    p = folder / name
    if p.is_file():
        if p.suffix == ".gz":
            return gzip.open(p, "rt", encoding="utf-8")
        return open(p, encoding="utf-8")
    gz = folder / (name + ".gz")
    if gz.is_file():
        return gzip.open(gz, "rt", encoding="utf-8")
    return None


def _jsonl(folder: Path, name: str) -> list:
    f = _open_text(folder, name)
    if f is None:
        return []
    out = []
    with f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # InstructionWild has a few lines with invalid escapes (SOURCES.md)
    return out


def _json(folder: Path, name: str) -> list:
    f = _open_text(folder, name)
    if f is None:
        return []
    with f:
        return json.load(f)


def _text(folder: Path, name: str) -> str | None:
    f = _open_text(folder, name)
    if f is None:
        return None
    with f:
        return f.read()


def parse_hh_dialogue(text: str) -> list[tuple[str, str]]:
    """Split an HH-RLHF transcript into ``[(human, assistant), ...]`` turns.

    >>> parse_hh_dialogue("\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: bye\\n\\nAssistant: ok")
    [('hi', 'hello'), ('bye', 'ok')]
    """
    parts = re.split(r"\n\n(Human|Assistant): ", text)
    turns: list[tuple[str, str]] = []
    human = None
    for i in range(1, len(parts) - 1, 2):
        role, body = parts[i], parts[i + 1].strip()
        if role == "Human":
            human = body
        elif human is not None:
            turns.append((human, body))
            human = None
    return [(h, a) for h, a in turns if h and a]


@dataclass
class Sources:
    """The pools the generators draw from; see the module docstring."""

    folder: Path
    human: list[str] = field(default_factory=list)
    human_src: list[str] = field(default_factory=list)
    human_coding: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    benchmark: list[str] = field(default_factory=list)  # public question set for eval harnesses
    dialogues: list[list[tuple[str, str]]] = field(default_factory=list)
    distill: list[tuple[str, str]] = field(default_factory=list)  # (prompt, answer)
    distill_src: list[str] = field(default_factory=list)
    distill_coding: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    alpaca_triples: list[tuple[str, str, str]] = field(default_factory=list)
    seeds: list[tuple[str, str, str]] = field(default_factory=list)
    template: str = ""
    answers: list[str] = field(default_factory=list)
    answer_len_sorted: np.ndarray = field(default_factory=lambda: np.zeros(0))
    answer_order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    conv_gaps: np.ndarray = field(default_factory=lambda: np.ones(1))
    conv_tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    code_gaps: np.ndarray = field(default_factory=lambda: np.ones(1))
    code_tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    long_tokens: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    standin_general: list[str] = field(default_factory=list)
    standin_code: list[str] = field(default_factory=list)
    files_read: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "folder": str(self.folder),
            "human_prompts": len(self.human),
            "benchmark_questions": len(self.benchmark),
            "dialogues": len(self.dialogues),
            "distill_items": len(self.distill),
            "self_instruct_seeds": len(self.seeds),
            "answers": len(self.answers),
            "azure_conv_rows": int(len(self.conv_tokens)),
            "azure_code_rows": int(len(self.code_tokens)),
            "mooncake_rows": int(len(self.long_tokens)),
            "files": self.files_read,
        }


def _azure(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    text = _text(folder, f"azure_llm_inference_2023/{name}")
    if not text:
        return None
    rows = list(csv.reader(io.StringIO(text)))[1:]
    ts = np.array(
        [np.datetime64(r[0].strip()[:26].replace(" ", "T")) for r in rows if len(r) >= 3], dtype="datetime64[us]"
    )
    tok = np.array([[int(r[1]), int(r[2])] for r in rows if len(r) >= 3], dtype=np.int64)
    sec = (ts - ts[0]).astype(np.int64) / 1e6
    gaps = np.diff(np.sort(sec))
    gaps = gaps[gaps > 0]
    return gaps / gaps.mean(), tok


def load_sources(folder: Path | str) -> Sources:
    """Read every known source under ``folder``; raise :class:`InputError` if too little is there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist; pass --data with a raw data folder "
                         "(like ../shared/data/raw) or leave it out to use the shipped sample")
    s = Sources(folder=folder)
    answers: list[str] = []

    def add_human(text: str, src: str) -> None:
        text = text.strip() if isinstance(text, str) else ""
        if 2 <= len(text) <= 6000:
            s.human.append(text)
            s.human_src.append(src)

    arena = _jsonl(folder, "arena_hard_auto/question.jsonl")
    for q in arena:
        t = (q.get("turns") or [{}])[0].get("content", "")
        add_human(t, "arena_hard_auto")
        if isinstance(t, str) and t.strip():
            s.benchmark.append(t.strip())
    for t in _jsonl(folder, "open_assistant/prompt_lottery_en_250_text.jsonl"):
        add_human(t if isinstance(t, str) else "", "open_assistant")
    for name in ("user_1.jsonl", "user_3.jsonl"):
        for r in _jsonl(folder, f"instruction_wild/{name}"):
            add_human(r.get("instruction", "") if isinstance(r, dict) else "", "instruction_wild")
    seen_hh = set()
    for r in _jsonl(folder, "hh_rlhf/harmless-base_test.jsonl"):
        d = parse_hh_dialogue(r.get("chosen", "")) if isinstance(r, dict) else []
        if not d:
            continue
        s.dialogues.append(d)
        answers.extend(a for _, a in d)
        if d[0][0] not in seen_hh:
            seen_hh.add(d[0][0])
            add_human(d[0][0], "hh_rlhf")
    s.human_coding = np.array([bool(_CODE_RE.search(t)) for t in s.human], dtype=bool)

    def add_distill(instr: str, inp: str, out: str, src: str) -> None:
        instr, inp, out = (instr or "").strip(), (inp or "").strip(), (out or "").strip()
        if not instr:
            return
        prompt = f"{instr}\n\n{inp}" if inp and inp != "<noinput>" else instr
        s.distill.append((prompt, out))
        s.distill_src.append(src)
        if out:
            answers.append(out)

    for r in _json(folder, "stanford_alpaca/alpaca_5000.json"):
        add_distill(r.get("instruction"), r.get("input"), r.get("output"), "stanford_alpaca")
        s.alpaca_triples.append((r.get("instruction", ""), r.get("input", ""), r.get("output", "")))
    for r in _json(folder, "codealpaca/code_alpaca_2k.json"):
        add_distill(r.get("instruction"), r.get("input"), r.get("output"), "codealpaca")
    for name in ("codegen-instruct.json", "toolformer-dedupe-only-dataset.json"):
        for r in _json(folder, f"gpteacher/{name}"):
            add_distill(r.get("instruction"), r.get("input"), r.get("response"), "gpteacher")
    s.distill_coding = np.array(
        [src == "codealpaca" or bool(_CODE_RE.search(p)) for (p, _), src in zip(s.distill, s.distill_src)], dtype=bool
    )
    for sub in ("stanford_alpaca", "codealpaca"):
        for r in _jsonl(folder, f"{sub}/seed_tasks.jsonl"):
            inst = (r.get("instances") or [{}])[0]
            s.seeds.append((r.get("instruction", ""), inst.get("input", ""), inst.get("output", "")))
            if inst.get("output"):
                answers.append(inst["output"])
    s.template = _text(folder, "stanford_alpaca/prompt.txt") or _text(folder, "codealpaca/prompt.txt") or ""

    conv = _azure(folder, "AzureLLMInferenceTrace_conv.csv")
    code = _azure(folder, "AzureLLMInferenceTrace_code.csv")
    if conv is None and code is None:
        raise InputError(f"no Azure LLM inference trace under {folder}/azure_llm_inference_2023; "
                         "point --data at a folder laid out like ../shared/data/raw")
    conv = conv or code
    code = code or conv
    s.conv_gaps, s.conv_tokens = conv
    s.code_gaps, s.code_tokens = code
    moon = _jsonl(folder, "mooncake/conversation_trace.jsonl")
    if moon:
        s.long_tokens = np.array([[r["input_length"], r["output_length"]] for r in moon], dtype=np.int64)
    else:
        s.long_tokens = s.code_tokens.copy()

    if not s.human:
        raise InputError(f"no human prompt source found under {folder} (arena_hard_auto, open_assistant, "
                         "instruction_wild, hh_rlhf); point --data at a raw data folder")
    if not s.distill:
        raise InputError(f"no distillation prompt set found under {folder} (stanford_alpaca, codealpaca, "
                         "gpteacher); point --data at a raw data folder")
    if not s.benchmark:
        s.benchmark = list(s.human[:300])
    s.answers = answers or [p for p, _ in s.distill]
    lens = np.array([len(a) for a in s.answers], dtype=np.int64)
    s.answer_order = np.argsort(lens, kind="stable")
    s.answer_len_sorted = lens[s.answer_order]
    # stand-in answers for prompts whose source has none: real model answers (distillation sets and
    # seed outputs), split into code and general; HH-RLHF replies only fit their own dialogues
    code = [a for (_, a), c in zip(s.distill, s.distill_coding) if a and c]
    gen = [a for (_, a), c in zip(s.distill, s.distill_coding) if a and not c] + [o for _, _, o in s.seeds if o]
    s.standin_general = gen or s.answers
    s.standin_code = code or s.standin_general
    s.files_read = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".gz", ".csv", ".txt")
    )
    return s
