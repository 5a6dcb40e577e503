# Binding end to end: `provnet api` and `provnet agent` as processes; reasons seen via the API, our CLI and openstack.
"""A missing bridge mapping and a dead agent each leave the port binding_failed with its reason, visible in
the API body, `provnet port-show` and the real `openstack port show`; fixing the mapping (an agent reporting
new bridge_mappings) or the heartbeat (the agent reporting again) binds the port with no call on the port.
The server runs with agent_down_time = 2 s so a heartbeat dies quickly (no 75 s sleeps).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cli_run import PROVNET, api_process, free_port, stop
from conftest import need

BIN = Path(sys.executable).parent
OPENSTACK = BIN / "openstack"
HOST = "compute1"


def http(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def write_conf(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def api(tmp_path) -> Iterator[str]:
    """`provnet api` on a free loopback port with agent_down_time 2 s; its URL."""
    conf = write_conf(tmp_path / "server.conf", "[DEFAULT]\nagent_down_time = 2\n")
    with api_process(tmp_path, "--config-file", conf) as url:
        yield url


def agent_conf(tmp_path: Path, mappings: str, interval: float = 0.5) -> str:
    return write_conf(tmp_path / f"agent-{abs(hash(mappings))}.conf",
                      f"[ovs]\nbridge_mappings = {mappings}\n[agent]\nreport_interval = {interval}\n")


def report_once(url: str, conf: str) -> None:
    proc = subprocess.run([PROVNET, "--url", url, "--config-file", conf, "agent", "--host", HOST, "--once"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def seed_port(url: str) -> dict:
    code, net = http(url + "/v2.0/networks", "POST", {"network": {
        "name": "phy_net", "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": "physnet1"}})
    assert code == 201, net
    code, sub = http(url + "/v2.0/subnets", "POST", {"subnet": {
        "network_id": net["network"]["id"], "ip_version": 4, "cidr": "172.16.1.0/24", "gateway_ip": "172.16.1.2",
        "enable_dhcp": False}})
    assert code == 201, sub
    code, port = http(url + "/v2.0/ports", "POST", {"port": {
        "network_id": net["network"]["id"], "name": "vm1-port", "binding:host_id": HOST,
        "device_owner": "compute:nova", "device_id": "vm-1"}})
    assert code == 201, port
    return port["port"]


def get_port(url: str, port_id: str) -> dict:
    return http(f"{url}/v2.0/ports/{port_id}")[1]["port"]


def wait_bound(url: str, port_id: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        port = get_port(url, port_id)
        if port["binding:vif_type"] == "ovs" or time.monotonic() > deadline:
            return port
        time.sleep(0.2)


def our_cli(url: str, port_id: str) -> dict:
    proc = subprocess.run([PROVNET, "--url", url, "port-show", port_id, "-f", "json"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def openstack_show(url: str, port_id: str, home: Path) -> dict:
    need(OPENSTACK.exists(), "needs python-openstackclient in the venv (pip install -e '.[test]')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(HOME=str(home), OS_AUTH_TYPE="none", OS_ENDPOINT=url)
    proc = subprocess.run([str(OPENSTACK), "port", "show", port_id, "-f", "json"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_missing_bridge_mapping_fails_then_binds_when_agent_reports_it(api, tmp_path):
    report_once(api, agent_conf(tmp_path, ""))  # the seed's trap: no mapping for physnet1
    port = seed_port(api)
    reason = (f"physical network physnet1 is not in the agent's bridge_mappings {{}}: "
              f"set [ovs] bridge_mappings = physnet1:<bridge> on host {HOST}")
    assert (port["binding:vif_type"], port["status"]) == ("binding_failed", "DOWN")
    assert port["binding:vif_details"] == {"failure_reason": reason}
    assert port["binding:failure_reason"] == reason
    shown = our_cli(api, port["id"])
    assert (shown["binding:vif_type"], shown["binding:failure_reason"]) == ("binding_failed", reason)
    osc = openstack_show(api, port["id"], tmp_path)
    assert osc["binding_vif_type"] == "binding_failed" and osc["status"] == "DOWN"
    assert osc["binding_vif_details"] == {"failure_reason": reason}  # OSC drops unknown fields; details it shows

    # the fix: the agent runs with the mapping; no call touches the port
    log = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen([PROVNET, "--url", api, "--config-file", agent_conf(tmp_path, "physnet1:br-phy"),
                              "agent", "--host", HOST], stdout=log, stderr=subprocess.STDOUT)
    try:
        bound = wait_bound(api, port["id"])
        # bound; DOWN until the agent sees its device on the bridge (there is none here)
        assert (bound["binding:vif_type"], bound["status"], bound["binding:failure_reason"]) == ("ovs", "DOWN", None)
        assert bound["binding:vif_details"]["bound_drivers"] == {"0": "openvswitch"}
        osc = openstack_show(api, port["id"], tmp_path)
        assert (osc["binding_vif_type"], osc["status"]) == ("ovs", "DOWN")
        assert our_cli(api, port["id"])["binding:vif_type"] == "ovs"
    finally:
        code = stop(agent)
        log.close()
    assert code == 0, (tmp_path / "agent.log").read_text()  # clean exit on SIGTERM
    assert "stopped" in (tmp_path / "agent.log").read_text()


def report_in_the_past(tmp_path: Path, seconds: float) -> None:
    """The agent's last heartbeat, `seconds` ago: reported into the server's store by a registry whose clock is
    that far behind (the clock is injected; nothing sleeps until the agent dies)."""
    from provnet.model.resources import OVS_AGENT_TYPE
    from provnet.registry.base import utc_now
    from provnet.registry.sql import SqlRegistry

    past = SqlRegistry(f"sqlite:///{tmp_path}/server/provnet.sqlite",
                       clock=lambda: utc_now() - timedelta(seconds=seconds))
    try:
        past.report_agent_state(HOST, OVS_AGENT_TYPE, "provnet-agent",
                                {"bridge_mappings": {"physnet1": "br-phy"}})
    finally:
        past.close()


def test_dead_agent_fails_then_binds_when_it_reports_again(api, tmp_path):
    conf = agent_conf(tmp_path, "physnet1:br-phy")
    report_once(api, conf)
    report_in_the_past(tmp_path, 5)  # past the server's agent_down_time of 2 s
    agents = http(api + "/v2.0/agents")[1]["agents"]
    assert [(a["host"], a["alive"]) for a in agents] == [(HOST, False)]
    port = seed_port(api)
    assert (port["binding:vif_type"], port["status"]) == ("binding_failed", "DOWN")
    reason = port["binding:failure_reason"]
    assert reason.startswith(f"agent on host {HOST} is dead: last heartbeat ")
    assert reason.endswith(" s ago, agent_down_time 2 s, report_interval 30 s")
    assert 5 <= int(reason.split("last heartbeat ")[1].split(" s ago")[0]) <= 65
    assert our_cli(api, port["id"])["binding:failure_reason"] == reason
    osc = openstack_show(api, port["id"], tmp_path)
    assert (osc["binding_vif_type"], osc["binding_vif_details"]) == ("binding_failed", {"failure_reason": reason})

    report_once(api, conf)  # the heartbeat is back: the port binds by itself
    bound = get_port(api, port["id"])
    assert (bound["binding:vif_type"], bound["status"], bound["binding:failure_reason"]) == ("ovs", "DOWN", None)
    assert openstack_show(api, port["id"], tmp_path)["binding_vif_type"] == "ovs"


def test_no_agent_then_update_rebinds(api, tmp_path):
    port = seed_port(api)
    assert port["binding:failure_reason"] == f"no agent on host {HOST}"
    report_once(api, agent_conf(tmp_path, "physnet1:br-phy", interval=30))
    # the agent's first report binds the failed port; a later update keeps it bound
    assert get_port(api, port["id"])["binding:vif_type"] == "ovs"
    code, updated = http(f"{api}/v2.0/ports/{port['id']}", "PUT", {"port": {"name": "renamed"}})
    assert code == 200 and updated["port"]["binding:vif_type"] == "ovs"


def test_agent_keeps_running_when_registry_is_down_and_stops_on_sigterm(tmp_path):
    """The API answers 503 to every report (its database is gone): the agent retries every interval, logs the
    outage once, and stops cleanly on SIGTERM."""
    import http.server
    import threading

    reports: list[str] = []

    class Down(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            reports.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"NeutronError": {"type": "ServiceUnavailable", "message": "database gone", "detail": ""}}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Down)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    log = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen([PROVNET, "--url", url, "--config-file", agent_conf(tmp_path, "physnet1:br-phy", 0.2),
                              "agent", "--host", HOST], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while len(reports) < 4:  # it keeps trying: an event, not a delay
            assert agent.poll() is None and time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
            time.sleep(0.05)
    finally:
        code = stop(agent)
        log.close()
        server.shutdown()
    text = (tmp_path / "agent.log").read_text()
    assert code == 0, text
    assert text.count("state report failed") == 1 and "database gone" in text  # logged once, retried quietly
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    proc = subprocess.run([PROVNET, "--url", url, "agent", "--host", HOST, "--once"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "state report failed" in proc.stderr
