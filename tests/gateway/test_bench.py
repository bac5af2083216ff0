"""The benchmark's pieces: the load generator and the hydra measurement (small sizes)."""

from __future__ import annotations

import subprocess
import sys

from gwhelpers import REPO

from distillguard.gateway.bench import run_load
from distillguard.gateway.hydra import run_hydra


def test_run_load_against_fake_upstream(upstream):
    before = upstream.stats.requests
    r = run_load("direct", upstream.url, rate=200, duration=0.5, warmup=0.1, workers=8)
    assert r.sent == 100 and r.ok == 100 and r.errors == 0
    assert upstream.stats.requests - before == 120  # warm-up requests are sent but not measured
    assert 0 < r.p50_ms <= r.p99_ms <= r.max_ms


def test_hydra_cluster_quota_caps_the_campaign():
    h = run_hydra(seed=3, accounts=20, per_account=10, benign=2, key_limit_per_day=50, cluster_limit_per_day=10,
                  days=0.5)
    assert h["requests"] == 200 and h["served_per_key_only"] == 200  # every account is under its key limit
    assert h["served_cluster_quota_no_detector"] == 50  # 5 payment-linked clusters x 10 (half a day: one window)
    h2 = run_hydra(seed=3, accounts=10, per_account=10, benign=1, key_limit_per_day=50, cluster_limit_per_day=5,
                   days=3)
    assert 50 < h2["served_cluster_quota_no_detector"] <= 75  # the day quota slides: at most 5 per 24 h each
    assert h["served_gateway"] <= 50
    assert h["benign_refused_per_key_only"] == 0


def test_bench_gateway_help():
    r = subprocess.run([sys.executable, "-m", "distillguard.cli", "bench", "gateway", "--help"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and "--rate" in r.stdout and "Example" in r.stdout
