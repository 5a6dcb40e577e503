# The neutron-style verbs for networks, subnets and ports (net-*, subnet-*, port-*), and registration of the rest.
from __future__ import annotations

import shlex
import uuid
from typing import Any

import click

from provnet.cli import agent_verbs, instance_verbs, router_verbs
from provnet.cli.lookup import find, find_id
from provnet.cli.neutron_args import (
    ArgError,
    merge_body,
    parse_address_pair,
    parse_allocation_pool,
    parse_fixed_ip,
    parse_host_route,
)
from provnet.cli.verbs import (
    admin_state_options,
    delete_all,
    emit_many,
    emit_one,
    list_filters,
    list_options,
    neutron_command,
    nothing_in,
    output_options,
    project_option,
    rows_for,
    tri_state,
    update_one,
)
from provnet.lab import plan
from provnet.model.errors import NotFound
from provnet.model.forms import list_columns
from provnet.registry.base import Registry

# the seed's two commands, as the lab runs them, shown in net-create's and subnet-create's help
SEED_NET = "provnet " + shlex.join(plan.SEED_NET)
SEED_SUBNET = "provnet " + shlex.join(plan.SEED_SUBNET)

# the default columns of the lists, as the attributes declare them (model/validation.py)
NET_COLUMNS = list_columns("network")
SUBNET_COLUMNS = list_columns("subnet")
PORT_COLUMNS = list_columns("port")


def resolve_network_filter(registry: Registry, filters: dict[str, list[str]]) -> dict[str, list[str]]:
    """`--network_id NAME` in a -list verb's filters: names become ids, as everywhere else."""
    if "network_id" in filters:
        filters["network_id"] = [find_id(registry, "network", v) for v in filters["network_id"]]
    return filters


# ---------------------------------------------------------------------------------------------- networks


def register_networks(group: click.Group) -> None:
    @neutron_command(group, "net-create", "NAME", kind="network",
                     epilog=f"\b\nThe seed's external flat network:\n  {SEED_NET}\n"
                     "A VLAN provider network:\n  provnet net-create vlan100 --provider:network_type vlan "
                     "--provider:physical_network physnet1 --provider:segmentation_id 100")
    @click.option("--provider:network_type", "network_type", metavar="TYPE",
                  help="flat, vlan, vxlan, gre or local.")
    @click.option("--provider:physical_network", "physical_network", metavar="PHYSNET",
                  help="Physical network (a key of bridge_mappings), for flat and vlan.")
    @click.option("--provider:segmentation_id", "segmentation_id", type=int, metavar="ID",
                  help="VLAN id 1..4094 (vlan only).")
    @click.option("--shared", is_flag=True, help="Share the network with every project.")
    @click.option("--admin-state-down", is_flag=True, help="Create it administratively down.")
    @project_option
    @output_options
    def net_create(app, args, extras, network_type, physical_network, segmentation_id, shared,
                   admin_state_down, project_id, fmt, columns) -> None:
        """Create a network NAME.

        A provider network needs --provider:network_type (flat needs a physical network; vlan a physical
        network and a segmentation id). `--router:external` (or `--router:external=True`) marks it external,
        as an operator's externally routed network is.
        """
        body: dict[str, Any] = {"name": args[0]}
        if network_type is not None:
            body["provider:network_type"] = network_type
        if physical_network is not None:
            body["provider:physical_network"] = physical_network
        if segmentation_id is not None:
            body["provider:segmentation_id"] = segmentation_id
        if shared:
            body["shared"] = True
        if admin_state_down:
            body["admin_state_up"] = False
        if project_id:
            body["project_id"] = project_id
        net = app.registry.create_network(merge_body(body, extras))
        emit_one(net.to_api(), fmt, columns, "Created a new network:")

    @neutron_command(group, "net-list", "", kind="network", epilog="\b\nExamples:\n  provnet net-list\n"
                     "  provnet net-list --router:external True -f json")
    @list_options
    def net_list(app, args, extras, show_details, fmt, columns) -> None:
        """List networks; pass-through options are filters (`--name phy_net`, `--shared True`).

        The subnets column shows each subnet's id and CIDR.
        """
        registry: Registry = app.registry
        nets = registry.list_networks(list_filters(extras) or None)
        rows, cols = rows_for(nets, NET_COLUMNS, show_details)
        if fmt not in ("json", "yaml") and not show_details:  # machine formats keep the API's subnet ids
            cidrs = {s.id: s.cidr for s in registry.list_subnets()} if nets else {}
            for row in rows:
                row["subnets"] = [f"{sid} {cidrs.get(sid, '')}".strip() for sid in row["subnets"]]
        emit_many(rows, cols, fmt, columns, nothing_in(app, "networks"))

    @neutron_command(group, "net-show", "NETWORK", kind="network", extras=False,
                     epilog="\b\nExample:\n  provnet net-show phy_net -f value -c id")
    @output_options
    def net_show(app, args, extras, fmt, columns) -> None:
        """Show a network, by name or id."""
        emit_one(find(app.registry, "network", args[0]).to_api(), fmt, columns)

    @neutron_command(group, "net-update", "NETWORK", kind="network",
                     epilog="\b\nExamples:\n  provnet net-update phy_net --name physical\n"
                     "  provnet net-update phy_net -- --shared=True")
    @click.option("--name", help="New name.")
    @admin_state_options
    @output_options
    def net_update(app, args, extras, name, up, down, fmt, columns) -> None:
        """Update a network's attributes (provider attributes are fixed at creation, as in Neutron)."""
        body: dict[str, Any] = {} if name is None else {"name": name}
        net = update_one(app, "network", args[0], body, extras, up, down)
        emit_one(net.to_api(), fmt, columns, f"Updated network: {args[0]}")

    @neutron_command(group, "net-delete", "NETWORK...", extras=False,
                     epilog="\b\nExample (the VLAN network of net-create's example):\n  provnet net-delete vlan100")
    def net_delete(app, args, extras) -> None:
        """Delete networks, by name or id (refused while ports other than router/DHCP ports remain)."""
        delete_all(app, "network", args)


# ---------------------------------------------------------------------------------------------- subnets


def subnet_options(fn: Any) -> Any:
    """Options shared by subnet-create and subnet-update."""
    for decorator in reversed([
        click.option("--name", help="Subnet name."),
        click.option("--gateway", "gateway_ip", metavar="GATEWAY_IP",
                     help="Gateway address (default: the first host). May lie outside the CIDR."),
        click.option("--no-gateway", is_flag=True, help="No gateway (gateway_ip null)."),
        click.option("--allocation-pool", "pools", multiple=True, metavar="start=IP,end=IP",
                     help="An allocation pool (repeatable). Default: the whole range minus the gateway."),
        click.option("--host-route", "routes", multiple=True, metavar="destination=CIDR,nexthop=IP",
                     help="A static route handed to VMs (DHCP option 121/249, network_data.json); repeatable."),
        click.option("--dns-nameserver", "dns", multiple=True, metavar="IP",
                     help="A DNS server for VMs (repeatable, at most 5)."),
        click.option("--enable-dhcp", is_flag=True, help="provnet's DHCP serves this subnet (the default)."),
        click.option("--disable-dhcp", is_flag=True, help="Addresses come from elsewhere (an external DHCP)."),
    ]):
        fn = decorator(fn)
    return fn


def subnet_body(name: str | None, gateway_ip: str | None, no_gateway: bool, pools: tuple[str, ...],
                routes: tuple[str, ...], dns: tuple[str, ...], enable_dhcp: bool,
                disable_dhcp: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if gateway_ip is not None and no_gateway:
        raise ArgError("give --gateway or --no-gateway, not both")
    if gateway_ip is not None:
        body["gateway_ip"] = gateway_ip
    if no_gateway:
        body["gateway_ip"] = None
    if pools:
        body["allocation_pools"] = [parse_allocation_pool(p) for p in pools]
    if routes:
        body["host_routes"] = [parse_host_route(r) for r in routes]
    if dns:
        body["dns_nameservers"] = list(dns)
    dhcp = tri_state(enable_dhcp, disable_dhcp, "--enable-dhcp/--disable-dhcp")
    if dhcp is not None:
        body["enable_dhcp"] = dhcp
    return body


def register_subnets(group: click.Group) -> None:
    @neutron_command(group, "subnet-create", "NETWORK CIDR", kind="subnet",
                     epilog=f"\b\nThe seed's subnet (addresses from an external DHCP server):\n  {SEED_SUBNET}")
    @subnet_options
    @click.option("--ip-version", type=click.Choice(["4", "6"]), default="4", show_default=True,
                  help="IP version of CIDR.")
    @project_option
    @output_options
    def subnet_create(app, args, extras, name, gateway_ip, no_gateway, pools, routes, dns, enable_dhcp,
                      disable_dhcp, ip_version, project_id, fmt, columns) -> None:
        """Create a subnet CIDR on NETWORK (name or id).

        A CIDR with host bits set is normalised (172.16.1.101/24 -> 172.16.1.0/24).
        """
        body = subnet_body(name, gateway_ip, no_gateway, pools, routes, dns, enable_dhcp, disable_dhcp)
        body["network_id"] = find_id(app.registry, "network", args[0])
        body["cidr"] = args[1]
        body["ip_version"] = int(ip_version)
        if project_id:
            body["project_id"] = project_id
        subnet = app.registry.create_subnet(merge_body(body, extras))
        emit_one(subnet.to_api(), fmt, columns, "Created a new subnet:")

    @neutron_command(group, "subnet-list", "", kind="subnet",
                     epilog="\b\nExample:\n  provnet subnet-list --network_id phy_net")
    @list_options
    def subnet_list(app, args, extras, show_details, fmt, columns) -> None:
        """List subnets; pass-through options are filters (`--network_id NET`, `--enable_dhcp False`)."""
        filters = resolve_network_filter(app.registry, list_filters(extras))
        rows, cols = rows_for(app.registry.list_subnets(filters or None), SUBNET_COLUMNS, show_details)
        emit_many(rows, cols, fmt, columns, nothing_in(app, "subnets"))

    @neutron_command(group, "subnet-show", "SUBNET", kind="subnet", extras=False,
                     epilog="\b\nExample:\n  provnet subnet-show phy_subnet_without_dhcp")
    @output_options
    def subnet_show(app, args, extras, fmt, columns) -> None:
        """Show a subnet, by name or id."""
        emit_one(find(app.registry, "subnet", args[0]).to_api(), fmt, columns)

    @neutron_command(group, "subnet-update", "SUBNET", kind="subnet",
                     epilog="\b\nExample (metadata via the router port, the rest via the external router):\n"
                     "  provnet subnet-update phy_subnet_without_dhcp \\\n"
                     "    --host-route destination=169.254.169.254/32,nexthop=172.16.1.2 \\\n"
                     "    --host-route destination=0.0.0.0/0,nexthop=172.16.1.1")
    @subnet_options
    @click.option("--no-host-routes", is_flag=True, help="Remove every host route.")
    @click.option("--no-dns-nameservers", is_flag=True, help="Remove every DNS server.")
    @output_options
    def subnet_update(app, args, extras, name, gateway_ip, no_gateway, pools, routes, dns, enable_dhcp,
                      disable_dhcp, no_host_routes, no_dns_nameservers, fmt, columns) -> None:
        """Update a subnet. --host-route, --dns-nameserver and --allocation-pool replace the whole list."""
        body = subnet_body(name, gateway_ip, no_gateway, pools, routes, dns, enable_dhcp, disable_dhcp)
        if no_host_routes:
            if routes:
                raise ArgError("give --host-route or --no-host-routes, not both")
            body["host_routes"] = []
        if no_dns_nameservers:
            if dns:
                raise ArgError("give --dns-nameserver or --no-dns-nameservers, not both")
            body["dns_nameservers"] = []
        subnet = update_one(app, "subnet", args[0], body, extras)
        emit_one(subnet.to_api(), fmt, columns, f"Updated subnet: {args[0]}")

    @neutron_command(group, "subnet-delete", "SUBNET...", extras=False)
    def subnet_delete(app, args, extras) -> None:
        """Delete subnets, by name or id (refused while ports hold addresses from them)."""
        delete_all(app, "subnet", args)


# ---------------------------------------------------------------------------------------------- ports


def fixed_ips_body(registry: Registry, specs: tuple[str, ...]) -> list[dict[str, str]]:
    """--fixed-ip values with subnet names resolved to ids."""
    out = []
    for spec in specs:
        ip = parse_fixed_ip(spec)
        if ip.get("subnet_id"):
            ip["subnet_id"] = find_id(registry, "subnet", ip["subnet_id"])
        out.append(ip)
    return out


def port_options(fn: Any) -> Any:
    """Options shared by port-create and port-update."""
    for decorator in reversed([
        click.option("--name", help="Port name."),
        click.option("--fixed-ip", "fixed_ips", multiple=True, metavar="[subnet_id=SUBNET,]ip_address=IP",
                     help="Address to hold (repeatable); subnet by name or id. Default: one from the pools."),
        click.option("--device-id", help="Owning device: the instance uuid (or router id)."),
        click.option("--device-owner", help="Owner kind, e.g. compute:nova or network:router_interface."),
        click.option("--binding:host_id", "host_id", metavar="HOST",
                     help="Host to bind the port on (needs a live Open vSwitch agent there)."),
        click.option("--vnic-type", type=click.Choice(["normal", "direct", "macvtap", "baremetal",
                                                       "direct-physical"]),
                     help="binding:vnic_type."),
        click.option("--security-group", "security_groups", multiple=True, metavar="SG",
                     help="Security group id (repeatable)."),
        click.option("--no-security-groups", is_flag=True, help="No security groups."),
        click.option("--allowed-address-pair", "pairs", multiple=True, metavar="ip_address=IP[,mac_address=MAC]",
                     help="Extra address the port may send from (repeatable)."),
    ]):
        fn = decorator(fn)
    return fn


def port_body(registry: Registry, name: str | None, fixed_ips: tuple[str, ...], device_id: str | None,
              device_owner: str | None, host_id: str | None, vnic_type: str | None,
              security_groups: tuple[str, ...], no_security_groups: bool,
              pairs: tuple[str, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in (("name", name), ("device_id", device_id), ("device_owner", device_owner),
                       ("binding:host_id", host_id), ("binding:vnic_type", vnic_type)):
        if value is not None:
            body[key] = value
    if security_groups and no_security_groups:
        raise ArgError("give --security-group or --no-security-groups, not both")
    if security_groups:
        body["security_groups"] = list(security_groups)
    if no_security_groups:
        body["security_groups"] = []
    if pairs:
        body["allowed_address_pairs"] = [parse_address_pair(p) for p in pairs]
    if fixed_ips:
        body["fixed_ips"] = fixed_ips_body(registry, fixed_ips)
    return body


def warn_unknown_instance(registry: Registry, port: Any) -> None:
    """A VM's port whose device_id names no instance gets 404 from the metadata service: say so on stderr (the
    port is kept: the instance may be created next)."""
    owner = port.device_owner or ""
    if not port.device_id or owner.startswith("network:") or (owner and not owner.startswith("compute:")):
        return
    try:
        registry.get_instance(port.device_id)
        return
    except NotFound:
        pass
    try:
        uuid.UUID(port.device_id)
    except ValueError:
        click.echo(f"Warning: device_id {port.device_id!r} is not an instance uuid, so the metadata service answers "
                   f"this port's VM with 404. Set the instance's uuid (`provnet instance-list` shows them): "
                   f"provnet port-update {port.id} --device-id UUID", err=True)
        return
    click.echo(f"Warning: no instance has uuid {port.device_id}: until one does, the metadata service answers this "
               f"port's VM with 404 (`provnet instance-create NAME --id {port.device_id}` makes it).", err=True)


def register_ports(group: click.Group) -> None:
    @neutron_command(group, "port-create", "NETWORK", kind="port",
                     epilog="\b\nExample (a VM's port with a fixed address, bound on host compute1):\n"
                     "  provnet port-create phy_net --fixed-ip ip_address=172.16.1.104 \\\n"
                     "    --device-id 6c0bd7a0-b3ea-4f77-a67b-1b4fd0a3f1b2 --device-owner compute:nova \\\n"
                     "    --binding:host_id compute1 --name vm1-port2")
    @port_options
    @click.option("--mac-address", metavar="MAC", help="MAC address (default fa:16:3e:xx:xx:xx, random).")
    @click.option("--admin-state-down", is_flag=True, help="Create it administratively down.")
    @project_option
    @output_options
    def port_create(app, args, extras, name, fixed_ips, device_id, device_owner, host_id, vnic_type,
                    security_groups, no_security_groups, pairs, mac_address, admin_state_down, project_id,
                    fmt, columns) -> None:
        """Create a port on NETWORK (name or id)."""
        registry: Registry = app.registry
        body = port_body(registry, name, fixed_ips, device_id, device_owner, host_id, vnic_type,
                         security_groups, no_security_groups, pairs)
        body["network_id"] = find_id(registry, "network", args[0])
        if mac_address is not None:
            body["mac_address"] = mac_address
        if admin_state_down:
            body["admin_state_up"] = False
        if project_id:
            body["project_id"] = project_id
        port = registry.create_port(merge_body(body, extras))
        emit_one(port.to_api(), fmt, columns, "Created a new port:")
        warn_unknown_instance(registry, port)

    @neutron_command(group, "port-list", "", kind="port",
                     epilog="\b\nExamples:\n  provnet port-list --fixed_ips ip_address=172.16.1.103\n"
                     "  provnet port-list --network_id phy_net --device_owner network:router_interface")
    @list_options
    def port_list(app, args, extras, show_details, fmt, columns) -> None:
        """List ports; pass-through options are filters (`--device_id ID`, `--fixed_ips ip_address=IP`)."""
        filters = resolve_network_filter(app.registry, list_filters(extras))
        rows, cols = rows_for(app.registry.list_ports(filters or None), PORT_COLUMNS, show_details)
        emit_many(rows, cols, fmt, columns, nothing_in(app, "ports"))

    @neutron_command(group, "port-show", "PORT", kind="port", extras=False,
                     epilog="\b\nExample:\n  provnet port-show vm1-port -c binding:vif_type -f value")
    @output_options
    def port_show(app, args, extras, fmt, columns) -> None:
        """Show a port, by name or id."""
        emit_one(find(app.registry, "port", args[0]).to_api(), fmt, columns)

    @neutron_command(group, "port-update", "PORT", kind="port",
                     epilog="\b\nExample:\n  provnet port-update vm1-port --binding:host_id compute2")
    @port_options
    @click.option("--no-fixed-ips", is_flag=True, help="Release every address.")
    @admin_state_options
    @output_options
    def port_update(app, args, extras, name, fixed_ips, device_id, device_owner, host_id, vnic_type,
                    security_groups, no_security_groups, pairs, no_fixed_ips, up, down, fmt, columns) -> None:
        """Update a port. --fixed-ip replaces the whole list of addresses."""
        registry: Registry = app.registry
        body = port_body(registry, name, fixed_ips, device_id, device_owner, host_id, vnic_type,
                         security_groups, no_security_groups, pairs)
        if no_fixed_ips:
            if fixed_ips:
                raise ArgError("give --fixed-ip or --no-fixed-ips, not both")
            body["fixed_ips"] = []
        port = update_one(app, "port", args[0], body, extras, up, down)
        emit_one(port.to_api(), fmt, columns, f"Updated port: {args[0]}")
        if "device_id" in body or "device_id" in extras:
            warn_unknown_instance(registry, port)

    @neutron_command(group, "port-delete", "PORT...", extras=False)
    def port_delete(app, args, extras) -> None:
        """Delete ports, by name or id (their addresses return to the pools)."""
        delete_all(app, "port", args)


def register(group: click.Group) -> None:
    """Add the neutron-style resource verbs to the `provnet` group."""
    register_networks(group)
    register_subnets(group)
    register_ports(group)
    router_verbs.register(group)
    instance_verbs.register(group)
    agent_verbs.register(group)
