# The metadata port through the CLI on a local store and through `--url` (a running `provnet api`): the same.
from __future__ import annotations

from cli_run import SEED_NET, SEED_SUBNET, Cli, api_process


def scenario(cli: Cli) -> list:
    cli.ok(SEED_NET)
    cli.ok(SEED_SUBNET)
    [listed] = cli.json("port-list --device_owner network:distributed")
    port = cli.json(f"port-show {listed['id']}")
    net_id = cli.ok("net-show phy_net -f value -c id").stdout.strip()
    assert port["device_id"] == f"provnet-metadata-{net_id}" and port["name"] == "metadata"
    assert [f["ip_address"] for f in port["fixed_ips"]] == ["172.16.1.102"]
    assert port["port_security_enabled"] is False and port["binding:host_id"] == ""
    refused = cli.fails(f"port-delete {port['id']}")
    assert "metadata port of network" in refused and "network mode" in refused
    taken = cli.fails("port-create phy_net --fixed-ip ip_address=172.16.1.102")
    assert "already allocated" in taken
    reserved = cli.fails(f"port-create phy_net --device-id provnet-metadata-{net_id}")
    assert "reserved" in reserved
    cli.ok("router-create router1")
    cli.ok("router-interface-add router1 phy_subnet_without_dhcp")
    kept = cli.json("port-list --device_owner network:distributed")
    assert [p["id"] for p in kept] == [port["id"]]
    cli.ok(f"port-delete {port['id']}")  # router mode now: an operator may reclaim it
    assert cli.json("port-list --device_owner network:distributed") == []
    cli.ok("router-interface-delete router1 phy_subnet_without_dhcp")
    [again] = cli.json("port-list --device_owner network:distributed")
    cli.ok("subnet-delete phy_subnet_without_dhcp")
    assert cli.json("port-list --device_owner network:distributed") == []
    return [refused.split(":", 1)[-1].strip().replace(net_id, "NET").replace(port["id"], "PORT"),
            again["fixed_ips"][0]["ip_address"]]


def test_local_store_and_url_behave_the_same(tmp_path):
    local = scenario(Cli("--state-path", str(tmp_path / "local")))
    with api_process(tmp_path) as url:
        remote = scenario(Cli("--url", url))
    assert local[1] == remote[1] == "172.16.1.102"
    assert local[0].endswith(remote[0][-80:])


def test_router_mode_from_the_configuration_file_makes_no_port(tmp_path):
    conf = tmp_path / "provnet.conf"
    conf.write_text("[metadata]\nmode = router\n")
    cli = Cli("--config-file", str(conf), "--state-path", str(tmp_path / "s"))
    cli.ok(SEED_NET)
    cli.ok(SEED_SUBNET)
    assert cli.json("port-list --device_owner network:distributed") == []


def test_a_bad_mode_in_the_configuration_file_is_one_clear_line(tmp_path):
    conf = tmp_path / "provnet.conf"
    conf.write_text("[metadata]\nmode = isolated\n")
    err = Cli("--config-file", str(conf), "--state-path", str(tmp_path / "s")).fails("net-list")
    assert f"[metadata] mode in {conf}:2 must be router, network or auto, got 'isolated'" in err
    assert len(err.strip().splitlines()) == 1
