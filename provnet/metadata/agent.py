# The metadata agent (neutron-metadata-agent's wire): identify the VM by its port, sign, forward to the metadata API.
from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass

from provnet.metadata.freshness import revision_of
from provnet.metadata.http11 import Message
from provnet.metadata.observe import REQUEST_ID_HEADER, STATUS_PATHS, Metrics, new_request_id, registry_status
from provnet.metadata.ratelimit import RateLimiter
from provnet.metadata.serving import HttpServer, Peer, Response, error
from provnet.metadata.signing import sign_instance_id
from provnet.metadata.upstream import Target, Upstream, UpstreamTimeout, UpstreamUnavailable
from provnet.registry.base import Registry

log = logging.getLogger(__name__)

ROUTER_HEADER = "X-Neutron-Router-ID"
NETWORK_HEADER = "X-Neutron-Network-ID"
API_TIMEOUT = 60.0  # Neutron's agent waits 60 s for nova; the proxy waits longer than this
PASSED_BACK = ("content-type", "retry-after")


@dataclass(frozen=True)
class Identity:
    """What the agent signs for one (router or network, address): the port's instance and project."""

    instance_id: str
    tenant_id: str
    signature: str


class BadRequest(Exception):
    pass


def parse_forwarded_for(values: list[str]) -> str:
    """The one source address the proxy set; several headers or values, or a non-address, are refused."""
    if len(values) != 1 or "," in values[0]:
        raise BadRequest("exactly one X-Forwarded-For address is required")
    address = _normalized_address(values[0].strip())
    if address is None:
        raise BadRequest(f"X-Forwarded-For is not an IP address: {values[0][:64]!r}")
    return address


@functools.lru_cache(maxsize=65536)
def _normalized_address(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a proxy bound to :: sees IPv4 clients as ::ffff:a.b.c.d
    return str(ip)


def mac_from_link_local(address: str) -> str | None:
    """The MAC inside an EUI-64 IPv6 link-local address (fe80::f816:3eff:fe12:3456 -> fa:16:3e:12:34:56)."""
    if ":" not in address:
        return None
    ip = ipaddress.IPv6Address(address)
    raw = ip.packed
    if not ip.is_link_local or raw[11:13] != b"\xff\xfe":
        return None
    mac = bytes((raw[8] ^ 0x02,)) + raw[9:11] + raw[13:16]
    return ":".join(f"{b:02x}" for b in mac)


def parse_scope(request: Message) -> tuple[str, str]:
    """("router"|"network", id) from exactly one of the two id headers (both: 400, as Neutron since LP#1865036)."""
    routers = request.get_all(ROUTER_HEADER)
    networks = request.get_all(NETWORK_HEADER)
    if routers and networks:
        raise BadRequest(f"{ROUTER_HEADER} and {NETWORK_HEADER} must not both be set")
    values, kind = (routers, "router") if routers else (networks, "network")
    if not values:
        raise BadRequest(f"one of {ROUTER_HEADER} or {NETWORK_HEADER} is required")
    if len(values) != 1 or "," in values[0] or not values[0].strip():
        raise BadRequest(f"exactly one {ROUTER_HEADER if kind == 'router' else NETWORK_HEADER} is required")
    return kind, values[0].strip()


class Lookup:
    """(router|network, address) -> Identity through the registry, cached until the registry's revision moves."""

    def __init__(self, registry: Registry, secret: str, metrics: Metrics) -> None:
        self.registry = registry
        self.secret = secret
        self.metrics = metrics
        self.revision = revision_of(registry)
        self._revision: int | None = None
        self._cache: dict[tuple[str, str, str], Identity | None] = {}
        self._networks: dict[str, list[str]] = {}  # router id -> its interface networks

    def __call__(self, kind: str, scope_id: str, address: str) -> Identity | None:
        revision = self.revision()
        if revision != self._revision:
            self._cache.clear()
            self._networks.clear()
            self._revision = revision
        key = (kind, scope_id, address)
        try:
            found = self._cache[key]
        except KeyError:
            self.metrics.cache_miss.inc()
        else:
            self.metrics.cache_hit.inc()
            return found
        found = self._find(kind, scope_id, address)
        if len(self._cache) >= 200_000:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _find(self, kind: str, scope_id: str, address: str) -> Identity | None:
        if kind == "router":
            networks = self._networks.get(scope_id)
            if networks is None:
                networks = self._networks[scope_id] = self.registry.router_network_ids(scope_id)
        else:
            networks = [scope_id]
        mac = mac_from_link_local(address)
        if not networks:
            ports = []
        elif mac is not None:  # an IPv6 link-local source (fe80::a9fe:a9fe): the port is found by its MAC
            ports = self.registry.find_ports_by_mac(mac, networks)
        else:
            ports = self.registry.find_ports_by_ip(address, networks)
        if len(ports) != 1 or not ports[0].device_id:
            self.metrics.lookup("not_found" if not ports else "ambiguous" if len(ports) > 1 else "unbound")
            log.warning("no single instance port with address %s on %s %s (%d found)", address, kind,
                        scope_id, len(ports))
            return None
        self.metrics.lookup("found")
        port = ports[0]
        return Identity(port.device_id, port.project_id, sign_instance_id(self.secret, port.device_id))


def api_target(host: str, port: int, protocol: str = "http", insecure: bool = False, ca_cert: str = "",
               client_cert: str = "", client_key: str = "") -> Target:
    """Where the agent forwards: nova_metadata_* options, with TLS per auth_ca_cert / nova_client_cert."""
    context = None
    if protocol == "https":
        context = ssl.create_default_context(cafile=ca_cert or None)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert and client_key:
            context.load_cert_chain(client_cert, client_key)
    return Target(host=host, port=port, ssl=context)


class MetadataAgent:
    """HTTP on the unix socket: requests from namespace proxies in, signed requests to the metadata API out."""

    name = "metadata-agent"

    def __init__(self, registry: Registry, *, shared_secret: str, socket_path: str, api: Target,
                 backlog: int = 4096, rate_limiter: RateLimiter | None = None,
                 api_timeout: float = API_TIMEOUT, listen_sock: socket.socket | None = None) -> None:
        self.registry = registry
        self.socket_path = socket_path
        self.backlog = backlog
        self.metrics = Metrics("agent")
        self.lookup = Lookup(registry, shared_secret, self.metrics)
        self.api = Upstream(api, timeout=api_timeout)
        self.api_host = f"{api.host}:{api.port}"
        self.rate_limiter = rate_limiter
        self.listen_sock = listen_sock  # a socket bound by a parent process (metadata_workers > 1)
        self.server = HttpServer(self.handle, idle_timeout=api_timeout + 30)

    async def start(self) -> None:
        if self.listen_sock is not None:
            await self.server.listen_socket(self.listen_sock)
        else:
            await self.server.listen_unix(self.socket_path, self.backlog)
        log.info("metadata agent on %s, forwarding to %s", self.socket_path, self.api.target.describe())

    async def stop(self) -> None:
        await self.server.close()
        await self.api.close()

    async def handle(self, request: Message, peer: Peer) -> Response:
        started = time.perf_counter()
        rid = request.get(REQUEST_ID_HEADER) or new_request_id()
        response = await self._answer(request, rid)
        response.headers.append((REQUEST_ID_HEADER, rid))
        self.metrics.observe(response.status, time.perf_counter() - started)
        level = logging.DEBUG if response.status < 400 else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s %s %s from %s -> %d", rid, request.method, request.target,
                    request.get("x-forwarded-for"), response.status)
        return response

    async def _answer(self, request: Message, rid: str) -> Response:
        xff = request.get_all("x-forwarded-for")
        proxied = xff or request.get_all(ROUTER_HEADER) or request.get_all(NETWORK_HEADER)
        if not proxied and request.path in STATUS_PATHS:
            return registry_status(request.path, self.metrics, self.registry)
        try:
            kind, scope_id = parse_scope(request)
            address = parse_forwarded_for(xff)
        except BadRequest as exc:
            return error(400, str(exc), close=True)
        if self.rate_limiter is not None:
            wait = self.rate_limiter.check(address, time.monotonic())
            if wait:
                response = error(429, "Too many metadata requests from this address.")
                response.headers.append(("Retry-After", str(wait)))
                return response
        identity = self.lookup(kind, scope_id, address)
        if identity is None:
            return error(404, f"Instance was not found on {kind} {scope_id}.")
        headers = [
            ("Host", self.api_host),
            ("X-Forwarded-For", address),
            ("X-Instance-ID", identity.instance_id),
            ("X-Tenant-ID", identity.tenant_id),
            ("X-Instance-ID-Signature", identity.signature),
            (REQUEST_ID_HEADER, rid),
        ]
        if request.body:
            headers.append(("Content-Type", request.get("content-type") or "application/octet-stream"))
        try:
            upstream = await self.api.request(request.method, request.target, headers, request.body)
        except UpstreamUnavailable as exc:
            log.error("%s metadata API unreachable: %s", rid, exc)
            return error(503, "The metadata API is unavailable.")
        except UpstreamTimeout as exc:
            log.error("%s %s", rid, exc)
            return error(504, "The metadata API did not answer in time.")
        if upstream.status == 403:
            log.error("%s the metadata API refused the signature: the shared secrets do not match", rid)
        return Response(upstream.status, upstream.body,
                        [(k, v) for k, v in upstream.headers if k.lower() in PASSED_BACK])
