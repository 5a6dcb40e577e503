# Issue 10 row 1 with real parts: the real `provnet metadata-proxy` process in a router namespace at the usual
# 1,024 open files, a real agent and API behind it, and one VM namespace holding, trickling or flooding as many
# connections as it can, while its neighbours' requests are all answered. (Latency: benchmarks/metadata_fairshare.py.)
from __future__ import annotations

import resource
import shutil
import subprocess
import tempfile

import pytest
from conftest import need_root, need_tool
from metadata_abuse import run_victim, start_abuser, stop
from metadata_chain import PROVNET_BIN, Chain, build_seed, build_topology, wait_port

from provnet.registry import open_registry

pytestmark = pytest.mark.root
VMS = {"vm1": "172.16.1.103", "vm2": "172.16.1.104", "abuser": "172.16.1.105", "flooder": "172.16.1.106"}


def start_proxy(topo, socket_path: str, router_id: str, state: str, log_path: str, nofile: int) -> subprocess.Popen:
    """The proxy as operators run it, with its open files limit at `nofile` (soft and hard, so it cannot raise)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", topo.router_ns, PROVNET_BIN, "--state-path", state, "metadata-proxy",
             "--router-id", router_id, "--port", "9697", "--socket", socket_path],
            stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
    topo.procs.append(proc)
    return proc


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    need_root()
    need_tool("ip", "iptables")
    tmp = tmp_path_factory.mktemp("fairshare")
    registry = open_registry(f"sqlite:///{tmp}/provnet.sqlite")
    seed = build_seed(registry, VMS)
    chain = Chain(registry, tmp)
    state = tempfile.mkdtemp(prefix="pn-")
    topo = None
    try:
        # each VM on its port's MAC, as Nova plugs it: the agent checks the MAC the proxy reads ([metadata] verify_mac)
        topo = build_topology(VMS, macs={vm: registry.get_port(port).mac_address for vm, port in seed.ports.items()})
        log_path = str(tmp / "proxy.log")
        start_proxy(topo, chain.socket_path, seed.router_id, state, log_path, 1024)
        wait_port(topo.router_ns, "127.0.0.1", 9697)
        yield {"seed": seed, "topo": topo, "log": log_path}
    finally:
        if topo is not None:
            topo.teardown()
        chain.close()
        registry.close()
        shutil.rmtree(state, ignore_errors=True)


def victims_answered(world, seconds: float = 3.0) -> None:
    for vm in ("vm1", "vm2"):
        for keepalive in (False, True):
            got = run_victim(world["topo"], vm, seconds, world["seed"].instances[vm], keepalive, rate=50)
            assert got["error_count"] == 0 and got["ok"] > 0, (vm, keepalive, got["errors"])


def test_one_vm_holding_thousands_of_connections_starves_nobody(world):
    abuser, held = start_abuser(world["topo"], "abuser", "hold", 2000, 60)
    try:
        assert held["open"] == 64 and held["refused"] + held["failed"] == 2000 - 64  # its share, refused at once
        victims_answered(world)
    finally:
        stop(abuser)
    with open(world["log"]) as fh:
        text = fh.read()
    assert "Traceback" not in text
    refusals = [line for line in text.splitlines() if "connection refused" in line]
    assert 1 <= len(refusals) <= 100  # 1,936 refused connections, at most a line a second


def test_a_vm_reconnecting_in_a_loop_starves_nobody(world):
    abuser, _ = start_abuser(world["topo"], "flooder", "flood", 0, 60)  # (its own address: its own rate bucket)
    try:
        victims_answered(world)
    finally:
        stop(abuser)


def test_slow_loris_and_a_vm_that_never_reads_starve_nobody(world):
    loris, held = start_abuser(world["topo"], "abuser", "loris", 200, 60)
    try:
        assert held["open"] == 64
        victims_answered(world)
    finally:
        stop(loris)
    hog, held = start_abuser(world["topo"], "abuser", "noread", 64, 60)
    try:
        assert held["open"] == 64
        victims_answered(world)
    finally:
        stop(hog)
