"""Counters and latency summaries for ``GET /metrics``, in Prometheus' text format.

One gunicorn worker holds the model, so these in-process counters are the server's.
"""
from __future__ import annotations

import threading
from collections import defaultdict, deque

import numpy as np

WINDOW = 4096  # latencies kept per route for the quantiles


class Metrics:
    """Labelled counters and per-route latencies, safe to update from request threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, tuple], float] = defaultdict(float)
        self._latency: dict[str, deque] = defaultdict(lambda: deque(maxlen=WINDOW))
        self._latency_total: dict[str, tuple[int, float]] = defaultdict(lambda: (0, 0.0))

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self._counters[(name, tuple(sorted(labels.items())))] += value

    def observe(self, route: str, seconds: float) -> None:
        with self._lock:
            self._latency[route].append(seconds)
            count, total = self._latency_total[route]
            self._latency_total[route] = (count + 1, total + seconds)

    def render(self, gauges: dict[str, float]) -> str:
        """The counters, ``gauges`` and latency summaries as a Prometheus text exposition."""
        lines = []
        with self._lock:
            counters = dict(self._counters)
            latency = {route: np.array(values) for route, values in self._latency.items()}
            totals = dict(self._latency_total)
        for (name, labels), value in sorted(counters.items()):
            lines.append(f"{name}{_labels(dict(labels))} {value:g}")
        for name, value in sorted(gauges.items()):
            lines.append(f"{name} {value:g}")
        if latency:
            lines.append("# TYPE al_backend_request_seconds summary")
        for route, values in sorted(latency.items()):
            for q in (0.5, 0.9, 0.99):
                quantile = _labels({"route": route, "quantile": str(q)})
                lines.append(f"al_backend_request_seconds{quantile} {np.quantile(values, q):.6f}")
            count, total = totals[route]
            lines.append(f"al_backend_request_seconds_count{_labels({'route': route})} {count}")
            lines.append(f"al_backend_request_seconds_sum{_labels({'route': route})} {total:.6f}")
        return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{str(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for tests and benchmarks that read the endpoint."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
