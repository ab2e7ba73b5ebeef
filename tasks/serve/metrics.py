"""Prometheus metrics of the server (prometheus-client), summed over worker processes in multiprocess mode."""

from __future__ import annotations

import os


class Metrics:
    """Prometheus metrics of one server; with several worker processes they are summed through
    PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ragtune_requests", "HTTP requests by endpoint and status.", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("ragtune_request_latency_seconds", "Time to answer, by endpoint.", ["endpoint"],
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64), registry=r)
        self.cache_hits = Counter("ragtune_cache_hits", "Answers served from the answer cache.", registry=r)
        self.not_found = Counter("ragtune_not_found", "Questions answered 'not found in the documents'.", registry=r)
        self.guardrails = Counter("ragtune_guardrail_decisions", "Guardrail decisions by check and action "
                                  "(reject, refuse and withhold are blocks).", ["check", "action"], registry=r)
        self.feedback = Counter("ragtune_feedback", "Feedback received, by rating.", ["rating"], registry=r)
        self.batch = Histogram("ragtune_generation_batch_size", "Questions per generation batch.",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.swaps = Counter("ragtune_swaps", "Hot swaps of the served model or index.", registry=r)
        self.served = Gauge("ragtune_served", "1 for the model version and index version being served.",
                            ["model", "index_version"], registry=r, multiprocess_mode="livemax")

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
