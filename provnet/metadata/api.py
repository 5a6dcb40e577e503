# The metadata API (nova-api-metadata's wire): signed-header identification, a per-instance tree cache, password;
# beyond Nova: session tokens, identity documents, ETags and watch, the audit trail of secrets, reload on SIGHUP.
from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import posixpath
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from provnet.config import Config, ConfigError
from provnet.identity.tls import server_context
from provnet.metadata import content
from provnet.metadata.attribution import instance_gone, project_mismatch
from provnet.metadata.audit import Audit, SecretRead
from provnet.metadata.http11 import Message
from provnet.metadata.identity import IdentityKeyError, IdentitySigner, check_audience, signing_key
from provnet.metadata.observe import REQUEST_ID_HEADER, STATUS_PATHS, Metrics, new_request_id, registry_status
from provnet.metadata.serving import HttpServer, Peer, Response, error
from provnet.metadata.signing import SharedSecrets
from provnet.metadata.tokens import (
    HOP_LIMIT_HEADER,
    RELAYED_HEADER,
    TOKEN_HEADERS,
    TOKEN_PATH,
    TTL_HEADERS,
    Binding,
    TokenKeys,
    TokenRefused,
    parse_ttl,
)
from provnet.metadata.watch import Watchers, WatchQuery, WatchRefused, bare, not_modified, parse_watch
from provnet.model.errors import Conflict, InstanceNotFound, InvalidInput, NotFound, ServiceUnavailable
from provnet.model.metadata_options import options_of
from provnet.model.resources import Network, Subnet
from provnet.registry.aio import AsyncRegistry
from provnet.registry.base import Registry
from provnet.registry.changes import Change
from provnet.registry.feed import ChangeFeed, Touched
from provnet.registry.metadata_reads import read_metadata_hops

log = logging.getLogger(__name__)

MAX_ENTRIES = 10_000  # instance trees cached (about 10 KB each once a boot has read its tree)
STALE_WAIT = 0.5  # seconds a VM waits for its expired tree's refresh before the tree it had is served
_IDENTITY = ("x-instance-id", "x-instance-id-signature", "x-tenant-id", "x-forwarded-for", "x-metadata-provider")
_GUEST_FORWARDING = ("x-forwarded-for", "forwarded", "x-forwarded-host")  # a relay in the guest sent these
REFUSAL_LOG_INTERVAL = 60.0  # seconds: a source's token refusals are logged once per interval, with a count
MAX_REFUSAL_SOURCES = 4096


@dataclass(frozen=True, slots=True)
class Ask:
    """Who asks: the instance (from the signed headers or the source), the source address, the request id, and
    whether a relay in the guest forwarded the request (it sent X-Forwarded-For or the like)."""

    instance_id: str
    address: str
    request_id: str
    relayed: str = ""


@dataclass
class _Entry:
    tree: content.MetadataTree
    born: float
    networks: tuple[str, ...]  # the networks (and subnets) its ports are on: a change to one drops the entry


def load_source(registry: Registry, instance_id: str, dhcp_domain: str, static_vendor_data: dict[str, Any] | None,
                request_address: str | None, shared: dict[str, Network | Subnet] | None = None,
                metadata_mode: str = "auto", hops: dict[str, dict[str, str]] | None = None) -> content.Source:
    """Instance, its ports (device_id = instance), their networks and subnets, and each network's metadata next hops
    in network mode ([metadata] mode): what the trees are rendered from.

    `shared` memoizes networks and subnets, `hops` the next hops by network (many instances share them); the
    caller drops what changed.
    """
    shared = {} if shared is None else shared
    hops = {} if hops is None else hops
    instance = registry.get_instance(instance_id)
    vifs = []
    for port in registry.list_ports({"device_id": [instance_id]}):
        network = shared.get(port.network_id)
        if not isinstance(network, Network):
            network = shared[port.network_id] = registry.get_network(port.network_id)
        subnets = []
        for subnet_id in dict.fromkeys(f.subnet_id for f in port.fixed_ips):
            subnet = shared.get(subnet_id)
            if not isinstance(subnet, Subnet):
                subnet = shared[subnet_id] = registry.get_subnet(subnet_id)
            subnets.append(subnet)
        network_hops = hops.get(network.id)
        if network_hops is None:
            network_subnets = registry.list_subnets({"network_id": [network.id]})
            network_hops = hops[network.id] = read_metadata_hops(registry, metadata_mode, network_subnets)
        vifs.append(content.Vif(port, network, tuple(subnets), network_hops))
    return content.Source(instance, vifs, dhcp_domain, static_vendor_data, request_address)


def load_vendor_data(path: str) -> dict[str, Any]:
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
                 dhcp_domain: str = "novalocal", static_vendor_data: dict[str, Any] | None = None,
                 trusted_networks: Sequence[str] = (), cache_expiration: float = 15.0,
                 registry_timeout: float = 10.0, stale_if_error: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, previous_secret: str = "",
                 http_tokens: str = "optional", hop_limit: int = 1, identity: IdentitySigner | None = None,
                 watch_max_per_instance: int = 8, watch_max_total: int = 4096, watch_max_timeout: float = 50.0,
                 wall_clock: Callable[[], float] = time.time, ssl_context: ssl.SSLContext | None = None,
                 metadata_mode: str = "auto") -> None:
        self.registry = registry
        self.ssl_context = ssl_context  # https when set ([wsgi] ssl_cert_file / ssl_key_file)
        self.areg = AsyncRegistry(registry, timeout=registry_timeout, name="metadata-api")
        self.feed = ChangeFeed(registry, "metadata API feed")
        self.feed.subscribe(self)
        self.touched = Touched()
        self.secrets = SharedSecrets(shared_secret, [previous_secret])
        self.token_keys = TokenKeys.from_secrets(shared_secret, [previous_secret])
        self.http_tokens = http_tokens
        self.hop_limit = hop_limit
        self.identity = identity
        self.watchers = Watchers(watch_max_per_instance, watch_max_total)
        self.watch_max_timeout = watch_max_timeout
        self.wall_clock = wall_clock
        self._refusals: OrderedDict[str, list[float]] = OrderedDict()  # source -> [last logged, suppressed]
        self.host, self.port = host, port
        self.dhcp_domain = dhcp_domain
        self.static_vendor_data = static_vendor_data or {}
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_networks]
        self.cache_expiration = cache_expiration
        self.stale_if_error = stale_if_error
        self.clock = clock
        self.metrics = Metrics("api")
        self.audit = Audit(self.metrics.registry)
        self.server = HttpServer(self.handle)
        self._cache: dict[str, _Entry] = {}
        self._refreshing: dict[str, asyncio.Future[content.MetadataTree | Response]] = {}
        self._by_network: dict[str, set[str]] = {}  # network or subnet id -> instance ids cached
        # networks and subnets by id, shared by instances' loads; dropped per change
        self._shared: dict[str, Network | Subnet] = {}
        self._hops: dict[str, dict[str, str]] = {}  # network id -> its subnets' metadata next hops (network mode)
        self.metadata_mode = metadata_mode
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
                   stale_if_error=config.get("metadata.cache_stale_if_error"),
                   previous_secret=config.metadata_proxy_shared_secret_previous,
                   http_tokens=config.get("metadata.http_tokens"),
                   hop_limit=config.get("metadata.http_put_response_hop_limit"),
                   identity=identity_signer(config),
                   watch_max_per_instance=config.get("metadata.watch_max_per_instance"),
                   watch_max_total=config.get("metadata.watch_max_total"),
                   watch_max_timeout=config.get("metadata.watch_max_timeout"), ssl_context=ssl_context,
                   metadata_mode=config.get("metadata.mode"))

    def reload(self, config: Config) -> None:
        """SIGHUP: take the secrets, the identity key and the token defaults from `config` (each swapped whole,
        so a request sees the old set or the new one); a key that cannot be read keeps the old signer."""
        self.secrets = SharedSecrets(config.metadata_proxy_shared_secret,
                                     [config.metadata_proxy_shared_secret_previous])
        self.token_keys = TokenKeys.from_secrets(config.metadata_proxy_shared_secret,
                                                 [config.metadata_proxy_shared_secret_previous])
        self.http_tokens = config.get("metadata.http_tokens")
        self.hop_limit = config.get("metadata.http_put_response_hop_limit")
        try:
            self.identity = identity_signer(config)
        except ConfigError as exc:
            log.error("reload: %s; still signing identity documents with key %s", exc,
                      self.identity.key.kid if self.identity else "(none)")
        log.info("metadata API reloaded: %d shared secret(s) accepted, token key %s, identity key %s",
                 len(self.secrets.all), self.token_keys.current.kid,
                 self.identity.key.kid if self.identity else "(none)")

    async def start(self) -> None:
        await self.feed.start()
        self.port = await self.server.listen_tcp(self.host, self.port, ssl=self.ssl_context)
        log.info("metadata API on %s:%d%s (direct mode %s; identity documents %s)", self.host, self.port,
                 " (https)" if self.ssl_context else "", ",".join(map(str, self.trusted)) if self.trusted else "off",
                 f"signed with {self.identity.key.path} (kid {self.identity.key.kid})" if self.identity else "off")

    async def stop(self) -> None:
        await self.server.close()
        for refresh in list(self._refreshing.values()):
            refresh.cancel()
        await self.feed.stop()
        self.areg.close()

    # --- the change feed ---------------------------------------------------------------------------------------
    def apply(self, changes: Sequence[Change]) -> None:
        names: set[str] = {"*networks"} if any(c.kind == "network" and c.op != "update" for c in changes) else set()
        for change in changes:
            names.update((change.id, *change.devices))
            if change.kind == "instance":
                self._drop(change.id)
                self.watchers.wake(change.id)
            elif change.kind == "port":
                for device in change.devices:
                    self._drop(device)
                    self.watchers.wake(device)
            elif change.kind in ("network", "subnet"):
                self.watchers.wake_network(change.id)
                # a new dict: a load in flight keeps writing to the old one, which nobody reads again
                self._shared = {k: v for k, v in self._shared.items() if k != change.id}
                self._hops = {k: v for k, v in self._hops.items() if k not in (change.id, change.network_id)}
                if change.kind == "network" and change.op != "update":
                    self._all_networks = None
                for instance_id in list(self._by_network.get(change.id, ())):
                    self._drop(instance_id)
        self.touched.add(frozenset(names))

    def resync(self) -> None:
        self.touched.add(None)
        self.watchers.wake_all()
        self.invalidated += len(self._cache)
        self._cache.clear()
        self._by_network.clear()
        self._shared = {}
        self._hops = {}
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
        answer = self._answer(request, peer, rid)
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

    def _answer(self, request: Message, peer: Peer, rid: str) -> Response | Awaitable[Response]:
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
            return self._direct(request, peer, rid)
        return self._proxied(request, rid)

    def _is_trusted(self, address: str) -> bool:
        if not self.trusted or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def _proxied(self, request: Message, rid: str) -> Response | Awaitable[Response]:
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
        if not self.secrets.matches(instance_id, sigs[0]):
            log.warning("X-Instance-ID-Signature does not match for instance %s: check that "
                        "metadata_proxy_shared_secret is the same on the agent and the API", instance_id)
            return error(403, "Invalid proxy request signature.")
        ask = Ask(instance_id, request.get("x-forwarded-for") or "", rid, request.get(RELAYED_HEADER) or "")
        mark = self.touched.mark()
        tree = self._cached_tree(instance_id)
        if tree is not None:
            return self._owned(tree, tenant_id, ask, request, mark)
        return self._proxied_later(request, ask, tenant_id, mark)

    async def _proxied_later(self, request: Message, ask: Ask, tenant_id: str, mark: int) -> Response:
        tree = await self._load_tree(ask.instance_id, ask.address or None)
        if isinstance(tree, Response):
            return tree
        answer = self._owned(tree, tenant_id, ask, request, mark)
        return answer if isinstance(answer, Response) else await answer

    def _owned(self, tree: content.MetadataTree, tenant_id: str, ask: Ask, request: Message, mark: int
               ) -> Response | Awaitable[Response]:
        if tree.source.instance.project_id != tenant_id:
            log.warning("X-Tenant-ID %s does not own instance %s", tenant_id, ask.instance_id)
            return error(404, project_mismatch(ask.instance_id, tenant_id))
        return self._serve(tree, request, ask, mark)

    async def _direct(self, request: Message, peer: Peer, rid: str) -> Response:
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
        mark = self.touched.mark()
        tree = self._cached_tree(ports[0].device_id) or await self._load_tree(ports[0].device_id, peer.address)
        if isinstance(tree, Response):
            return tree
        relayed = ",".join(h for h in _GUEST_FORWARDING if request.get_all(h))
        answer = self._serve(tree, request, Ask(ports[0].device_id, peer.address, rid, relayed), mark)
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
        """A tree from the registry. One past cache_expiration (still within stale_if_error) is refreshed, one
        refresh per instance at a time, but a registry slower than STALE_WAIT (hung, or not yet known to be down)
        does not hold its VMs: the request that started the refresh waits at most STALE_WAIT, the others not at
        all, for the tree they had (stale-while-revalidate; the change feed drops a tree whose instance changed,
        so an expired one differs from the registry only if the feed missed a change)."""
        stale = self._cache.get(instance_id)
        if stale is None or self.clock() - stale.born >= self.cache_expiration + self.stale_if_error:
            return await self._fetch_tree(instance_id, address)
        if instance_id in self._refreshing:
            self.metrics.cache_hit.inc()
            return stale.tree
        refresh = asyncio.ensure_future(self._fetch_tree(instance_id, address))
        self._refreshing[instance_id] = refresh
        refresh.add_done_callback(lambda done: (self._refreshing.pop(instance_id, None),
                                                done.cancelled() or done.exception()))
        try:
            return await asyncio.wait_for(asyncio.shield(refresh), STALE_WAIT)
        except TimeoutError:
            self.metrics.cache_hit.inc()
            return stale.tree

    async def _fetch_tree(self, instance_id: str, address: str | None) -> content.MetadataTree | Response:
        self.metrics.cache_miss.inc()
        mark = self.touched.mark()
        try:
            source = await self.areg(load_source, self.registry, instance_id, self.dhcp_domain,
                                     self.static_vendor_data, address, self._shared, self.metadata_mode,
                                     self._hops)
        except (InstanceNotFound, NotFound):
            self.metrics.lookup("not_found")
            return error(404, instance_gone(instance_id))
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

    # --- serving an identified request ---------------------------------------------------------------------------
    def _serve(self, tree: content.MetadataTree, request: Message, ask: Ask, mark: int
               ) -> Response | Awaitable[Response]:
        """Tokens, then the answer (ETag, If-None-Match, watch), then the audit line for a secret. At once, except
        for the password (the registry) and a watch; `mark`: the feed's position when the tree was taken."""
        path = request.path
        binding = self._binding(tree, ask)
        if posixpath.normpath("/" + path.lstrip("/")) == TOKEN_PATH:
            return self._token(request, ask, tree, binding)
        tokens = [v for h in TOKEN_HEADERS for v in request.get_all(h)]
        if len(tokens) > 1:
            return error(400, "Send one X-aws-ec2-metadata-token header.")
        if tokens:
            try:
                self.token_keys.check(tokens[0], binding, self.wall_clock())
            except TokenRefused as exc:
                return self._unauthorized(ask, str(exc))
        elif (options_of(tree.source.instance.metadata).http_tokens or self.http_tokens) == "required":
            return self._unauthorized(ask, "no session token, and this instance requires one (http_tokens "
                                           "required)")
        try:
            watch = parse_watch(request.query, self.watch_max_timeout)
        except ValueError as exc:
            return error(400, str(exc))
        reply = tree.lookup(path)
        if reply is content.PASSWORD_LEAF:
            return self._password_read(tree, request, ask, binding, bool(tokens))
        if reply is content.IDENTITY_LEAF:
            response = self._identity_document(tree, request, binding)
            self._audit(content.IDENTITY, ask, binding, request, response, bool(tokens))
            return response
        if watch.wait and reply.status:
            last = watch.last_etag if watch.last_etag is not None else bare(reply.etag)
            if bare(reply.etag) == last:
                return self._watched(tree, request, reply, ask, watch, last, mark, binding, bool(tokens))
        return self._answered(reply, request, ask, binding, bool(tokens))

    def _answered(self, reply: content.Reply, request: Message, ask: Ask, binding: Binding, token: bool
                  ) -> Response:
        response = _reply(reply)
        if reply.status == 200 and not_modified(request.get_all("if-none-match"), reply.etag):
            response = Response(304, b"", [("ETag", reply.etag)])
        if reply.secret:
            self._audit(reply.secret, ask, binding, request, response, token)
        return response

    async def _password_read(self, tree: content.MetadataTree, request: Message, ask: Ask, binding: Binding,
                             token: bool) -> Response:
        response = await self._password(tree.source.instance.id, request)
        if request.method == "GET":
            self._audit(content.PASSWORD_READ, ask, binding, request, response, token)
        return response

    async def _watched(self, tree: content.MetadataTree, request: Message, reply: content.Reply, ask: Ask,
                       watch: WatchQuery, last: str, mark: int, binding: Binding, token: bool) -> Response:
        try:
            found = await self._watch(tree, request.path, reply, ask, watch, last, mark)
        except WatchRefused as exc:
            response = error(429, str(exc))
            response.headers.append(("Retry-After", "1"))
            return response
        if isinstance(found, Response):
            return found
        return self._answered(found, request, ask, binding, token)

    def _binding(self, tree: content.MetadataTree, ask: Ask) -> Binding:
        """The port the request came from (the instance's port holding the source address), for tokens."""
        for vif in tree.source.vifs:
            if ask.address in vif.port.ips():
                return Binding(ask.instance_id, vif.port.id, vif.port.mac_address, ask.address)
        return Binding(ask.instance_id, "", "", ask.address)

    def _token(self, request: Message, ask: Ask, tree: content.MetadataTree, binding: Binding) -> Response:
        """PUT /latest/api/token: a session token for this instance, port, MAC and address."""
        if request.method != "PUT":
            response = error(405, "Session tokens are issued to PUT /latest/api/token.")
            response.headers.append(("Allow", "PUT"))
            return response
        if ask.relayed:
            log.warning("%s token refused for instance %s from %s: the guest sent %s (a relay inside the VM)",
                        ask.request_id, ask.instance_id, ask.address, ask.relayed)
            return error(400, "A token request that carries X-Forwarded-For is refused (it was relayed).")
        ttl_values = [v for h in TTL_HEADERS for v in request.get_all(h)]
        try:
            ttl = parse_ttl(ttl_values)
        except ValueError as exc:
            return error(400, str(exc))
        token = self.token_keys.issue(binding, ttl, self.wall_clock())
        hop = options_of(tree.source.instance.metadata).hop_limit or self.hop_limit
        return Response(200, token.encode(), [("Content-Type", content.TEXT), (TTL_HEADERS[0], str(ttl)),
                                              (HOP_LIMIT_HEADER, str(hop))])

    def _unauthorized(self, ask: Ask, reason: str) -> Response:
        """401, and one log line per source and minute saying why (with how many more since the last line)."""
        now = self.clock()
        seen = self._refusals.get(ask.address)
        if seen is None or now - seen[0] >= REFUSAL_LOG_INTERVAL:
            more = f" ({int(seen[1])} more refused since the last line)" if seen and seen[1] else ""
            log.warning("%s 401 for instance %s from %s: %s%s", ask.request_id, ask.instance_id, ask.address,
                        reason, more)
            self._refusals[ask.address] = [now, 0]
            self._refusals.move_to_end(ask.address)
            while len(self._refusals) > MAX_REFUSAL_SOURCES:
                self._refusals.popitem(last=False)
        else:
            seen[1] += 1
        return error(401, "A valid session token is required: PUT /latest/api/token with "
                          "X-aws-ec2-metadata-token-ttl-seconds, then send it as X-aws-ec2-metadata-token.")

    def _identity_document(self, tree: content.MetadataTree, request: Message, binding: Binding) -> Response:
        if self.identity is None:
            return error(404, "Identity documents are not configured on this metadata API.")
        try:
            audience = check_audience(_query_values(request.query, "audience"))
        except ValueError as exc:
            return error(400, str(exc))
        if not binding.port_id:
            return error(404, f"No port of instance {binding.instance_id} holds address {binding.address}.")
        inst = tree.source.instance
        network_id = next(v.network.id for v in tree.source.vifs if v.port.id == binding.port_id)
        claims = {"sub": inst.id, "instance_id": inst.id, "project_id": inst.project_id,
                  "port_id": binding.port_id, "network_id": network_id, "fixed_ip": binding.address,
                  "mac_address": binding.mac}
        document = self.identity.sign(claims, audience, self.wall_clock())
        return Response(200, document.encode(), [("Content-Type", "application/jwt")])

    async def _watch(self, tree: content.MetadataTree, path: str, reply: content.Reply, ask: Ask,
                     watch: WatchQuery, last: str, mark: int) -> content.Reply | Response:
        """GCE's long-poll: the answer as soon as its ETag differs from `last`, else the same answer at the
        timeout. Woken by the change feed for this instance, its ports, networks and subnets."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + watch.timeout
        networks = _tree_keys(tree)
        future = self.watchers.join(ask.instance_id, networks)
        try:
            if self.touched.since(mark, (ask.instance_id, *networks)):
                future.set_result(None)  # something changed while the answer was made: look again at once
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return reply
                try:
                    await asyncio.wait_for(asyncio.shield(future), remaining)
                except TimeoutError:
                    return reply
                future = self.watchers.rearm(ask.instance_id, future)  # keeps its place while it looks again
                mark = self.touched.mark()
                fresh = self._cached_tree(ask.instance_id) or await self._load_tree(ask.instance_id,
                                                                                    ask.address or None)
                if isinstance(fresh, Response):
                    return fresh  # the instance is gone: its 404
                if _tree_keys(fresh) != networks:  # its ports moved: index it under the new networks
                    self.watchers.leave(ask.instance_id, networks, future)
                    networks = _tree_keys(fresh)
                    future = self.watchers.join(ask.instance_id, networks)  # the place just freed, no await
                if self.touched.since(mark, (ask.instance_id, *networks)) and not future.done():
                    future.set_result(None)
                reply = fresh.lookup(path)
                if not reply.status or bare(reply.etag) != last:
                    return reply
        finally:
            self.watchers.leave(ask.instance_id, networks, future)

    def _audit(self, kind: str, ask: Ask, binding: Binding, request: Message, response: Response,
               token: bool) -> None:
        self.audit.record(SecretRead(kind, ask.instance_id, binding.port_id, ask.address, ask.request_id,
                                     request.target, len(response.body), token, response.status))

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
            except InvalidInput as exc:  # what the store refuses is the VM's bad input, never a 500
                return error(400, exc.message)
        return Response(reply.status, reply.body, [("Content-Type", content.TEXT)])


def _reply(reply: content.Reply) -> Response:
    headers = [("Content-Type", reply.content_type)]
    if reply.etag:
        headers.append(("ETag", reply.etag))
    return Response(reply.status, reply.body, headers)


def _tree_keys(tree: content.MetadataTree) -> tuple[str, ...]:
    vifs = tree.source.vifs
    return tuple(dict.fromkeys([v.network.id for v in vifs] + [s.id for v in vifs for s in v.subnets]))


def _query_values(query: str, name: str) -> list[str]:
    return parse_qs(query, keep_blank_values=True, max_num_fields=16).get(name, [])


def identity_signer(config: Config) -> IdentitySigner | None:
    """The identity signer as [metadata] identity_* say (the key created when missing); ConfigError otherwise."""
    path = config.get("metadata.identity_signing_key")
    if not path:
        return None
    try:
        key = signing_key(path)
    except IdentityKeyError as exc:
        raise ConfigError(str(exc)) from None
    return IdentitySigner(key, config.get("metadata.identity_issuer"), config.get("metadata.identity_ttl"))
