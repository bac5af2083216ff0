"""Prometheus text exposition, written by hand (no global registry, no labels carrying secrets).

Example:

>>> m = Metrics()
>>> m.inc("requests_total", endpoint="/v1/models", status="200")
>>> "distillguard_requests_total{endpoint=\\"/v1/models\\",status=\\"200\\"} 1" in m.render()
True
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

__all__ = ["Metrics"]

_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
_HELP = {
    "requests_total": "Requests answered, by endpoint and HTTP status.",
    "refused_total": "Requests refused by the gateway, by reason.",
    "modified_total": "Requests forwarded with parameters changed by policy, by action.",
    "upstream_errors_total": "Upstream failures, by kind.",
    "state_errors_total": "Shared-state (Redis) failures, by fail mode applied.",
    "detector_flags_total": "Accounts newly flagged by the online detector.",
    "client_disconnects_total": "Streams cut short because the client went away.",
}


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._c: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._h_counts = [0] * (len(_BUCKETS_MS) + 1)
        self._h_sum = 0.0
        self._h_n = 0
        self.gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, n: float = 1, **labels: str) -> None:
        self._c[name][tuple(sorted(labels.items()))] += n

    def observe_latency(self, ms: float) -> None:
        i = 0
        while i < len(_BUCKETS_MS) and ms > _BUCKETS_MS[i]:
            i += 1
        self._h_counts[i] += 1
        self._h_sum += ms
        self._h_n += 1

    def value(self, name: str, **labels: str) -> float:
        return self._c[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        out = []
        for name, series in sorted(self._c.items()):
            full = "distillguard_" + name
            out.append(f"# HELP {full} {_HELP.get(name, name)}")
            out.append(f"# TYPE {full} counter")
            for labels, v in sorted(series.items()):
                lab = ",".join(f'{k}="{_esc(str(val))}"' for k, val in labels)
                out.append(f"{full}{{{lab}}} {v:g}" if lab else f"{full} {v:g}")
        full = "distillguard_request_latency_ms"
        out.append(f"# HELP {full} Time from request arrival to the last byte sent, milliseconds.")
        out.append(f"# TYPE {full} histogram")
        acc = 0
        for b, c in zip(_BUCKETS_MS, self._h_counts):
            acc += c
            out.append(f'{full}_bucket{{le="{b:g}"}} {acc}')
        out.append(f'{full}_bucket{{le="+Inf"}} {self._h_n}')
        out.append(f"{full}_sum {self._h_sum:.3f}")
        out.append(f"{full}_count {self._h_n}")
        for name, fn in sorted(self.gauges.items()):
            full = "distillguard_" + name
            out.append(f"# TYPE {full} gauge")
            out.append(f"{full} {fn():g}")
        return "\n".join(out) + "\n"
