# metadata-explain: the agent's attribution walk (attribution.walk, the same code), then what the metadata API
# checks (the instance exists, the port's project owns it, the signature is accepted), each step with its verdict,
# and at the first failure the reason (the same line the agent's 404 carries) and the fix.
from __future__ import annotations

import http.client
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provnet.metadata.attribution import (
    Identity,
    Miss,
    Step,
    check_mac,
    instance_gone,
    not_found_text,
    project_mismatch,
    walk,
)
from provnet.metadata.signing import sign_instance_id
from provnet.model.errors import InstanceNotFound, NotFound
from provnet.registry.base import Registry

SIGNATURE_REFUSED = "the metadata API refused the signature: the shared secrets do not match"
# a probe of the metadata API: (instance id, tenant id, address) -> HTTP status (or raises OSError)
Probe = Callable[[str, str, str], int]


@dataclass
class Explanation:
    kind: str
    scope_id: str
    address: str
    mac: str | None
    steps: list[Step] = field(default_factory=list)
    ok: bool = False
    status: int = 200  # what the agent answers the VM
    reason: str = ""  # one line, as in the agent's 404 body and log line
    detail: str = ""
    fix: str = ""
    instance_id: str = ""

    def to_api(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.scope_id, "ip": self.address, "mac": self.mac, "ok": self.ok,
                "status": self.status, "reason": self.reason, "detail": self.detail, "fix": self.fix,
                "instance_id": self.instance_id,
                "steps": [{"step": s.name, "ok": s.ok, "text": s.text} for s in self.steps]}

    def lines(self) -> list[str]:
        out = [f"metadata request from {self.address}" + (f" (MAC {self.mac})" if self.mac else "")
               + f" through {self.kind} {self.scope_id}:"]
        out += [f"  {'ok  ' if s.ok else 'FAIL'} {s.name}: {s.text}" for s in self.steps]
        if self.ok:
            out.append(f"the VM gets its metadata (instance {self.instance_id})")
        else:
            out.append(f"the VM gets {self.status}: {self.reason}")
            if self.detail:
                out.append(f"  detail: {self.detail}")
            if self.fix:
                out.append(f"  fix: {self.fix}")
        return out


def explain(registry: Registry, kind: str, scope_id: str, address: str, mac: str | None = None,
            probe: Probe | None = None) -> Explanation:
    """Blocking (registry reads, the probe): run it off an event loop."""
    found = walk(registry, kind, scope_id, address, mac=mac)
    out = Explanation(kind, scope_id, address, mac, list(found.steps))
    answer = check_mac(found.answer, mac, address)
    if mac is not None and isinstance(found.answer, Identity):
        out.steps.append(Step("mac", isinstance(answer, Identity),
                              f"port {found.answer.port_id} has MAC {found.answer.mac}, the request {mac.lower()}"))
    if isinstance(answer, Miss):
        out.status, out.detail, out.fix = 404, answer.detail, answer.fix
        out.reason = answer.reason
        return out
    out.instance_id = answer.instance_id
    try:
        instance = registry.get_instance(answer.instance_id)
    except (InstanceNotFound, NotFound):
        out.steps.append(Step("instance", False, f"instance {answer.instance_id}: does not exist"))
        out.status = 404
        out.reason = instance_gone(answer.instance_id)
        out.fix = (f"create the instance (provnet instance-create ... --id {answer.instance_id}) or point the port "
                   f"at the right one (provnet port-update {answer.port_id} --device-id <uuid>)")
        return out
    out.steps.append(Step("instance", True, f"instance {instance.id} ({instance.name or 'no name'}), project "
                          f"{instance.project_id}"))
    if instance.project_id != answer.tenant_id:
        out.steps.append(Step("project", False, f"the port's project {answer.tenant_id} is not the instance's "
                              f"{instance.project_id}"))
        out.status = 404
        out.reason = project_mismatch(answer.instance_id, answer.tenant_id)
        out.fix = f"give port {answer.port_id} and instance {instance.id} the same project"
        return out
    out.steps.append(Step("project", True, f"port and instance both in project {instance.project_id}"))
    if probe is not None:
        try:
            status = probe(answer.instance_id, answer.tenant_id, address)
        except OSError as exc:
            out.steps.append(Step("signature", False, f"the metadata API cannot be reached: {exc}"))
            out.status, out.reason = 503, "metadata API unreachable"
            out.fix = "start the metadata API, or correct nova_metadata_host/nova_metadata_port"
            return out
        if status == 403:
            out.steps.append(Step("signature", False, "the metadata API answers 403 to this host's signature"))
            out.status, out.reason = 403, SIGNATURE_REFUSED
            out.fix = ("set the same metadata_proxy_shared_secret on the agent and the metadata API (or the agent's "
                       "as metadata_proxy_shared_secret_previous on the API while rotating), then SIGHUP both")
            return out
        out.steps.append(Step("signature", status < 400, f"the metadata API accepts this host's signature "
                              f"(status {status})"))
    out.ok = True
    return out


def agent_reason(explanation: Explanation) -> str:
    """The line the agent's 404 body carries for a failure found before forwarding (for comparisons)."""
    return not_found_text(explanation.kind, explanation.scope_id, explanation.reason)


def http_probe(host: str, port: int, secret: str, timeout: float = 5.0) -> Probe:
    """A probe that asks the metadata API for `/openstack` as the agent would, signed with `secret`."""
    def probe(instance_id: str, tenant_id: str, address: str) -> int:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/openstack", headers={
                "X-Forwarded-For": address, "X-Instance-ID": instance_id, "X-Tenant-ID": tenant_id,
                "X-Instance-ID-Signature": sign_instance_id(secret, instance_id)})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()
    return probe
