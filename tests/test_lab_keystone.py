# `lab up --keystone`: the multi-host lab behind a real Keystone (the controller validates tokens, the hosts' agents
# and the DHCP server run as a service user) passes `lab check`, keeps its secrets off command lines and out of logs,
# and `lab down` leaves nothing, Keystone included.
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from conftest import need_tool
from test_lab import assert_nothing_left, curl, lab_requirements, provnet

from provnet.dataplane import netns
from provnet.lab import state as lab_state

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_lab_behind_keystone_passes_check_and_leaves_nothing(tmp_path: Path) -> None:
    lab_requirements("udhcpc")
    need_tool("socat")
    path = tmp_path / "lab"
    lab = path / "lab"
    snapshot = None
    pids: list[int] = []
    try:
        up = provnet(path, "lab", "up", "--hosts", "2", "--vms", "2", "--keystone", timeout=600)
        snapshot = lab_state.load(str(path))
        assert up.returncode == 0, up.stderr[-3000:]
        assert snapshot is not None and snapshot.keystone_port
        check = provnet(path, "lab", "check", timeout=300)
        assert check.returncode == 0 and "lab check: all ok" in check.stdout, check.stdout + check.stderr
        status = provnet(path, "lab", "status", timeout=60)  # the lab's own API calls: the admin's token
        assert status.returncode == 0 and "answering; router1 hosted by host" in status.stdout, status.stdout
        assert f"keystone: pid {snapshot.process('keystone').pid} running" in status.stdout

        conf = (lab / "controller" / "provnet.conf").read_text()
        assert "auth_strategy = keystone" in conf and "[keystone_authtoken]" in conf
        secrets = [line.split("=", 1)[1].strip() for line in conf.splitlines() if line.startswith("password")]
        secrets.append((lab / "keystone" / "admin-password").read_text().strip())
        assert len(secrets) == 2 and all(len(s) >= 16 for s in secrets)

        services = {s["name"]: s for s in json.loads((lab / "services.json").read_text())["services"]}
        pids = [s["pid"] for s in services.values() if s.get("pid")]
        clients = [f"{h.name}-{verb}" for h in snapshot.hosts for verb in ("agent", "metadata-agent", "l3-agent")]
        for name in [*clients, "dhcp-server"]:  # the agents and the DHCP server run as the service user
            argv, pid = services[name]["argv"], services[name]["pid"]
            assert argv[argv.index("--os-cloud") + 1] == "lab-service", argv
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"OS_CLIENT_CONFIG_FILE={lab / 'clouds.yaml'}".encode() in environ, name
        relays = {"keystone-relay", "controller-keystone-relay", "dhcp-keystone-relay",
                  *(f"{h.name}-keystone-relay" for h in snapshot.hosts)}
        assert relays <= {n for n, s in services.items() if s.get("state") == "running"}, services

        # no secret on any command line of the machine, nor in any log of the lab
        for proc_dir in Path("/proc").iterdir():
            if proc_dir.name.isdigit():
                try:
                    cmdline = (proc_dir / "cmdline").read_bytes()
                except OSError:
                    continue
                assert not any(s.encode() in cmdline for s in secrets), cmdline[:200]
        logs = "".join(p.read_text(errors="replace") for p in (lab / "logs").iterdir())
        assert not any(s in logs for s in secrets) and "gAAAAA" not in logs  # nor a Fernet token

        # the API really is behind Keystone: without a token, 401; every call the lab's services made got through
        code, _, status_code = curl(snapshot.controller, f"{snapshot.api_url}/v2.0/networks")
        assert (code, status_code) == (0, 401)
        api_log = (lab / "logs" / "controller-serve.log").read_text()
        unauthorised = [line for line in api_log.splitlines() if '" 401 ' in line or '" 403 ' in line]
        assert len(unauthorised) == 1 and '"GET /v2.0/networks" 401 ' in unauthorised[0], unauthorised[:5]
        for host in snapshot.hosts:  # agents' reports are for the service role only: the service user made them
            assert f'{host.mgmt_ip} "POST /provnet/v1/agents/report" 200' in api_log, host.name
        assert json.loads((lab / "state.json").read_text())["complete"] is True
    finally:
        down = provnet(path, "lab", "down")
        if snapshot is not None:
            for ns in snapshot.namespaces:
                netns.delete_namespace(ns)
    assert down.returncode == 0, down.stderr
    assert snapshot is not None
    assert_nothing_left(snapshot)  # Keystone's gunicorn master is one of the lab's processes
    assert not [p for p in pids if _running(p)]  # every service, the relays too
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", snapshot.keystone_port))  # nothing answers where Keystone was
    assert not (lab / "keystone").exists() and not (lab / "clouds.yaml").exists()
