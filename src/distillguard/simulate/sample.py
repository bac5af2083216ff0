"""Build the small data sample shipped in ``distillguard/data/sample`` from a raw data folder.

Only permissively licensed sources are copied (see ``data/ATTRIBUTION.md``): GPTeacher and HH-RLHF
(MIT), Arena-Hard-Auto, OpenAssistant, Mooncake and the Alpaca request template + seed tasks
(Apache-2.0), the Azure LLM inference traces (CC BY 4.0). Alpaca, Code Alpaca and InstructionWild
*data* are non-commercial and are never shipped. Each file keeps its original format; records are a
deterministic subset (a prefix or an evenly spaced selection), lines are copied verbatim, and files
are gzip-compressed. Run it again with::

    python -m distillguard.simulate.sample ../shared/data/raw src/distillguard/data/sample
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

#: (relative path, how many records, kind): kind "lines" keeps whole lines (header kept for csv),
#: "json" keeps a JSON-list subset, "copy" copies the file as is.
SAMPLE_PLAN = [
    ("arena_hard_auto/question.jsonl", 250, "lines"),
    ("arena_hard_auto/LICENSE", 0, "copy"),
    ("open_assistant/prompt_lottery_en_250_text.jsonl", 250, "lines"),
    ("open_assistant/LICENSE", 0, "copy"),
    ("hh_rlhf/harmless-base_test.jsonl.gz", 500, "lines"),
    ("hh_rlhf/LICENSE", 0, "copy"),
    ("gpteacher/codegen-instruct.json", 450, "json"),
    ("gpteacher/toolformer-dedupe-only-dataset.json", 350, "json"),
    ("gpteacher/LICENSE", 0, "copy"),
    ("stanford_alpaca/prompt.txt", 0, "copy"),
    ("stanford_alpaca/seed_tasks.jsonl", 175, "lines"),
    ("stanford_alpaca/LICENSE", 0, "copy"),
    ("azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv", 5000, "lines"),
    ("azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv", 2500, "lines"),
    ("azure_llm_inference_2023/LICENSE", 0, "copy"),
    ("mooncake/conversation_trace.jsonl", 800, "lines"),
    ("mooncake/LICENSE-APACHE", 0, "copy"),
]


def _evenly(items: list, k: int) -> list:
    if k >= len(items):
        return items
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


def build_sample(raw: Path, out: Path) -> None:
    """Write the sample of ``raw`` into ``out`` (see :data:`SAMPLE_PLAN`)."""
    raw, out = Path(raw), Path(out)
    for rel, k, kind in SAMPLE_PLAN:
        src = raw / rel
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if kind == "copy":
            shutil.copyfile(src, dst)
            continue
        opener = gzip.open if src.suffix == ".gz" else open
        with opener(src, "rt", encoding="utf-8") as f:
            text = f.read()
        if kind == "json":
            body = json.dumps(_evenly(json.loads(text), k), ensure_ascii=False, indent=4)
        elif rel.endswith(".csv"):
            lines = text.splitlines(keepends=True)
            body = "".join(lines[:1] + lines[1 : 1 + k])  # contiguous: keeps the arrival process
        elif "trace" in rel:
            body = "".join(text.splitlines(keepends=True)[:k])
        else:
            body = "".join(_evenly(text.splitlines(keepends=True), k))
        target = dst if dst.suffix == ".gz" else dst.with_name(dst.name + ".gz")
        if rel.endswith("prompt.txt"):
            target = dst
        with gzip.GzipFile(target, "wb", compresslevel=9, mtime=0) as g:
            g.write(body.encode("utf-8"))


if __name__ == "__main__":  # pragma: no cover
    build_sample(Path(sys.argv[1]), Path(sys.argv[2]))
