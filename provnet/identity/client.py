# How a client process reaches a remote registry: its Keystone session (if any), the CA bundle, companion mode.
from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Protocol


class Cloud(Protocol):
    """A cloud's Keystone session as clients use it (provnet.identity.clouds.CloudAuth, whose module brings
    openstacksdk's config reader: imported only where one is made)."""

    name: str

    def token(self) -> str: ...

    def invalidate(self) -> None: ...

    def describe(self) -> str: ...

    def endpoint(self, service_type: str = "network") -> str: ...


@dataclass
class ClientIdentity:
    """`cloud` signs requests with a Keystone token (None: no credentials, noauth); `ssl_context` verifies https
    servers (None: the system's CAs); `companion`: no provnet API was named, so the registry is the cloud's own
    Neutron from its catalog, and `watch_network` narrows what that registry follows for changes."""

    cloud: Cloud | None
    ssl_context: ssl.SSLContext | None = None
    companion: bool = False
    watch_network: str | None = None

    def endpoint(self) -> str:
        assert self.cloud is not None
        return self.cloud.endpoint("network")

    def describe(self) -> str:
        if self.cloud is None:
            return "no cloud"
        return f"the Neutron of cloud {self.cloud.name!r}" if self.companion else self.cloud.describe()
