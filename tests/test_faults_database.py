# A sick database stops nothing that can go on (issue 10, rows 2 and 3): `provnet serve` on a PostgreSQL of the
# test's own that is frozen (SIGSTOP) or stopped, with real udhcpc clients and real metadata requests.
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import need_root, need_tool
from nstools import in_ns, make_lan, sh, wait_udp_listen
from pg_private import PrivatePostgres
from test_dhcp_clients import MAC1, MAC2, seed_registry

pytestmark = pytest.mark.root
PROVNET = str(Path(sys.executable).with_name("provnet"))
SECRET = "fault-secret"


@pytest.fixture
def pg(tmp_path):
    need_root()
    server = PrivatePostgres(Path(f"/tmp/{tmp_path.name[:20]}-pg"))  # short: the unix socket path has a limit
    yield server
    server.close()


@pytest.fixture
def lan(tmp_path):
    need_root()
    need_tool("busybox", "ip", "ss", "curl")
    lan = make_lan(tmp_path / "lan")
    yield lan
    lan.teardown()


def curl(ns: str, *args: str, timeout: float = 30) -> tuple[int, str, float]:
    """(HTTP status, body, seconds) of one request made inside `ns`."""
    started = time.monotonic()
    done = sh(*in_ns(ns, "curl", "-s", "-m", str(timeout), "-w", "\n%{http_code}", *args), check=False,
              timeout=timeout + 10)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body, time.monotonic() - started


def agent_request(ns: str, socket_path: str, router_id: str, address: str) -> tuple[int, str, float]:
    """What a namespace proxy sends the agent for a VM at `address` (the agent's wire, over its unix socket):
    (status, the instance uuid the answer is for, or the body of a refusal, seconds)."""
    status, body, seconds = curl(ns, "--unix-socket", socket_path, "-H", f"X-Forwarded-For: {address}", "-H",
                                 f"X-Neutron-Router-ID: {router_id}",
                                 "http://169.254.169.254/openstack/latest/meta_data.json")
    return status, json.loads(body)["uuid"] if status == 200 else body, seconds


def start_serve(lan, tmp_path: Path, db: str, registry_timeout: float = 1.0) -> tuple[subprocess.Popen, Path]:
    state = tmp_path / "state"
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {state}\nmetadata_proxy_shared_secret = {SECRET}\n"
                    f"[database]\nconnection = {db}\n[dhcp]\ninterface = {lan.bridge}\nnetwork = phy_net\n"
                    f"[metadata]\nregistry_timeout = {registry_timeout}\n")
    log = tmp_path / "serve.log"
    proc = lan.spawn(lan.server_ns, PROVNET, "--config-file", str(conf), "serve", log=log)
    wait_udp_listen(lan.server_ns, 67, proc, timeout=60)
    deadline = time.monotonic() + 60
    while curl(lan.server_ns, "http://127.0.0.1:9696/healthz", timeout=2)[0] != 200:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
    return proc, state


def seed_router(db: str) -> tuple[str, dict[str, str]]:
    """The seed's router (seed_registry made router1 on the subnet), and an instance on each seed port: what the
    agent needs to answer."""
    from provnet.registry import open_registry

    reg = open_registry(db)
    try:
        [router] = reg.list_routers()
        instances = {}
        for port in reg.list_ports({"device_owner": ["compute:nova"]}):
            if not port.device_id:
                instance = reg.create_instance({"name": f"vm-{port.mac_address[-2:]}"})
                reg.update_port(port.id, {"device_id": instance.id})
            instances[port.fixed_ips[0].ip_address] = reg.get_port(port.id).device_id
        return router.id, instances
    finally:
        reg.close()


def test_a_frozen_database_stops_neither_dhcp_nor_cached_metadata_and_the_api_says_503(lan, pg, tmp_path):
    seed_registry(pg.url)[0].close()
    router_id, instances = seed_router(pg.url)
    proc, state = start_serve(lan, tmp_path, pg.url)
    sock = str(state / "metadata_proxy")
    vm1 = lan.add_client(MAC1)
    assert lan.udhcpc(vm1).returncode == 0  # the view is built, the lease journaled
    status, body, _ = agent_request(lan.server_ns, sock, router_id, "172.16.1.103")
    assert (status, body) == (200, instances["172.16.1.103"])  # now cached in the agent and the API

    pg.freeze()
    try:
        # DHCP answers known reservations from its view: a second VM and a renewal both get their leases
        vm2 = lan.add_client(MAC2)
        assert lan.udhcpc(vm2).returncode == 0 and lan.lease(vm2)["ip"] == "172.16.1.104"
        assert lan.udhcpc(vm1).returncode == 0
        # the cached VM keeps its metadata, every time
        answers = [agent_request(lan.server_ns, sock, router_id, "172.16.1.103")[:2] for _ in range(5)]
        assert answers == [(200, instances["172.16.1.103"])] * 5
        # what needs the database is a 503 within the registry timeout (1 s here), never a hang or a 500
        status, _, seconds = agent_request(lan.server_ns, sock, router_id, "172.16.1.104")
        assert status == 503
        status, body, seconds = curl(lan.server_ns, "http://127.0.0.1:9696/v2.0/networks")
        assert status == 503 and json.loads(body)["NeutronError"]["type"] == "ServiceUnavailable"
        assert curl(lan.server_ns, "http://127.0.0.1:9696/healthz")[0] == 200
    finally:
        pg.resume()
    # and everything comes back by itself
    deadline = time.monotonic() + 60
    while agent_request(lan.server_ns, sock, router_id, "172.16.1.104")[:2] != (200, instances["172.16.1.104"]):
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
    assert proc.poll() is None
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log


def test_a_stopped_database_keeps_cached_answers_and_logs_the_outage_once(lan, pg, tmp_path):
    seed_registry(pg.url)[0].close()
    router_id, instances = seed_router(pg.url)
    proc, state = start_serve(lan, tmp_path, pg.url)
    sock = str(state / "metadata_proxy")
    assert agent_request(lan.server_ns, sock, router_id, "172.16.1.103")[0] == 200
    pg.stop()
    try:
        statuses = [agent_request(lan.server_ns, sock, router_id, "172.16.1.103")[0] for _ in range(30)]
        assert statuses == [200] * 30  # stale-if-error: never a 500
        uncached = [agent_request(lan.server_ns, sock, router_id, "172.16.1.104")[0] for _ in range(10)]
        assert uncached == [503] * 10
    finally:
        pg.start()
    deadline = time.monotonic() + 60
    while agent_request(lan.server_ns, sock, router_id, "172.16.1.104")[0] != 200:
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
    log = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in log
    assert log.count("the registry is unavailable; answering 503") == 1  # one line per outage, not per request
    assert proc.poll() is None


def test_the_private_server_really_is_frozen(pg) -> None:
    """The fault is real: a client of the frozen server waits (and the thaw releases it)."""
    import psycopg

    conn = psycopg.connect(f"host={pg.socket_dir} user=provnet dbname={pg.database}", autocommit=True)
    try:
        pg.freeze()
        try:
            with socket.socket(socket.AF_UNIX) as probe:  # a new connection is not even answered
                probe.settimeout(1)
                probe.connect(str(pg.socket_dir / ".s.PGSQL.5432"))
                probe.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # SSLRequest
                with pytest.raises(TimeoutError):
                    probe.recv(1)
        finally:
            pg.resume()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        conn.close()
