# `provnet lab status`: what stands now, read from the machine (namespaces, processes), the supervisor's file and the
# live registry (agents, ports, which L3 agent hosts the router), never from what `lab up` meant to make.
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from provnet.dataplane import netns
from provnet.lab import plan, procs, supervisor
from provnet.lab.api import ControllerApi
from provnet.lab.state import LabState, lab_dir


@dataclass
class ServiceRow:
    name: str
    namespace: str | None
    pid: int | None
    running: bool
    state: str  # running, starting, restarting, held, failed, STOPPED
    restarts: int


@dataclass
class Snapshot:
    namespaces: dict[str, bool]  # every namespace of the lab (the agents' too) -> present
    supervisor_running: bool
    services: list[ServiceRow]
    proxies: dict[str, tuple[int, bool]]  # host -> (pid, running) of the router's proxy there
    ports: dict[str, str] = field(default_factory=dict)  # port id -> status
    agents: dict[str, tuple[str, bool]] = field(default_factory=dict)  # host/type -> (agent id, alive)
    hosting: list[str] = field(default_factory=list)  # hosts whose L3 agent hosts the router
    api_error: str = ""
    router_ports: dict[str, list[str]] = field(default_factory=dict)  # qrouter namespace -> its links


def _alive(pid: int | None, start: int | None) -> bool:
    if not pid:
        return False
    return procs.is_running(procs.Proc("", pid, start or 0, None, [], ""))


def snapshot(state_path: str, state: LabState) -> Snapshot:
    directory = lab_dir(state_path)
    sup = state.process("supervisor")
    sup_running = sup is not None and procs.is_running(sup)
    found = supervisor.read_status(directory) or {}
    rows = []
    for row in found.get("services", []):
        running = _alive(row.get("pid"), row.get("start_time"))
        if running and not sup_running:
            kind = "UNSUPERVISED"  # its supervisor is gone (it stops with it: PDEATHSIG; not yet, it seems)
        elif running or row.get("state") in ("held", "failed"):
            kind = row.get("state", "?")
        else:
            kind = "STOPPED"
        rows.append(ServiceRow(row["name"], row.get("namespace"), row.get("pid"), running, kind,
                               int(row.get("restarts") or 0)))
    present = set(netns.list_namespaces())
    names = list(state.namespaces) + sorted(ns for ns in present if ns not in state.namespaces and any(
        ns.endswith(h.namespace_suffix) for h in state.hosts))
    qrouters = {}
    for ns in names:
        if ns.startswith("qrouter-") and ns in present:
            try:
                qrouters[ns] = netns.link_names(ns)
            except netns.DataplaneError:  # an agent is making or removing it this very moment
                qrouters[ns] = []
    proxies = {}
    key = state.router_id if state.mode == "router" else state.network_id  # the L3 agent's proxies' pid files
    for host in state.hosts:
        pid_file = Path(host.state_path) / "external" / "pids" / f"{key}.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        proxies[host.name] = (pid, procs.start_time(pid) is not None)
    snap = Snapshot({ns: ns in present for ns in names}, sup_running, rows, proxies, router_ports=qrouters)
    if state.controller and netns.namespace_exists(state.controller):
        api = ControllerApi.for_lab(state_path, state, timeout=5)
        try:
            snap.ports = {p.id: p.status for p in api.list_ports({"id": [vm.port_id for vm in state.vms]})} \
                if state.vms else {}
            alive = {a.id for a in api.list_agents({"alive": ["true"]})}
            snap.agents = {f"{a.host}/{a.agent_type}": (a.id, a.id in alive) for a in api.list_agents()}
            if state.router_id:
                snap.hosting = [a.host for a in api.list_l3_agents_hosting_router(state.router_id)]
        except Exception as exc:  # noqa: BLE001 - the API down is part of the truth
            snap.api_error = str(exc)
        finally:
            api.close()
    else:
        snap.api_error = "the controller's namespace is gone"
    return snap


def render_text(state_path: str, state: LabState, snap: Snapshot) -> str:
    d = lab_dir(state_path)
    out = [f"lab {state.suffix} in {d} ({'complete' if state.complete else 'INCOMPLETE'}), {len(state.hosts)} "
           f"host(s), DHCP client {state.dhcp_client}, router {state.router_id or '-'}"]
    v6 = f", IPv6 {plan.CIDR6} (SLAAC)" if state.ipv6 else ""
    if state.mode == "router":
        out.append(f"mode: router (169.254.169.254 via router1's qr- device {plan.ROUTER_IP}){v6}")
    else:
        out.append(f"mode: network (no router; 169.254.169.254 via phy_net's metadata port {state.metadata_ip or '-'}"
                   f", served in each VM host's provnet-meta- namespace){v6}")
    if snap.api_error:
        out.append(f"API {state.api_url}: NOT ANSWERING ({snap.api_error})")
    elif state.mode == "router":
        hosted = ", ".join(snap.hosting) or "NO L3 AGENT"
        out.append(f"API {state.api_url} (from {state.controller}): answering; router1 hosted by {hosted}")
    else:
        out.append(f"API {state.api_url} (from {state.controller}): answering")
    out.append("namespaces:")
    for ns, present in snap.namespaces.items():
        out.append(f"  {ns:<58} {'present' if present else 'GONE'}")
    sup = state.process("supervisor")
    if snap.supervisor_running:
        out.append(f"supervisor: pid {sup.pid if sup else '-'} running (services restart when they die; logs in "
                   f"{d / 'logs'})")
    else:
        out.append(f"supervisor: pid {sup.pid if sup else '-'} STOPPED (its services stopped with it; "
                   f"`provnet lab up` builds the lab again; logs in {d / 'logs'})")
    keystone = state.process("keystone")
    if keystone is not None:
        out.append(f"keystone: pid {keystone.pid} {'running' if procs.is_running(keystone) else 'STOPPED'} on "
                   f"127.0.0.1:{state.keystone_port} (the controller, the agents and the DHCP server reach it through "
                   "the *-keystone-relay services)")
    out.append("services:")
    for row in snap.services:
        restarts = f", {row.restarts} restart(s)" if row.restarts else ""
        out.append(f"  {row.name:<26} pid {row.pid or '-':<8} {row.state:<10} {row.namespace or '(machine)'}"
                   f"{restarts}")
    for host, (pid, running) in sorted(snap.proxies.items()):
        suffix = state.host(host).namespace_suffix
        ns = f"qrouter-{state.router_id}{suffix}" if state.mode == "router" else \
            plan.metadata_namespace(state.network_id, suffix)
        out.append(f"  {host + ' metadata proxy':<26} pid {pid:<8} {'running' if running else 'STOPPED':<10} "
                   f"{ns} (the L3 agent's)")
    if snap.agents:
        out.append("agents:")
        for key, (_agent_id, alive) in sorted(snap.agents.items()):
            out.append(f"  {key:<40} {'alive' if alive else 'DEAD'}")
    out.append("VMs:")
    for vm in state.vms:
        status = snap.ports.get(vm.port_id, "?" if snap.api_error else "GONE")
        out.append(f"  {vm.name:<14} {vm.host:<7} {vm.ip:<14} {vm.mac}  port {status:<6} instance {vm.instance_id}")
    out.append("look inside:")
    if state.vms:
        out.append(f"  ip netns exec {state.vms[0].namespace} ip route")
        out.append(f"  ip netns exec {state.vms[0].namespace} curl http://169.254.169.254/openstack/latest/"
                   "meta_data.json")
    out.append(f"  provnet --config-file {d}/controller/provnet.conf port-list      # the controller's store")
    if state.controller:
        out.append(f"  ip netns exec {state.controller} provnet --url {state.api_url} agent-list")
    return "\n".join(out)
