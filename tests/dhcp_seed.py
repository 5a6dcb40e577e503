# Test helpers for the DHCP tests: the seed's network as model objects, and client messages built with our codec.
from __future__ import annotations

import os

from provnet.dhcp import codec
from provnet.dhcp.codec import Message
from provnet.dhcp.view import Settings, build_view, snapshot_from
from provnet.model.resources import FixedIP, HostRoute, Network, Port, Subnet

SEED_CIDR = "172.16.1.0/24"
SERVER_IP = "172.16.1.99"  # the seed's external DHCP server address (on the bridge)
MACS = {"vm1": "fa:16:3e:00:00:03", "vm2": "fa:16:3e:00:00:04"}
IPS = {"vm1": "172.16.1.103", "vm2": "172.16.1.104"}
STRANGER = "fa:16:3e:99:99:99"


def seed_network() -> Network:
    return Network(id="net-1", name="phy_net", router_external=True, network_type="flat",
                   physical_network="physnet1", subnets=["sub-1"])


def seed_subnet() -> Subnet:
    return Subnet(id="sub-1", network_id="net-1", cidr=SEED_CIDR, name="phy_subnet_without_dhcp",
                  gateway_ip="172.16.1.2", host_routes=[HostRoute("0.0.0.0/0", "172.16.1.1")],
                  dns_nameservers=["172.16.1.1"], enable_dhcp=False)


def seed_ports() -> list[Port]:
    ports = [Port(id=f"port-{n}", network_id="net-1", mac_address=MACS[n], device_id=f"inst-{n}",
                  device_owner="compute:nova", fixed_ips=[FixedIP("sub-1", IPS[n])]) for n in ("vm1", "vm2")]
    ports.append(Port(id="port-qr", network_id="net-1", mac_address="fa:16:3e:00:00:02",
                      device_owner="network:router_interface", fixed_ips=[FixedIP("sub-1", "172.16.1.2")]))
    return ports


def seed_view(settings: Settings | None = None, revision: int = 1):
    import ipaddress

    snap = snapshot_from(revision, [seed_network()], [seed_subnet()], seed_ports(), {"inst-vm1": "vm1"})
    return build_view(snap, settings or Settings(), [ipaddress.IPv4Interface(f"{SERVER_IP}/24")])


def request(kind: int, mac: str, *, xid: int | None = None, options: dict[int, bytes] | None = None,
            ciaddr: str | None = None, giaddr: str | None = None, flags: int = 0) -> Message:
    opts = {codec.MESSAGE_TYPE: bytes((kind,)),
            codec.PARAMETER_REQUEST_LIST: bytes((1, 3, 6, 12, 15, 28, 121))}
    opts.update(options or {})
    return Message(op=codec.BOOTREQUEST, xid=xid if xid is not None else int.from_bytes(os.urandom(4), "big"),
                   flags=flags, chaddr=codec.mac_bytes(mac).ljust(16, b"\x00"),
                   ciaddr=codec.ip_bytes(ciaddr) if ciaddr else codec.ZERO_IP,
                   giaddr=codec.ip_bytes(giaddr) if giaddr else codec.ZERO_IP,
                   options=opts)


def raw(kind: int, mac: str, **kw) -> bytes:
    return codec.encode(request(kind, mac, **kw))
