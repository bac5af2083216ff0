"""Tiny labelled traffic folders for the benchmark tests, built from contract §1 records.

The real simulator (``distillguard simulate``) is not needed: this generator writes the same three
files (``traffic.jsonl.gz``, ``accounts.jsonl``, ``labels.jsonl``) with a handful of obvious cases:
humans (few, irregular, varied, multi-turn requests), one batch job (benign, templated), one bulk
extractor (fast, regular, templated, logprobs) and a small hydra campaign (several slow accounts
sharing a template).
"""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import numpy as np
import orjson
import pytest

WORDS = ("garden recipe budget travel python invoice poem weather history guitar marathon tax "
         "resume kitchen wedding cat dog movie novel chemistry exam holiday printer email bike "
         "mortgage coffee painting spreadsheet sleep vitamin salary camera piano hiking flight").split()
_SYL = ("ka", "lo", "mi", "ne", "ru", "ta", "vi", "so", "pe", "dra", "ul", "en", "or", "is", "bem", "cho")
#: A few hundred made-up words: human prompts are drawn from them, so they share no template.
_VRNG = np.random.default_rng(0)
VOCAB = np.array(sorted({"".join(_VRNG.choice(_SYL, size=2 + i % 3)) + _SYL[i % 16] for i in range(400)}))
HUMAN_FORMS = (
    "can you help me with my {a} and {b}?",
    "what is a good {a} for someone who likes {b}",
    "my {a} broke again, any idea why? it happened after the {b}",
    "write a short note to my friend about the {a}",
    "explain {a} like I'm five",
    "compare {a} vs {b} pros and cons please",
    "hey, quick question about {a}",
)
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{task}\n\n### Response:")
TASKS = ("Classify the sentiment of the {a} review.", "Generate a list of {n} facts about {a}.",
         "Rewrite the sentence about {a} in passive voice.", "Summarize the article on {a} and {b}.",
         "Translate the phrase about {a} into Spanish.", "Write a haiku about {a}.")


def _record(rid, ts, account, prompt, rng, *, history=0, stream=True, logprobs=False, temperature=0.7,
            n=1, max_tokens=None, ip="198.51.100.7", ua="openai-python/1.40.0"):
    msgs = []
    for h in range(history):
        msgs += [{"role": "user", "content": f"earlier question {h}"}, {"role": "assistant", "content": "an answer"}]
    msgs.append({"role": "user", "content": prompt})
    req = {"model": "m-1", "messages": msgs, "temperature": temperature, "stream": stream, "n": n}
    if logprobs:
        req["logprobs"] = True
        req["top_logprobs"] = 5
    if max_tokens:
        req["max_tokens"] = max_tokens
    ct = int(rng.integers(50, 400)) if max_tokens is None else max_tokens
    return {
        "request_id": rid, "timestamp": float(ts), "account_id": account, "api_key_id": f"key-{account}",
        "client_ip": ip, "user_agent": ua, "endpoint": "/v1/chat/completions", "request": req,
        "response": {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": len(prompt) // 4 + 5, "completion_tokens": ct}},
        "status_code": 200, "latency_ms": 900.0,
    }


def make_labelled_traffic(folder: Path, *, seed: int = 0, n_humans: int = 40, hydra_accounts: int = 4,
                          batch: bool = True) -> Path:
    """Write a tiny labelled traffic folder; returns it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = 1_767_225_600.0  # 2026-01-01
    recs, accounts, labels = [], [], []

    def w():
        return WORDS[int(rng.integers(len(WORDS)))]

    def add_account(aid, label, archetype, campaign=None, pay=None):
        accounts.append({"account_id": aid, "created_at": "2025-06-01T00:00:00Z",
                         "payment_fingerprint": pay or f"pay-{aid}", "email_domain": "example.com",
                         "country": "US", "tier": "1", "verified": True})
        labels.append({"account_id": aid, "label": label, "campaign_id": campaign, "archetype": archetype})

    for h in range(n_humans):
        aid = f"human-{seed}-{h:03d}"
        add_account(aid, "benign", "human")
        t = t0 + rng.uniform(0, 86400)
        for i in range(int(rng.integers(8, 25))):
            t += float(rng.exponential(600.0)) if rng.random() < 0.7 else float(rng.uniform(3600, 20000))
            prompt = " ".join(rng.choice(VOCAB, size=int(rng.integers(4, 30)))) + "?"
            recs.append(_record(f"{aid}-{i}", t, aid, prompt, rng, history=int(rng.integers(0, 3)),
                                temperature=float(rng.choice([0.2, 0.7, 1.0])),
                                ip=f"203.0.113.{h % 250}"))
    # benign batch job: one template, steady, moderate volume, narrow
    aid = f"batch-{seed}"
    if batch:
        add_account(aid, "benign", "batch_pipeline")
    for i in range(120 if batch else 0):
        recs.append(_record(f"{aid}-{i}", t0 + 3600 + i * 30.0 + rng.uniform(0, 5), aid,
                            f"Extract the invoice number from: invoice {w()} #{int(rng.integers(1e5))}", rng,
                            stream=False, temperature=0.0))
    # bulk extractor: ~90 requests/minute for 25 minutes, alpaca template, seeds + perturbations, logprobs
    aid = f"bulk-{seed}"
    add_account(aid, "extraction", "bulk_single", campaign=f"camp-bulk-{seed}")
    base: list[str] = []
    for i in range(2200):
        # a seed query, then five small perturbations of it (the pattern PRADA was built to catch)
        if i % 6 == 0:
            base = list(rng.choice(VOCAB, size=12))
            words = base
        else:
            words = list(base)
            words[int(rng.integers(len(words)))] += "s"
        task = "Write a paragraph about " + " ".join(words) + "."
        recs.append(_record(f"{aid}-{i}", t0 + 7200 + i * 0.66 + rng.uniform(0, 0.05), aid, ALPACA.format(task=task),
                            rng, stream=False, logprobs=True, temperature=1.0, max_tokens=1024,
                            ip="192.0.2.10", ua="python-requests/2.31"))
    # hydra: a few accounts sharing a template and a card, each slow
    for k in range(hydra_accounts):
        aid = f"hydra-{seed}-{k}"
        add_account(aid, "extraction", "hydra", campaign=f"camp-hydra-{seed}", pay=f"card-{seed}")
        for i in range(150):
            task = TASKS[int(rng.integers(len(TASKS)))].format(a=w(), b=w(), n=int(rng.integers(3, 30)))
            recs.append(_record(f"{aid}-{i}", t0 + 10000 + i * 60.0 + k * 7, aid, ALPACA.format(task=task), rng,
                                stream=False, temperature=1.0, max_tokens=1024, ip=f"192.0.2.{20 + k}",
                                ua="python-requests/2.31"))
    recs.sort(key=lambda r: r["timestamp"])
    with gzip.open(folder / "traffic.jsonl.gz", "wb") as fh:
        for r in recs:
            fh.write(orjson.dumps(r) + b"\n")
    (folder / "accounts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in accounts))
    (folder / "labels.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in labels))
    return folder


@pytest.fixture(scope="session")
def tiny_eval(tmp_path_factory) -> Path:
    return make_labelled_traffic(tmp_path_factory.mktemp("eval"), seed=1)


@pytest.fixture(scope="session")
def tiny_tune(tmp_path_factory) -> Path:
    return make_labelled_traffic(tmp_path_factory.mktemp("tune"), seed=2)


@pytest.fixture
def no_detector(monkeypatch):
    """Make ``distillguard.detect.scan`` unimportable, as before the detector lands."""
    monkeypatch.setitem(sys.modules, "distillguard.detect.scan", None)
    monkeypatch.setitem(sys.modules, "distillguard.detect.replay", None)


@pytest.fixture
def oracle_detector(monkeypatch):
    """A stand-in detector that reads the labels: proves the harness reads contract files correctly."""

    def labels_of(paths):
        folder = Path(paths[0]).parent
        return [json.loads(line) for line in (folder / "labels.jsonl").read_text().splitlines()]

    def run_scan(paths, out_dir, *, accounts=None):
        rows = labels_of(paths)
        with open(out_dir / "verdicts.jsonl", "w") as fh:
            for r in rows:
                ext = r["label"] == "extraction"
                fh.write(json.dumps({"account_id": r["account_id"], "score": 0.9 if ext else 0.1, "flagged": ext,
                                     "cluster_id": r["campaign_id"], "reasons": []}) + "\n")
        camps = sorted({r["campaign_id"] for r in rows if r["campaign_id"]})
        with open(out_dir / "clusters.jsonl", "w") as fh:
            for c in camps:
                ids = [r["account_id"] for r in rows if r["campaign_id"] == c]
                fh.write(json.dumps({"cluster_id": c, "account_ids": ids, "score": 0.9, "flagged": True,
                                     "links": []}) + "\n")
        return {"accounts": len(rows)}

    def run_replay(paths, out_dir, *, accounts=None):
        # flag each extraction account at its 11th request (10 served before)
        seen: dict[str, list[float]] = {}
        with gzip.open(paths[0], "rb") as fh:
            for line in fh:
                r = orjson.loads(line)
                seen.setdefault(r["account_id"], []).append(r["timestamp"])
        ext = {r["account_id"] for r in labels_of(paths) if r["label"] == "extraction"}
        with open(out_dir / "first_flags.jsonl", "w") as fh:
            for a in sorted(ext):
                ts = sorted(seen[a])
                fh.write(json.dumps({"account_id": a, "flagged_at": ts[10], "requests_before_flag": 10,
                                     "cluster_id": None, "reasons": []}) + "\n")
        return {}

    scan_mod = types.ModuleType("distillguard.detect.scan")
    scan_mod.run_scan = run_scan
    replay_mod = types.ModuleType("distillguard.detect.replay")
    replay_mod.run_replay = run_replay
    monkeypatch.setitem(sys.modules, "distillguard.detect.scan", scan_mod)
    monkeypatch.setitem(sys.modules, "distillguard.detect.replay", replay_mod)
