# `provnet lab up`: the physical world of the seed in namespaces (hosts, switches, external router, DHCP server's
# host, controller), the commands docs/deploy.md gives an operator on each of them, the seed made through the API,
# and VMs plugged as Nova plugs them. Routers' namespaces, qr- devices, rules, firewall and proxies are the agents'.
# With --keystone, behind a real Keystone on the machine's loopback, reached from the namespaces through relays.
from __future__ import annotations

import base64
import functools
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provnet.dataplane import netns
from provnet.lab import check, clients, plan, supervisor, teardown
from provnet.lab import keystone as lab_keystone
from provnet.lab.api import ControllerApi
from provnet.lab.plan import Names
from provnet.lab.procs import Proc, is_running, spawn
from provnet.lab.state import Host, LabState, Vm, lab_dir, save
from provnet.lab.supervisor import Service
from provnet.model.resources import L3_AGENT_TYPE, METADATA_PORT_OWNER, OVS_AGENT_TYPE, metadata_device_id

Progress = Callable[[str], None]
MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL
TOOLS = ("ip", "iptables-restore", "curl", "busybox", "ss", "nsenter", "setpriv")


class LabError(RuntimeError):
    """A lab step failed; the message says which and where its log is."""


def provnet_argv() -> list[str]:
    """How to run this provnet: the console script beside this interpreter, else the interpreter itself."""
    script = Path(sys.executable).with_name("provnet")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "provnet.cli"]


def _conf(path: Path, sections: dict[str, dict[str, Any]], what: str) -> Path:
    lines = [f"# Written by `provnet lab up`: {what}."]
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def write_configs(root: Path, hosts: int, names: Names,
                  keystone: lab_keystone.LabKeystone | None = None, mode: str = "router") -> dict[str, Path]:
    """The lab's configuration files, one per machine, as docs/deploy.md writes them (a random shared secret,
    the controller at 10.0.0.10, short agent_down_time so a failover is quick to watch). With `keystone`, the
    controller's API validates tokens there ([keystone_authtoken]); without, it is noauth on the lab's own
    management network (noauth_allow_remote: only the lab's namespaces reach 10.0.0.10). `mode` is every
    machine's `[metadata] mode` (`lab up --mode`), said explicitly rather than left to `auto`: in router mode the
    registry then makes no metadata port, and the DHCP server's routes follow the same rule as the controller's."""
    secret = secrets.token_hex(16)
    common = {"metadata_proxy_shared_secret": secret, "agent_down_time": plan.AGENT_DOWN_TIME}
    auth: dict[str, dict[str, Any]] = {"DEFAULT": {"noauth_allow_remote": "true"}} if keystone is None else {
        "DEFAULT": {"auth_strategy": "keystone"}, "keystone_authtoken": keystone.authtoken()}
    ctl = root / "controller"
    ctl.mkdir(parents=True, exist_ok=True)
    out = {"controller": _conf(root / "controller" / "provnet.conf", {
        "DEFAULT": {"state_path": ctl, **common, "bind_host": plan.CONTROLLER_IP, "bind_port": plan.API_PORT,
                    "metadata_listen": plan.CONTROLLER_IP, "metadata_listen_port": plan.METADATA_API_PORT,
                    **auth["DEFAULT"]},
        "database": {"connection": f"sqlite:///{ctl}/provnet.sqlite"},
        "metadata": {"mode": mode},
        **{k: v for k, v in auth.items() if k != "DEFAULT"},
    }, "the controller (provnet serve)")}
    for i in range(1, hosts + 1):
        name = Names.host(i)
        state = root / "hosts" / name
        state.mkdir(parents=True, exist_ok=True)
        out[name] = _conf(state / "provnet.conf", {
            "DEFAULT": {"state_path": state, "host": name, **common, "nova_metadata_host": plan.CONTROLLER_IP,
                        "nova_metadata_port": plan.METADATA_API_PORT, "metadata_port": plan.METADATA_PORT},
            "ovs": {"bridge_mappings": f"{plan.PHYSNET}:{plan.BRIDGE}"},
            "agent": {"report_interval": plan.REPORT_INTERVAL},
            "l3_agent": {"namespace_suffix": names.namespace_suffix(i)},
            "metadata": {"mode": mode},
        }, f"{name} (provnet agent, provnet metadata-agent, provnet l3-agent)")
    dhcp = root / "dhcp"
    dhcp.mkdir(parents=True, exist_ok=True)
    out["dhcp"] = _conf(dhcp / "provnet.conf", {"DEFAULT": {"state_path": dhcp}, "metadata": {"mode": mode}},
                        "the DHCP server's host (provnet dhcp)")
    return out


class Builder:
    def __init__(self, state_path: str, vms: int, dhcp_client: str, progress: Progress, hosts: int = 2,
                 keystone: bool = False, mode: str = "router", ipv6: bool = False) -> None:
        self.state_path = state_path
        self.with_keystone = keystone
        self.keystone: lab_keystone.LabKeystone | None = None  # `lab up --keystone`: set by the identity step
        self.dir = lab_dir(state_path)
        self.vms = plan.parse_vms(vms)
        self.host_count = plan.parse_hosts(hosts)
        self.mode = plan.parse_mode(mode)
        self.ipv6 = ipv6
        if dhcp_client not in plan.DHCP_CLIENTS:
            raise ValueError(f"--dhcp-client must be one of {', '.join(plan.DHCP_CLIENTS)}, got {dhcp_client!r}")
        self.progress = progress
        self.names = Names("pn" + secrets.token_hex(3))
        self.state = LabState(suffix=self.names.suffix, dhcp_client=dhcp_client, controller=self.names.controller,
                              api_url=plan.api_url(), metadata_api_port=plan.METADATA_API_PORT, mode=self.mode,
                              ipv6=ipv6)
        self.confs: dict[str, Path] = {}
        self.api: ControllerApi | None = None
        longest = self.dir / "hosts" / Names.host(plan.MAX_HOSTS) / "metadata_proxy"
        if len(str(longest).encode()) > MAX_UNIX_PATH:
            raise ValueError(f"state path too long for unix sockets ({longest} is over {MAX_UNIX_PATH} bytes): "
                             "give a shorter --state-path")

    # ---- bookkeeping ----
    def _save(self) -> None:
        save(self.state_path, self.state)

    def _namespace(self, name: str) -> None:
        if name not in self.state.namespaces:
            self.state.namespaces.append(name)
            self._save()  # recorded before it exists: a crash right after still cleans it up
        netns.ensure_namespace(name)

    def service(self, name: str, argv: list[str], namespace: str | None, notify: bool = True,
                env: dict[str, str] | None = None) -> None:
        supervisor.request(self.dir, {"op": "add",
                                      "service": Service(name, argv, namespace, notify, env or {}).to_json()})

    def provnet(self, conf: Path, *verb: str) -> list[str]:
        return [*provnet_argv(), "--config-file", str(conf), *verb]

    def client(self) -> tuple[list[str], dict[str, str]]:
        """How a service reaches the controller's API: its URL, and with Keystone the service user's cloud from
        the lab's clouds.yaml (named by the environment: no password on a command line)."""
        if self.keystone is None:
            return ["--url", plan.api_url()], {}
        return (["--url", plan.api_url(), "--os-cloud", lab_keystone.SERVICE_CLOUD],
                {"OS_CLIENT_CONFIG_FILE": str(self.keystone.clouds)})

    # ---- steps ----
    def run(self) -> LabState:
        n = self.host_count
        keystone = self.with_keystone
        steps: list[tuple[str, Callable[[], None]]] = [
            ("clean up a previous lab", self.clean),
            *([("Keystone on 127.0.0.1 (scripts/keystone.sh): the lab's service user, clouds.yaml, the controller's "
                "API in the catalog as the `network` service", self.identity)] if keystone else []),
            ("configuration files (controller, hosts, DHCP server's host) and the DHCP client script", self.files),
            (f"the physical world: provider segment and management network, controller, {n} host(s) with "
             f"{plan.BRIDGE}, external router {plan.EXTERNAL_ROUTER_IP}"
             f"{' and ' + plan.EXTERNAL_ROUTER_IP6 if self.ipv6 else ''}, upstream {plan.UPSTREAM_IP}, the DHCP "
             "server's host", self.world),
            ("the lab's supervisor (every service below runs under it)", self.supervise),
            *([("relays to Keystone in the controller's, the hosts' and the DHCP server host's namespaces",
                self.relays)] if keystone else []),
            (f"controller: `provnet serve` (networking API {plan.api_url()}, metadata API "
             f"{plan.CONTROLLER_IP}:{plan.METADATA_API_PORT})", self.controller),
            ("each host: `provnet agent`, `provnet metadata-agent`, `provnet l3-agent` (docs/deploy.md)",
             self.agents),
            (f"the seed through the API: phy_net, its subnet{' and ' + plan.CIDR6 if self.ipv6 else ''}, "
             f"{'router1' if self.mode == 'router' else 'no router (network mode: the metadata port)'} and "
             f"{self.vms} instance(s) with ports", self.registry),
            (f"the DHCP server {plan.DHCP_SERVER_IP} on its host, the upstream web server"
             + (f", router advertisements of {plan.CIDR6} (dnsmasq, RA only) on the external router" if self.ipv6
                else ""), self.dhcp),
            (f"{self.vms} VM(s) plugged as Nova plugs them (tap devices on their hosts' bridges)", self.plug),
            *([("the router's L3 agent serving metadata", self.router)] if self.mode == "router" else
              [("each VM host's L3 agent serving metadata in provnet-meta-<phy_net> (network mode)",
                self.metadata_namespaces)]),
            (f"DHCP clients ({self.state.dhcp_client}) and leases", self.leases),
            *([("IPv6 addresses from the external router's advertisements (EUI-64 and stable privacy)",
                self.addresses6)] if self.ipv6 else []),
        ]
        try:
            for i, (title, step) in enumerate(steps, 1):
                started = time.monotonic()
                self.progress(f"[{i}/{len(steps)}] {title}")
                try:
                    step()
                except LabError:
                    raise
                except Exception as exc:  # netlink, the API, a tool: name the step, keep the tool's words
                    raise LabError(f"step {i} ({title}): {type(exc).__name__}: {exc}") from exc
                self.progress(f"      done in {time.monotonic() - started:.1f}s")
        finally:
            if self.api is not None:
                self.api.close()
        self.state.complete = True
        self._save()
        return self.state

    def clean(self) -> None:
        removed = teardown.down(self.state_path, self.progress)
        if not removed:
            self.progress("      nothing left from an earlier lab")
        self.dir.mkdir(parents=True, exist_ok=True)
        # start from an empty directory: no store, socket or lease from an earlier lab can be mistaken for ours
        for path in self.dir.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        for sub in ("logs", "leases", "user-data", "www"):
            (self.dir / sub).mkdir()
        self._save()

    def identity(self) -> None:
        """Keystone on the machine's loopback (its gunicorn master a lab process, stopped by `lab down`), the
        service user the agents and the DHCP server run as, the admin the lab's own API calls use."""
        self.keystone, master = lab_keystone.start(self.dir)
        self.state.processes.append(master)
        self.state.keystone_port = self.keystone.port
        self._save()
        self.keystone.admin.ensure_endpoint("network", "neutron", plan.api_url())

    def relays(self) -> None:
        """Keystone listens on the machine's 127.0.0.1 only: a socat relay in each namespace whose services talk
        to it (token validation on the controller, tokens for the hosts' agents and the DHCP server) answers at the
        same URL there, through a unix socket; no address or route is added anywhere."""
        assert self.keystone is not None
        port = self.keystone.port
        outside, inside = lab_keystone.relay_argv(self.dir, port)
        self.service("keystone-relay", outside, None, notify=False)
        where = [("controller", self.names.controller), *((h.name, h.namespace) for h in self.state.hosts),
                 ("dhcp", self.names.dhcp)]
        for label, ns in where:
            self.service(f"{label}-keystone-relay", inside, ns, notify=False)
        for label, ns in where:
            self._wait(functools.partial(_listening, ns, "tcp", port), None, f"the Keystone relay in {label}", 20,
                       log=self.dir / "logs" / f"{label}-keystone-relay.log")

    def files(self) -> None:
        self.confs = write_configs(self.dir, self.host_count, self.names, self.keystone, self.mode)
        for i in range(1, self.host_count + 1):
            name = Names.host(i)
            self.state.hosts.append(Host(name, self.names.host_ns(i), plan.host_mgmt_ip(i),
                                         self.names.namespace_suffix(i), str(self.dir / "hosts" / name)))
        clients.write_client_files(self.dir)
        (self.dir / "www" / "index.html").write_text("upstream ok: you came through the external router\n")
        self._save()

    def world(self) -> None:
        sw = self.names.switch
        self._namespace(sw)
        netns.ensure_bridge(sw, plan.PROVIDER_SWITCH)
        netns.ensure_bridge(sw, plan.MGMT_SWITCH)
        # the controller, on the management network only
        ctl = self.names.controller
        self._namespace(ctl)
        self._cable(ctl, "eth0", self.names.controller_mgmt, plan.MGMT_SWITCH)
        netns.ensure_address(ctl, "eth0", plan.CONTROLLER_IP, 24)
        # the hosts: management on eth0, the provider bridge with its uplink eth1 to the provider segment
        for i, host in enumerate(self.state.hosts, 1):
            self._namespace(host.namespace)
            self._cable(host.namespace, "eth0", self.names.host_mgmt(i), plan.MGMT_SWITCH)
            netns.ensure_address(host.namespace, "eth0", host.mgmt_ip, 24)
            netns.ensure_bridge(host.namespace, plan.BRIDGE)
            self._cable(host.namespace, "eth1", self.names.host_uplink(i), plan.PROVIDER_SWITCH)
            netns.attach_to_bridge(host.namespace, "eth1", plan.BRIDGE)
        # the external router (forwards between the segment and the upstream network) and a host behind it
        ext, up = self.names.external, self.names.upstream
        self._namespace(ext)
        self._cable(ext, "eth0", self.names.external_port, plan.PROVIDER_SWITCH)
        netns.ensure_address(ext, "eth0", plan.EXTERNAL_ROUTER_IP, 24)
        netns.set_sysctl(ext, "net.ipv4.ip_forward", "1")
        if self.ipv6:  # a router on IPv6 too: it advertises the prefix (dnsmasq, in the dhcp step)
            netns.set_sysctl(ext, "net.ipv6.conf.all.forwarding", "1")
            _ip(ext, "-6", "addr", "add", f"{plan.EXTERNAL_ROUTER_IP6}/64", "dev", "eth0", "nodad")
        self._namespace(up)
        netns.ensure_veth(ext, "upstream0", up, "eth0")
        netns.ensure_address(ext, "upstream0", plan.UPSTREAM_ROUTER_IP, 24)
        netns.ensure_address(up, "eth0", plan.UPSTREAM_IP, 24)
        netns.ensure_route(up, "0.0.0.0/0", plan.UPSTREAM_ROUTER_IP)
        # the DHCP server's host: on the segment at .99, and on the management network to reach the API
        dhcp = self.names.dhcp
        self._namespace(dhcp)
        self._cable(dhcp, "eth0", self.names.dhcp_port, plan.PROVIDER_SWITCH)
        netns.ensure_address(dhcp, "eth0", plan.DHCP_SERVER_IP, 24)
        self._cable(dhcp, "eth1", self.names.dhcp_mgmt, plan.MGMT_SWITCH)
        netns.ensure_address(dhcp, "eth1", plan.DHCP_HOST_MGMT_IP, 24)

    def _cable(self, namespace: str, ifname: str, switch_port: str, switch: str) -> None:
        netns.ensure_veth(self.names.switch, switch_port, namespace, ifname)
        netns.attach_to_bridge(self.names.switch, switch_port, switch)

    def supervise(self) -> None:
        proc = spawn("supervisor", [sys.executable, "-m", "provnet.lab.supervisor", str(self.dir)],
                     self.dir / "logs")
        self.state.processes.append(proc)
        self._save()
        self._wait(lambda: (self.dir / supervisor.CONTROL).exists(), proc, "the lab's supervisor", 30)

    def controller(self) -> None:
        self.service("controller-serve", self.provnet(self.confs["controller"], "serve"), self.names.controller)
        self.api = ControllerApi.for_lab(self.state_path, self.state)
        self._wait_service("controller-serve")
        self._wait(lambda: _answers(self.api), None, "the networking API", 30)

    def agents(self) -> None:
        url, env = self.client()
        for host in self.state.hosts:
            conf = self.confs[host.name]
            for verb in ("agent", "metadata-agent", "l3-agent"):
                self.service(f"{host.name}-{verb}", [*self.provnet(conf, *url, verb)], host.namespace, env=env)
        for host in self.state.hosts:
            for verb in ("agent", "metadata-agent", "l3-agent"):
                self._wait_service(f"{host.name}-{verb}")
        api = self.api
        assert api is not None
        want = {(h.name, t) for h in self.state.hosts for t in (OVS_AGENT_TYPE, L3_AGENT_TYPE)}
        self._wait(lambda: want <= {(a.host, a.agent_type) for a in api.list_agents({"alive": ["true"]})}, None,
                   "every host's L2 and L3 agent reporting", 60)
        self.progress(f"      agents alive: {len(want)} ({', '.join(sorted(h.name for h in self.state.hosts))})")

    def _api(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        self.progress(f"  API: {what}")
        return fn(*args)

    def registry(self) -> None:
        api = self.api
        assert api is not None
        net = self._api(f"create network phy_net (the seed's `{' '.join(plan.SEED_NET)}`)", api.create_network,
                        plan.SEED_NETWORK_BODY)
        self.state.network_id = net.id
        if self.mode == "router":
            subnet = self._api(f"create subnet phy_subnet_without_dhcp (`{' '.join(plan.SEED_SUBNET)}`)",
                               api.create_subnet, {**plan.SEED_SUBNET_BODY, "network_id": net.id})
            self._api(f"add the host route 0.0.0.0/0 via {plan.EXTERNAL_ROUTER_IP}", api.update_subnet, subnet.id,
                      plan.SEED_HOST_ROUTES)
        else:
            self._api(f"create subnet phy_subnet_without_dhcp, its gateway the external router "
                      f"{plan.EXTERNAL_ROUTER_IP} (network mode: no router)", api.create_subnet,
                      {**plan.NETWORK_MODE_SUBNET_BODY, "network_id": net.id})
        if self.ipv6:
            self._api(f"create subnet {plan.SEED_SUBNET6_BODY['name']} {plan.CIDR6} (ipv6_address_mode slaac, "
                      f"the RAs from the external router {plan.EXTERNAL_ROUTER_IP6})", api.create_subnet,
                      {**plan.SEED_SUBNET6_BODY, "network_id": net.id})
        if self.mode == "router":
            router = self._api("create router1", api.create_router, plan.SEED_ROUTER_BODY)
            body = self._api("add router1's interface on phy_subnet_without_dhcp (scheduled to an L3 agent)",
                             api.add_router_interface, router.id, subnet.id)
            self.state.router_id, self.state.router_port_id = router.id, body["port_id"]
        else:
            port = self._metadata_port(api, net.id)
            self.state.metadata_port_id = port.id
            self.state.metadata_ip = next(f.ip_address for f in port.fixed_ips if ":" not in f.ip_address)
            self.progress(f"      the registry's metadata port of phy_net: {port.id[:8]}... {self.state.metadata_ip} "
                          f"{port.mac_address} ({port.device_owner}, {port.device_id})")
        for i in range(1, self.vms + 1):
            vm = self.names.vm(i)
            host = Names.host(plan.vm_host(i, self.host_count))
            user_data = f"#!/bin/sh\necho 'hello from {vm}, user data {secrets.token_hex(4)}'\n"
            (self.dir / "user-data" / f"{vm}.sh").write_text(user_data)
            instance = self._api(f"create instance {vm}", api.create_instance, {
                "name": vm, "user_data": base64.b64encode(user_data.encode()).decode(),
                "metadata": {"lab": self.names.suffix}})
            port = self._api(f"create {vm}'s port on {host} (device_id {instance.id[:8]}..., binding:host_id {host})",
                             api.create_port, {"network_id": net.id, "name": f"{vm}-port", "device_id": instance.id,
                                               "device_owner": "compute:nova", "binding:host_id": host})
            if port.binding_vif_type != "ovs":
                raise LabError(f"{vm}'s port did not bind on {host}: {port.binding_failure_reason}")
            v4 = next(f.ip_address for f in port.fixed_ips if ":" not in f.ip_address)
            self.state.vms.append(Vm(vm, vm, instance.id, port.id, port.mac_address, v4, Names.tap(port.id),
                                     user_data, host, plan.addr_gen_mode(i)))
        self._save()

    @staticmethod
    def _metadata_port(api: ControllerApi, network_id: str) -> Any:
        """The metadata port the registry made with phy_net's first subnet (network mode)."""
        found = [p for p in api.list_ports({"network_id": [network_id], "device_owner": [METADATA_PORT_OWNER]})
                 if p.device_id == metadata_device_id(network_id)]
        if not found or not any(":" not in f.ip_address for f in found[0].fixed_ips):
            raise LabError(f"the registry made no metadata port with an IPv4 address on phy_net ({network_id}): is "
                           "the controller's [metadata] mode = network?")
        return found[0]

    def dhcp(self) -> None:
        url, env = self.client()
        self.service("dhcp-server", self.provnet(self.confs["dhcp"], *url, "dhcp", "--interface", "eth0",
                                                 "--network", "phy_net"), self.names.dhcp, env=env)
        self.service("upstream-httpd", ["busybox", "httpd", "-f", "-v", "-p", f"{plan.UPSTREAM_IP}:80", "-h",
                                        str(self.dir / "www")], self.names.upstream, notify=False)
        if self.ipv6:
            self.service("external-ra", ra_argv(self.dir), self.names.external, notify=False)
        self._wait_service("dhcp-server")
        self._wait(lambda: _listening(self.names.dhcp, "udp", 67), None, "the DHCP server on udp 67", 20)

    def plug(self) -> None:
        """What Nova's libvirt driver does on each VM's host: the guest's device, `tap<port id>` with the port's
        MAC on the guest side, plugged into the host's bridge. Nothing else: the L2 agent does the rest."""
        for vm in self.state.vms:
            host = self.state.host(vm.host)
            self._namespace(vm.namespace)
            if self.ipv6:  # the guest's way of making its addresses, set before its device appears
                guest_ipv6(vm.namespace, vm.addr_gen_mode)
            netns.ensure_veth(host.namespace, vm.device, vm.namespace, "eth0", mac=vm.mac)
            netns.attach_to_bridge(host.namespace, vm.device, plan.BRIDGE)
        api = self.api
        assert api is not None
        ids = [vm.port_id for vm in self.state.vms]
        self._wait(lambda: all(p.status == "ACTIVE" for p in api.list_ports({"id": ids})) and
                   len(api.list_ports({"id": ids})) == len(ids), None, "every VM's port ACTIVE (the L2 agents)", 30)
        for vm in self.state.vms:
            self.progress(f"      {vm.name} on {vm.host}: {vm.device}, port ACTIVE")

    def router(self) -> None:
        api = self.api
        assert api is not None
        hosting: list = []

        def served() -> bool:
            hosting[:] = api.list_l3_agents_hosting_router(self.state.router_id)
            if not hosting:
                return False
            host = self.state.host(hosting[0].host)
            ns = f"qrouter-{self.state.router_id}{host.namespace_suffix}"
            return netns.namespace_exists(ns) and _listening(ns, "tcp", plan.METADATA_PORT)

        self._wait(served, None, "the router's namespace and metadata proxy (the L3 agent)", 60)
        self.progress(f"      router1 hosted by the L3 agent on {hosting[0].host}")

    def metadata_namespaces(self) -> None:
        """Network mode: on each host with a VM, its L3 agent's provnet-meta-<phy_net> namespace and the proxy in it
        listening on 169.254.169.254:80 (and no namespace on a host without VMs)."""
        hosts = sorted({vm.host for vm in self.state.vms})

        def served(name: str) -> bool:
            ns = plan.metadata_namespace(self.state.network_id, self.state.host(name).namespace_suffix)
            return netns.namespace_exists(ns) and _listening(ns, "tcp", 80)

        for name in hosts:
            self._wait(functools.partial(served, name), None,
                       f"{name}'s provnet-meta- namespace and its proxy (its L3 agent)", 60,
                       log=self.dir / "logs" / f"{name}-l3-agent.log")
        self.progress(f"      metadata served on {', '.join(hosts)} from {self.state.metadata_ip} and "
                      f"169.254.169.254{' and ' + plan.METADATA_IP6 if self.ipv6 else ''}")

    def addresses6(self) -> None:
        """Each VM's link-local and SLAAC address from the RAs, no longer tentative."""
        waiting: dict[str, list[str]] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = {}
            for vm in self.state.vms:
                have = check.ipv6_addresses(vm.namespace)
                kinds = {"link" if a.startswith("fe80:") else "global" for a in have}
                if kinds != {"link", "global"}:
                    waiting[vm.name] = have
            if not waiting:
                break
            time.sleep(0.2)
        if waiting:
            raise LabError(f"no IPv6 address from {plan.CIDR6}'s advertisements within 30s: "
                           f"{'; '.join(f'{k}: {v or None}' for k, v in waiting.items())}; see "
                           f"{self.dir / 'logs' / 'external-ra.log'}")
        for vm in self.state.vms:
            kind = "EUI-64" if vm.addr_gen_mode == plan.ADDR_GEN_EUI64 else "stable privacy"
            self.progress(f"      {vm.name} ({kind}): {', '.join(check.ipv6_addresses(vm.namespace))}")

    def leases(self) -> None:
        for vm in self.state.vms:
            argv = clients.client_argv(self.state.dhcp_client, self.dir, vm.name)
            self.service(f"{vm.name}-{self.state.dhcp_client}", argv, vm.namespace, notify=False)
        deadline = time.monotonic() + 30
        waiting = list(self.state.vms)
        while waiting and time.monotonic() < deadline:
            waiting = [vm for vm in waiting
                       if not clients.read_lease(self.dir / "leases" / f"{vm.namespace}.lease").get("ip")]
            time.sleep(0.2)
        if waiting:
            raise LabError(f"no DHCP lease for {', '.join(v.name for v in waiting)} within 30s; see "
                           f"{self.dir / 'logs'} (dhcp-server.log, <vm>-{self.state.dhcp_client}.log)")
        for vm in self.state.vms:
            lease = clients.read_lease(self.dir / "leases" / f"{vm.namespace}.lease")
            self.progress(f"      {vm.name}: {lease.get('ip')} from {lease.get('server') or '?'} "
                          f"(port {vm.ip}, mac {vm.mac})")

    # ---- waiting ----
    def _wait_service(self, name: str, timeout: float = 60) -> None:
        def ready() -> bool:
            row = next((s for s in supervisor.request(self.dir, {"op": "status"})["services"] if s["name"] == name),
                       None)
            if row is None:
                return False
            if row["state"] == "failed":
                raise LabError(f"{name} could not start ({row['failed']}); its log "
                               f"{self.dir / 'logs' / (name + '.log')}:\n{_tail(self.dir / 'logs' / (name + '.log'))}")
            return bool(row["ready"])

        self._wait(ready, None, name, timeout, log=self.dir / "logs" / f"{name}.log")

    def _wait(self, ready: Callable[[], bool], proc: Proc | None, what: str, timeout: float,
              log: Path | None = None) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except LabError:
                raise
            except Exception as exc:  # noqa: BLE001 - not there yet (the API starting...): try again
                last = exc
            if proc is not None and not is_running(proc):
                break
            time.sleep(0.1)
        log = log or (Path(proc.log) if proc is not None else None)
        detail = f"; last error: {last}" if last else ""
        where = f"; {log}:\n{_tail(log)}" if log else f" (logs in {self.dir / 'logs'})"
        raise LabError(f"{what}: not ready after {timeout:.0f}s{detail}{where}")


def _ip(namespace: str, *argv: str) -> None:
    proc = subprocess.run(["ip", "-n", namespace, *argv], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0 and "File exists" not in proc.stderr:
        raise LabError(f"ip -n {namespace} {' '.join(argv)}: {proc.stderr.strip()}")


def ra_argv(directory: Path) -> list[str]:
    """dnsmasq as the external router's advertiser of the IPv6 prefix and nothing else: no DNS (port 0), no DHCPv6
    (ra-only: the prefix from eth0's own address, flags for SLAAC), in the foreground, its log to stderr."""
    return ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--no-resolv", "--no-hosts",
            "--interface=eth0", "--bind-interfaces", "--enable-ra", "--dhcp-range=::,constructor:eth0,ra-only,64",
            "--ra-param=eth0,10,1800", f"--pid-file={directory / 'external-ra.pid'}",
            f"--dhcp-leasefile={directory / 'external-ra.leases'}", "--log-facility=-", "--log-dhcp", "--user=root"]


def guest_ipv6(namespace: str, mode: int) -> None:
    """The guest's IPv6 address generation for devices made in it: EUI-64 (0), or stable privacy (2) from a
    random secret of its own (RFC 7217: the address tells nothing of the MAC)."""
    netns.set_sysctl(namespace, "net.ipv6.conf.default.addr_gen_mode", str(mode))
    if mode == plan.ADDR_GEN_STABLE_PRIVACY:
        secret = ":".join(secrets.token_hex(2) for _ in range(8))
        netns.set_sysctl(namespace, "net.ipv6.conf.default.stable_secret", secret)


def _answers(api: ControllerApi | None) -> bool:
    assert api is not None
    api.revision()
    return True


def _listening(namespace: str, proto: str, port: int) -> bool:
    flag = "-Hltn" if proto == "tcp" else "-Hlun"
    out = subprocess.run(["ip", "netns", "exec", namespace, "ss", flag], capture_output=True, text=True,
                         timeout=10).stdout
    return any(f":{port} " in line + " " for line in out.splitlines())


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up(state_path: str, vms: int, dhcp_client: str, progress: Progress, hosts: int = 2,
       keystone: bool = False, mode: str = "router", ipv6: bool = False) -> LabState:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, iptables)")
    missing = [t for t in (*TOOLS, *(("dhclient",) if dhcp_client == "dhclient" else ()),
                           *(("socat",) if keystone else ()), *(("dnsmasq",) if ipv6 else ()))
               if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")
    return Builder(state_path, vms, dhcp_client, progress, hosts, keystone, mode, ipv6).run()
