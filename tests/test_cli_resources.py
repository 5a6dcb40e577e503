# The neutron-style verbs end to end on a real store (SQLite and PostgreSQL): the seed's commands, names, errors.
from __future__ import annotations

import base64

import pytest
from cli_run import SEED_NET, SEED_SUBNET, Cli

from provnet.registry import open_registry


@pytest.fixture
def cli(db_url: str) -> Cli:
    return Cli("--db", db_url)


@pytest.fixture
def seeded(cli: Cli) -> tuple[dict, dict]:
    cli.ok(SEED_NET)
    cli.ok(SEED_SUBNET)
    return cli.json("net-show phy_net"), cli.json("subnet-show phy_subnet_without_dhcp")


def test_seed_commands_give_neutrons_network_and_subnet(cli: Cli):
    created = cli.ok(SEED_NET)
    assert created.stdout.startswith("Created a new network:\n+")
    assert "| router:external           | True" in created.stdout
    net = cli.json("net-show phy_net")
    assert net["name"] == "phy_net"
    assert net["router:external"] is True
    assert net["provider:network_type"] == "flat"
    assert net["provider:physical_network"] == "physnet1"
    assert net["provider:segmentation_id"] is None
    assert net["mtu"] == 1500

    cli.ok(SEED_SUBNET)
    subnet = cli.json("subnet-show phy_subnet_without_dhcp")
    assert subnet["network_id"] == net["id"]
    assert subnet["cidr"] == "172.16.1.0/24"
    assert subnet["gateway_ip"] == "172.16.1.2"
    assert subnet["allocation_pools"] == [{"start": "172.16.1.102", "end": "172.16.1.126"}]
    assert subnet["enable_dhcp"] is False
    assert subnet["ip_version"] == 4
    # the network now lists it, by id and CIDR in the table, by id in JSON
    assert f"| {subnet['id']} 172.16.1.0/24 |" in cli.ok("net-list").stdout
    assert cli.json("net-list") == [{"id": net["id"], "name": "phy_net", "subnets": [subnet["id"]]}]
    # names and ids name the same thing
    assert cli.json(f"net-show {net['id']}") == cli.json("net-show phy_net")
    assert cli.ok(f"subnet-show {subnet['id']} -f value -c cidr -c gateway_ip").stdout == \
        "172.16.1.0/24\n172.16.1.2\n"


def test_extras_without_double_dash_and_flags(cli: Cli):
    vlan = cli.json("net-create --provider:network_type vlan --provider:physical_network physnet2 "
                    "--provider:segmentation_id 100 --shared vlan100")
    assert (vlan["provider:network_type"], vlan["provider:segmentation_id"], vlan["shared"]) == ("vlan", 100, True)
    # the same through pass-through strings, as the neutron CLI sent them
    other = cli.json("net-create vlan101 -- --provider:network_type vlan --provider:physical_network physnet2 "
                     "--provider:segmentation_id 101 --router:external")
    assert (other["provider:segmentation_id"], other["router:external"]) == (101, True)
    taken = cli.fails("net-create again --provider:network_type vlan --provider:physical_network physnet2 "
                      "--provider:segmentation_id 100")
    assert "VLAN 100" in taken and "in use" in taken and "(409 VlanIdInUse)" in taken


def test_subnet_update_routes_dns_and_dhcp(cli: Cli, seeded):
    _, subnet = seeded
    updated = cli.json("subnet-update phy_subnet_without_dhcp "
                       "--host-route destination=169.254.169.254/32,nexthop=172.16.1.2 "
                       "--host-route destination=0.0.0.0/0,nexthop=172.16.1.1 "
                       "--dns-nameserver 172.16.1.1 --enable-dhcp")
    assert updated["id"] == subnet["id"]
    assert updated["host_routes"] == [{"destination": "169.254.169.254/32", "nexthop": "172.16.1.2"},
                                      {"destination": "0.0.0.0/0", "nexthop": "172.16.1.1"}]
    assert updated["dns_nameservers"] == ["172.16.1.1"]
    assert updated["enable_dhcp"] is True
    cleared = cli.json("subnet-update phy_subnet_without_dhcp --no-host-routes --disable-dhcp")
    assert cleared["host_routes"] == [] and cleared["enable_dhcp"] is False
    assert cleared["dns_nameservers"] == ["172.16.1.1"]
    assert "Must specify new values to update subnet" in cli.fails("subnet-update phy_subnet_without_dhcp", 2)
    # the neutron CLI's list syntax for list attributes
    listed = cli.json("subnet-update phy_subnet_without_dhcp -- --dns-nameservers list=true 8.8.8.8 1.1.1.1 "
                      "--host-routes type=dict list=true destination=10.0.0.0/8,nexthop=172.16.1.1")
    assert listed["dns_nameservers"] == ["8.8.8.8", "1.1.1.1"]
    assert listed["host_routes"] == [{"destination": "10.0.0.0/8", "nexthop": "172.16.1.1"}]


def test_port_create_with_the_neutron_forms(cli: Cli, seeded):
    net, subnet = seeded
    instance_id = "6c0bd7a0-b3ea-4f77-a67b-1b4fd0a3f1b2"
    port = cli.json(f"port-create phy_net --fixed-ip subnet_id=phy_subnet_without_dhcp,ip_address=172.16.1.103 "
                    f"--device-id {instance_id} --device-owner compute:nova --mac-address fa:16:3e:00:00:03 "
                    f"--name vm1-port --binding:host_id compute1")
    assert port["network_id"] == net["id"]
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "172.16.1.103"}]
    assert (port["device_id"], port["device_owner"]) == (instance_id, "compute:nova")
    assert port["mac_address"] == "fa:16:3e:00:00:03"
    assert port["binding:host_id"] == "compute1"
    auto = cli.json("port-create phy_net")
    assert auto["fixed_ips"][0]["subnet_id"] == subnet["id"]
    # found by the filters the metadata agent uses, in the neutron CLI's filter form
    found = cli.json("port-list --fixed_ips ip_address=172.16.1.103")
    assert [p["id"] for p in found] == [port["id"]]
    assert cli.json(f"port-list --network_id phy_net --device_id {instance_id} -c id") == [{"id": port["id"]}]
    both = cli.json("port-list --id list=true {} {} -c id".format(port["id"], auto["id"]))
    assert sorted(p["id"] for p in both) == sorted([port["id"], auto["id"]])
    assert cli.json("port-list --name list=true vm1-port nothing -c name") == [{"name": "vm1-port"}]
    assert cli.ok("port-list --name vm1-port -f value -c name -c mac_address").stdout == \
        "vm1-port fa:16:3e:00:00:03\n"
    updated = cli.json("port-update vm1-port --name renamed --fixed-ip ip_address=172.16.1.200")
    assert updated["name"] == "renamed"
    assert updated["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "172.16.1.200"}]
    assert cli.ok("port-delete renamed").stdout == "Deleted port: renamed\n"
    # and the network's metadata port ([metadata] mode = auto, no router: network mode)
    assert cli.json("port-list --device_owner list=true compute:nova '' -c id") == [{"id": auto["id"]}]


def test_router_interface_by_subnet_and_by_port(cli: Cli, seeded):
    _, subnet = seeded
    router = cli.json("router-create metadata-router")
    added = cli.ok("router-interface-add metadata-router phy_subnet_without_dhcp")
    assert added.stdout.startswith("Added interface ") and added.stdout.endswith(" to router metadata-router.\n")
    ports = cli.json("router-port-list metadata-router -D")
    assert len(ports) == 1
    assert ports[0]["device_owner"] == "network:router_interface"
    assert ports[0]["device_id"] == router["id"]
    assert ports[0]["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "172.16.1.2"}]
    assert "(409 " in cli.fails("router-delete metadata-router")
    cli.ok("router-interface-delete metadata-router subnet=phy_subnet_without_dhcp")
    assert cli.json("router-port-list metadata-router") == []
    # by port: an existing port becomes the interface
    cli.ok("port-create phy_net --name rport --fixed-ip ip_address=172.16.1.2")
    info = cli.json("router-interface-add metadata-router port=rport")
    assert info["port_id"] == cli.json("port-show rport")["id"]
    assert info["subnet_id"] == subnet["id"]
    cli.ok("router-interface-delete metadata-router port=rport")
    cli.ok("router-update metadata-router --name r2 --admin-state-down")
    assert cli.json("router-show r2")["admin_state_up"] is False
    assert cli.ok("router-delete r2").stdout == "Deleted router: r2\n"


def test_instance_verbs(cli: Cli, seeded, tmp_path):
    user_data = tmp_path / "cloud-config.yaml"
    user_data.write_text("#cloud-config\nhostname: vm1\n")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDTest user@host\n")
    cli.ok("port-create phy_net --name vm1-port --fixed-ip ip_address=172.16.1.103")
    created = cli.json(f"instance-create vm1 --user-data {user_data} --key-name mykey --key-file {key} "
                       f"--property role=web --property tier=a=b --availability-zone az1 --port vm1-port")
    assert base64.b64decode(created["user_data"]) == user_data.read_bytes()
    assert created["key_pairs"] == [{"name": "mykey", "type": "ssh",
                                     "data": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDTest user@host"}]
    assert created["metadata"] == {"role": "web", "tier": "a=b"}
    assert created["availability_zone"] == "az1"
    port = cli.json("port-show vm1-port")
    assert (port["device_id"], port["device_owner"]) == (created["id"], "compute:az1")
    shown = cli.ok("instance-show vm1").stdout
    assert "| user_data         | #cloud-config" in shown  # the text, not base64, in a table
    updated = cli.json("instance-update vm1 --property role=db --delete-property tier --hostname web-1")
    assert updated["metadata"] == {"role": "db"}
    assert updated["hostname"] == "web-1"
    assert cli.json("instance-list -c id -c name") == [{"id": created["id"], "name": "vm1"}]
    assert "no such property: nope" in cli.fails("instance-update vm1 --delete-property nope", 2)
    cli.ok("instance-delete vm1")
    assert cli.json("instance-list") == []


def test_instance_bad_input(cli: Cli, seeded, tmp_path):
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n-----END OPENSSH PRIVATE KEY-----\n")
    before = cli.snapshot()
    assert "private key" in cli.fails(f"instance-create vm --key-name k --key-file {key}", 2)
    assert "--key-name and --key-file go together" in cli.fails("instance-create vm --key-name k", 2)
    assert "does not exist" in cli.fails(f"instance-create vm --user-data {tmp_path}/missing", 2)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    assert "(400 " in cli.fails(f"instance-create vm --user-data {big}")
    assert "Unable to find port with name or id 'noport'" in cli.fails("instance-create vm --port noport")
    assert "KEY=VALUE" in cli.fails("instance-create vm --property novalue", 2)
    assert cli.snapshot() == before


def test_agent_verbs(cli: Cli, db_url: str):
    # agents create themselves by reporting state; this is the call an agent makes
    registry = open_registry(db_url)
    try:
        agent = registry.report_agent_state("compute1", "Open vSwitch agent", "provnet-agent",
                                            {"bridge_mappings": {"physnet1": "br-phy"}})
    finally:
        registry.close()
    table = cli.ok("agent-list").stdout
    assert "| compute1 | :-)   | True           | provnet-agent |" in table
    shown = cli.json("agent-show compute1")
    assert shown["id"] == agent.id and shown["alive"] is True
    assert shown["configurations"] == {"bridge_mappings": {"physnet1": "br-phy"}}
    assert cli.json("agent-update compute1 --admin-state-down")["admin_state_up"] is False
    assert cli.json("agent-list --host compute1 -c host") == [{"host": "compute1"}]
    assert cli.json("agent-list --host nowhere") == []
    cli.ok(f"agent-delete {agent.id}")
    assert "Unable to find agent with name or id 'compute1'" in cli.fails("agent-show compute1")


def test_bad_input_is_refused_clearly_and_writes_nothing(cli: Cli, seeded):
    cli.ok("port-create phy_net --fixed-ip ip_address=172.16.1.103")
    before = cli.snapshot()
    cases = [
        ("subnet-create nonet 10.0.0.0/24", 1, "Unable to find network with name or id 'nonet'"),
        ("subnet-create phy_net 10.0.0.0/33", 1, "(400 "),
        ("subnet-create phy_net 10.0.0.300/24", 1, "10.0.0.300/24"),
        ("subnet-create phy_net", 2, "missing argument CIDR"),
        ("subnet-create phy_net 10.0.0.0/24 extra", 2, "unexpected extra argument(s): extra"),
        ("subnet-create phy_net 10.0.0.0/24 --allocation-pool 10.0.0.5-10.0.0.9", 2, "expected key=value"),
        ("subnet-create phy_net 10.0.0.0/24 --gateway 10.0.0.1 --no-gateway", 2, "not both"),
        ("port-create phy_net --fixed-ip 172.16.1.105", 2, "--fixed-ip '172.16.1.105': expected key=value"),
        ("port-create phy_net --fixed-ip ip_address=172.16.1.103", 1, "IP address 172.16.1.103 already allocated"),
        ("port-create phy_net --fixed-ip ip_address=10.9.9.9", 1, "(400 "),
        ("port-create phy_net --fixed-ip subnet_id=nosuch", 1, "Unable to find subnet with name or id 'nosuch'"),
        ("port-create", 2, "missing argument NETWORK"),
        ("port-create phy_net --mac-address nonsense", 1, "(400 "),
        ("net-create", 2, "missing argument NAME"),
        ("net-create x --bogus_attr 1", 1, "Unrecognized attribute(s) 'bogus_attr'"),
        ("net-create x --provider:segmentation_id ten", 2, "'ten' is not a valid integer"),
        ("net-create x --name y", 2, "attribute(s) given twice: name"),
        ("net-create x -- --name=y", 2, "attribute(s) given twice: name"),
        ("net-create x -- --router:external type=bool maybe", 2, "expected True or False"),
        ("net-create flat2 -- --provider:network_type flat --provider:physical_network physnet1", 1,
         "Physical network physnet1 is in use"),
        ("net-list -f xml", 2, "Invalid value for '-f' / '--format'"),
        ("net-show phy_net -c nope", 2, "no such column(s): nope"),
        ("net-create x -c nope", 2, "no such column(s): nope"),
        ("port-create phy_net -c nope -f value", 2, "no such column(s): nope"),
        ("net-show nonet", 1, "Unable to find network with name or id 'nonet'"),
        ("net-show phy_net extra", 2, "unexpected extra argument(s): extra"),
        ("net-show phy_net --shared", 2, "no such option(s): --shared"),
        ("net-delete phy_net nonet", 1, "Unable to find network with name or id 'nonet'"),
        ("subnet-delete", 2, "missing argument SUBNET"),
        ("router-interface-add nor phy_subnet_without_dhcp", 1, "Unable to find router with name or id 'nor'"),
        ("router-interface-add", 2, "missing argument ROUTER INTERFACE"),
        ("net-update phy_net", 2, "Must specify new values to update network"),
        ("net-update phy_net --admin-state-up --admin-state-down", 2, "give only one"),
        ("router-update nor", 2, "Must specify new values to update router"),
        ("router-update nor --admin-state-down", 1, "Unable to find router with name or id 'nor'"),
        ("port-update nop --admin-state-up --admin-state-down", 2, "give only one"),
        ("agent-update nohost", 2, "Must specify new values to update agent"),
        ("instance-update novm", 1, "Unable to find instance with name or id 'novm'"),
        ("port-update nop --name x", 1, "Unable to find port with name or id 'nop'"),
    ]
    for args, code, message in cases:
        err = cli.fails(args, code)
        assert message in err, (args, err)
        if code == 1:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), (args, err)
    assert cli.snapshot() == before


def test_ambiguous_names_list_the_ids(cli: Cli):
    first = cli.json("net-create dup")["id"]
    second = cli.json("net-create dup")["id"]
    err = cli.fails("net-show dup")
    assert "Multiple network matches found for name 'dup'" in err
    assert first in err and second in err
    assert cli.json(f"net-show {first}")["id"] == first
    cli.fails("net-delete dup")
    assert len(cli.json("net-list")) == 2
    cli.ok(f"net-delete {first} {second}")
    assert cli.json("net-list") == []


def test_help_teaches_with_the_seed_commands():
    cli = Cli()
    assert SEED_NET.replace("net-create ", "provnet net-create ") in cli.ok("net-create --help").stdout
    assert SEED_SUBNET.replace("subnet-create ", "provnet subnet-create ") in \
        cli.ok("subnet-create --help").stdout
    for verb in ("port-create", "subnet-update", "router-interface-add", "instance-create", "agent-list"):
        text = cli.ok(f"{verb} --help").stdout
        assert "Usage: provnet " + verb in text and "provnet " + verb in text.split("Options:")[1]


@pytest.mark.parametrize("global_args, message", [
    (["--db", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the database"),
    (["--db", "bogus://x"], "only sqlite:/// and postgresql:// are supported"),
    (["--url", "ftp://x"], "not an http(s) URL"),
])
def test_an_unusable_store_is_one_clear_line(global_args, message):
    err = Cli(*global_args).fails("net-list")
    assert message in err and err.count("\n") == 1
