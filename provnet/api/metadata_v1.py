# The networking API's metadata routes: the identity documents' public keys (JWKS) and metadata-explain.
from __future__ import annotations

import asyncio
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from provnet.api.backend import Backend
from provnet.api.middleware import json_response
from provnet.config import Config
from provnet.metadata.explain import explain, http_probe
from provnet.metadata.identity import IdentityKeyError, jwks, published_keys
from provnet.model.errors import HTTPBadRequest, ServiceUnavailable

PREFIX = "/provnet/v1/metadata"
JWKS_MAX_AGE = 300  # seconds verifiers may cache the key set: publish a new key this long before signing with it
_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


@dataclass(frozen=True)
class MetadataSettings:
    """What the routes need from the configuration."""

    signing_key: str = ""
    verify_keys: Sequence[str] = ()
    api_host: str = "127.0.0.1"
    api_port: int = 8775
    secret: str = ""

    @classmethod
    def from_config(cls, config: Config) -> MetadataSettings:
        return cls(config.get("metadata.identity_signing_key"), tuple(config.get("metadata.identity_verify_keys")),
                   config.nova_metadata_host, config.nova_metadata_port, config.metadata_proxy_shared_secret)


class MetadataRoutes:
    def __init__(self, backend: Backend, settings: MetadataSettings) -> None:
        self.backend = backend
        self.settings = settings
        self._jwks: tuple[tuple, dict] | None = None  # (the key files' identities, the JWKS made from them)

    def _key_files(self) -> tuple[tuple[str, int | None, int | None], ...]:
        out: list[tuple[str, int | None, int | None]] = []
        for path in (self.settings.signing_key, *self.settings.verify_keys):
            try:
                st = os.stat(path)
                out.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((path, None, None))
        return tuple(out)

    async def jwks(self, request: web.Request) -> web.Response:
        """The public keys of identity documents (read again whenever a key file changes)."""
        files = self._key_files()
        cached = self._jwks
        if cached is None or cached[0] != files:
            try:
                keys = await asyncio.to_thread(published_keys, self.settings.signing_key, self.settings.verify_keys)
            except IdentityKeyError as exc:
                raise ServiceUnavailable(message=f"The identity keys cannot be read: {exc}") from None
            cached = self._jwks = (files, jwks(keys))
        response = json_response(cached[1])
        response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
        return response

    async def explain(self, request: web.Request) -> web.Response:
        """?router_id=R | network_id=N, ip=IP, [mac=MAC], [probe=false]: the agent's walk and the API's checks."""
        query = request.query
        routers, networks = query.getall("router_id", []), query.getall("network_id", [])
        if len(routers) + len(networks) != 1 or not (routers or networks)[0]:
            raise HTTPBadRequest(msg="Give exactly one of router_id or network_id.")
        ips = query.getall("ip", [])
        if len(ips) != 1:
            raise HTTPBadRequest(msg="Give the VM's address once: ip=<address>.")
        try:
            ip = str(ipaddress.ip_address(ips[0]))
        except ValueError:
            raise HTTPBadRequest(msg=f"Invalid input for ip. Reason: '{ips[0][:64]}' is not an IP address.") from None
        macs = query.getall("mac", [])
        if len(macs) > 1 or (macs and not _MAC.match(macs[0])):
            raise HTTPBadRequest(msg="mac must be one MAC address (aa:bb:cc:dd:ee:ff).")
        probe = None
        if query.get("probe", "true").lower() != "false":
            probe = http_probe(self.settings.api_host, self.settings.api_port, self.settings.secret)
        kind, scope = ("router", routers[0]) if routers else ("network", networks[0])
        result = await self.backend.read(explain, self.backend.registry, kind, scope, ip,
                                         macs[0] if macs else None, probe)
        return json_response({"explanation": result.to_api()})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{PREFIX}/jwks.json", self.jwks)
        app.router.add_get(f"{PREFIX}/explain", self.explain)
