# `provnet --url` against a running `provnet api` subprocess gives what the local store gives.
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from cli_run import SEED_NET, SEED_SUBNET, Cli, api_process, free_port

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def api_url(tmp_path) -> Iterator[str]:
    with api_process(tmp_path) as url:
        yield url


def normalised(obj):
    """Drop what differs between two stores by nature (generated ids, MACs, timestamps)."""
    if isinstance(obj, list):
        return [normalised(x) for x in obj]
    if isinstance(obj, dict):
        return {k: normalised(v) for k, v in obj.items()
                if k not in ("id", "network_id", "subnet_id", "subnets", "mac_address", "device_id", "port_id",
                             "created_at", "updated_at")}
    if isinstance(obj, str):
        return UUID.sub("<uuid>", obj)
    return obj


def scenario(cli: Cli, tmp_path) -> list:
    """The seed plus a port, a router interface, an instance, errors; returns every result to compare."""
    out = []
    user_data = tmp_path / "user-data"
    user_data.write_bytes(b"#cloud-config\nruncmd: [true]\n")
    cli.ok(SEED_NET)
    cli.ok(SEED_SUBNET)
    out.append(cli.json("net-show phy_net"))
    out.append(cli.json("subnet-show phy_subnet_without_dhcp"))
    out.append(cli.json("port-create phy_net --name p1 --fixed-ip ip_address=172.16.1.103 --device-id d1"))
    out.append(cli.json("port-list --fixed_ips ip_address=172.16.1.103"))
    cli.ok("router-create r1")
    cli.ok("router-interface-add r1 phy_subnet_without_dhcp")
    out.append(cli.json("router-port-list r1 -D"))
    out.append(cli.json("subnet-update phy_subnet_without_dhcp --host-route destination=0.0.0.0/0,nexthop=172.16.1.1"))
    out.append(cli.fails("port-create phy_net --fixed-ip ip_address=172.16.1.103"))
    out.append(cli.fails("net-show nonet"))
    out.append(cli.fails("subnet-create phy_net 10.0.0.0/33"))
    out.append(cli.json("net-list -D"))
    out.append(cli.json(f"instance-create vm1 --user-data {user_data} --property role=web --port p1 "
                        "--id 6c0bd7a0-b3ea-4f77-a67b-1b4fd0a3f1b2"))
    out.append(cli.json("port-show p1"))
    out.append(cli.ok("instance-show vm1 -c user_data -c metadata").stdout)
    out.append(cli.fails(f"instance-create vm2 --user-data {user_data} --port nope"))
    return out


def test_remote_gives_the_same_results_as_local(api_url: str, tmp_path):
    remote = scenario(Cli("--url", api_url), tmp_path)
    local = scenario(Cli("--state-path", str(tmp_path / "local")), tmp_path)
    assert normalised(remote) == normalised(local)
    assert remote[0]["subnets"] == [remote[1]["id"]]
    assert "already allocated" in remote[6]
    assert remote[-3]["device_id"] == "6c0bd7a0-b3ea-4f77-a67b-1b4fd0a3f1b2"
    assert "#cloud-config" in remote[-2]


def test_url_from_the_environment(api_url: str):
    cli = Cli()
    cli.runner.env = {"PROVNET_URL": api_url}
    cli.ok("net-create envnet")
    assert [n["name"] for n in Cli("--url", api_url).json("net-list")] == ["envnet"]


def test_unreachable_api_is_one_clear_line(tmp_path):
    err = Cli("--url", f"http://127.0.0.1:{free_port()}").fails("net-list")
    assert "cannot reach" in err and err.count("\n") == 1
