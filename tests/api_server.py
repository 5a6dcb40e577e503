# Test helper: the networking API in a background thread over a real SqlRegistry, and a small JSON client.
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from provnet.api.app import writers_for
from provnet.api.thread import ApiThread
from provnet.registry import open_registry
from provnet.registry.base import Registry

SEED_NET = {"name": "phy_net", "router:external": True, "provider:network_type": "flat",
            "provider:physical_network": "physnet1"}
# The body the old `neutron subnet-create` sends for the seed's command (reference §1): note the string "False".
SEED_SUBNET = {"ip_version": 4, "cidr": "172.16.1.101/24", "gateway_ip": "172.16.1.2",
               "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}],
               "enable_dhcp": "False", "name": "phy_subnet_without_dhcp"}


class Client:
    """requests with the API's base URL; every answer is (status, decoded JSON or None)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = self.session.request(method, self.url + path, data=data, headers=headers or {}, timeout=30)
        self.last = response
        if not response.content:
            return response.status_code, None
        return response.status_code, response.json()

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.call("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.call("PUT", path, body, **kw)

    def delete(self, path: str) -> tuple[int, Any]:
        return self.call("DELETE", path)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, data = self.call(method, path, body)
        assert got == status, (method, path, got, data)
        return data

    def seed(self) -> tuple[dict, dict]:
        """The seed's phy_net and phy_subnet_without_dhcp, as the old neutron CLI would create them."""
        net = self.ok("POST", "/v2.0/networks", {"network": SEED_NET}, 201)["network"]
        subnet = self.ok("POST", "/v2.0/subnets", {"subnet": {**SEED_SUBNET, "network_id": net["id"]}},
                         201)["subnet"]
        return net, subnet

    def snapshot(self) -> dict[str, list]:
        """Everything the API holds, to compare before and after a request that must leave nothing."""
        out = {c: sorted(json.dumps(x, sort_keys=True) for x in self.ok("GET", f"/v2.0/{c}")[c])
               for c in ("networks", "subnets", "ports", "routers")}
        out["instances"] = sorted(json.dumps(x, sort_keys=True)
                                  for x in self.ok("GET", "/provnet/v1/instances")["instances"])
        return out


@contextmanager
def running_api(db_url: str, agent_down_time: float = 75.0) -> Iterator[tuple[Client, Registry]]:
    registry = open_registry(db_url, agent_down_time=agent_down_time, metadata_mode="router")  # exact port counts
    try:
        with ApiThread(registry, agent_down_time=agent_down_time, writers=writers_for(db_url)) as api:
            client = Client(api.url)
            try:
                yield client, registry
            finally:
                client.session.close()
    finally:
        registry.close()
