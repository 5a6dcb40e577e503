# The metadata agent (neutron-metadata-agent's wire): identify the VM by its port, sign, forward to the metadata API.
from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
import ssl
import time

from provnet.config import Config, ConfigError
from provnet.metadata.attribution import Miss, check_mac, not_found_text
from provnet.metadata.http11 import Message
from provnet.metadata.lookup import Lookup
from provnet.metadata.neighbours import SOURCE_MAC_HEADER
from provnet.metadata.observe import REQUEST_ID_HEADER, STATUS_PATHS, Metrics, new_request_id, registry_status
from provnet.metadata.ratelimit import RateLimiter, Window
from provnet.metadata.serving import HttpServer, Peer, Response, error
from provnet.metadata.signing import SharedSecrets
from provnet.metadata.tokens import HOP_LIMIT_HEADER, RELAYED_HEADER, TOKEN_HEADERS, TTL_HEADERS
from provnet.metadata.upstream import Target, Upstream, UpstreamTimeout, UpstreamUnavailable
from provnet.model.errors import ServiceUnavailable
from provnet.registry.aio import AsyncRegistry
from provnet.registry.base import Registry
from provnet.registry.feed import ChangeFeed

log = logging.getLogger(__name__)

ROUTER_HEADER = "X-Neutron-Router-ID"
NETWORK_HEADER = "X-Neutron-Network-ID"
MAC_HEADER = SOURCE_MAC_HEADER  # the requesting VM's MAC, when the proxy read it (a guest's own is never forwarded)
API_TIMEOUT = 60.0  # Neutron's agent waits 60 s for nova; the proxy waits longer than this
PASSED_BACK = ("content-type", "retry-after", "etag", "allow", TTL_HEADERS[0], HOP_LIMIT_HEADER.lower())
# what the proxy passed on from the guest (tokens, conditional requests) or about it, for the API
FORWARDED = (*TOKEN_HEADERS, *TTL_HEADERS, "if-none-match", RELAYED_HEADER.lower())


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


_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


def parse_mac(values: list[str]) -> str | None:
    """The proxy's X-Provnet-Source-MAC (None when absent); several values or a non-MAC are refused."""
    if not values:
        return None
    mac = values[0].strip().lower()
    if len(values) != 1 or not _MAC.fullmatch(mac):
        raise BadRequest(f"{MAC_HEADER} must be one MAC address (aa:bb:cc:dd:ee:ff)")
    return mac


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

    name = "metadata agent"

    def __init__(self, registry: Registry, *, shared_secret: str, socket_path: str, api: Target,
                 backlog: int = 4096, rate_limiter: RateLimiter | None = None,
                 api_timeout: float = API_TIMEOUT, listen_sock: socket.socket | None = None,
                 registry_timeout: float = 10.0, stale_if_error: float = 600.0, verify_mac: bool = True) -> None:
        self.registry = registry
        self.verify_mac = verify_mac
        self.socket_path = socket_path
        self.backlog = backlog
        self.metrics = Metrics("agent")
        self.areg = AsyncRegistry(registry, timeout=registry_timeout, name="agent-lookup")
        self.feed = ChangeFeed(registry, "metadata agent feed")
        self.secrets = SharedSecrets(shared_secret)
        self.lookup = Lookup(self.areg, self.metrics, feed=self.feed, stale_if_error=stale_if_error)
        self.feed.subscribe(self.lookup)
        self.api = Upstream(api, timeout=api_timeout)
        self.api_host = f"{api.host}:{api.port}"
        self.rate_limiter = rate_limiter
        self.listen_sock = listen_sock  # a socket bound by a parent process (metadata_workers > 1)
        self.server = HttpServer(self.handle, idle_timeout=api_timeout + 30)
        self._outage: str | None = None  # the registry's last failure, logged once until it answers again

    @classmethod
    def from_config(cls, config: Config, registry: Registry, listen_sock: socket.socket | None = None
                    ) -> MetadataAgent:
        """The agent as [DEFAULT] metadata_* / nova_metadata_* and [metadata_rate_limiting] say; ConfigError for
        TLS files that cannot be read."""
        limiter = None
        if config.get("metadata_rate_limiting.rate_limit_enabled"):
            limiter = RateLimiter([
                Window(config.get("metadata_rate_limiting.base_window_duration"),
                       config.get("metadata_rate_limiting.base_query_rate_limit")),
                Window(config.get("metadata_rate_limiting.burst_window_duration"),
                       config.get("metadata_rate_limiting.burst_query_rate_limit")),
            ])
        try:
            target = api_target(config.nova_metadata_host, config.nova_metadata_port, config.nova_metadata_protocol,
                                config.nova_metadata_insecure, config.auth_ca_cert, config.nova_client_cert,
                                config.nova_client_priv_key)
        except OSError as exc:
            raise ConfigError(f"TLS files for the metadata API (nova_client_cert, nova_client_priv_key, "
                              f"auth_ca_cert): {exc}") from None
        return cls(registry, shared_secret=config.metadata_proxy_shared_secret,
                   socket_path=config.metadata_proxy_socket, api=target, backlog=config.metadata_backlog,
                   rate_limiter=limiter, listen_sock=listen_sock,
                   registry_timeout=config.get("metadata.registry_timeout"),
                   stale_if_error=config.get("metadata.cache_stale_if_error"),
                   verify_mac=config.get("metadata.verify_mac"))

    def reload(self, config: Config) -> None:
        """SIGHUP: sign with the configuration's metadata_proxy_shared_secret from the next request on."""
        self.secrets = SharedSecrets(config.metadata_proxy_shared_secret)
        log.info("metadata agent reloaded: signing with the configured metadata_proxy_shared_secret")

    async def start(self) -> None:
        await self.feed.start()
        if self.listen_sock is not None:
            await self.server.listen_socket(self.listen_sock, self.backlog)
        else:
            await self.server.listen_unix(self.socket_path, self.backlog)
        log.info("metadata agent on %s, forwarding to %s", self.socket_path, self.api.target.describe())

    async def stop(self) -> None:
        await self.server.close()
        await self.api.close()
        await self.feed.stop()
        self.areg.close()

    def status(self, path: str) -> Response:
        if path == "/readyz" and not self.feed.healthy:
            return error(503, "registry unavailable")
        return registry_status(path, self.metrics)

    async def handle(self, request: Message, peer: Peer) -> Response:
        started = time.perf_counter()
        rid = request.get(REQUEST_ID_HEADER) or new_request_id()
        response, why = await self._answer(request, rid)
        response.headers.append((REQUEST_ID_HEADER, rid))
        self.metrics.observe(response.status, time.perf_counter() - started)
        level = logging.DEBUG if response.status < 400 else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s %s %s from %s -> %d%s", rid, request.method, request.target,
                    request.get("x-forwarded-for"), response.status, f" ({why})" if why else "")
        return response

    async def _answer(self, request: Message, rid: str) -> tuple[Response, str]:
        """The response, and for a refusal the reason in one line (for the log)."""
        xff = request.get_all("x-forwarded-for")
        proxied = xff or request.get_all(ROUTER_HEADER) or request.get_all(NETWORK_HEADER)
        if not proxied and request.path in STATUS_PATHS:
            return self.status(request.path), ""
        try:
            kind, scope_id = parse_scope(request)
            address = parse_forwarded_for(xff)
            mac = parse_mac(request.get_all(MAC_HEADER))
        except BadRequest as exc:
            return error(400, str(exc), close=True), str(exc)
        if self.rate_limiter is not None:  # a VM's IPv4 and IPv6 addresses are one source when its MAC is known
            source = f"{kind} {scope_id} {mac}" if mac else address
            wait = self.rate_limiter.check(source, time.monotonic())
            if wait:
                response = error(429, "Too many metadata requests from this address.")
                response.headers.append(("Retry-After", str(wait)))
                return response, "rate limited"
        try:
            answer = await self.lookup(kind, scope_id, address, mac)
        except ServiceUnavailable as exc:
            if self._outage is None:
                log.error("the registry is unavailable; answering 503 for VMs whose lookup is not cached: %s",
                          exc.message)
            self._outage = exc.message
            return error(503, "The metadata service cannot identify this instance right now."), exc.message
        if self._outage is not None:
            log.info("the registry answers again")
            self._outage = None
        if self.verify_mac:
            answer = check_mac(answer, mac, address)
        if isinstance(answer, Miss):
            detail = f"; {answer.detail}" if answer.detail else ""
            return error(404, not_found_text(kind, scope_id, answer.reason)), answer.reason + detail
        headers = [
            ("Host", self.api_host),
            ("X-Forwarded-For", address),
            ("X-Instance-ID", answer.instance_id),
            ("X-Tenant-ID", answer.tenant_id),
            ("X-Instance-ID-Signature", self.secrets.sign(answer.instance_id)),
            (REQUEST_ID_HEADER, rid),
        ]
        headers.extend((k, v) for k, v in request.headers if k.lower() in FORWARDED)
        if request.body:
            headers.append(("Content-Type", request.get("content-type") or "application/octet-stream"))
        try:
            upstream = await self.api.request(request.method, request.target, headers, request.body)
        except UpstreamUnavailable as exc:
            log.error("%s metadata API unreachable: %s", rid, exc)
            return error(503, "The metadata API is unavailable."), "metadata API unreachable"
        except UpstreamTimeout as exc:
            log.error("%s %s", rid, exc)
            return error(504, "The metadata API did not answer in time."), "metadata API timeout"
        why = ""
        if upstream.status == 403:
            why = "the metadata API refused the signature: the shared secrets do not match"
            log.error("%s %s", rid, why)
        elif upstream.status == 404 and upstream.body.startswith(b"404 Not Found\n\nInstance "):
            why = upstream.body.decode("utf-8", "replace").strip().splitlines()[-1]  # the API's reason
        return Response(upstream.status, upstream.body,
                        [(k, v) for k, v in upstream.headers if k.lower() in PASSED_BACK]), why
