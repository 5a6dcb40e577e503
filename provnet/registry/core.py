# Neutron's rules over a Store: allocation, router interfaces, port security, binding, retries. No SQL here.
from __future__ import annotations

import copy
import ipaddress
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from provnet import binding
from provnet.model import ipam
from provnet.model.errors import (
    AddressPairAndPortSecurityRequired,
    AgentNotFound,
    BadRequest,
    Conflict,
    HTTPBadRequest,
    InstanceExists,
    InstanceNotFound,
    InvalidInput,
    IpAddressAlreadyAllocated,
    IpAddressGenerationFailure,
    MacAddressGenerationFailure,
    MacAddressInUse,
    NetworkInUse,
    NetworkNotFound,
    PortInUse,
    PortNotFound,
    PortSecurityPortHasSecurityGroup,
    RevisionNumberConstraintFailed,
    RouterInterfaceNotFound,
    RouterInterfaceNotFoundForSubnet,
    RouterInUse,
    RouterNotFound,
    ServicePortInUse,
    SubnetInUse,
    SubnetNotFound,
)
from provnet.model.forms import FORMS
from provnet.model.metadata_mode import DEFAULT_MODE, address_lookups, check_mode, network_mode_applies
from provnet.model.network_rules import PROVIDER_KEYS, allocate_segment, check_segment, in_use_error, parse_vlan_ranges
from provnet.model.resources import (
    L3_AGENT_TYPE,
    METADATA_PORT_OWNER,
    PORT_STATUSES,
    ROUTER_INTERFACE_OWNERS,
    Agent,
    FixedIP,
    Instance,
    Network,
    Port,
    Router,
    Subnet,
    metadata_device_id,
)
from provnet.model.subnet_rules import build_subnet, updated_subnet
from provnet.model.validation import Invalid, check_json, hostname_from_name, parse_create, parse_update, to_boolean
from provnet.registry.base import Clock, Filters, Page, ReservationRow, utc_now
from provnet.registry.changes import ChangeBatch
from provnet.registry.store import LostRace, Store, Tx

T = TypeVar("T")
DHCP_OWNER = "network:dhcp"
ROUTER_INTERFACE = "network:router_interface"
AUTO_DELETE_OWNERS = (DHCP_OWNER, METADATA_PORT_OWNER, *ROUTER_INTERFACE_OWNERS)  # removed with their network
SUBNET_SERVICE_OWNERS = (DHCP_OWNER, METADATA_PORT_OWNER)  # their addresses do not keep a subnet from going
METADATA_DEVICE_PREFIX = metadata_device_id("")
WRITE_ATTEMPTS = 12
MAC_DRAWS = 16  # draws of a random MAC (and rounds of checks against the store) before giving up
# the NotFound of each kind, from an id
NOT_FOUND: dict[str, Callable[[str], Exception]] = {
    "network": lambda i: NetworkNotFound(net_id=i), "subnet": lambda i: SubnetNotFound(subnet_id=i),
    "port": lambda i: PortNotFound(port_id=i), "router": lambda i: RouterNotFound(router_id=i),
    "agent": lambda i: AgentNotFound(id=i), "instance": lambda i: InstanceNotFound(instance_id=i)}


def _new_id() -> str:
    return str(uuid.uuid4())


class NeutronRegistry:
    """The Registry (base.py): Neutron's plugin rules, each write one transaction of `store`, retried when it
    lost a race. Timestamps and agent liveness read `clock` (tests inject one)."""

    def __init__(self, store: Store, agent_down_time: float = 75.0, flat_networks: Sequence[str] = ("*",),
                 network_vlan_ranges: Sequence[str] = (), report_interval: float = 30.0,
                 clock: Clock = utc_now, metadata_mode: str = DEFAULT_MODE) -> None:
        self.store = store
        self.metadata_mode = check_mode(metadata_mode)  # [metadata] mode: when networks get a metadata port
        self.clock = clock
        self.agent_down_time = agent_down_time
        self.report_interval = report_interval
        self.flat_networks = tuple(flat_networks)
        self.vlan_ranges = parse_vlan_ranges(network_vlan_ranges)
        self._rng = random.Random()  # seeded from os.urandom: processes draw differently; no secret here
        self.write_retries = 0  # lost races retried (observable in tests and benchmarks)

    # ---- transactions: the retry policy ------------------------------------------------------------------------

    def _write(self, fn: Callable[[Tx], T], exhausted: Callable[[], Exception] | None = None,
               changed: Callable[[T], bool] | None = None) -> T:
        """`fn` in one write transaction, tried again (after a short random pause) when it lost a race.

        A NeutronError from `fn` rolls everything back. After WRITE_ATTEMPTS races, `exhausted()` (or a
        generic Conflict) is raised: 409, nothing written."""
        race = LostRace()
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return self.store.write(fn, changed)
            except LostRace as lost:
                race = lost
                self._lost_race(attempt)
        if exhausted is not None and race.what != "mac_address":
            raise exhausted()
        what = {"mac_address": "a MAC address", "ip_address": "an IP address"}.get(race.what, "a unique value")
        raise Conflict(message=f"The request conflicted with concurrent changes ({what} was taken "
                               f"{WRITE_ATTEMPTS} times in a row); try it again.")

    def _lost_race(self, attempt: int) -> None:
        self.write_retries += 1
        time.sleep(self._rng.uniform(0, 0.002 * (attempt + 1)))

    def _read(self, fn: Callable[[Tx], T]) -> T:
        with self.store.read() as tx:
            return fn(tx)

    def _list(self, kind: str, filters: Filters | None, page: Page | None) -> list[Any]:
        """One list, sorted and cut by the store when paged; a marker naming nothing is the kind's NotFound."""
        found = self._read(lambda tx: tx.list(kind, filters, page))
        if found is None:
            raise NOT_FOUND[kind](page.marker if page and page.marker else "")
        return found

    def _stamp(self, obj: Any, now: datetime | None = None) -> Any:
        """A new resource's standard attributes: created and updated now, revision 1."""
        obj.created_at = obj.updated_at = now or self.clock()
        obj.revision_number = 1
        return obj

    def _bump(self, obj: Any, if_revision: int | None = None) -> None:
        """An update of `obj`: the If-Match revision it was constrained to must hold; then updated now, revision+1."""
        if if_revision is not None and obj.revision_number != if_revision:
            raise RevisionNumberConstraintFailed(expected=if_revision, current=obj.revision_number)
        obj.updated_at = self.clock()
        obj.revision_number += 1

    @staticmethod
    def _storable(name: str, value: T) -> T:
        try:
            return check_json(value)
        except Invalid as exc:
            raise InvalidInput(error_message=f"{name}: {exc}") from None

    # ---- the store's own answers -------------------------------------------------------------------------------

    def revision(self) -> int:
        return self.store.revision()

    def changes_since(self, after: int, limit: int = 1000) -> ChangeBatch:
        return self.store.changes_since(after, limit)

    def wait_changes(self, after: int, timeout: float, limit: int = 1000) -> ChangeBatch:
        return self.store.wait_changes(after, timeout, limit)

    def wake_waiters(self) -> None:
        self.store.wake_waiters()

    def close(self) -> None:
        self.store.close()

    def router_network_ids(self, router_id: str) -> list[str]:
        return self.store.router_network_ids(router_id, ROUTER_INTERFACE_OWNERS)

    def find_ports_by_ip(self, ip_address: str, network_ids: Sequence[str]) -> list[Port]:
        return self.store.find_ports_by_ip(ip_address, network_ids) if network_ids else []

    def reservation_rows(self, network_ids: Sequence[str], port_ids: Sequence[str] | None = None
                         ) -> list[ReservationRow]:
        return self.store.reservation_rows(network_ids, port_ids)

    def find_ports_by_mac(self, mac_address: str, network_ids: Sequence[str] | None = None) -> list[Port]:
        ports = self.store.find_ports_by_mac(mac_address.lower())
        return ports if network_ids is None else [port for port in ports if port.network_id in network_ids]

    # ---- lookups that raise Neutron's NotFound -----------------------------------------------------------------

    @staticmethod
    def _network(tx: Tx, network_id: str, lock: bool = False) -> Network:
        found = tx.network(network_id, lock)
        if found is None:
            raise NetworkNotFound(net_id=network_id)
        return found

    @staticmethod
    def _subnet(tx: Tx, subnet_id: str) -> Subnet:
        found = tx.subnet(subnet_id)
        if found is None:
            raise SubnetNotFound(subnet_id=subnet_id)
        return found

    @staticmethod
    def _port(tx: Tx, port_id: str) -> Port:
        found = tx.port(port_id)
        if found is None:
            raise PortNotFound(port_id=port_id)
        return found

    @staticmethod
    def _router(tx: Tx, router_id: str, lock: bool = False) -> Router:
        found = tx.router(router_id, lock)
        if found is None:
            raise RouterNotFound(router_id=router_id)
        return found

    @staticmethod
    def _agent(tx: Tx, agent_id: str) -> Agent:
        found = tx.agents(agent_id=agent_id)
        if not found:
            raise AgentNotFound(id=agent_id)
        return found[0]

    @staticmethod
    def _instance(tx: Tx, instance_id: str) -> Instance:
        found = tx.instance(instance_id)
        if found is None:
            raise InstanceNotFound(instance_id=instance_id)
        return found

    # ---- bulk --------------------------------------------------------------------------------------------------

    def create_many(self, kind: str, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Create every item in ONE transaction (Neutron's bulk create): all of them, or, when one fails,
        none and the revision unchanged. Every body is validated before anything is written."""
        steps: dict[str, tuple[Callable[[Mapping[str, Any]], Any], Callable[[Tx, Any], Any]]] = {
            "network": (self._prepare_network, self._insert_network),
            "subnet": (lambda attrs: parse_create("subnet", attrs), self._insert_subnet),
            "port": (lambda attrs: self._refuse_reserved(parse_create("port", attrs)), self._create_port),
            "router": (lambda attrs: parse_create("router", attrs), self._insert_router),
        }
        if kind not in steps:
            raise ValueError(f"bulk create of {kind!r}: only {', '.join(steps)} are supported")
        prepare, insert = steps[kind]
        prepared = [prepare(attrs) for attrs in items]
        if not prepared:
            return []
        if kind == "port":
            return self._write(lambda tx: self._create_ports(tx, prepared))
        return self._write(lambda tx: [insert(tx, p) for p in prepared])

    def _create_ports(self, tx: Tx, cleans: Sequence[Mapping[str, Any]]) -> list[Port]:
        """A bulk of ports in one transaction: each network read once, and the random MACs drawn distinct from
        each other, from the bulk's requested ones and from the network's ports (one query per 500), so a bulk
        of 20,000 does not trip the unique constraint on its own draws (12 expected clashes, every attempt)."""
        networks: dict[str, tuple[Network, list[Subnet]]] = {}
        for network_id in {c["network_id"] for c in cleans}:
            found = tx.network_and_subnets(network_id)
            if found is None:
                raise NetworkNotFound(net_id=network_id)
            networks[network_id] = found
        macs: dict[int, str] = {}
        for network_id in networks:
            indexes = [i for i, c in enumerate(cleans) if c["network_id"] == network_id and c["mac_address"] is None]
            used = {c["mac_address"] for c in cleans if c["network_id"] == network_id and c["mac_address"]}
            for _round in range(MAC_DRAWS):
                if not indexes:
                    break
                drawn: dict[str, int] = {}
                for i in indexes:
                    for _draw in range(MAC_DRAWS):
                        mac = ipam.random_mac(self._rng)
                        if mac not in used and mac not in drawn:
                            break
                    else:
                        raise MacAddressGenerationFailure(net_id=network_id)
                    drawn[mac] = i
                taken = tx.macs_taken(network_id, list(drawn))
                indexes = [i for mac, i in drawn.items() if mac in taken]
                for mac, i in drawn.items():
                    if mac not in taken:
                        macs[i] = mac
                        used.add(mac)
            if indexes:
                raise MacAddressGenerationFailure(net_id=network_id)
        out: dict[int, Port] = {}
        common: dict[str, list[int]] = {}  # network id -> the bulk's automatic, unbound ports on it
        for i, clean in enumerate(cleans):
            if clean["fixed_ips"] is None and not clean["binding:host_id"]:
                common.setdefault(clean["network_id"], []).append(i)
            else:  # first, so the batch below sees the addresses these asked for
                out[i] = self._create_port(tx, clean, networks[clean["network_id"]], macs.get(i))
        now = self.clock()
        for network_id, indexes in common.items():
            network, subnets = networks[network_id]
            addresses = self._auto_ips(tx, subnets, len(indexes))
            if len(addresses) < len(indexes):
                raise IpAddressGenerationFailure(net_id=network_id)
            ports = []
            for i, fixed in zip(indexes, addresses, strict=True):
                port = self._new_port(network_id, network.port_security_enabled, cleans[i])
                port.mac_address = macs.get(i) or self._mac(tx, network_id, cleans[i]["mac_address"])
                port.fixed_ips = [fixed]
                port.binding_vif_type, port.binding_vif_details, port.binding_failure_reason = "unbound", {}, None
                ports.append(port)
                out[i] = port
            # creation order kept within the one instant of the bulk (lists sort by creation time, then id)
            for n, port in enumerate(ports):
                self._stamp(port, now + timedelta(microseconds=n))
            tx.insert_ports(ports)
            for port in ports:
                tx.note_port("create", port)
        return [out[i] for i in range(len(cleans))]

    def _auto_ips(self, tx: Tx, subnets: Sequence[Subnet], count: int) -> list[FixedIP]:
        """Up to `count` automatic addresses at once, from the first subnets (IPv4 first) with room: random
        draws checked in batches, then the exhaustive way for what is left (a nearly full pool)."""
        out: list[FixedIP] = []
        for subnet in sorted(subnets, key=lambda s: s.ip_version):
            need = count - len(out)
            if need <= 0:
                break
            probes = ipam.probe_addresses(subnet, self._rng, need + need // 4 + ipam.PROBES)
            taken = tx.taken(subnet.id, probes)
            chosen = [ip for ip in probes if ip not in taken][:need]
            if len(chosen) < need:
                used = tx.used_ips(subnet.id) | set(chosen)
                chosen += ipam.free_candidates(subnet, used, limit=need - len(chosen))
            out += [FixedIP(subnet.id, ip) for ip in chosen]
        return out

    # ---- networks ----------------------------------------------------------------------------------------------

    def _prepare_network(self, attrs: Mapping[str, Any]) -> tuple[dict, Any]:
        clean = parse_create("network", attrs)
        return clean, check_segment(clean, self.flat_networks, self.vlan_ranges)

    def _insert_network(self, tx: Tx, prepared: tuple[dict, Any]) -> Network:
        clean, seg = prepared
        if seg is not None:
            used = tx.segment_keys()
            seg = allocate_segment(seg, self.vlan_ranges, used)
            if seg.key is not None and seg.key in used:
                raise in_use_error(seg)
        net = Network(id=_new_id(), status="ACTIVE")
        FORMS["network"].apply(net, clean, skip=PROVIDER_KEYS)
        if seg is not None:
            net.network_type, net.physical_network = seg.network_type, seg.physical_network
            net.segmentation_id = seg.segmentation_id
        tx.insert("network", self._stamp(net), segment_key=seg.key if seg else None)
        tx.note("network", net.id, "create", net.id)
        return net

    def create_network(self, attrs: Mapping[str, Any]) -> Network:
        prepared = self._prepare_network(attrs)
        return self._write(lambda tx: self._insert_network(tx, prepared))

    def get_network(self, network_id: str) -> Network:
        return self._read(lambda tx: self._network(tx, network_id))

    def list_networks(self, filters: Filters | None = None, page: Page | None = None) -> list[Network]:
        return self._list("network", filters, page)

    def update_network(self, network_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Network:
        changes = parse_update("network", attrs)

        def tx_(tx: Tx) -> Network:
            net = self._network(tx, network_id)
            current = FORMS["network"].dump(net)
            for key in PROVIDER_KEYS:
                if key in changes and changes[key] != current[key]:
                    raise InvalidInput(error_message="Plugin does not support updating provider attributes")
            FORMS["network"].apply(net, changes)
            self._bump(net, if_revision)
            tx.update("network", net)
            tx.note("network", network_id, "update", network_id)
            return net

        return self._write(tx_)

    def delete_network(self, network_id: str) -> None:
        def tx_(tx: Tx) -> None:
            self._network(tx, network_id)
            if tx.network_has_ports(network_id, AUTO_DELETE_OWNERS):
                raise NetworkInUse(net_id=network_id)
            for port in tx.ports_of_network(network_id):
                tx.note_port("delete", port)
            for subnet in tx.network_subnets(network_id):
                tx.note("subnet", subnet.id, "delete", network_id)
            tx.note("network", network_id, "delete", network_id)
            tx.delete_network_contents(network_id)
            tx.delete("network", network_id)

        self._write(tx_)

    # ---- subnets -----------------------------------------------------------------------------------------------

    def _insert_subnet(self, tx: Tx, clean: Mapping[str, Any]) -> Subnet:
        # lock the network row: two concurrent creates cannot both pass the overlap check
        self._network(tx, clean["network_id"], lock=True)
        subnet = self._stamp(build_subnet(_new_id(), clean, tx.network_subnets(clean["network_id"])))
        tx.insert("subnet", subnet)
        tx.touch("network", subnet.network_id, subnet.updated_at)  # its subnets changed
        tx.note("subnet", subnet.id, "create", subnet.network_id)
        self._sync_metadata_port(tx, subnet.network_id)
        return subnet

    def create_subnet(self, attrs: Mapping[str, Any]) -> Subnet:
        clean = parse_create("subnet", attrs)
        return self._write(lambda tx: self._insert_subnet(tx, clean))

    def get_subnet(self, subnet_id: str) -> Subnet:
        return self._read(lambda tx: self._subnet(tx, subnet_id))

    def list_subnets(self, filters: Filters | None = None, page: Page | None = None) -> list[Subnet]:
        return self._list("subnet", filters, page)

    def update_subnet(self, subnet_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Subnet:
        changes = parse_update("subnet", attrs)

        def tx_(tx: Tx) -> Subnet:
            current = self._subnet(tx, subnet_id)
            self._network(tx, current.network_id, lock=True)  # the network first, as every metadata port change
            subnet = updated_subnet(current, changes)
            self._bump(subnet, if_revision)
            tx.update("subnet", subnet)
            tx.note("subnet", subnet_id, "update", subnet.network_id)
            # in auto mode who holds the gateway decides the subnet's mode; any update also repairs a missing
            # metadata port (doctor's metadata.port-missing fix)
            self._sync_metadata_port(tx, subnet.network_id)
            return subnet

        return self._write(tx_)

    def delete_subnet(self, subnet_id: str) -> None:
        def tx_(tx: Tx) -> None:
            subnet = self._subnet(tx, subnet_id)
            self._network(tx, subnet.network_id, lock=True)  # against a concurrent subnet create's metadata port
            if tx.subnet_has_allocations(subnet_id, SUBNET_SERVICE_OWNERS):
                raise SubnetInUse(subnet_id=subnet_id)
            now = self.clock()
            for port in tx.ports_on_subnet(subnet_id):  # DHCP and metadata ports lose their address
                tx.note_port("update", port)
                tx.touch("port", port.id, now)
            tx.note("subnet", subnet_id, "delete", subnet.network_id)
            tx.touch("network", subnet.network_id, now)
            tx.delete_subnet_allocations(subnet_id)
            tx.delete("subnet", subnet_id)
            self._sync_metadata_port(tx, subnet.network_id)

        self._write(tx_)

    # ---- ports: allocation -------------------------------------------------------------------------------------

    def _auto_ip(self, tx: Tx, subnet: Subnet, exclude: set[str]) -> str | None:
        """A free pool address: random probes checked in one indexed query, else the exhaustive way (ipam)."""
        probes = [ip for ip in ipam.probe_addresses(subnet, self._rng) if ip not in exclude]
        if probes:
            taken = tx.taken(subnet.id, probes)
            free = [ip for ip in probes if ip not in taken]
            if free:
                return self._rng.choice(free)
        return ipam.pick_ip(subnet, tx.used_ips(subnet.id) | exclude, self._rng)

    def _allocate(self, tx: Tx, network: Network, subnets: list[Subnet], requests: list[dict] | None,
                  keep: Sequence[FixedIP] = ()) -> list[FixedIP]:
        """Fixed IPs for a port: `requests` None is automatic (one address from the first subnet with room);
        otherwise each entry names a subnet, an address or both. `keep` are the port's current addresses."""
        by_id = {s.id: s for s in subnets}
        if requests is None:
            for subnet in sorted(subnets, key=lambda s: s.ip_version):
                ip = self._auto_ip(tx, subnet, set())
                if ip is not None:
                    return [FixedIP(subnet.id, ip)]
            if subnets:
                raise IpAddressGenerationFailure(net_id=network.id)
            return []
        out: list[FixedIP] = []
        kept = list(keep)
        for req in requests:
            if "subnet_id" in req:
                named = by_id.get(req["subnet_id"])
                if named is None:
                    raise InvalidInput(error_message=f"Failed to create port on network {network.id}, because "
                                                     f"fixed_ips included invalid subnet {req['subnet_id']}")
                subnet = named
            else:
                subnet = ipam.subnet_for_ip(subnets, req["ip_address"])
            if "ip_address" in req:
                ip = ipam.check_requested_ip(subnet, req["ip_address"])
                fixed = FixedIP(subnet.id, ip)
                if fixed in out:
                    raise IpAddressAlreadyAllocated(ip=ip, subnet_id=subnet.id)
                if fixed not in kept and tx.ip_taken(subnet.id, ip):
                    raise IpAddressAlreadyAllocated(ip=ip, subnet_id=subnet.id)
                out.append(fixed)
                continue
            reuse = next((f for f in kept if f.subnet_id == subnet.id and f not in out
                          and f not in [FixedIP(subnet.id, r.get("ip_address", "")) for r in requests]), None)
            if reuse is not None:
                out.append(reuse)
                continue
            ip = self._auto_ip(tx, subnet, {f.ip_address for f in out if f.subnet_id == subnet.id})
            if ip is None:
                raise IpAddressGenerationFailure(net_id=network.id)
            out.append(FixedIP(subnet.id, ip))
        return out

    def _mac(self, tx: Tx, network_id: str, requested: str | None, current: str | None = None) -> str:
        if requested is not None:
            if requested != current and network_id in tx.mac_networks(requested):
                raise MacAddressInUse(net_id=network_id, mac=requested)
            return requested
        # a random MAC is not checked first: a clash (1 in 16M per port) trips the unique constraint, and
        # _write retries the whole transaction with a new draw
        return ipam.random_mac(self._rng)

    # ---- ports: binding and port security ----------------------------------------------------------------------

    def _bind(self, tx: Tx, port: Port, network: Network) -> None:
        """Bind `port` in place when ML2 would (a host named, unbound or failed before)."""
        if not port.binding_host_id:
            port.binding_vif_type, port.binding_vif_details, port.binding_failure_reason = "unbound", {}, None
            return
        if not binding.needs_binding(port):
            return
        agents = tx.agents(host=port.binding_host_id)
        result = binding.bind_port(port, network, agents, agent_down_time=self.agent_down_time,
                                   report_interval=self.report_interval, now=self.clock())
        port.binding_vif_type = result.vif_type
        port.binding_vif_details = dict(result.vif_details)
        port.status = result.status
        port.binding_failure_reason = result.failure_reason

    @staticmethod
    def _check_port_security(port: Port) -> None:
        if not port.port_security_enabled:
            if port.security_groups:
                raise PortSecurityPortHasSecurityGroup()
            if port.allowed_address_pairs:
                raise AddressPairAndPortSecurityRequired()

    def _new_port(self, network_id: str, network_port_security: bool, clean: Mapping[str, Any]) -> Port:
        """The port a create asks for, before its MAC, addresses and binding are decided."""
        port = Port(id=_new_id(), network_id=network_id, mac_address="", status="DOWN")
        FORMS["port"].apply(port, clean, skip=("mac_address", "fixed_ips", "port_security_enabled"))
        port.port_security_enabled = (network_port_security if clean["port_security_enabled"] is None
                                      else clean["port_security_enabled"])
        self._check_port_security(port)
        return port

    # ---- ports -------------------------------------------------------------------------------------------------

    def _create_port(self, tx: Tx, clean: Mapping[str, Any],
                     found: tuple[Network, list[Subnet]] | None = None, drawn_mac: str | None = None) -> Port:
        """One port in `tx`; `found`: its network and subnets, already read; `drawn_mac`: a random MAC already
        checked free on the network."""
        found = found or tx.network_and_subnets(clean["network_id"])
        if found is None:
            raise NetworkNotFound(net_id=clean["network_id"])
        network, subnets = found
        port = self._new_port(network.id, network.port_security_enabled, clean)
        port.mac_address = drawn_mac or self._mac(tx, network.id, clean["mac_address"])
        port.fixed_ips = self._allocate(tx, network, subnets, clean["fixed_ips"])
        self._bind(tx, port, network)
        tx.insert("port", self._stamp(port))
        tx.set_allocations(port, replace=False)
        tx.note_port("create", port)
        return port

    def _create_port_one_statement(self, clean: Mapping[str, Any]) -> Port | None:
        """The common create (automatic address, random MAC, no binding) where the store can do it in one
        statement against a plan it caches per network (PostgreSQL). None: take the general path (not eligible,
        the plan is stale, every probe taken, or the network went away: the general path reads afresh)."""
        store: Any = self.store
        if not getattr(store, "one_statement_creates", False):
            return None
        if clean.get("fixed_ips") is not None or clean.get("mac_address") is not None or clean.get("binding:host_id"):
            return None
        network_id = clean["network_id"]
        for attempt in range(WRITE_ATTEMPTS):
            plan = store.port_plan(network_id)
            if plan is None:
                return None
            probes = ipam.probe_addresses(plan.subnet, self._rng)
            if not probes:
                return None
            port = self._new_port(network_id, plan.port_security_enabled, clean)
            port.mac_address = ipam.random_mac(self._rng)
            port.binding_vif_type, port.binding_vif_details, port.binding_failure_reason = "unbound", {}, None
            try:
                ip = store.insert_planned_port(self._stamp(port), plan, probes)
            except LostRace:
                self._lost_race(attempt)
                continue
            if ip is None:
                return None
            port.fixed_ips = [FixedIP(plan.subnet.id, ip)]
            return port
        return None

    def create_port(self, attrs: Mapping[str, Any]) -> Port:
        clean = self._refuse_reserved(parse_create("port", attrs))
        port = self._create_port_one_statement(clean)
        if port is not None:
            return port
        return self._write(lambda tx: self._create_port(tx, clean),
                           exhausted=lambda: IpAddressGenerationFailure(net_id=clean["network_id"]))

    def get_port(self, port_id: str) -> Port:
        return self._read(lambda tx: self._port(tx, port_id))

    def list_ports(self, filters: Filters | None = None, page: Page | None = None) -> list[Port]:
        return self._list("port", filters, page)

    def update_port(self, port_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Port:
        changes = parse_update("port", attrs)

        self._refuse_reserved(changes)

        def tx_(tx: Tx) -> Port:
            port = self._port(tx, port_id)
            before = copy.deepcopy(port)
            network = self._network(tx, port.network_id, lock=self._is_service_port(port))
            self._check_metadata_port_update(tx, port, changes)
            FORMS["port"].apply(port, changes, skip=("mac_address", "fixed_ips", "binding:host_id"))
            self._check_port_security(port)
            if "mac_address" in changes:
                port.mac_address = self._mac(tx, port.network_id, changes["mac_address"], port.mac_address)
            if "fixed_ips" in changes:
                port.fixed_ips = self._allocate(tx, network, tx.network_subnets(network.id), changes["fixed_ips"],
                                                keep=port.fixed_ips)
                tx.set_allocations(port)
            if "binding:host_id" in changes and changes["binding:host_id"] != port.binding_host_id:
                port.binding_host_id = changes["binding:host_id"]
                port.binding_vif_type, port.binding_vif_details, port.status = "unbound", {}, "DOWN"
            self._bind(tx, port, network)
            if not port.admin_state_up:  # up again when its agent says so (update_port_status)
                port.status = "DOWN"
            self._bump(port, if_revision)
            tx.update("port", port)
            tx.note_port("update", before, port)
            if self._is_service_port(before) or self._is_service_port(port):
                self._sync_metadata_port(tx, port.network_id)
            return port

        return self._write(tx_, exhausted=lambda: Conflict(
            message=f"Port {port_id} could not be updated: concurrent changes took its addresses; try again."))

    def delete_port(self, port_id: str) -> None:
        def tx_(tx: Tx) -> None:
            port = self._port(tx, port_id)
            if port.is_router_interface:
                raise ServicePortInUse(port_id=port_id, reason=f"has device owner {port.device_owner}")
            metadata = port.device_id == metadata_device_id(port.network_id)
            if metadata:
                self._network(tx, port.network_id, lock=True)
                self._refuse_metadata_port_delete(tx, port)
            tx.note_port("delete", port)
            tx.delete("port", port_id)
            if metadata:
                self._routes_changed(tx, port.network_id)

        self._write(tx_)

    def update_port_status(self, port_id: str, status: str, host: str = "") -> Port:
        """ML2's update_port_status, for the L2 agent on `host`: its device is up (ACTIVE) or gone (DOWN).

        A port bound to another host is left as it is (the report comes from where the port is not wired, e.g.
        a host the VM left); ACTIVE on a port whose admin_state_up is False is DOWN. A report that changes
        nothing writes nothing (no revision, no change in the feed).
        """
        if status not in PORT_STATUSES:
            raise InvalidInput(error_message=f"port status {status!r} is not one of {', '.join(PORT_STATUSES)}")

        def tx_(tx: Tx) -> tuple[Port, bool]:
            port = self._port(tx, port_id)
            if host and port.binding_host_id and port.binding_host_id != host:
                return port, False
            wanted = "DOWN" if status == "ACTIVE" and not port.admin_state_up else status
            if wanted == port.status:
                return port, False
            before = copy.deepcopy(port)
            port.status = wanted
            self._bump(port)
            tx.update("port", port)
            tx.note_port("update", before, port)
            return port, True

        return self._write(tx_, changed=lambda result: result[1])[0]

    # ---- the metadata port: network mode ([metadata] mode; the pure rules are provnet/model/metadata_mode.py) ---

    @staticmethod
    def _is_service_port(port: Port) -> bool:
        """A port the network's metadata route depends on: a router interface or the metadata port."""
        return port.is_router_interface or port.device_owner == METADATA_PORT_OWNER

    @staticmethod
    def _refuse_reserved(clean: Mapping[str, Any]) -> Mapping[str, Any]:
        device_id = clean.get("device_id")
        if isinstance(device_id, str) and device_id.startswith(METADATA_DEVICE_PREFIX):
            raise InvalidInput(error_message=f"device_id {device_id!r}: device ids starting with "
                                             f"{METADATA_DEVICE_PREFIX!r} are reserved for the metadata ports "
                                             "provnet makes itself")
        return clean

    @staticmethod
    def _service_ports(tx: Tx, network_id: str, subnets: Sequence[Subnet]) -> list[Port]:
        """The network's metadata port and the router interfaces holding its subnets' gateways (indexed reads:
        the port by its device id, the interfaces by address)."""
        ports: list[Port] = tx.list("port", {"device_id": [metadata_device_id(network_id)]}) or []
        lookups = address_lookups(subnets)
        if lookups:
            held = tx.list("port", {"fixed_ips": lookups, "network_id": [network_id]}) or []
            ports += [p for p in held if p.is_router_interface]
        return ports

    def _routes_changed(self, tx: Tx, network_id: str) -> None:
        """Every subnet of the network is noted as updated: its VMs' route to 169.254.169.254 may have changed,
        and DHCP views and metadata caches keyed on subnets re-read it."""
        for subnet in tx.network_subnets(network_id):
            tx.note("subnet", subnet.id, "update", network_id)

    def _sync_metadata_port(self, tx: Tx, network_id: str) -> None:
        """Make the network's metadata port what [metadata] mode and the network's subnets say (the caller holds
        the network's row lock, so concurrent subnet creates make one port):

        - no subnet left: the port goes;
        - a port: it holds one address on each IPv4 subnet (a new subnet's from its pool; on a subnet in router
          mode only when one is free); it is kept while the network has subnets, also when a router interface
          now holds a gateway (auto mode), because VMs keep the route of their current lease until they renew;
        - no port: it is made when network mode applies to one of the subnets (never in router mode), with an
          address on each IPv4 subnet. A subnet in network mode whose pool has no free address fails the whole
          write, with its reason."""
        subnets = tx.network_subnets(network_id)
        ports = self._service_ports(tx, network_id, subnets)
        port = next((p for p in ports if p.device_id == metadata_device_id(network_id)), None)
        if not subnets:
            if port is not None:
                tx.note_port("delete", port)
                tx.delete("port", port.id)
            return
        if self.metadata_mode == "router":  # a port left from another mode stays until deleted by hand; routes
            return  # never go to it, so nothing a cache holds changed
        self._routes_changed(tx, network_id)
        if port is None and not any(network_mode_applies(self.metadata_mode, s, ports) for s in subnets):
            return
        held = {f.subnet_id for f in port.fixed_ips} if port is not None else set()
        fixed = []
        for subnet in subnets:
            if subnet.ip_version == 4 and subnet.id not in held:
                ip = self._metadata_address(tx, subnet, network_id,
                                            required=network_mode_applies(self.metadata_mode, subnet, ports))
                if ip is not None:
                    fixed.append(FixedIP(subnet.id, ip))
        if port is None:
            network = self._network(tx, network_id)
            self._create_port(tx, parse_create("port", {
                "network_id": network_id, "project_id": network.project_id, "name": "metadata",
                "device_owner": METADATA_PORT_OWNER, "device_id": metadata_device_id(network_id),
                "port_security_enabled": False,
                "fixed_ips": [{"subnet_id": f.subnet_id, "ip_address": f.ip_address} for f in fixed]}),
                (network, subnets))
        elif fixed:
            before = copy.deepcopy(port)
            port.fixed_ips += fixed
            self._bump(port)
            tx.update("port", port)
            tx.set_allocations(port)
            tx.note_port("update", before, port)

    def _metadata_address(self, tx: Tx, subnet: Subnet, network_id: str, required: bool) -> str | None:
        """The pool's first free address, for the metadata port on `subnet` (predictable, as Neutron's DHCP port:
        an operator who hands out fixed IPs by hand knows which one is taken): required where the subnet is in
        network mode (its VMs' route needs it), else taken when one is free (a later switch needs none then)."""
        free = ipam.free_candidates(subnet, tx.used_ips(subnet.id), limit=1)
        ip = free[0] if free else None
        if ip is None and required:
            raise IpAddressGenerationFailure(message=(
                f"No free address in the allocation pool of subnet {subnet.name or subnet.id} ({subnet.cidr}) "
                f"for the metadata port of network {network_id}: network mode ([metadata] mode = "
                f"{self.metadata_mode}) needs one. Free an address or widen the pool (subnet-update "
                "--allocation-pool), or set [metadata] mode = router."))
        return ip

    def _network_mode_subnets(self, tx: Tx, network_id: str) -> list[Subnet]:
        subnets = tx.network_subnets(network_id)
        ports = self._service_ports(tx, network_id, subnets)
        return [s for s in subnets if network_mode_applies(self.metadata_mode, s, ports)]

    def _refuse_metadata_port_delete(self, tx: Tx, port: Port) -> None:
        """The metadata port may go by hand only while no subnet of its network is in network mode."""
        held = self._network_mode_subnets(tx, port.network_id)
        if held:
            names = ", ".join(s.name or s.id for s in held)
            raise ServicePortInUse(port_id=port.id, reason=(
                f"it is the metadata port of network {port.network_id}, whose subnet(s) {names} are in network "
                f"mode ([metadata] mode = {self.metadata_mode}): their VMs route 169.254.169.254 via it. It goes "
                "with the network's last subnet"))

    def _check_metadata_port_update(self, tx: Tx, port: Port, changes: Mapping[str, Any]) -> None:
        """The metadata port keeps its owner and device, and one address on each IPv4 subnet."""
        if port.device_id != metadata_device_id(port.network_id):
            return
        for key in ("device_owner", "device_id"):
            if key in changes and changes[key] != getattr(port, key):
                raise Conflict(message=f"Port {port.id} is the metadata port of network {port.network_id}: its "
                                       f"{key} cannot change (it goes with the network's last subnet).")
        if "fixed_ips" in changes:
            requests = changes["fixed_ips"] or []
            for subnet in tx.network_subnets(port.network_id):
                if subnet.ip_version != 4:
                    continue
                named = [r for r in requests if r.get("subnet_id") == subnet.id
                         or ("subnet_id" not in r and "ip_address" in r and ipaddress.ip_address(r["ip_address"])
                             in subnet.network)]
                if len(named) != 1:
                    raise Conflict(message=(
                        f"Port {port.id} is the metadata port of network {port.network_id}: it needs exactly one "
                        f"address on each IPv4 subnet, and the update gives it {len(named)} on subnet "
                        f"{subnet.name or subnet.id} ({subnet.cidr})."))

    # ---- routers -----------------------------------------------------------------------------------------------

    def _insert_router(self, tx: Tx, clean: Mapping[str, Any]) -> Router:
        router = Router(id=_new_id(), status="ACTIVE")
        FORMS["router"].apply(router, clean)
        tx.insert("router", self._stamp(router))
        tx.note("router", router.id, "create")
        return router

    def create_router(self, attrs: Mapping[str, Any]) -> Router:
        clean = parse_create("router", attrs)
        return self._write(lambda tx: self._insert_router(tx, clean))

    def get_router(self, router_id: str) -> Router:
        return self._read(lambda tx: self._router(tx, router_id))

    def list_routers(self, filters: Filters | None = None, page: Page | None = None) -> list[Router]:
        return self._list("router", filters, page)

    def update_router(self, router_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Router:
        changes = parse_update("router", attrs)

        def tx_(tx: Tx) -> Router:
            router = self._router(tx, router_id)
            FORMS["router"].apply(router, changes)
            self._bump(router, if_revision)
            tx.update("router", router)
            tx.note("router", router_id, "update")
            return router

        return self._write(tx_)

    def delete_router(self, router_id: str) -> None:
        def tx_(tx: Tx) -> None:
            self._router(tx, router_id, lock=True)
            if tx.interface_ports(router_id, ROUTER_INTERFACE_OWNERS):
                raise RouterInUse(router_id=router_id, reason="still has ports")
            tx.note("router", router_id, "delete")
            tx.l3_forget_router(router_id)
            tx.delete("router", router_id)

        self._write(tx_)

    @staticmethod
    def _interface_body(router: Router, port: Port, subnet_id: str | None = None) -> dict:
        subnet_ids = [f.subnet_id for f in port.fixed_ips]
        return {"id": router.id, "tenant_id": router.project_id, "project_id": router.project_id,
                "port_id": port.id, "network_id": port.network_id,
                "subnet_id": subnet_id or (subnet_ids[0] if subnet_ids else None), "subnet_ids": subnet_ids}

    def _check_interface_subnets(self, tx: Tx, router: Router, subnets: Sequence[Subnet]) -> None:
        existing = tx.interface_ports(router.id, ROUTER_INTERFACE_OWNERS)
        held = [self._subnet(tx, f.subnet_id) for p in existing for f in p.fixed_ips]
        for subnet in subnets:
            for other in held:
                if other.id == subnet.id:
                    raise BadRequest(resource="router", msg=f"Router already has a port on subnet {subnet.id}")
                if other.ip_version == subnet.ip_version and other.network.overlaps(subnet.network):
                    raise BadRequest(resource="router", msg=(
                        f"Cidr {subnet.cidr} of subnet {subnet.id} overlaps with cidr {other.cidr} of subnet "
                        f"{other.id}"))

    def add_router_interface(self, router_id: str, subnet_id: str | None = None,
                             port_id: str | None = None) -> dict:
        if subnet_id and port_id:
            raise BadRequest(resource="router", msg="Cannot specify both subnet-id and port-id")
        if not subnet_id and not port_id:
            raise BadRequest(resource="router", msg="Either subnet_id or port_id must be specified")

        def tx_(tx: Tx) -> dict:
            router = self._router(tx, router_id, lock=True)
            if port_id:
                port = self._port(tx, port_id)
                if port.device_id or port.device_owner:
                    raise PortInUse(port_id=port.id, net_id=port.network_id, device_id=port.device_id)
                self._network(tx, port.network_id, lock=True)
                if not port.fixed_ips:
                    raise BadRequest(resource="router", msg="Router port must have at least one fixed IP")
                self._check_interface_subnets(tx, router, [self._subnet(tx, f.subnet_id) for f in port.fixed_ips])
                after = copy.copy(port)
                after.device_id, after.device_owner = router.id, ROUTER_INTERFACE
                self._bump(after)
                tx.update("port", after)
                tx.touch("router", router.id, after.updated_at)
                tx.note_port("update", port, after)
                tx.note("router", router.id, "update")
                tx.l3_schedule(router.id, self.clock(), self.agent_down_time)
                self._sync_metadata_port(tx, after.network_id)
                return self._interface_body(router, after)
            subnet = self._subnet(tx, subnet_id or "")
            if not subnet.gateway_ip:
                raise BadRequest(resource="router", msg="Subnet for router interface must have a gateway IP")
            self._network(tx, subnet.network_id, lock=True)
            self._check_interface_subnets(tx, router, [subnet])
            clean = parse_create("port", {
                "network_id": subnet.network_id, "project_id": router.project_id, "device_id": router.id,
                "device_owner": ROUTER_INTERFACE,
                "fixed_ips": [{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}]})
            port = self._create_port(tx, clean)
            tx.touch("router", router.id, port.updated_at)
            tx.note("router", router.id, "update")
            tx.l3_schedule(router.id, self.clock(), self.agent_down_time)
            self._sync_metadata_port(tx, port.network_id)
            return self._interface_body(router, port, subnet.id)

        return self._write(tx_)

    def remove_router_interface(self, router_id: str, subnet_id: str | None = None,
                                port_id: str | None = None) -> dict:
        if not subnet_id and not port_id:
            raise BadRequest(resource="router", msg="Either subnet_id or port_id must be specified")

        def tx_(tx: Tx) -> dict:
            router = self._router(tx, router_id)
            ports = tx.interface_ports(router_id, ROUTER_INTERFACE_OWNERS)
            if port_id:
                port = next((p for p in ports if p.id == port_id), None)
                if port is None:
                    raise RouterInterfaceNotFound(router_id=router_id, port_id=port_id)
                if subnet_id and subnet_id not in [f.subnet_id for f in port.fixed_ips]:
                    raise RouterInterfaceNotFoundForSubnet(router_id=router_id, subnet_id=subnet_id)
            else:
                self._subnet(tx, subnet_id or "")
                port = next((p for p in ports if subnet_id in [f.subnet_id for f in p.fixed_ips]), None)
                if port is None:
                    raise RouterInterfaceNotFoundForSubnet(router_id=router_id, subnet_id=subnet_id)
            body = self._interface_body(router, port, subnet_id)
            self._network(tx, port.network_id, lock=True)
            remaining = [f for f in port.fixed_ips if subnet_id and not port_id and f.subnet_id != subnet_id]
            tx.note("router", router_id, "update")
            tx.touch("router", router_id, self.clock())
            if remaining:
                before = copy.deepcopy(port)
                port.fixed_ips = remaining
                self._bump(port)
                tx.update("port", port)
                tx.set_allocations(port)
                tx.note_port("update", before, port)
            else:
                tx.note_port("delete", port)
                tx.delete("port", port.id)
            # in auto mode the subnet may be in network mode now: its metadata port is made (or kept) here, and
            # when it cannot get an address the interface stays (this transaction fails as a whole)
            self._sync_metadata_port(tx, port.network_id)
            return body

        return self._write(tx_)

    # ---- agents ------------------------------------------------------------------------------------------------

    def report_agent_state(self, host: str, agent_type: str, binary: str,
                           configurations: Mapping[str, Any]) -> Agent:
        for name, value in (("host", host), ("agent_type", agent_type), ("binary", binary)):
            if not isinstance(value, str) or not value or len(value) > 255:
                raise InvalidInput(error_message=f"{name} must be a non-empty string of at most 255 characters")
            self._storable(name, value)
        if not isinstance(configurations, Mapping):
            raise InvalidInput(error_message="configurations must be an object")
        configs = self._storable("configurations", dict(configurations))

        def tx_(tx: Tx) -> tuple[Agent, bool]:
            now = self.clock()
            found = tx.agents(host=host, agent_type=agent_type)
            if found:
                agent = found[0]
                revived = not agent.is_alive(self.agent_down_time, now)
                changed = revived or agent.binary != binary or agent.configurations != configs
                agent.binary, agent.configurations, agent.heartbeat_timestamp = binary, configs, now
                if revived:
                    agent.started_at = now
                tx.update("agent", agent)
                if changed:
                    tx.note("agent", agent.id, "update")
            else:
                agent = Agent(id=_new_id(), host=host, agent_type=agent_type, binary=binary, topic="N/A",
                              admin_state_up=True, configurations=configs, heartbeat_timestamp=now,
                              created_at=now, started_at=now)
                tx.insert("agent", agent)
                tx.note("agent", agent.id, "create")
                changed = True
            rebound = self._rebind_failed(tx, host)
            if agent_type == L3_AGENT_TYPE:  # the L3 agents' heartbeats drive router failover (no server timer)
                rebound = tx.l3_reschedule(now, self.agent_down_time) or rebound
            return agent, changed or rebound

        # a bare heartbeat (same agent, same configurations, no port re-bound) leaves the revision alone: caches
        # keyed on it (metadata agent, API, DHCP view) are not flushed every report_interval per agent
        return self._write(tx_, changed=lambda result: result[1])[0]

    def _rebind_failed(self, tx: Tx, host: str) -> bool:
        """ML2 retries a host's binding_failed ports when its agent reports. True: a port's binding changed."""
        networks: dict[str, Network] = {}
        changed = False
        for port in tx.failed_bindings(host, binding.VIF_TYPE_BINDING_FAILED):
            network = networks.get(port.network_id) or self._network(tx, port.network_id)
            networks[network.id] = network
            before = (port.binding_vif_type, port.binding_vif_details, port.status, port.binding_failure_reason)
            self._bind(tx, port, network)
            after = (port.binding_vif_type, port.binding_vif_details, port.status, port.binding_failure_reason)
            if after == before:
                continue
            changed = True
            self._bump(port)
            tx.note_port("update", port)
            tx.update("port", port)
        return changed

    def get_agent(self, agent_id: str) -> Agent:
        return self._read(lambda tx: self._agent(tx, agent_id))

    def list_agents(self, filters: Filters | None = None, page: Page | None = None) -> list[Agent]:
        filters = dict(filters or {})
        alive = filters.pop("alive", None)
        agents = self._list("agent", filters, page)
        if alive is not None:
            wanted = set()
            for value in alive if isinstance(alive, list | tuple) else [alive]:
                try:
                    wanted.add(to_boolean(value))
                except Invalid as exc:
                    raise HTTPBadRequest(msg=f"Invalid input for alive. Reason: {exc}.") from None
            now = self.clock()
            agents = [a for a in agents if a.is_alive(self.agent_down_time, now) in wanted]
        return agents

    def update_agent(self, agent_id: str, attrs: Mapping[str, Any]) -> Agent:
        changes = parse_update("agent", attrs)

        def tx_(tx: Tx) -> Agent:
            agent = self._agent(tx, agent_id)
            FORMS["agent"].apply(agent, changes)
            tx.update("agent", agent)
            tx.note("agent", agent_id, "update")
            return agent

        return self._write(tx_)

    def delete_agent(self, agent_id: str) -> None:
        def tx_(tx: Tx) -> None:
            tx.l3_forget_agent(agent_id)
            if not tx.delete("agent", agent_id):
                raise AgentNotFound(id=agent_id)
            tx.note("agent", agent_id, "delete")

        self._write(tx_)

    # ---- L3 agent scheduling (Neutron's l3_agent_scheduler: one L3 agent hosts each router) -------------------

    def list_routers_on_l3_agent(self, agent_id: str) -> list[Router]:
        def read(tx: Tx) -> list[Router]:
            self._agent(tx, agent_id)
            return tx.l3_routers_on_agent(agent_id)

        return self._read(read)

    def list_l3_agents_hosting_router(self, router_id: str) -> list[Agent]:
        def read(tx: Tx) -> list[Agent]:
            self._router(tx, router_id)
            return tx.l3_agents_hosting(router_id)

        return self._read(read)

    def add_router_to_l3_agent(self, agent_id: str, router_id: str) -> None:
        def tx_(tx: Tx) -> None:
            self._router(tx, router_id, lock=True)
            self._agent(tx, agent_id)
            tx.l3_add(agent_id, router_id)

        self._write(tx_)

    def remove_router_from_l3_agent(self, agent_id: str, router_id: str) -> None:
        def tx_(tx: Tx) -> None:
            self._router(tx, router_id, lock=True)
            self._agent(tx, agent_id)
            tx.l3_remove(agent_id, router_id)

        self._write(tx_)

    # ---- instances ---------------------------------------------------------------------------------------------

    def create_instance(self, attrs: Mapping[str, Any]) -> Instance:
        clean = parse_create("instance", attrs)
        clean["hostname"] = clean["hostname"] or hostname_from_name(clean["name"], clean["id"])

        def tx_(tx: Tx) -> Instance:
            if tx.instance(clean["id"]) is not None:
                raise InstanceExists(instance_id=clean["id"])
            instance = self._stamp(Instance(id=clean["id"]))
            FORMS["instance"].apply(instance, clean)
            tx.insert("instance", instance)
            tx.note("instance", instance.id, "create")
            return instance

        return self._write(tx_)

    def get_instance(self, instance_id: str) -> Instance:
        return self._read(lambda tx: self._instance(tx, instance_id))

    def list_instances(self, filters: Filters | None = None, page: Page | None = None) -> list[Instance]:
        return self._list("instance", filters, page)

    def update_instance(self, instance_id: str, attrs: Mapping[str, Any],
                        if_revision: int | None = None) -> Instance:
        changes = parse_update("instance", attrs)

        def tx_(tx: Tx) -> Instance:
            instance = self._instance(tx, instance_id)
            if "hostname" in changes and not changes["hostname"]:  # "" means: derive it from the name again
                changes["hostname"] = hostname_from_name(changes.get("name", instance.name), instance_id)
            FORMS["instance"].apply(instance, changes)
            self._bump(instance, if_revision)
            tx.update("instance", instance)
            tx.note("instance", instance_id, "update")
            return instance

        return self._write(tx_)

    def delete_instance(self, instance_id: str) -> None:
        def tx_(tx: Tx) -> None:
            if not tx.delete("instance", instance_id):
                raise InstanceNotFound(instance_id=instance_id)
            tx.note("instance", instance_id, "delete")

        self._write(tx_)

    def get_instance_password(self, instance_id: str) -> str | None:
        return self.get_instance(instance_id).password

    def set_instance_password(self, instance_id: str, password: str) -> None:
        if not isinstance(password, str):
            raise InvalidInput(error_message="password must be a string")
        self._storable("password", password)

        def tx_(tx: Tx) -> None:
            if not tx.set_password_once(instance_id, password):
                self._instance(tx, instance_id)  # 404 when it does not exist
                raise Conflict(message=f"The password of instance {instance_id} is already set.")
            tx.note("instance", instance_id, "update")

        self._write(tx_)


__all__ = ["NeutronRegistry"]
