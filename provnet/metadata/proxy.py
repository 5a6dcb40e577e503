# The namespace metadata proxy (haproxy's role): VM requests in on :9697, out to the agent's unix socket with the
# TCP source address and this proxy's router or network id, and nothing a client could use to pose as another VM.
from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from provnet.metadata.fairshare import FairShare
from provnet.metadata.http11 import Message
from provnet.metadata.neighbours import SOURCE_MAC_HEADER, NeighbourTable
from provnet.metadata.observe import REQUEST_ID_HEADER, Metrics, healthz, new_request_id
from provnet.metadata.serving import HttpServer, LogBudget, Peer, Response, error, parse_bind
from provnet.metadata.tokens import HOP_LIMIT_HEADER, RELAYED_HEADER, TOKEN_HEADERS, TTL_HEADERS
from provnet.metadata.upstream import Target, Upstream, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger(__name__)

# every address of the namespace, IPv4 and IPv6: the rules redirect 169.254.169.254 and fe80::a9fe:a9fe to the port
# (Neutron's haproxy binds :::9697 when IPv6 is on); `::` is left out, with a warning, where IPv6 is off
DEFAULT_BIND = "0.0.0.0,::"
AGENT_TIMEOUT = 65.0  # longer than the agent's 60 s to the API, so the agent's own 503/504 gets through
HEADER_TIMEOUT = 30.0  # haproxy's timeout http-request in Neutron
IDLE_TIMEOUT = 30.0  # timeout http-keep-alive
MAX_CONNECTIONS = 4096  # Neutron's haproxy has maxconn 1024 and no share per VM
# a source is a MAC when the neighbour table names one (all of a VM's IPv4 and IPv6 addresses), else an address
MAX_PER_SOURCE = 64  # cloud-init holds one; a VM at this many is refused at once, not its neighbours
MAX_RATE_PER_SOURCE = 100.0  # new connections a second from one source (cloud-init opens about 30 in a boot)
IN_FLIGHT = 64  # requests at the agent at once (a boot storm's worth); beyond, sources take turns
IN_FLIGHT_PER_SOURCE = 4  # of those, from one source: a VM's backlog never stands before its neighbours
# Client headers that reach the agent; everything else (X-Neutron-*, X-Instance-*, X-Tenant-*, X-Forwarded-For,
# X-Metadata-Provider*, X-OVN-*, request ids, in any case and any number) is dropped by not being listed.
FORWARDED_CLIENT_HEADERS = ("content-type",)
# the guest's session token headers and conditional requests reach the agent whatever the body
FORWARDED_ALWAYS = (*TOKEN_HEADERS, *TTL_HEADERS, "if-none-match")
PASSED_BACK = ("content-type", "retry-after", "etag", "allow", TTL_HEADERS[0])
GUEST_FORWARDING = ("x-forwarded-for", "forwarded", "x-forwarded-host")  # a relay inside the guest sent these


def agent_headers(client: Message, peer_address: str, id_header: str, id_value: str,
                  request_id: str, mac: str = "") -> list[tuple[str, str]]:
    """The headers of the request to the agent: ours (the source's MAC when this namespace's neighbour table has
    it), plus the few client headers the API may need."""
    out = [("Host", "169.254.169.254"), ("X-Forwarded-For", peer_address), (id_header, id_value),
           (REQUEST_ID_HEADER, request_id)]
    if mac:
        out.append((SOURCE_MAC_HEADER, mac))
    if client.body:
        out.extend((k, v) for k, v in client.headers if k.lower() in FORWARDED_CLIENT_HEADERS)
    out.extend((k, v) for k, v in client.headers if k.lower() in FORWARDED_ALWAYS)
    relayed = [name for name in GUEST_FORWARDING if client.get_all(name)]
    if relayed:  # dropped above, but the API refuses token requests from relays, so say that they came
        out.append((RELAYED_HEADER, ",".join(relayed)))
    return out


def ipv6_available() -> bool:
    """Whether this kernel makes IPv6 sockets (not when booted with ipv6.disable=1)."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return True


class MetadataProxy:
    """One router's (or network's) proxy. Answers 502 while the agent's socket is gone, 504 when it is slow."""

    name = "metadata-proxy"

    def __init__(self, *, socket_path: str, router_id: str | None = None, network_id: str | None = None,
                 bind: str = DEFAULT_BIND, port: int = 9697, status_socket: str | None = None,
                 agent_timeout: float = AGENT_TIMEOUT, header_timeout: float = HEADER_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                 max_per_source: int = MAX_PER_SOURCE, max_rate_per_source: float = MAX_RATE_PER_SOURCE,
                 neighbours: NeighbourTable | None = None) -> None:
        if bool(router_id) == bool(network_id):
            raise ValueError("a metadata proxy serves exactly one router or one network")
        self.id_header = "X-Neutron-Router-ID" if router_id else "X-Neutron-Network-ID"
        self.id_value: str = router_id or network_id or ""  # exactly one of the two (checked above)
        self.bind, self.port = ",".join(parse_bind(bind)), port  # ValueError saying what is wrong with it
        self.status_socket = status_socket
        self.metrics = Metrics("proxy")
        self.agent = Upstream(Target(unix_path=socket_path), timeout=agent_timeout)
        self.share = FairShare(IN_FLIGHT, IN_FLIGHT_PER_SOURCE)
        self.neighbours = neighbours if neighbours is not None else NeighbourTable()
        self._log = LogBudget(log)  # agent failures: one line a second, however many VMs ask meanwhile
        self.server = HttpServer(self.handle, header_timeout=header_timeout, idle_timeout=idle_timeout,
                                 max_connections=max_connections, max_per_source=max_per_source,
                                 max_rate_per_source=max_rate_per_source, identify=self.neighbours.mac_of)
        self.metrics.registry.register(_EdgeCollector(self.server))
        self.status_server = HttpServer(self._status) if status_socket else None

    async def start(self) -> None:
        if "::" in self.bind.split(",") and not ipv6_available():
            log.warning("IPv6 is off on this host (no AF_INET6 sockets): the proxy listens on IPv4 only")
            self.bind = ",".join(a for a in self.bind.split(",") if a != "::") or "0.0.0.0"
        self.port = await self.server.listen_tcp(self.bind, self.port, backlog=1024)
        if self.status_server is not None and self.status_socket:
            await self.status_server.listen_unix(self.status_socket, mode=0o660)
        log.info("metadata proxy for %s %s on %s:%d -> %s (at most %d connections, %d per address)", self.id_header,
                 self.id_value, self.bind, self.port, self.agent.target.describe(), self.server.max_connections,
                 self.server.max_per_source)

    async def stop(self) -> None:
        await self.server.close()
        if self.status_server is not None:
            await self.status_server.close()
        await self.agent.close()
        self.neighbours.close()

    async def handle(self, request: Message, peer: Peer) -> Response:
        started = time.perf_counter()
        rid = new_request_id()
        if peer.mac is None:  # (read once per connection as it is accepted: HttpServer's identify)
            peer.mac = self.neighbours.mac_of(peer.address, peer.ifindex)
        headers = agent_headers(request, peer.address, self.id_header, self.id_value, rid, peer.mac)
        share = self.share
        source = peer.key  # the MAC when known: a VM's IPv4 and IPv6 requests take turns as one
        if not share.enter(source):
            await share.wait(source)
        try:
            upstream = await self.agent.request(request.method, request.target, headers, request.body)
        except UpstreamUnavailable as exc:
            self._log(logging.WARNING, f"{rid} metadata agent unavailable: {exc}", time.monotonic())
            response = error(502, "The metadata agent is unavailable.", rid)
        except UpstreamTimeout as exc:
            self._log(logging.WARNING, f"{rid} {exc}", time.monotonic())
            response = error(504, "The metadata agent did not answer in time.", rid)
        else:
            response = Response(upstream.status, upstream.body,
                                [(k, v) for k, v in upstream.headers if k.lower() in PASSED_BACK])
            response.headers.append((REQUEST_ID_HEADER, rid))
            hop = upstream.get(HOP_LIMIT_HEADER) or ""
            if hop.isdigit() and 1 <= int(hop) <= 255:  # a token's answer: it must not cross a router in the VM
                response.ip_ttl = int(hop)
        finally:
            share.release(source)
        self.metrics.observe(response.status, time.perf_counter() - started)
        if log.isEnabledFor(logging.DEBUG):  # every answer is counted in /metrics; a VM cannot drive this log
            log.debug("%s %s %s from %s -> %d", rid, request.method, request.target, peer.address, response.status)
        return response

    async def _status(self, request: Message, peer: Peer) -> Response:
        if request.path == "/metrics":
            return self.metrics.response()
        if request.path == "/readyz":
            try:
                await self.agent.probe()
            except (UpstreamUnavailable, UpstreamTimeout) as exc:
                return error(503, str(exc))
            return healthz()
        if request.path == "/healthz":
            return healthz()
        return error(404, "Only /healthz, /readyz and /metrics are served here.")


class _EdgeCollector:
    """/metrics: the proxy's open connections and what its edge refused, evicted or timed out."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("provnet_metadata_proxy_connections", "Open client connections.",
                                value=self.server.open_connections)
        events = CounterMetricFamily(
            "provnet_metadata_proxy_connection_events",
            "Client connections refused (refused_source: at the per-address cap, refused_rate: opened too fast, "
            "refused_full: at the total cap), evicted to make room, closed when idle or not reading (stalled), "
            "and refusals of malformed or slow requests by status (400, 408, 413, 431, 501, 505).",
            labels=["event"])
        for event, count in sorted(self.server.stats.items()):
            events.add_metric([event], count)
        yield events
