# Bulk creates draw distinct MACs inside their one transaction, report the real cause when MACs clash, and run
# off the API's event loop (on SQLite too): a bulk of 20,000 ports with random MACs succeeds, /healthz answers.
from __future__ import annotations

import threading

import requests

from provnet.api.thread import ApiThread
from provnet.model import ipam
from provnet.model.errors import Conflict, MacAddressGenerationFailure
from provnet.registry import open_registry


def test_a_bulk_of_20000_ports_with_random_macs_succeeds_through_the_api(db_url: str) -> None:
    registry = open_registry(db_url, metadata_mode="router")
    try:
        net = registry.create_network({"name": "big"})
        registry.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.0.0.0/16"})
        with ApiThread(registry) as api:
            answered: list[int] = []
            done = threading.Event()

            def probe() -> None:  # /healthz while the bulk runs (counted, not timed)
                with requests.Session() as session:
                    while not done.is_set():
                        answered.append(session.get(f"{api.url}/healthz", timeout=30).status_code)

            prober = threading.Thread(target=probe)
            prober.start()
            try:
                response = requests.post(f"{api.url}/v2.0/ports", timeout=600,
                                         json={"ports": [{"network_id": net.id} for _ in range(20_000)]})
            finally:
                done.set()
                prober.join()
        assert response.status_code == 201, response.text[:300]
        ports = response.json()["ports"]
        assert len({p["mac_address"] for p in ports}) == 20_000
        assert len({p["fixed_ips"][0]["ip_address"] for p in ports}) == 20_000
        assert len(registry.list_ports()) == 20_000
        assert answered.count(200) >= 3, answered  # the loop kept answering during the bulk
    finally:
        registry.close()


def test_clashing_random_macs_are_reported_as_macs_not_as_ip_exhaustion(db_url: str, monkeypatch) -> None:
    registry = open_registry(db_url, metadata_mode="router")
    try:
        net = registry.create_network({"name": "n"})
        registry.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.0.0.0/24"})
        first = registry.create_port({"network_id": net.id})
        monkeypatch.setattr(ipam, "random_mac", lambda rng=None: first.mac_address)  # every draw clashes
        before = registry.revision()
        try:
            registry.create_port({"network_id": net.id})
        except Conflict as exc:
            assert "MAC address" in exc.message and "IP addresses" not in exc.message, exc.message
        else:
            raise AssertionError("a create whose every MAC clashes succeeded")
        try:
            registry.create_many("port", [{"network_id": net.id}, {"network_id": net.id}])
        except MacAddressGenerationFailure as exc:
            assert exc.status == 503 and net.id in exc.message
        else:
            raise AssertionError("a bulk whose every MAC clashes succeeded")
        assert registry.revision() == before and len(registry.list_ports()) == 1
    finally:
        registry.close()
