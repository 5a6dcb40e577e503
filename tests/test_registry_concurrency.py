# Two processes allocating on one subnet at once: never a duplicate address or MAC; clean 409s when the pool runs out.
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from registry_support import open_registry

WORKER = Path(__file__).with_name("registry_worker.py")


def run_two_workers(db_url: str, network_id: str, count: int, tmp_path: Path) -> list[dict]:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(WORKER), db_url, network_id, str(count), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        go.touch()
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    return [json.loads(out) for out, _ in outputs]


def make_network(db_url: str, cidr: str, pool: tuple[str, str]) -> str:
    reg = open_registry(db_url, metadata_mode="router")
    try:
        net = reg.create_network({"name": "busy"})
        reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": cidr,
                           "allocation_pools": [{"start": pool[0], "end": pool[1]}]})
        return net.id
    finally:
        reg.close()


def stored_allocations(db_url: str, network_id: str) -> list[tuple[str, str]]:
    reg = open_registry(db_url, metadata_mode="router")
    try:
        return [(p.fixed_ips[0].ip_address, p.mac_address) for p in reg.list_ports({"network_id": [network_id]})]
    finally:
        reg.close()


@pytest.mark.slow
def test_two_processes_500_ports_each(db_url: str, tmp_path: Path) -> None:
    net_id = make_network(db_url, "10.20.0.0/22", ("10.20.0.2", "10.20.3.254"))
    results = run_two_workers(db_url, net_id, 500, tmp_path)
    created = [tuple(c) for r in results for c in r["created"]]
    assert [r["errors"] for r in results] == [{}, {}]
    assert len(created) == 1000
    assert len({ip for ip, _ in created}) == 1000, "duplicate address handed out"
    assert len({mac for _, mac in created}) == 1000, "duplicate MAC handed out"
    assert sorted(stored_allocations(db_url, net_id)) == sorted(created)
    print(f"lost races retried: {[r['retries'] for r in results]}")


def test_two_processes_exhaust_a_small_pool(db_url: str, tmp_path: Path) -> None:
    net_id = make_network(db_url, "10.30.0.0/24", ("10.30.0.10", "10.30.0.49"))  # 40 addresses
    results = run_two_workers(db_url, net_id, 40, tmp_path)
    created = [tuple(c) for r in results for c in r["created"]]
    assert len(created) == 40 and len({ip for ip, _ in created}) == 40
    failures = {}
    for r in results:
        for key, n in r["errors"].items():
            failures[key] = failures.get(key, 0) + n
    assert failures == {"409 IpAddressGenerationFailure": 40}
    assert sorted(stored_allocations(db_url, net_id)) == sorted(created)
