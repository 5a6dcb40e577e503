# Run the networking API on its own event loop in a background thread (tests, benchmarks, embedding).
from __future__ import annotations

import asyncio
import ssl
import threading

from provnet.api.app import ApiService
from provnet.api.auth import Auth
from provnet.api.wire import PAGINATION_MAX_LIMIT
from provnet.registry.base import Registry


class ApiThread:
    """`with ApiThread(registry) as api: ... api.url ...` — the API on 127.0.0.1 (a free port by default)."""

    def __init__(self, registry: Registry, host: str = "127.0.0.1", port: int = 0,
                 agent_down_time: float = 75.0, writers: int | None = None, auth: Auth | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 pagination_max_limit: int = PAGINATION_MAX_LIMIT) -> None:
        self.service = ApiService(registry, host, port, agent_down_time, writers, auth, ssl_context,
                                  pagination_max_limit=pagination_max_limit, tune_runtime=False)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="provnet-api", daemon=True)

    @property
    def url(self) -> str:
        return self.service.url

    def start(self) -> ApiThread:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(timeout=30)
        except BaseException:
            self._shutdown_loop()
            raise
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(timeout=30)
            finally:
                self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    def __enter__(self) -> ApiThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
