# The installed `provnet` script as a real subprocess: the seed's commands on a state path, and a bad one.
from __future__ import annotations

import json
import shlex

from cli_run import SEED_NET, SEED_SUBNET, run_process


def test_seed_commands_through_the_console_script(tmp_path):
    state = str(tmp_path / "state")
    net = run_process("--state-path", state, *shlex.split(SEED_NET))
    assert net.code == 0, net
    assert net.stdout.startswith("Created a new network:")
    subnet = run_process("--state-path", state, *shlex.split(SEED_SUBNET))
    assert subnet.code == 0, subnet
    assert (tmp_path / "state" / "provnet.sqlite").exists()

    shown = run_process("--state-path", state, "subnet-show", "phy_subnet_without_dhcp", "-f", "json")
    assert shown.code == 0, shown
    data = json.loads(shown.stdout)
    assert data["cidr"] == "172.16.1.0/24"
    assert data["gateway_ip"] == "172.16.1.2"
    assert data["allocation_pools"] == [{"start": "172.16.1.102", "end": "172.16.1.126"}]
    assert data["enable_dhcp"] is False
    network = json.loads(run_process("--state-path", state, "net-show", "phy_net", "-f", "json").stdout)
    assert network["router:external"] is True
    assert (network["provider:network_type"], network["provider:physical_network"]) == ("flat", "physnet1")
    assert network["subnets"] == [data["id"]]

    # refused: one line on stderr, exit 1, nothing written
    first = run_process("--state-path", state, "port-create", "phy_net", "--fixed-ip", "ip_address=172.16.1.103",
                        "-f", "value", "-c", "id")
    assert first.code == 0 and first.stderr == "", first
    taken = run_process("--state-path", state, "port-create", "phy_net", "--fixed-ip", "ip_address=172.16.1.103")
    assert taken.code == 1, taken
    assert taken.stderr.startswith("Error: IP address 172.16.1.103 already allocated in subnet")
    assert taken.stderr.count("\n") == 1 and "Traceback" not in taken.stderr
    ports = json.loads(run_process("--state-path", state, "port-list", "--device_owner", "", "-f", "json").stdout)
    # (the VM ports: the network's metadata port, [metadata] mode = auto and no router, has an owner)
    assert [p["id"] for p in ports] == [first.stdout.strip()]
    # a usage error: exit 2 with the usage line
    bad = run_process("--state-path", state, "port-create", "phy_net", "--fixed-ip", "172.16.1.105")
    assert bad.code == 2 and "Usage: provnet port-create" in bad.stderr
