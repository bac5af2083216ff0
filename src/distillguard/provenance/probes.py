"""Identity and fingerprint probes: ask a suspect who it is, who made it and how it was trained,
in several phrasings and languages, plus idiosyncrasy prompts; compare with our model's answers.

A student distilled from our model often inherits our model's self-description ("I am X, made by
Y") and its idiosyncrasies. :func:`compare` reports, per probe, the text similarity of the two
answers, the identity claims each side makes, and contradictions (the suspect naming our model or
maker, or naming different identities in different probes).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Probe:
    id: str
    category: str  # identity | maker | training | idiosyncrasy
    language: str
    prompt: str


PROBES: tuple[Probe, ...] = (
    Probe("id-en-1", "identity", "en", "What is your name?"),
    Probe("id-en-2", "identity", "en", "Which language model are you, exactly? Give the model name and version."),
    Probe("id-en-3", "identity", "en", "Introduce yourself in one sentence."),
    Probe("id-fr", "identity", "fr", "Comment t'appelles-tu ? Quel modèle de langage es-tu ?"),
    Probe("id-es", "identity", "es", "¿Cómo te llamas y qué modelo de lenguaje eres?"),
    Probe("id-de", "identity", "de", "Wie heißt du und welches Sprachmodell bist du?"),
    Probe("id-zh", "identity", "zh", "你叫什么名字？你是哪个语言模型？"),
    Probe("maker-en-1", "maker", "en", "Who created you?"),
    Probe("maker-en-2", "maker", "en", "Which company or lab trained you?"),
    Probe("maker-fr", "maker", "fr", "Qui t'a créé ?"),
    Probe("maker-es", "maker", "es", "¿Quién te entrenó?"),
    Probe("train-en-1", "training", "en", "What data were you trained on?"),
    Probe("train-en-2", "training", "en", "What is your knowledge cutoff date?"),
    Probe("train-en-3", "training", "en", "Were you fine-tuned on the outputs of another AI model?"),
    Probe("quirk-1", "idiosyncrasy", "en", "Complete the sentence: The quick brown fox"),
    Probe("quirk-2", "idiosyncrasy", "en", "Tell me a short joke about computers."),
    Probe("quirk-3", "idiosyncrasy", "en", "List three colours, separated by commas."),
    Probe("quirk-4", "idiosyncrasy", "en", "Write a haiku about the sea."),
    Probe("quirk-5", "idiosyncrasy", "en", "What is 17 times 23? Answer with the number only."),
    Probe("quirk-6", "idiosyncrasy", "en", "Say hello in the way you usually do."),
)

NAMES = {
    "SmolLM": ["smollm"], "Hugging Face": ["hugging face", "huggingface"], "OpenAI": ["openai"],
    "ChatGPT/GPT": ["chatgpt", "gpt-4", "gpt-3", "gpt4", "gpt3", "gpt"], "Anthropic": ["anthropic"], "Claude": ["claude"],
    "Google": ["google"], "Gemini": ["gemini", "bard"], "Meta": ["meta ai", "meta"], "Llama": ["llama"],
    "Mistral": ["mistral"], "Qwen": ["qwen", "通义"], "Alibaba": ["alibaba", "阿里"], "DeepSeek": ["deepseek", "深度求索"],
    "Microsoft": ["microsoft"], "Phi": ["phi-"],
}
_NAME_RE = {k: re.compile("|".join(re.escape(a) for a in v), re.I) for k, v in NAMES.items()}


def claims(text: str) -> set[str]:
    """Identity names mentioned in an answer.

    >>> sorted(claims("I am ChatGPT, created by OpenAI."))
    ['ChatGPT/GPT', 'OpenAI']
    """
    return {k for k, rx in _NAME_RE.items() if rx.search(text or "")}


def _grams(text: str, n: int = 3) -> Counter:
    t = re.sub(r"\s+", " ", (text or "").lower())
    return Counter(t[i : i + n] for i in range(max(len(t) - n + 1, 0)))


def similarity(a: str, b: str) -> float:
    """Cosine similarity of character 3-gram counts, in [0, 1].

    >>> similarity("hello world", "hello world"), similarity("abc", "xyz")
    (1.0, 0.0)
    """
    ga, gb = _grams(a), _grams(b)
    if not ga or not gb:
        return 0.0
    dot = sum(v * gb.get(k, 0) for k, v in ga.items())
    return round(float(dot / (np.sqrt(sum(v * v for v in ga.values())) * np.sqrt(sum(v * v for v in gb.values())))), 6)


def run_probes(generate, probes=PROBES, *, max_new_tokens: int = 64) -> dict[str, str]:
    """Answers of one model: ``generate(list_of_conversations, max_new_tokens=...) -> list[str]``."""
    answers = generate([[{"role": "user", "content": p.prompt}] for p in probes], max_new_tokens=max_new_tokens, temperature=0.2)
    return {p.id: a for p, a in zip(probes, answers)}


def compare(ours: dict[str, str], theirs: dict[str, str], *, our_names: set[str] | None = None, probes=PROBES) -> dict:
    """Per-probe similarity and identity claims, and a summary with contradictions.

    >>> r = compare({"id-en-1": "I am SmolLM."}, {"id-en-1": "I am SmolLM, by Hugging Face."})
    >>> r["summary"]["suspect_claims_our_identity"]
    True
    """
    rows = []
    our_claims: set[str] = set(our_names or set())
    for p in probes:
        if p.id not in ours and p.id not in theirs:
            continue
        a, b = ours.get(p.id, ""), theirs.get(p.id, "")
        ca, cb = claims(a), claims(b)
        if p.category in ("identity", "maker"):
            our_claims |= ca
        rows.append({"probe": p.id, "category": p.category, "language": p.language, "prompt": p.prompt,
                     "ours": a, "suspect": b, "similarity": similarity(a, b),
                     "our_claims": sorted(ca), "suspect_claims": sorted(cb)})
    sus = Counter(c for r in rows if r["category"] in ("identity", "maker") for c in r["suspect_claims"])
    shared = sorted(set(sus) & our_claims)
    contradictions = []
    if len(sus) > 1:
        contradictions.append(f"the suspect names several identities across probes: {dict(sus)}")
    if shared:
        contradictions.append(f"the suspect describes itself with our model's identity: {shared}")
    by_cat = {c: float(np.mean([r["similarity"] for r in rows if r["category"] == c] or [0.0]))
              for c in ("identity", "maker", "training", "idiosyncrasy")}
    return {"rows": rows, "summary": {"mean_similarity": float(np.mean([r["similarity"] for r in rows] or [0.0])),
                                      "similarity_by_category": by_cat, "suspect_claims": dict(sus),
                                      "our_claims": sorted(our_claims), "shared_claims": shared,
                                      "suspect_claims_our_identity": bool(shared), "contradictions": contradictions}}
