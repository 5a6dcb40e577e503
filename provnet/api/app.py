# The networking API's aiohttp application (Neutron v2.0 subset + /provnet/v1) and its Service for `serve`/`api`.
from __future__ import annotations

import errno
import gc
import logging
import ssl
import sys

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from provnet.api.auth import Auth, api_ssl_context, make_context_middleware
from provnet.api.authz import Authz
from provnet.api.backend import Backend
from provnet.api.metadata_v1 import MetadataRoutes, MetadataSettings
from provnet.api.middleware import Metrics, errors, json_response, make_observe_middleware
from provnet.api.networking import NetworkingApi
from provnet.api.provnet_v1 import ProvnetApi
from provnet.api.wire import PAGINATION_MAX_LIMIT
from provnet.config import Config
from provnet.metrics import PROCESS
from provnet.registry.base import Registry

log = logging.getLogger("provnet.api")
MAX_BODY = 8 * 1024 * 1024
GIL_SWITCH_INTERVAL = 0.001
GC_THRESHOLDS = (50_000, 20, 100)
BACKEND_KEY: web.AppKey[Backend] = web.AppKey("backend", Backend)
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def make_app(registry: Registry, agent_down_time: float = 75.0, writers: int | None = None,
             auth: Auth | None = None, metadata: MetadataSettings | None = None,
             pagination_max_limit: int = PAGINATION_MAX_LIMIT) -> web.Application:
    """The whole API over one registry. Middlewares run in this order: observe, errors, context (noauth, or the
    Keystone token and /provnet/v1's rules); the handlers apply Neutron's policy through one Authz."""
    auth = auth or Auth()
    metrics = Metrics()
    backend = Backend(registry, writers)
    assert auth.policy is not None  # Auth.__post_init__ sets the default policy
    authz = Authz(auth.policy, registry, backend.read)
    app = web.Application(middlewares=[make_observe_middleware(metrics), errors, make_context_middleware(auth, authz)],
                          client_max_size=MAX_BODY)
    app[BACKEND_KEY] = backend
    app[METRICS_KEY] = metrics

    async def start_backend(app: web.Application) -> None:
        await backend.start()

    async def stop_backend(app: web.Application) -> None:
        await backend.stop()  # on shutdown, before aiohttp waits for handlers: long-polls answer now

    async def close_backend(app: web.Application) -> None:
        backend.close()

    app.on_startup.append(start_backend)
    app.on_shutdown.append(stop_backend)
    app.on_cleanup.append(close_backend)
    NetworkingApi(backend, agent_down_time, authz, pagination_max_limit).add_routes(app)
    ProvnetApi(backend, agent_down_time, pagination_max_limit).add_routes(app)
    MetadataRoutes(backend, metadata or MetadataSettings()).add_routes(app)

    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        try:
            revision = await backend.read(registry.revision)
        except Exception as exc:  # the store is down: not ready, say why
            log.warning("readiness check failed: %s", exc)
            return json_response({"status": "unavailable", "reason": type(exc).__name__}, status=503)
        return json_response({"status": "ok", "revision": revision})

    async def metrics_page(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry) + generate_latest(PROCESS)  # PROCESS: e.g. serve's child restarts
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app


def tune_runtime() -> None:
    """The API process's interpreter, tuned so its event loop keeps answering while threads work:
    - a thread wanting the GIL makes its holder drop it after 1 ms (not 5): the loop waits ~1 ms per turn behind
      a thread shaping a list or a bulk create;
    - the objects of start-up are frozen out of the cyclic collector, and it runs less often: a bulk of 10,000
      ports had 3 full collections of 60-230 ms each (the GIL held throughout), now none, pauses under ~30 ms.
      Reference counting still frees everything that is not a cycle at once."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def writers_for(db_url: str) -> int | None:
    """Write threads for a store: one for SQLite (a single writer at a time), asyncio's pool otherwise."""
    return 1 if db_url.startswith("sqlite") else None


class ApiService:
    """The networking API as a provnet Service: listens on bind_host:bind_port until stopped."""

    name = "networking API"

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 9696,
                 agent_down_time: float = 75.0, writers: int | None = None, auth: Auth | None = None,
                 ssl_context: ssl.SSLContext | None = None, metadata: MetadataSettings | None = None,
                 pagination_max_limit: int = PAGINATION_MAX_LIMIT, tune_runtime: bool = True) -> None:
        self.registry = registry
        self.metadata = metadata
        self.pagination_max_limit = pagination_max_limit
        self.tune_runtime = tune_runtime  # False when embedded in a process that is not only the API (tests)
        self.host = host
        self.port = port
        self.agent_down_time = agent_down_time
        self.writers = writers
        self.auth = auth or Auth()
        self.ssl_context = ssl_context
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_config(cls, config: Config, registry: Registry) -> ApiService:
        """The API as configured; ConfigError (naming the option) for an unusable identity or TLS setting."""
        return cls(registry, config.bind_host, config.bind_port, config.agent_down_time,
                   writers=writers_for(config.db_url), auth=Auth.from_config(config),
                   ssl_context=api_ssl_context(config), metadata=MetadataSettings.from_config(config),
                   pagination_max_limit=config.get("pagination_max_limit"))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        app = make_app(self.registry, self.agent_down_time, self.writers, self.auth, self.metadata,
                       self.pagination_max_limit)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024, ssl_context=self.ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise OSError(exc.errno, f"the networking API cannot listen on {self.host}:{self.port}: {reason}") from None
        if self.port == 0:  # an ephemeral port (tests): report the one we got
            self.port = self._runner.addresses[0][1]
        if self.tune_runtime:  # after start-up, so what it made is frozen too
            tune_runtime()
        log.info("networking API listening on %s (auth_strategy %s)", self.url, self.auth.strategy)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.auth.close()
