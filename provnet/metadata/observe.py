# Prometheus metrics, request ids and the /healthz and /metrics answers shared by the metadata proxy, agent and API.
from __future__ import annotations

import uuid

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from provnet.metadata.serving import Response

STATUS_PATHS = ("/healthz", "/readyz", "/metrics")
REQUEST_ID_HEADER = "X-Openstack-Request-Id"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


class Metrics:
    """One service's metrics in its own registry (several services can share a process under `provnet serve`)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        prefix = f"provnet_metadata_{service}"
        self._requests = Counter(f"{prefix}_requests", "Requests answered, by HTTP status.", ["status"],
                                 registry=self.registry)
        self._latency = Histogram(f"{prefix}_request_seconds", "Time from request head to response.",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self._lookups = Counter(f"{prefix}_lookups", "Registry lookups, by result.", ["result"],
                                registry=self.registry)
        self._cache = Counter(f"{prefix}_cache", "Lookup cache use (hit or miss).", ["result"],
                              registry=self.registry)
        self._by_status: dict[int, Counter] = {}
        self.cache_hit = self._cache.labels("hit")
        self.cache_miss = self._cache.labels("miss")

    def observe(self, status: int, seconds: float) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._requests.labels(str(status))
        counter.inc()
        self._latency.observe(seconds)

    def lookup(self, result: str) -> None:
        self._lookups.labels(result).inc()

    def response(self) -> Response:
        return Response(200, generate_latest(self.registry), [("Content-Type", CONTENT_TYPE_LATEST)])


def healthz(detail: str = "ok") -> Response:
    return Response(200, detail.encode(), [("Content-Type", "text/plain; charset=UTF-8")])


def registry_status(path: str, metrics: Metrics) -> Response:
    """A STATUS_PATHS answer (the caller answers /readyz itself when it is not ready)."""
    if path == "/metrics":
        return metrics.response()
    return healthz()
