"""Real instruction/answer text for the provenance experiment.

Looks, in order, in ``../shared/data/raw`` (development data: Stanford Alpaca, GPTeacher), in the
package's shipped sample (``distillguard/data/sample``, permissively licensed subsets), and
finally falls back to a small generated text so the experiment always runs.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

PKG_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
SHARED_RAW = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "raw"


def _read_json(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def load_pairs(limit: int = 6000, *, raw_dir: Path | None = None) -> tuple[list[tuple[str, str]], str]:
    """(instruction, answer) pairs and a description of where they came from."""
    raw = Path(raw_dir) if raw_dir else SHARED_RAW
    candidates = [
        (raw / "stanford_alpaca" / "alpaca_5000.json", "instruction", "output"),
        (raw / "gpteacher" / "toolformer-dedupe-only-dataset.json", "instruction", "response"),
        (PKG_SAMPLE / "stanford_alpaca" / "alpaca_5000.json.gz", "instruction", "output"),
        (PKG_SAMPLE / "gpteacher" / "toolformer-dedupe-only-dataset.json.gz", "instruction", "response"),
        (PKG_SAMPLE / "gpteacher" / "codegen-instruct.json.gz", "instruction", "response"),
    ]
    pairs: list[tuple[str, str]] = []
    used = []
    for path, qk, ak in candidates:
        if len(pairs) >= limit or not path.is_file():
            continue
        try:
            recs = _read_json(path)
        except (OSError, ValueError):
            continue
        got = [(str(r.get(qk, "")), str(r.get(ak, ""))) for r in recs if isinstance(r, dict) and r.get(qk) and r.get(ak)]
        pairs.extend(got[: limit - len(pairs)])
        used.append(f"{path} ({len(got)} records)")
    if len(pairs) < 200:
        pairs.extend(_fallback(limit - len(pairs)))
        used.append("generated fallback text")
    return pairs, "; ".join(used)


def _fallback(n: int) -> list[tuple[str, str]]:
    import random

    rng = random.Random(0)
    subj = ["the model", "a student", "the city", "water", "the market", "a river", "the team", "light"]
    verb = ["changes", "helps", "moves", "explains", "grows", "shows", "needs", "keeps"]
    obj = ["the answer", "many people", "the system", "new ideas", "its shape", "the future", "a plan"]
    out = []
    for i in range(n):
        q = f"Explain why {rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)}."
        a = " ".join(f"{rng.choice(subj).capitalize()} {rng.choice(verb)} {rng.choice(obj)}." for _ in range(rng.randint(3, 6)))
        out.append((q, a))
    return out
