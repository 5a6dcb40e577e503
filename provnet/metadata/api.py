# The metadata API (nova-api-metadata's wire): signed-header identification, a per-instance tree cache, password.
from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from provnet.metadata import content
from provnet.metadata.freshness import revision_of
from provnet.metadata.http11 import Message
from provnet.metadata.observe import REQUEST_ID_HEADER, STATUS_PATHS, Metrics, new_request_id, registry_status
from provnet.metadata.serving import HttpServer, Peer, Response, error
from provnet.metadata.signing import signature_matches
from provnet.model.errors import Conflict, InstanceNotFound, NotFound
from provnet.registry.base import Registry

log = logging.getLogger(__name__)

_IDENTITY = ("x-instance-id", "x-instance-id-signature", "x-tenant-id", "x-forwarded-for", "x-metadata-provider")


@dataclass
class _Entry:
    tree: content.MetadataTree
    revision: int
    born: float


def load_source(registry: Registry, instance_id: str, dhcp_domain: str, static_vendor_data: dict | None,
                request_address: str | None, shared: dict | None = None) -> content.Source:
    """Instance, its ports (device_id = instance), their networks and subnets: what the trees are rendered from.

    `shared` memoizes networks and subnets (many instances share them); the caller empties it on any change.
    """
    shared = {} if shared is None else shared
    instance = registry.get_instance(instance_id)
    vifs = []
    for port in registry.list_ports({"device_id": [instance_id]}):
        network = shared.get(port.network_id)
        if network is None:
            network = shared[port.network_id] = registry.get_network(port.network_id)
        subnets = []
        for subnet_id in dict.fromkeys(f.subnet_id for f in port.fixed_ips):
            subnet = shared.get(subnet_id)
            if subnet is None:
                subnet = shared[subnet_id] = registry.get_subnet(subnet_id)
            subnets.append(subnet)
        vifs.append(content.Vif(port, network, tuple(subnets)))
    return content.Source(instance, vifs, dhcp_domain, static_vendor_data, request_address)


def load_vendor_data(path: str) -> dict:
    """vendordata_jsonfile_path: a JSON object; an unreadable or non-object file is a startup error."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ValueError(f"vendordata_jsonfile_path {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"vendordata_jsonfile_path {path}: expected a JSON object")
    return data


class MetadataApi:
    """HTTP service answering the EC2 and OpenStack metadata trees to signed requests (and trusted sources)."""

    name = "metadata-api"

    def __init__(self, registry: Registry, *, shared_secret: str, host: str = "127.0.0.1", port: int = 8775,
                 dhcp_domain: str = "novalocal", static_vendor_data: dict | None = None,
                 trusted_networks: Sequence[str] = (), cache_expiration: float = 15.0) -> None:
        self.registry = registry
        self.revision = revision_of(registry)
        self.secret = shared_secret
        self.host, self.port = host, port
        self.dhcp_domain = dhcp_domain
        self.static_vendor_data = static_vendor_data or {}
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
        self.cache_expiration = cache_expiration
        self.metrics = Metrics("api")
        self.server = HttpServer(self.handle)
        self._cache: dict[str, _Entry] = {}
        self._shared: tuple[int, dict] = (-1, {})  # networks and subnets by id, valid for one revision
        self._all_networks: tuple[int, list[str]] | None = None

    async def start(self) -> None:
        self.port = await self.server.listen_tcp(self.host, self.port)
        log.info("metadata API on %s:%d (direct mode %s)", self.host, self.port,
                 ",".join(map(str, self.trusted)) if self.trusted else "off")

    async def stop(self) -> None:
        await self.server.close()

    def handle(self, request: Message, peer: Peer) -> Response:
        """Answers at once: everything here is in memory or one registry call (the edge writes it directly)."""
        started = time.perf_counter()
        rid = request.get(REQUEST_ID_HEADER) or new_request_id()
        response = self._answer(request, peer, rid)
        response.headers.append((REQUEST_ID_HEADER, rid))
        self.metrics.observe(response.status, time.perf_counter() - started)
        level = logging.DEBUG if response.status < 400 else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s %s %s -> %d", rid, request.method, request.target, response.status)
        return response

    def _answer(self, request: Message, peer: Peer, rid: str) -> Response:
        path = request.path
        if path in STATUS_PATHS and not any(request.get_all(h) for h in _IDENTITY) \
                and not self._is_trusted(peer.address):
            return registry_status(path, self.metrics, self.registry)
        if path.strip("/") == "" or path.strip("/") == ".":
            return _reply(content.root_listing())
        if request.get_all("x-metadata-provider"):
            return error(400, "X-Metadata-Provider (load balancer mode) is not supported.")
        if not any(request.get_all(h) for h in _IDENTITY[:3]) and self._is_trusted(peer.address):
            return self._direct(request, peer)
        return self._proxied(request)

    def _is_trusted(self, address: str) -> bool:
        if not self.trusted or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def _proxied(self, request: Message) -> Response:
        ids = request.get_all("x-instance-id")
        sigs = request.get_all("x-instance-id-signature")
        tenants = request.get_all("x-tenant-id")
        if not ids:
            return error(400, "X-Instance-ID header is missing from request.")
        if not sigs:
            return error(400, "X-Instance-ID-Signature header is missing from request.")
        if not tenants:
            return error(400, "X-Tenant-ID header is missing from request.")
        if len(ids) > 1:
            return error(400, "Multiple X-Instance-ID headers found within request.")
        if len(tenants) > 1:
            return error(400, "Multiple X-Tenant-ID headers found within request.")
        if len(sigs) > 1:
            return error(400, "Multiple X-Instance-ID-Signature headers found within request.")
        instance_id, tenant_id = ids[0], tenants[0]
        if not signature_matches(self.secret, instance_id, sigs[0]):
            log.warning("X-Instance-ID-Signature does not match for instance %s: check that "
                        "metadata_proxy_shared_secret is the same on the agent and the API", instance_id)
            return error(403, "Invalid proxy request signature.")
        xff = request.get("x-forwarded-for")
        entry = self._tree(instance_id, xff)
        if isinstance(entry, Response):
            return entry
        if entry.source.instance.project_id != tenant_id:
            log.warning("X-Tenant-ID %s does not own instance %s", tenant_id, instance_id)
            return error(404, "The resource could not be found.")
        return self._serve(entry, request)

    def _direct(self, request: Message, peer: Peer) -> Response:
        revision = self.revision()
        if self._all_networks is None or self._all_networks[0] != revision:
            self._all_networks = (revision, [n.id for n in self.registry.list_networks()])
        ports = [p for p in self.registry.find_ports_by_ip(peer.address, self._all_networks[1])
                 if p.device_id and not p.device_owner.startswith("network:")]
        if len(ports) != 1:
            log.warning("direct request from %s: %d instance ports have that address", peer.address, len(ports))
            return error(404, "The resource could not be found.")
        entry = self._tree(ports[0].device_id, peer.address)
        if isinstance(entry, Response):
            return entry
        return self._serve(entry, request)

    def _tree(self, instance_id: str, address: str | None) -> content.MetadataTree | Response:
        revision = self.revision()
        now = time.monotonic()
        entry = self._cache.get(instance_id)
        if (entry is not None and entry.revision == revision and now - entry.born < self.cache_expiration):
            self.metrics.cache_hit.inc()
            return entry.tree
        self.metrics.cache_miss.inc()
        try:
            if self._shared[0] != revision:
                self._shared = (revision, {})
            source = load_source(self.registry, instance_id, self.dhcp_domain, self.static_vendor_data, address,
                                 self._shared[1])
        except (InstanceNotFound, NotFound):
            self.metrics.lookup("not_found")
            return error(404, "The resource could not be found.")
        except Exception:
            log.exception("failed to load metadata for instance %s", instance_id)
            return error(500, "An unknown error has occurred. Please try your request again.")
        self.metrics.lookup("found")
        tree = content.MetadataTree(source)
        if self.cache_expiration > 0:
            if len(self._cache) >= 10_000:  # about 10 KB each once a boot has read its tree
                self._cache.clear()
            self._cache[instance_id] = _Entry(tree, revision, now)
        return tree

    def _serve(self, tree: content.MetadataTree, request: Message) -> Response:
        reply = tree.lookup(request.path)
        if reply is content.PASSWORD_LEAF:
            return self._password(tree.source.instance.id, request)
        if reply.status != 200:
            return Response(reply.status, reply.body, [("Content-Type", content.TEXT)])
        return _reply(reply)

    def _password(self, instance_id: str, request: Message) -> Response:
        if request.method == "GET":
            current = self.registry.get_instance_password(instance_id) or ""
            return Response(200, current.encode(), [("Content-Type", content.TEXT)])
        if request.method != "POST":
            return error(400, "The password accepts GET and POST only.")
        reply, new = content.password_post(self.registry.get_instance_password(instance_id), request.body)
        if new is not None:
            try:
                self.registry.set_instance_password(instance_id, new)
            except Conflict:
                return error(409, "The password is already set.")
        return Response(reply.status, reply.body, [("Content-Type", content.TEXT)])


def _reply(reply: content.Reply) -> Response:
    return Response(reply.status, reply.body, [("Content-Type", reply.content_type)])
