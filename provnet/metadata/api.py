# The metadata API (nova-api-metadata's wire): signed-header identification, a per-instance tree cache, password.
from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from provnet.config import Config, ConfigError
from provnet.identity.tls import server_context
from provnet.metadata import content
from provnet.metadata.http11 import Message
from provnet.metadata.observe import REQUEST_ID_HEADER, STATUS_PATHS, Metrics, new_request_id, registry_status
from provnet.metadata.serving import HttpServer, Peer, Response, error
from provnet.metadata.signing import signature_matches
from provnet.model.errors import Conflict, InstanceNotFound, NotFound, ServiceUnavailable
from provnet.registry.aio import AsyncRegistry
from provnet.registry.base import Registry
from provnet.registry.changes import Change
from provnet.registry.feed import ChangeFeed, Touched

log = logging.getLogger(__name__)

MAX_ENTRIES = 10_000  # instance trees cached (about 10 KB each once a boot has read its tree)
_IDENTITY = ("x-instance-id", "x-instance-id-signature", "x-tenant-id", "x-forwarded-for", "x-metadata-provider")


@dataclass
class _Entry:
    tree: content.MetadataTree
    born: float
    networks: tuple[str, ...]  # the networks (and subnets) its ports are on: a change to one drops the entry


def load_source(registry: Registry, instance_id: str, dhcp_domain: str, static_vendor_data: dict | None,
                request_address: str | None, shared: dict | None = None) -> content.Source:
    """Instance, its ports (device_id = instance), their networks and subnets: what the trees are rendered from.

    `shared` memoizes networks and subnets (many instances share them); the caller drops what changed.
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
    """HTTP service answering the EC2 and OpenStack metadata trees to signed requests (and trusted sources).

    Trees are cached per instance for `cache_expiration` seconds (Nova's option) and dropped by the change feed
    as soon as it delivers a change to the instance, one of its ports, or a network or subnet it is on
    (milliseconds after the commit). Registry reads run off the event loop with a deadline; while the registry
    is unreachable, cached trees are served for up to `stale_if_error` seconds past their expiry, and anything
    else is a 503.
    """

    name = "metadata API"

    def __init__(self, registry: Registry, *, shared_secret: str, host: str = "127.0.0.1", port: int = 8775,
                 dhcp_domain: str = "novalocal", static_vendor_data: dict | None = None,
                 trusted_networks: Sequence[str] = (), cache_expiration: float = 15.0,
                 registry_timeout: float = 10.0, stale_if_error: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, ssl_context: ssl.SSLContext | None = None) -> None:
        self.registry = registry
        self.ssl_context = ssl_context  # https when set ([wsgi] ssl_cert_file / ssl_key_file)
        self.areg = AsyncRegistry(registry, timeout=registry_timeout, name="metadata-api")
        self.feed = ChangeFeed(registry, "metadata API feed")
        self.feed.subscribe(self)
        self.touched = Touched()
        self.secret = shared_secret
        self.host, self.port = host, port
        self.dhcp_domain = dhcp_domain
        self.static_vendor_data = static_vendor_data or {}
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
        self.cache_expiration = cache_expiration
        self.stale_if_error = stale_if_error
        self.clock = clock
        self.metrics = Metrics("api")
        self.server = HttpServer(self.handle)
        self._cache: dict[str, _Entry] = {}
        self._by_network: dict[str, set[str]] = {}  # network or subnet id -> instance ids cached
        self._shared: dict = {}  # networks and subnets by id, shared by instances' loads; dropped per change
        self._all_networks: list[str] | None = None
        self.invalidated = 0

    @classmethod
    def from_config(cls, config: Config, registry: Registry) -> MetadataApi:
        """The API as [DEFAULT] metadata_listen*, [api] and [metadata] say; ConfigError for a bad vendor file."""
        try:
            vendor = load_vendor_data(config.get("api.vendordata_jsonfile_path"))
            ssl_context = server_context(config.get("wsgi.ssl_cert_file"), config.get("wsgi.ssl_key_file"),
                                         "[wsgi] ssl_cert_file/ssl_key_file")
        except ValueError as exc:  # TlsError too
            raise ConfigError(str(exc)) from None
        if not config.metadata_proxy_shared_secret:
            log.warning("metadata_proxy_shared_secret is empty: signatures are HMACs with an empty key")
        return cls(registry, shared_secret=config.metadata_proxy_shared_secret, host=config.metadata_listen,
                   port=config.metadata_listen_port, dhcp_domain=config.get("api.dhcp_domain"),
                   static_vendor_data=vendor, trusted_networks=config.get("api.metadata_trusted_networks"),
                   cache_expiration=config.get("api.metadata_cache_expiration"),
                   registry_timeout=config.get("metadata.registry_timeout"),
                   stale_if_error=config.get("metadata.cache_stale_if_error"), ssl_context=ssl_context)

    async def start(self) -> None:
        await self.feed.start()
        self.port = await self.server.listen_tcp(self.host, self.port, ssl=self.ssl_context)
        log.info("metadata API on %s:%d%s (direct mode %s)", self.host, self.port,
                 " (https)" if self.ssl_context else "", ",".join(map(str, self.trusted)) if self.trusted else "off")

    async def stop(self) -> None:
        await self.server.close()
        await self.feed.stop()
        self.areg.close()

    # --- the change feed ---------------------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> None:
        names: set[str] = {"*networks"} if any(c.kind == "network" and c.op != "update" for c in changes) else set()
        for change in changes:
            names.update((change.id, *change.devices))
            if change.kind == "instance":
                self._drop(change.id)
            elif change.kind == "port":
                for device in change.devices:
                    self._drop(device)
            elif change.kind in ("network", "subnet"):
                # a new dict: a load in flight keeps writing to the old one, which nobody reads again
                self._shared = {k: v for k, v in self._shared.items() if k != change.id}
                if change.kind == "network" and change.op != "update":
                    self._all_networks = None
                for instance_id in list(self._by_network.get(change.id, ())):
                    self._drop(instance_id)
        self.touched.add(frozenset(names))

    def resync(self) -> None:
        self.touched.add(None)
        self.invalidated += len(self._cache)
        self._cache.clear()
        self._by_network.clear()
        self._shared = {}
        self._all_networks = None

    def _drop(self, instance_id: str) -> None:
        entry = self._cache.pop(instance_id, None)
        if entry is None:
            return
        self.invalidated += 1
        for net in entry.networks:
            held = self._by_network.get(net)
            if held is not None:
                held.discard(instance_id)
                if not held:
                    del self._by_network[net]

    # --- requests ---------------------------------------------------------------------------------------------
    def handle(self, request: Message, peer: Peer) -> Response | Awaitable[Response]:
        """Status pages, refusals and cached trees answer at once; a tree not cached answers once loaded."""
        started = time.perf_counter()
        rid = request.get(REQUEST_ID_HEADER) or new_request_id()
        answer = self._answer(request, peer)
        if isinstance(answer, Response):
            return self._done(request, rid, answer, started)
        return self._later(request, rid, answer, started)

    async def _later(self, request: Message, rid: str, answer: Awaitable[Response], started: float) -> Response:
        try:
            response = await answer
        except ServiceUnavailable as exc:
            log.warning("%s registry unavailable: %s", rid, exc.message)
            response = error(503, "The metadata service is temporarily unavailable.")
        return self._done(request, rid, response, started)

    def _done(self, request: Message, rid: str, response: Response, started: float) -> Response:
        response.headers.append((REQUEST_ID_HEADER, rid))
        self.metrics.observe(response.status, time.perf_counter() - started)
        level = logging.DEBUG if response.status < 400 else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s %s %s -> %d", rid, request.method, request.target, response.status)
        return response

    def _answer(self, request: Message, peer: Peer) -> Response | Awaitable[Response]:
        path = request.path
        if path in STATUS_PATHS and not any(request.get_all(h) for h in _IDENTITY) \
                and not self._is_trusted(peer.address):
            if path == "/readyz" and not self.feed.healthy:
                return error(503, "registry unavailable")
            return registry_status(path, self.metrics)
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

    def _proxied(self, request: Message) -> Response | Awaitable[Response]:
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
        tree = self._cached_tree(instance_id)
        if tree is not None:
            return self._owned(tree, tenant_id, instance_id, request)
        return self._proxied_later(request, instance_id, tenant_id, request.get("x-forwarded-for"))

    async def _proxied_later(self, request: Message, instance_id: str, tenant_id: str, xff: str | None
                             ) -> Response:
        tree = await self._load_tree(instance_id, xff)
        if isinstance(tree, Response):
            return tree
        answer = self._owned(tree, tenant_id, instance_id, request)
        return answer if isinstance(answer, Response) else await answer

    def _owned(self, tree: content.MetadataTree, tenant_id: str, instance_id: str, request: Message
               ) -> Response | Awaitable[Response]:
        if tree.source.instance.project_id != tenant_id:
            log.warning("X-Tenant-ID %s does not own instance %s", tenant_id, instance_id)
            return error(404, "The resource could not be found.")
        return self._serve(tree, request)

    async def _direct(self, request: Message, peer: Peer) -> Response:
        networks = self._all_networks
        if networks is None:
            mark = self.touched.mark()
            networks = [n.id for n in await self.areg(self.registry.list_networks)]
            if not self.touched.since(mark, ["*networks"]):
                self._all_networks = networks
        ports = [p for p in await self.areg(self.registry.find_ports_by_ip, peer.address, networks)
                 if p.device_id and not p.device_owner.startswith("network:")]
        if len(ports) != 1:
            log.warning("direct request from %s: %d instance ports have that address", peer.address, len(ports))
            return error(404, "The resource could not be found.")
        tree = self._cached_tree(ports[0].device_id) or await self._load_tree(ports[0].device_id, peer.address)
        if isinstance(tree, Response):
            return tree
        answer = self._serve(tree, request)
        return answer if isinstance(answer, Response) else await answer

    def _cached_tree(self, instance_id: str) -> content.MetadataTree | None:
        """The cached tree while within cache_expiration (and, while the registry is away, stale_if_error)."""
        entry = self._cache.get(instance_id)
        if entry is None:
            return None
        age = self.clock() - entry.born
        if age < self.cache_expiration or (not self.feed.healthy
                                           and age < self.cache_expiration + self.stale_if_error):
            self.metrics.cache_hit.inc()
            return entry.tree
        return None

    async def _load_tree(self, instance_id: str, address: str | None) -> content.MetadataTree | Response:
        self.metrics.cache_miss.inc()
        mark = self.touched.mark()
        try:
            source = await self.areg(load_source, self.registry, instance_id, self.dhcp_domain,
                                     self.static_vendor_data, address, self._shared)
        except (InstanceNotFound, NotFound):
            self.metrics.lookup("not_found")
            return error(404, "The resource could not be found.")
        except ServiceUnavailable:
            stale = self._cache.get(instance_id)
            if stale is not None and self.clock() - stale.born < self.cache_expiration + self.stale_if_error:
                self.metrics.cache_hit.inc()
                return stale.tree  # stale-if-error: the registry is away, this tree was right recently
            raise
        except Exception:
            log.exception("failed to load metadata for instance %s", instance_id)
            return error(500, "An unknown error has occurred. Please try your request again.")
        self.metrics.lookup("found")
        tree = content.MetadataTree(source)
        keys = tuple(dict.fromkeys([v.network.id for v in source.vifs]
                                   + [s.id for v in source.vifs for s in v.subnets]))
        if self.cache_expiration > 0 and not self.touched.since(mark, (instance_id, *keys)):
            if len(self._cache) >= MAX_ENTRIES:
                for old in list(self._cache)[:MAX_ENTRIES // 10]:
                    self._drop(old)
            self._drop(instance_id)
            self._cache[instance_id] = _Entry(tree, self.clock(), keys)
            for key in keys:
                self._by_network.setdefault(key, set()).add(instance_id)
        return tree

    def _serve(self, tree: content.MetadataTree, request: Message) -> Response | Awaitable[Response]:
        reply = tree.lookup(request.path)
        if reply is content.PASSWORD_LEAF:
            return self._password(tree.source.instance.id, request)
        if reply.status != 200:
            return Response(reply.status, reply.body, [("Content-Type", content.TEXT)])
        return _reply(reply)

    async def _password(self, instance_id: str, request: Message) -> Response:
        if request.method not in ("GET", "POST"):
            return error(400, "The password accepts GET and POST only.")
        current = await self.areg(self.registry.get_instance_password, instance_id)
        if request.method == "GET":
            return Response(200, (current or "").encode(), [("Content-Type", content.TEXT)])
        reply, new = content.password_post(current, request.body)
        if new is not None:
            try:
                await self.areg(self.registry.set_instance_password, instance_id, new)
            except Conflict:
                return error(409, "The password is already set.")
        return Response(reply.status, reply.body, [("Content-Type", content.TEXT)])


def _reply(reply: content.Reply) -> Response:
    return Response(reply.status, reply.body, [("Content-Type", reply.content_type)])
