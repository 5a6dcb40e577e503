# The pure metadata trees: Nova's listing format, version gating, meta_data.json, network_data.json routes, password.
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from provnet.metadata.content import (
    JSON,
    PASSWORD_LEAF,
    TEXT,
    MetadataTree,
    Source,
    Vif,
    listing,
    password_post,
    root_listing,
)
from provnet.metadata.signing import sign_instance_id, signature_matches
from provnet.model.resources import FixedIP, HostRoute, Instance, KeyPair, Network, Port, Subnet
from provnet.model.routes import port_routes

UUID = "d8e02d56-2648-49a3-bf97-6be8f1204f38"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4vu2Q9wvVxgGQB test@provnet"


def seed_subnet(**kw) -> Subnet:
    """The seed's subnet: external DHCP (enable_dhcp=False), gateway = router port, default via external router."""
    args = dict(id="sub-1", network_id="net-1", cidr="172.16.1.0/24", gateway_ip="172.16.1.2",
                host_routes=[HostRoute("0.0.0.0/0", "172.16.1.1")], enable_dhcp=False,
                dns_nameservers=["172.16.1.1"])
    args.update(kw)
    return Subnet(**args)


def make_source(user_data: bytes | None = b"#cloud-config\n", subnet: Subnet | None = None, **inst) -> Source:
    subnet = subnet or seed_subnet()
    net = Network(id="net-1", name="phy_net", network_type="flat", physical_network="physnet1")
    port = Port(id="5f1c2b3a-0000-4000-8000-000000000001", network_id="net-1", mac_address="fa:16:3e:00:00:01",
                fixed_ips=[FixedIP(subnet.id, "172.16.1.103")], device_id=UUID, device_owner="compute:nova",
                binding_vif_type="ovs", security_groups=["default"])
    args = dict(id=UUID, name="vm1", hostname="vm1", project_id="proj-a", user_data=user_data,
                key_pairs=[KeyPair("mykey", KEY)], metadata={"role": "web"}, flavor="m1.tiny")
    args.update(inst)
    return Source(instance=Instance(**args), vifs=[Vif(port, net, (subnet,))])


def get(tree: MetadataTree, path: str) -> tuple[int, str]:
    reply = tree.lookup(path)
    return reply.status, reply.body.decode()


def test_root_lists_ec2_versions_and_latest_without_trailing_newline():
    body = root_listing().body.decode()
    assert body.split("\n")[0] == "1.0"
    assert body.endswith("2009-04-04\nlatest")


def test_ec2_meta_data_listing_is_sorted_with_directories_marked():
    tree = MetadataTree(make_source())
    status, body = get(tree, "/2009-04-04/meta-data/")
    assert status == 200
    keys = body.split("\n")
    assert keys == sorted(keys)
    assert "block-device-mapping/" in keys and "placement/" in keys and "public-keys/" in keys
    for leaf in ("ami-id", "ami-launch-index", "ami-manifest-path", "hostname", "instance-action", "instance-id",
                 "instance-type", "local-hostname", "local-ipv4", "public-hostname", "public-ipv4",
                 "reservation-id", "security-groups"):
        assert leaf in keys
    assert not body.endswith("\n")


def test_ec2_leaves_and_public_keys_layout():
    tree = MetadataTree(make_source())
    assert get(tree, "/latest/meta-data/public-keys/") == (200, "0=mykey")
    assert get(tree, "/latest/meta-data/public-keys/0/") == (200, "openssh-key")
    assert get(tree, "/latest/meta-data/public-keys/0/openssh-key") == (200, KEY)
    assert get(tree, "/latest/meta-data/hostname") == (200, "vm1.novalocal")
    assert get(tree, "/latest/meta-data/local-ipv4") == (200, "172.16.1.103")
    assert get(tree, "/latest/meta-data/placement/availability-zone") == (200, "nova")
    assert get(tree, "/latest/meta-data/instance-type") == (200, "m1.tiny")
    assert get(tree, "/latest/meta-data/security-groups") == (200, "default")
    status, iid = get(tree, "/latest/meta-data/instance-id")
    assert status == 200 and iid.startswith("i-") and len(iid) == 10
    assert get(tree, "/latest/meta-data/block-device-mapping/") == (200, "ami\nroot")
    assert get(tree, "/latest/user-data") == (200, "#cloud-config\n")
    assert get(tree, "/latest") == (200, "meta-data/\nuser-data")
    assert get(tree, "/ec2/latest/meta-data/instance-action") == (200, "none")


def test_ec2_versions_gate_keys():
    tree = MetadataTree(make_source())
    old = get(tree, "/1.0/meta-data/")[1].split("\n")
    assert "local-hostname" not in old and "instance-type" not in old and "placement/" not in old
    assert "local-hostname" in get(tree, "/2007-01-19/meta-data/")[1].split("\n")
    assert "instance-action" not in get(tree, "/2008-02-01/meta-data/")[1].split("\n")


@pytest.mark.parametrize("path", ["/2010-01-01/meta-data/", "/latest/meta-data/nope", "/latest/meta-data/hostname/x",
                                  "/latest/meta-data/public-keys/0/_name", "/openstack/2099-01-01/meta_data.json",
                                  "/openstack/latest/nope", "/openstack/latest/meta_data.json/x",
                                  "/openstack/content/0000", "/healthz", "/metrics"])
def test_unknown_paths_are_404(path):
    assert MetadataTree(make_source()).lookup(path).status == 404


def test_without_user_data_it_is_404_and_unlisted():
    tree = MetadataTree(make_source(user_data=None))
    assert tree.lookup("/latest/user-data").status == 404
    assert get(tree, "/latest") == (200, "meta-data/")
    assert tree.lookup("/openstack/latest/user_data").status == 404
    assert "user_data" not in get(tree, "/openstack/latest")[1]


def test_openstack_listings_by_version():
    tree = MetadataTree(make_source(), today="2026-11-28")
    versions = get(tree, "/openstack")[1].split("\n")
    assert versions[0] == "2012-08-10" and versions[-2:] == ["2025-04-04", "latest"]
    assert get(MetadataTree(make_source(), today="2019-01-01"), "/openstack")[1].endswith("2018-08-27\nlatest")
    assert get(tree, "/openstack/2012-08-10") == (200, "meta_data.json\nuser_data")
    assert get(tree, "/openstack/2018-08-27/") == (
        200, "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json")
    assert tree.lookup("/openstack/2013-04-04/network_data.json").status == 404
    assert tree.lookup("/openstack/2015-10-15/vendor_data2.json").status == 404


def test_meta_data_json_fields_by_version():
    tree = MetadataTree(make_source())
    old = tree.lookup("/openstack/2012-08-10/meta_data.json")
    assert old.content_type == JSON
    old_md = json.loads(old.body)
    assert old_md["uuid"] == UUID and "random_seed" not in old_md and "project_id" not in old_md
    assert old_md["public_keys"] == {"mykey": KEY}
    assert old_md["keys"] == [{"name": "mykey", "type": "ssh", "data": KEY}]
    assert old_md["meta"] == {"role": "web"} and old_md["hostname"] == "vm1.novalocal" and old_md["name"] == "vm1"
    cloud_init = json.loads(tree.lookup("/openstack/2018-08-27/meta_data.json").body)
    assert cloud_init["project_id"] == "proj-a" and cloud_init["devices"] == []
    assert "dedicated_cpus" not in cloud_init
    assert len(base64.b64decode(cloud_init["random_seed"], validate=True)) == 512
    latest = json.loads(tree.lookup("/openstack/latest/meta_data.json").body)
    assert latest["dedicated_cpus"] == [] and latest["availability_zone"] == "nova" and latest["launch_index"] == 0
    again = json.loads(tree.lookup("/openstack/latest/meta_data.json").body)
    assert again["random_seed"] != latest["random_seed"]
    assert all("-" not in k for k in latest)


def test_network_data_for_the_seed_subnet_uses_port_routes():
    src = make_source()
    reply = MetadataTree(src).lookup("/openstack/latest/network_data.json")
    assert reply.content_type == TEXT
    nd = json.loads(reply.body)
    assert nd["links"] == [{"id": "tap5f1c2b3a-00", "vif_id": "5f1c2b3a-0000-4000-8000-000000000001", "type": "ovs",
                            "mtu": 1500, "ethernet_mac_address": "fa:16:3e:00:00:01"}]
    (net,) = nd["networks"]
    assert net["type"] == "ipv4" and net["ip_address"] == "172.16.1.103" and net["netmask"] == "255.255.255.0"
    assert net["routes"] == [
        {"network": "169.254.169.254", "netmask": "255.255.255.255", "gateway": "172.16.1.2"},
        {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "172.16.1.1"},
    ]
    # the same function DHCP option 121 uses
    assert [(r["network"], r["gateway"]) for r in net["routes"]] == [
        (str(r.destination.network_address), str(r.nexthop)) for r in port_routes(seed_subnet())]
    assert nd["services"] == [{"type": "dns", "address": "172.16.1.1"}]


def test_network_data_for_a_dhcp_subnet_is_ipv4_dhcp():
    src = make_source(subnet=seed_subnet(enable_dhcp=True, host_routes=[]))
    nd = json.loads(MetadataTree(src).lookup("/openstack/latest/network_data.json").body)
    assert nd["links"][0]["mtu"] is None
    assert nd["networks"] == [{"id": "network0", "type": "ipv4_dhcp", "link": "tap5f1c2b3a-00",
                               "network_id": "net-1"}]


def test_network_data_without_ports_is_empty_object():
    src = make_source()
    src.vifs = []
    assert MetadataTree(src).lookup("/openstack/latest/network_data.json").body == b"{}"


def test_vendor_data_merges_static_file_and_instance():
    src = make_source(vendor_data={"cloud-init": "#cloud-config\n"})
    src.static_vendor_data = {"site": "x"}
    tree = MetadataTree(src)
    assert json.loads(tree.lookup("/openstack/latest/vendor_data.json").body) == {
        "site": "x", "cloud-init": "#cloud-config\n"}
    assert json.loads(tree.lookup("/openstack/latest/vendor_data2.json").body) == {
        "static": {"site": "x", "cloud-init": "#cloud-config\n"}}


def test_password_leaf_and_post_rules():
    tree = MetadataTree(make_source())
    assert tree.lookup("/openstack/latest/password") is PASSWORD_LEAF
    assert tree.lookup("/openstack/2012-08-10/password").status == 404
    assert password_post(None, b"s3cret") == (password_post(None, b"s3cret")[0], "s3cret")
    assert password_post(None, b"s3cret")[0].status == 200
    assert password_post("old", b"new")[0].status == 409
    assert password_post(None, b"x" * 1021)[0].status == 400
    assert password_post(None, b"x" * 1020)[0].status == 200
    assert password_post(None, b"\xff\xfe")[0].status == 400


def test_path_normalization_like_nova():
    tree = MetadataTree(make_source())
    assert get(tree, "//latest//meta-data/hostname/") == (200, "vm1.novalocal")
    assert get(tree, "/openstack/../latest/meta-data/hostname") == (200, "vm1.novalocal")
    assert get(tree, "/") == (200, root_listing().body.decode())


def test_listing_format():
    assert listing({"b": 1, "a": {"x": 1}, "c": {"_name": "0=k"}}) == b"a/\nb\n0=k"
    assert listing(["x", "y"]) == b"x\ny"
    assert listing(7) == b"7"


def test_signature_matches_an_independent_hmac():
    expected = hmac.new(b"s3cret", UUID.encode(), hashlib.sha256).hexdigest()
    assert sign_instance_id("s3cret", UUID) == expected
    assert signature_matches("s3cret", UUID, expected)
    assert not signature_matches("s3cret", UUID, expected.upper())
    assert not signature_matches("other", UUID, expected)
    assert not signature_matches("s3cret", UUID, "\udcff")
    assert sign_instance_id("", UUID) == hmac.new(b"", UUID.encode(), hashlib.sha256).hexdigest()
