# Process-wide Prometheus figures (child restarts, change-feed health) that every HTTP service's /metrics includes.
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

PROCESS = CollectorRegistry()
CHILD_RESTARTS = Counter("provnet_child_restarts", "Times a supervised child process was restarted.", ["child"],
                         registry=PROCESS)
