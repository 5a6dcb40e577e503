# The lab's topology as data (pure): namespace and link names, the seed's addresses, the routes a VM must end up with.
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# The seed's addresses (seed/README.md): external router .1, router port (gateway) .2, DHCP server .99.
CIDR = "172.16.1.0/24"
EXTERNAL_ROUTER_IP = "172.16.1.1"
DHCP_SERVER_IP = "172.16.1.99"
ROUTER_IP = "172.16.1.2"  # router mode: router1's qr- device, the seed's gateway
UPSTREAM_CIDR = "198.51.100.0/24"  # TEST-NET-2, behind the external router
UPSTREAM_ROUTER_IP = "198.51.100.1"  # the external router's upstream side
UPSTREAM_IP = "198.51.100.10"  # a host out there, reachable only through the external router
BRIDGE = "br-phy"
METADATA_PORT = 9697
DHCP_CLIENTS = ("udhcpc", "dhclient")
MAX_VMS = 25  # the seed's allocation pool .102-.126

# The seed's commands, run through provnet (plus the host route, the router and its interface).
SEED_NET = ["net-create", "phy_net", "--", "--router:external=True", "--provider:network_type", "flat",
            "--provider:physical_network", "physnet1"]
SEED_SUBNET = ["subnet-create", "--allocation-pool", "start=172.16.1.102,end=172.16.1.126", "--gateway",
               "172.16.1.2", "phy_net", "172.16.1.101/24", "--enable_dhcp=False", "--name=phy_subnet_without_dhcp"]
SEED_HOST_ROUTE = ["subnet-update", "phy_subnet_without_dhcp", "--host-route",
                   f"destination=0.0.0.0/0,nexthop={EXTERNAL_ROUTER_IP}"]
SEED_ROUTER = ["router-create", "router1"]
SEED_INTERFACE = ["router-interface-add", "router1", "phy_subnet_without_dhcp"]

# The same, as the API calls the lab makes (the controller's networking API, as an operator's client would).
SEED_NETWORK_BODY = {"name": "phy_net", "router:external": True, "provider:network_type": "flat",
                     "provider:physical_network": "physnet1"}
SEED_SUBNET_BODY = {"name": "phy_subnet_without_dhcp", "cidr": "172.16.1.101/24", "ip_version": 4,
                    "gateway_ip": "172.16.1.2", "enable_dhcp": False,
                    "allocation_pools": [{"start": "172.16.1.102", "end": "172.16.1.126"}]}
SEED_HOST_ROUTES = {"host_routes": [{"destination": "0.0.0.0/0", "nexthop": EXTERNAL_ROUTER_IP}]}
SEED_ROUTER_BODY = {"name": "router1"}

# How VMs reach 169.254.169.254 (`lab up --mode`, the controller's `[metadata] mode`). router: the seed's router1,
# whose qr- device holds the gateway .2; network: no router at all, the external router .1 is the subnet's gateway
# and the network's metadata port (made by the registry) is the next hop, served on each host by its L3 agent.
MODES = ("router", "network")
# In network mode the subnet's gateway is the external router itself (no host route needed for the default).
# network mode's namespace on a host: this + network id + the host's [l3_agent] namespace_suffix (the L3 agent's
# naming, provnet/dataplane/metadata_ns.py)
METADATA_NAMESPACE_PREFIX = "provnet-meta-"
NETWORK_MODE_SUBNET_BODY = {**SEED_SUBNET_BODY, "gateway_ip": EXTERNAL_ROUTER_IP}

# `lab up --ipv6`: an IPv6 subnet on phy_net, SLAAC from the external router's router advertisements (dnsmasq in
# RA-only mode in its namespace; no ipv6_ra_mode: OpenStack sends no RA for it, as on a provider network).
CIDR6 = "2001:db8:16::/64"
EXTERNAL_ROUTER_IP6 = "2001:db8:16::1"
METADATA_IP6 = "fe80::a9fe:a9fe"
SEED_SUBNET6_BODY = {"name": "phy_subnet_v6", "cidr": CIDR6, "ip_version": 6, "gateway_ip": EXTERNAL_ROUTER_IP6,
                     "ipv6_address_mode": "slaac", "enable_dhcp": True}
# The VMs' ways of making IPv6 addresses (net.ipv6.conf.eth0.addr_gen_mode): EUI-64 from the MAC, and stable privacy
# (RFC 7217, from a secret: nothing in the address tells the MAC). Odd VMs use the first, even ones the second.
ADDR_GEN_EUI64 = 0
ADDR_GEN_STABLE_PRIVACY = 2


# The management network (the controller's API and metadata API; hosts and the DHCP server's host reach them there).
MGMT_CIDR = "10.0.0.0/24"
CONTROLLER_IP = "10.0.0.10"
DHCP_HOST_MGMT_IP = "10.0.0.9"
API_PORT = 9696
METADATA_API_PORT = 8775
MAX_HOSTS = 8
PHYSNET = "physnet1"
AGENT_DOWN_TIME = 10.0  # seconds: short, so `lab failover` shows a router moving in the time of a demo
REPORT_INTERVAL = 3.0


def host_mgmt_ip(index: int) -> str:
    return f"10.0.0.{10 + index}"


def api_url() -> str:
    return f"http://{CONTROLLER_IP}:{API_PORT}"


@dataclass(frozen=True)
class Names:
    """Every name the lab gives, from one random suffix (`pn` + 6 hex digits)."""

    suffix: str

    def __post_init__(self) -> None:
        if not (self.suffix.startswith("pn") and 3 <= len(self.suffix) <= 8 and self.suffix.isalnum()):
            raise ValueError(f"lab suffix must be 'pn' + up to 6 letters/digits, got {self.suffix!r}")

    # namespaces: the physical world
    @property
    def switch(self) -> str:
        """The switches: `provider` (the provider segment) and `mgmt` (the management network)."""
        return f"{self.suffix}-sw"

    @property
    def controller(self) -> str:
        return f"{self.suffix}-ctl"

    @property
    def external(self) -> str:
        return f"{self.suffix}-ext"

    @property
    def upstream(self) -> str:
        return f"{self.suffix}-up"

    @property
    def dhcp(self) -> str:
        return f"{self.suffix}-dhcp"

    def host_ns(self, index: int) -> str:
        return f"{self.suffix}-h{index}"

    @staticmethod
    def host(index: int) -> str:
        """The host's name (its agents' `host`, ports' binding:host_id)."""
        return f"host{index}"

    def namespace_suffix(self, index: int) -> str:
        """[l3_agent] namespace_suffix of host `index`: several hosts' agents share this machine."""
        return f"@{self.suffix}-h{index}"

    def vm(self, index: int) -> str:
        return f"{self.suffix}-vm{index}"

    # switch-side veth ends (<= 15 characters)
    def host_uplink(self, index: int) -> str:
        return f"{self.suffix}p{index}"

    def host_mgmt(self, index: int) -> str:
        return f"{self.suffix}m{index}"

    @property
    def controller_mgmt(self) -> str:
        return f"{self.suffix}mc"

    @property
    def external_port(self) -> str:
        return f"{self.suffix}pe"

    @property
    def dhcp_port(self) -> str:
        return f"{self.suffix}pd"

    @property
    def dhcp_mgmt(self) -> str:
        return f"{self.suffix}md"

    @staticmethod
    def tap(port_id: str) -> str:
        """Where a VM's port meets its host's bridge, named as Nova names it: `tap` + 11 of the port id."""
        return f"tap{port_id[:11]}"


PROVIDER_SWITCH = "provider"
MGMT_SWITCH = "mgmt"


def parse_hosts(value: int) -> int:
    if not 1 <= value <= MAX_HOSTS:
        raise ValueError(f"--hosts must be 1..{MAX_HOSTS}, got {value}")
    return value


def vm_host(vm_index: int, hosts: int) -> int:
    """VMs spread over the hosts in turn: vm1 on host1, vm2 on host2, ..."""
    return (vm_index - 1) % hosts + 1


def parse_vms(value: int) -> int:
    if not 1 <= value <= MAX_VMS:
        raise ValueError(f"--vms must be 1..{MAX_VMS} (the seed's pool .102-.126 holds {MAX_VMS}), got {value}")
    return value


def metadata_namespace(network_id: str, suffix: str) -> str:
    """The L3 agent's network-mode namespace of `network_id` on a host with [l3_agent] namespace_suffix `suffix`."""
    return f"{METADATA_NAMESPACE_PREFIX}{network_id}{suffix}"


def parse_mode(value: str) -> str:
    if value not in MODES:
        raise ValueError(f"--mode must be {' or '.join(MODES)}, got {value!r}")
    return value


def addr_gen_mode(vm_index: int) -> int:
    """VM 1, 3, ... make EUI-64 addresses; VM 2, 4, ... stable-privacy ones."""
    return ADDR_GEN_EUI64 if vm_index % 2 else ADDR_GEN_STABLE_PRIVACY


def eui64(prefix: str, mac: str) -> str:
    """The modified EUI-64 address of `mac` in the /64 `prefix` (RFC 4291 appendix A)."""
    octets = [int(x, 16) for x in mac.split(":")]
    if len(octets) != 6:
        raise ValueError(f"not a MAC: {mac!r}")
    octets[0] ^= 0x02
    iid = bytes(octets[:3] + [0xFF, 0xFE] + octets[3:])
    net = ipaddress.IPv6Network(prefix)
    return str(ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(iid, "big")))


def expected_routes(port_ip: str, metadata_hop: str = ROUTER_IP) -> list[tuple[str, str | None]]:
    """The seed's routing table in the VM (destination CIDR, gateway), sorted like `netns.ipv4_routes`.
    `metadata_hop`: router mode's gateway .2, or in network mode the network's metadata port's address."""
    net = ipaddress.ip_network(CIDR)
    for ip in (port_ip, metadata_hop):
        if ipaddress.ip_address(ip) not in net:
            raise ValueError(f"{ip} is not in {CIDR}")
    return sorted([("0.0.0.0/0", EXTERNAL_ROUTER_IP), ("169.254.169.254/32", metadata_hop), (CIDR, None)])


def route_table_text(routes: list[tuple[str, str | None, str]]) -> str:
    """Routes in the seed's `route -n` layout: Destination Gateway Genmask Flags Iface."""
    lines = [f"{'Destination':<16}{'Gateway':<12}{'Genmask':<17}{'Flags':<5}Iface"]
    for dst, gw, dev in sorted(routes, key=lambda r: (r[0] != "0.0.0.0/0", r[0])):
        net = ipaddress.ip_network(dst)
        flags = "U" + ("G" if gw else "") + ("H" if net.prefixlen == 32 else "")
        lines.append(f"{str(net.network_address):<16}{gw or '0.0.0.0':<12}{str(net.netmask):<17}{flags:<5}{dev}")
    return "\n".join(lines)
