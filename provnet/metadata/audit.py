# The audit trail of secrets: every read of user data, vendor data, the password and the identity document is one
# structured log line (logger provnet.metadata.audit) and a /metrics counter.
from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger("provnet.metadata.audit")


@dataclass(frozen=True, slots=True)
class SecretRead:
    kind: str  # user_data | vendor_data | password | identity
    instance_id: str
    port_id: str
    source: str
    request_id: str
    path: str
    size: int
    token: bool
    status: int

    def fields(self) -> dict[str, object]:
        return {"event": "secret_read", "kind": self.kind, "instance_id": self.instance_id, "port_id": self.port_id,
                "source_ip": self.source, "request_id": self.request_id, "path": self.path, "bytes": self.size,
                "token": self.token, "status": self.status}


class Audit:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._reads = Counter("provnet_metadata_api_secret_reads", "Reads of user data, vendor data, the "
                              "password and identity documents, by kind and whether a session token was used.",
                              ["kind", "token"], registry=registry)

    def record(self, read: SecretRead) -> None:
        self._reads.labels(read.kind, "yes" if read.token else "no").inc()
        # one line, key=value in text logs; the same fields as JSON members with --log-format json
        log.info("%s secret read: kind=%s instance=%s port=%s source=%s path=%s bytes=%d token=%s status=%d",
                 read.request_id, read.kind, read.instance_id, read.port_id or "-", read.source or "-", read.path,
                 read.size, "yes" if read.token else "no", read.status, extra={"fields": read.fields()})
