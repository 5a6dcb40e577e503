# Request-body parsing: unknown, read-only, required and mistyped attributes get Neutron's 400s; values convert.
from __future__ import annotations

import base64

import pytest
from registry_support import expect

from provnet.model.validation import hostname_from_name, parse_create, parse_update

NET_ID = "1b4a3f42-7b7d-4a0b-9b4b-3f0f5b0a6c11"


def test_unknown_attribute_is_named() -> None:
    expect("HTTPBadRequest", 400, "Unrecognized attribute(s) 'foo'", parse_create, "network", {"foo": 1})
    expect("HTTPBadRequest", 400, "Unrecognized attribute(s) 'bar, foo'", parse_update, "port",
           {"foo": 1, "bar": 2})


def test_missing_required_attribute() -> None:
    expect("HTTPBadRequest", 400, "Failed to parse request. Required attribute 'ip_version' not specified",
           parse_create, "subnet", {"network_id": NET_ID, "cidr": "10.0.0.0/24"})
    expect("HTTPBadRequest", 400, "Failed to parse request. Required attribute 'network_id' not specified",
           parse_create, "port", {})


def test_read_only_attributes() -> None:
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute cidr", parse_update, "subnet",
           {"cidr": "10.0.0.0/24"})
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute network_id", parse_update, "port",
           {"network_id": NET_ID})
    expect("HTTPBadRequest", 400, "Cannot update read-only attribute tenant_id", parse_update, "network",
           {"tenant_id": "x"})
    expect("HTTPBadRequest", 400, "Attribute 'status' not allowed in POST", parse_create, "network",
           {"status": "DOWN"})


@pytest.mark.parametrize(("kind", "body", "reason"), [
    ("network", {"admin_state_up": "maybe"}, "Invalid input for admin_state_up. Reason: 'maybe' cannot be "
                                             "converted to boolean."),
    ("network", {"name": 5}, "Invalid input for name. Reason: '5' is not a valid string."),
    ("network", {"name": "x" * 256}, f"Invalid input for name. Reason: '{'x' * 256}' exceeds maximum length "
                                     f"of 255."),
    ("network", {"provider:segmentation_id": "ten"}, "Invalid input for provider:segmentation_id. Reason: "
                                                    "'ten' is not an integer."),
    ("subnet", {"network_id": "net1", "ip_version": 4, "cidr": "10.0.0.0/24"},
     "Invalid input for network_id. Reason: 'net1' is not a valid UUID."),
    ("subnet", {"network_id": NET_ID, "ip_version": 5, "cidr": "10.0.0.0/24"},
     "Invalid input for ip_version. Reason: '5' is not in [4, 6]."),
    ("subnet", {"network_id": NET_ID, "ip_version": 4, "cidr": "10.0.0.300/24"},
     "Invalid input for cidr. Reason: '10.0.0.300/24' is not a valid IP subnet."),
    ("subnet", {"network_id": NET_ID, "ip_version": 4, "cidr": "10.0.0.1"},
     "Invalid input for cidr. Reason: '10.0.0.1' isn't a recognized IP subnet cidr, '10.0.0.1/32' is "
     "recommended."),
    ("subnet", {"network_id": NET_ID, "ip_version": 4, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0"},
     "Invalid input for gateway_ip. Reason: '10.0.0' is not a valid IP address."),
    ("subnet", {"network_id": NET_ID, "ip_version": 4, "cidr": "10.0.0.0/24", "allocation_pools": [{"start": 1}]},
     "Invalid input for allocation_pools. Reason: Invalid data format for IP pool: '{'start': 1}'."),
    ("subnet", {"network_id": NET_ID, "ip_version": 4, "cidr": "10.0.0.0/24", "dns_nameservers": ["8.8.8.8",
                                                                                                "8.8.8.8"]},
     "Invalid input for dns_nameservers. Reason: Duplicate nameserver '8.8.8.8'."),
    ("subnet", {"network_id": NET_ID, "ip_version": 4, "cidr": "10.0.0.0/24", "host_routes": "x"},
     "Invalid input for host_routes. Reason: 'x' is not a list."),
    ("port", {"network_id": NET_ID, "mac_address": "fa:16:3e:zz:00:01"},
     "Invalid input for mac_address. Reason: 'fa:16:3e:zz:00:01' is not a valid MAC address."),
    ("port", {"network_id": NET_ID, "mac_address": "ff:ff:ff:ff:ff:ff"},
     "Invalid input for mac_address. Reason: 'ff:ff:ff:ff:ff:ff' is not a valid MAC address."),
    ("port", {"network_id": NET_ID, "fixed_ips": [{"ip": "10.0.0.5"}]},
     "Invalid input for fixed_ips. Reason: Invalid data format for fixed IP: '{'ip': '10.0.0.5'}'."),
    ("port", {"network_id": NET_ID, "fixed_ips": [{"ip_address": "10.0.0.5"}, {"ip_address": "10.0.0.5"}]},
     "Invalid input for fixed_ips. Reason: Duplicate IP address '10.0.0.5'."),
    ("port", {"network_id": NET_ID, "binding:vnic_type": "weird"},
     "Invalid input for binding:vnic_type. Reason: 'weird' is not in ['normal', 'direct', 'macvtap', "
     "'baremetal', 'direct-physical', 'virtio-forwarder', 'smart-nic', 'vdpa', 'remote-managed']."),
    ("port", {"network_id": NET_ID, "binding:profile": []},
     "Invalid input for binding:profile. Reason: '[]' is not a dictionary."),
    ("instance", {"user_data": "***"}, "Invalid input for user_data. Reason: user_data is not valid base64."),
    ("instance", {"user_data": base64.b64encode(b"x" * 65537).decode()},
     "Invalid input for user_data. Reason: user_data is 65537 bytes, more than the 65536 allowed."),
    ("instance", {"metadata": {"k": 1}},
     "Invalid input for metadata. Reason: metadata value of 'k' must be a string of at most 255 characters."),
    ("instance", {"key_pairs": [{"name": "k"}]},
     "Invalid input for key_pairs. Reason: Invalid data format for key pair: '{'name': 'k'}'."),
    ("instance", {"key_pairs": [{"name": "k", "data": "ssh-ed25519 AAA", "type": "rsa"}]},
     "Invalid input for key_pairs. Reason: 'rsa' is not in ['ssh', 'x509']."),
    ("instance", {"vendor_data": [1]}, "Invalid input for vendor_data. Reason: '[1]' is not a dictionary."),
    ("instance", {"id": "not-a-uuid"}, "Invalid input for id. Reason: 'not-a-uuid' is not a valid UUID."),
    ("instance", {"launch_index": -1}, "Invalid input for launch_index. Reason: '-1' should be non-negative."),
])
def test_wrong_types_get_invalid_input_messages(kind: str, body: dict, reason: str) -> None:
    expect("HTTPBadRequest", 400, reason, parse_create, kind, body)


def test_body_must_be_an_object() -> None:
    expect("HTTPBadRequest", 400, "Body contains invalid data", parse_create, "network", ["x"])


def test_booleans_accept_neutronclient_strings_and_defaults_fill_in() -> None:
    net = parse_create("network", {"name": "phy_net", "router:external": "True", "shared": "false"})
    assert net["router:external"] is True and net["shared"] is False
    assert net["admin_state_up"] is True and net["project_id"] == "fake_project_id"
    assert "tenant_id" not in net
    subnet = parse_create("subnet", {"network_id": NET_ID.upper(), "ip_version": "4", "cidr": "172.16.1.101/24",
                                     "enable_dhcp": "False"})
    assert subnet["enable_dhcp"] is False and subnet["ip_version"] == 4
    assert subnet["network_id"] == NET_ID  # UUIDs normalised to lowercase
    assert "gateway_ip" not in subnet  # absent means "the first host", None would mean "no gateway"
    assert parse_create("subnet", {"network_id": NET_ID, "ip_version": 4, "cidr": "10.0.0.0/24",
                                   "gateway_ip": None})["gateway_ip"] is None


def test_tenant_id_or_project_id() -> None:
    assert parse_create("router", {"tenant_id": "p1"})["project_id"] == "p1"
    assert parse_create("router", {"project_id": "p2"})["project_id"] == "p2"
    assert parse_create("router", {"project_id": "p2", "tenant_id": "p2"})["project_id"] == "p2"
    expect("HTTPBadRequest", 400, "'project_id' and 'tenant_id' do not match", parse_create, "router",
           {"project_id": "a", "tenant_id": "b"})


def test_port_values_normalise() -> None:
    port = parse_create("port", {"network_id": NET_ID, "mac_address": "FA-16-3E-00-00-01",
                                 "fixed_ips": [{"subnet_id": NET_ID}, {"ip_address": "10.0.0.5"}]})
    assert port["mac_address"] == "fa:16:3e:00:00:01"
    assert port["fixed_ips"] == [{"subnet_id": NET_ID}, {"ip_address": "10.0.0.5"}]
    assert parse_create("port", {"network_id": NET_ID})["fixed_ips"] is None  # automatic


def test_instance_defaults_and_user_data() -> None:
    inst = parse_create("instance", {"name": "vm1", "user_data": base64.b64encode(b"#cloud-config\n").decode(),
                                     "metadata": {"role": "web"},
                                     "key_pairs": [{"name": "k", "data": "ssh-ed25519 AAAA"}]})
    assert inst["user_data"] == b"#cloud-config\n"
    assert len(inst["id"]) == 36 and inst["availability_zone"] == "nova" and inst["launch_index"] == 0
    assert inst["key_pairs"] == [{"name": "k", "type": "ssh", "data": "ssh-ed25519 AAAA"}]
    assert parse_create("instance", {"user_data": base64.b64encode(b"x" * 65536).decode()})["user_data"] == \
        b"x" * 65536


def test_hostname_from_name() -> None:
    assert hostname_from_name("My Web_Server #1", "u") == "my-web-server-1"
    assert hostname_from_name("--", "abc") == "server-abc"
    assert len(hostname_from_name("a" * 100, "u")) == 63
