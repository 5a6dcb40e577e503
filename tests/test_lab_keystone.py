# `lab up --keystone`: the whole lab behind a real Keystone (its services as a service user) passes `lab check`, keeps
# its secrets off command lines and out of logs, and `lab down` leaves nothing, Keystone included.
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import need_tool
from test_lab import assert_nothing_left, lab_requirements, provnet

from provnet.dataplane import netns
from provnet.lab import state as lab_state

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_lab_behind_keystone_passes_check_and_leaves_nothing(tmp_path: Path) -> None:
    lab_requirements("udhcpc")
    need_tool("socat")
    path = tmp_path / "lab"
    snapshot = None
    try:
        up = provnet(path, "lab", "up", "--vms", "2", "--keystone", timeout=600)
        snapshot = lab_state.load(str(path))
        assert up.returncode == 0, up.stderr[-3000:]
        check = provnet(path, "lab", "check", timeout=300)
        assert check.returncode == 0 and "lab check: all ok" in check.stdout, check.stdout + check.stderr
        lab = path / "lab"
        password = next(line.split("=", 1)[1].strip() for line in (lab / "provnet.conf").read_text().splitlines()
                        if line.startswith("password"))
        by_name = {p.name: p for p in snapshot.processes}
        assert {"keystone", "networking-api", "metadata-api", "metadata-agent", "dhcp-server"} <= set(by_name)
        for name in ("metadata-api", "metadata-agent", "dhcp-server"):
            argv = by_name[name].argv
            assert argv[argv.index("--os-cloud") + 1] == "lab-service", argv  # agents run as the service user
        for proc in snapshot.processes:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert password.encode() not in cmdline, proc.name
        logs = "".join(p.read_text(errors="replace") for p in (lab / "logs").iterdir())
        assert password not in logs and "gAAAAA" not in logs
        api_log = (lab / "logs" / "networking-api.log").read_text()
        assert '"GET /provnet/v1/revision' in api_log and " 401 " not in api_log and " 403 " not in api_log
        assert json.loads((lab / "state.json").read_text())["complete"] is True
    finally:
        down = provnet(path, "lab", "down")
        if snapshot is not None:
            for ns in snapshot.namespaces:
                netns.delete_namespace(ns)
    assert down.returncode == 0
    assert snapshot is not None
    assert_nothing_left(snapshot)
