# The whole path in network namespaces: VM namespace -> iptables REDIRECT in a router namespace -> the real
# `provnet metadata-proxy` process -> agent (unix socket) -> API, read by cloud-init's own code (Debian's
# cloud-init under /usr/bin/python3), plus spoofing attempts from inside the VMs.
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import pytest
from conftest import need, need_root, need_tool
from metadata_chain import (
    KEY,
    USER_DATA,
    Chain,
    add_vm,
    build_seed,
    build_topology,
    ns_python,
    vm_requests,
    wait_port,
)

from provnet.registry import open_registry

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    need_root()
    need_tool("ip", "iptables")
    need(os.path.exists("/usr/bin/python3") and shutil.which("cloud-init") is not None,
         "needs Debian's cloud-init package (/usr/bin/python3 -c 'import cloudinit')")
    tmp = tmp_path_factory.mktemp("metadata-netns")
    registry = open_registry(f"sqlite:///{tmp}/provnet.sqlite")
    seed = build_seed(registry)
    add_vm(registry, seed, "victim", "172.16.1.120")  # a port with no namespace: "thief" takes its address
    chain = Chain(registry, tmp)
    topo = None
    state = tempfile.mkdtemp(prefix="pn-")  # short: unix socket paths are limited to 107 bytes
    try:
        macs = {vm: registry.get_port(port).mac_address for vm, port in seed.ports.items()}
        topo = build_topology({"vm1": "172.16.1.103", "vm2": "172.16.1.104", "stranger": "172.16.1.150",
                               "thief": "172.16.1.120"}, macs=macs)  # the thief keeps the MAC the kernel gave it
        log_path = str(tmp / "proxy.log")
        topo.start_proxy(chain.socket_path, seed.router_id, state, log_path)
        wait_port(topo.router_ns, "127.0.0.1", 9697)
        yield {"registry": registry, "seed": seed, "chain": chain, "topo": topo, "proxy_log": log_path}
    finally:
        if topo is not None:
            topo.teardown()
        chain.close()
        registry.close()
        shutil.rmtree(state, ignore_errors=True)


def run_in_vm(world, vm: str, code: str) -> dict:
    proc = ns_python(world["topo"], vm, code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


READ_V2 = r'''
import json
from cloudinit.sources.helpers import openstack
reader = openstack.MetadataReader("http://169.254.169.254", timeout=5, retries=0)
r = reader.read_v2()
md = r["metadata"]
net = openstack.convert_net_json(r["networkdata"])  # finds eth0 by the port's MAC in this namespace
ud = r["userdata"]
print(json.dumps({
    "uuid": md["uuid"], "instance-id": md.get("instance-id"), "hostname": md["hostname"],
    "local-hostname": md.get("local-hostname"), "public_keys": md.get("public_keys"), "seed": len(md["random_seed"]),
    "project_id": md.get("project_id"), "userdata": ud.decode() if isinstance(ud, bytes) else ud,
    "networkdata": r["networkdata"], "vendordata": r.get("vendordata"), "net_v1": net,
    "ec2_instance_id": r["ec2-metadata"].get("instance-id"), "ec2_keys": sorted(r["ec2-metadata"]),
}))
'''


def test_cloud_init_openstack_reader_gets_our_instance(world):
    seed, registry = world["seed"], world["registry"]
    got = run_in_vm(world, "vm1", READ_V2)
    vm1 = seed.instances["vm1"]
    assert got["uuid"] == vm1 and got["instance-id"] == vm1
    assert got["hostname"] == "vm1.novalocal" and got["local-hostname"] == "vm1.novalocal"
    assert got["public_keys"] == {"vm1-key": KEY}
    assert got["userdata"] == (USER_DATA + b"# vm1\n").decode()
    assert got["seed"] == 512 and got["project_id"] == registry.get_instance(vm1).project_id
    assert got["vendordata"] == {}
    (network,) = got["networkdata"]["networks"]
    assert network["ip_address"] == "172.16.1.103" and network["type"] == "ipv4"
    # cloud-init's own conversion of network_data.json: the routes the seed needs, not a default via the gateway
    (iface,) = [c for c in got["net_v1"]["config"] if c["type"] == "physical"]
    (subnet,) = iface["subnets"]
    routes = {(r["network"], r["netmask"], r["gateway"]) for r in subnet["routes"]}
    assert routes == {("169.254.169.254", "255.255.255.255", "172.16.1.2"), ("0.0.0.0", "0.0.0.0", "172.16.1.1")}
    assert subnet["address"] == "172.16.1.103" and subnet["type"] == "static" and iface["name"] == "eth0"
    assert got["ec2_instance_id"].startswith("i-") and "public-keys" in got["ec2_keys"]


EC2_WALK = r'''
import json
from cloudinit import url_helper
from cloudinit.sources.helpers import ec2
seen = []
real = url_helper.readurl
def recording(url, *a, **kw):
    try:
        resp = real(url, *a, **kw)
    except url_helper.UrlError as e:
        seen.append([url, e.code])
        raise
    seen.append([url, resp.code])
    return resp
url_helper.readurl = recording
md = ec2.get_instance_metadata(metadata_address="http://169.254.169.254", timeout=5, retries=0)
ud = ec2.get_instance_userdata(metadata_address="http://169.254.169.254", timeout=5, retries=0)
print(json.dumps({"md": md, "ud": ud.decode() if isinstance(ud, bytes) else ud, "seen": seen}))
'''


def test_cloud_init_ec2_walk_has_no_404(world):
    got = run_in_vm(world, "vm1", EC2_WALK)
    md = got["md"]
    assert [s for s in got["seen"] if s[1] != 200] == []
    assert len(got["seen"]) >= 18  # the listing, its directories and every leaf, plus user-data
    assert md["hostname"] == "vm1.novalocal" and md["local-ipv4"] == "172.16.1.103"
    assert md["public-keys"] == {"vm1-key": KEY}
    assert md["placement"] == {"availability-zone": "nova"}
    assert md["block-device-mapping"] == {"ami": "vda", "root": "/dev/vda"}
    assert md["instance-action"] == "none" and md["instance-id"].startswith("i-")
    assert got["ud"] == (USER_DATA + b"# vm1\n").decode()


# cloud-init's first boot, reference nova-metadata.md section 3 (the IPv6 link-local probe is left out:
# this lab has no IPv6 listener, as the seed), each URL with what it must answer.
FIRST_BOOT = [
    ("/openstack", 200, "2018-08-27"),
    ("/openstack", 200, "latest"),
    ("/openstack/2018-08-27/meta_data.json", 200, '"uuid": "{vm1}"'),
    ("/openstack/2018-08-27/user_data", 200, "#cloud-config"),
    ("/openstack/2018-08-27/vendor_data.json", 200, "{{}}"),
    ("/openstack/2018-08-27/vendor_data2.json", 200, '{{"static": {{}}}}'),
    ("/openstack/2018-08-27/network_data.json", 200, '"gateway": "172.16.1.1"'),
    ("/latest/meta-data/", 200, "block-device-mapping/"),
    ("/latest/meta-data/block-device-mapping/", 200, "ami\nroot"),
    ("/latest/meta-data/block-device-mapping/ami", 200, "vda"),
    ("/latest/meta-data/block-device-mapping/root", 200, "/dev/vda"),
    ("/latest/meta-data/placement/", 200, "availability-zone"),
    ("/latest/meta-data/placement/availability-zone", 200, "nova"),
    ("/latest/meta-data/public-keys/", 200, "0=vm1-key"),
    ("/latest/meta-data/public-keys/0/openssh-key", 200, KEY),
    ("/latest/meta-data/ami-id", 200, "ami-"),
    ("/latest/meta-data/ami-launch-index", 200, "0"),
    ("/latest/meta-data/ami-manifest-path", 200, "FIXME"),
    ("/latest/meta-data/hostname", 200, "vm1.novalocal"),
    ("/latest/meta-data/instance-action", 200, "none"),
    ("/latest/meta-data/instance-id", 200, "i-"),
    ("/latest/meta-data/instance-type", 200, "m1.small"),
    ("/latest/meta-data/local-hostname", 200, "vm1.novalocal"),
    ("/latest/meta-data/local-ipv4", 200, "172.16.1.103"),
    ("/latest/meta-data/public-hostname", 200, "vm1.novalocal"),
    ("/latest/meta-data/public-ipv4", 200, ""),
    ("/latest/meta-data/reservation-id", 200, "r-"),
    ("/latest/meta-data/security-groups", 200, ""),
]


def test_first_boot_url_sequence(world):
    vm1 = world["seed"].instances["vm1"]
    answers = vm_requests(world["topo"], "vm1", [["GET", p, [["User-Agent", "Cloud-Init/22.4.2"]], ""]
                                                 for p, _, _ in FIRST_BOOT])
    for (path, status, expect), answer in zip(FIRST_BOOT, answers, strict=True):
        assert answer["status"] == status, (path, answer)
        assert expect.format(vm1=vm1) in answer["body"], (path, answer["body"][:300])
    assert json.loads(answers[2]["body"])["uuid"] == vm1
    assert answers[2]["headers"]["content-type"] == "application/json"


SPOOFS = [
    [["X-Forwarded-For", "172.16.1.104"]],
    [["x-forwarded-for", "172.16.1.104"], ["X-FORWARDED-FOR", "172.16.1.104"]],
    [["X-Forwarded-For", "172.16.1.104, 172.16.1.104"]],
    [["X-Instance-ID", "{vm2}"], ["X-Tenant-ID", "{tenant}"], ["X-Instance-ID-Signature", "{sig2}"]],
    [["x-instance-id", "{vm2}"], ["x-instance-id", "{vm2}"], ["x-instance-id-signature", "{sig2}"]],
    [["X-Neutron-Router-ID", "{router}"], ["X-Forwarded-For", "172.16.1.104"]],
    [["X-Neutron-Network-ID", "{network}"], ["X-Forwarded-For", "172.16.1.104"]],
    [["x-neutron-network-id", "{network}"], ["X-NEUTRON-ROUTER-ID", "{router}"], ["x-neutron-router-id", "x"]],
    [["X-Metadata-Provider", "lb"], ["X-Metadata-Provider-Signature", "{sig2}"],
     ["X-Forwarded-For", "172.16.1.104"]],
    [["X-OVN-Network-ID", "{network}"], ["Forwarded", "for=172.16.1.104"], ["X-Real-IP", "172.16.1.104"]],
]


@pytest.mark.parametrize("spoof", SPOOFS)
def test_spoofed_headers_never_give_another_instance(world, spoof):
    from provnet.metadata.signing import sign_instance_id

    seed, registry = world["seed"], world["registry"]
    vm1, vm2 = seed.instances["vm1"], seed.instances["vm2"]
    values = {"vm2": vm2, "tenant": registry.get_instance(vm2).project_id, "router": seed.router_id,
              "network": seed.network_id, "sig2": sign_instance_id("s3cret-for-tests", vm2)}
    headers = [[k, v.format(**values)] for k, v in spoof]
    (answer,) = vm_requests(world["topo"], "vm1", [["GET", "/openstack/latest/meta_data.json", headers, ""]])
    assert vm2 not in answer["body"]
    assert answer["status"] == 200 and json.loads(answer["body"])["uuid"] == vm1


def test_unknown_address_is_404_and_status_pages_are_not_reachable_from_vms(world):
    (stranger,) = vm_requests(world["topo"], "stranger", [["GET", "/latest/meta-data/", [], ""]])
    assert stranger["status"] == 404 and "Instance was not found" in stranger["body"]
    answers = vm_requests(world["topo"], "vm1", [["GET", p, [], ""] for p in
                                                 ("/healthz", "/readyz", "/metrics", "//healthz", "/healthz/")])
    assert [a["status"] for a in answers] == [404] * 5
    assert all("provnet_metadata" not in a["body"] for a in answers)


def test_one_request_id_in_proxy_agent_and_api_logs(world, caplog):
    with caplog.at_level(logging.DEBUG, logger="provnet.metadata"):
        (answer,) = vm_requests(world["topo"], "vm2", [["GET", "/latest/meta-data/instance-id",
                                                         [["X-Openstack-Request-Id", "req-forged"]], ""]])
    rid = answer["headers"]["x-openstack-request-id"]
    assert rid.startswith("req-") and rid != "req-forged"
    loggers = {r.name for r in caplog.records if rid in r.getMessage()}
    assert {"provnet.metadata.agent", "provnet.metadata.api"} <= loggers
    with open(world["proxy_log"]) as fh:
        assert rid in fh.read()


def test_password_post_through_the_proxy(world):
    answers = vm_requests(world["topo"], "vm2", [
        ["POST", "/openstack/latest/password", [["Content-Type", "text/plain"]], "ZW5jcnlwdGVk"],
        ["GET", "/openstack/latest/password", [], ""],
        ["POST", "/openstack/latest/password", [], "again"],
    ])
    assert [a["status"] for a in answers] == [200, 200, 409]
    assert answers[1]["body"] == "ZW5jcnlwdGVk"
    assert world["registry"].get_instance_password(world["seed"].instances["vm2"]) == "ZW5jcnlwdGVk"


def test_a_guest_on_a_neighbours_address_with_its_own_mac_gets_404_not_the_neighbours_data(world):
    """Port security off (nothing here filters the segment): the thief's packets carry the victim's address, but
    the router's neighbour table has the thief's MAC, which the proxy passes on and the agent checks; a copy of
    the victim's MAC in the thief's own headers changes nothing."""
    registry, seed = world["registry"], world["seed"]
    victim_mac = registry.get_port(seed.ports["victim"]).mac_address
    path = "/openstack/latest/meta_data.json"
    answers = vm_requests(world["topo"], "thief", [["GET", path, [], ""],
                                                    ["GET", path, [["X-Provnet-Source-MAC", victim_mac]], ""],
                                                    ["GET", "/latest/meta-data/instance-id", [], ""]])
    for answer in answers:
        assert answer["status"] == 404, answer
        assert "does not have MAC" in answer["body"] and victim_mac not in answer["body"]
        assert seed.instances["victim"] not in answer["body"]
    own = vm_requests(world["topo"], "vm1", [["GET", path, [], ""]])[0]  # the proxy read vm1's own MAC
    assert own["status"] == 200 and seed.instances["vm1"] in own["body"]
