# `provnet lab check`: from inside each VM namespace, prove lease, routes, own metadata, upstream and cloud-init; from
# the controller's API, that each VM's port is ACTIVE on its host and which host's L3 agent serves its router.
from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provnet.dataplane import netns
from provnet.lab import clients, plan
from provnet.lab.api import ControllerApi
from provnet.lab.state import LabState, Vm, lab_dir
from provnet.model.resources import Agent, Port

METADATA = "http://169.254.169.254"
METADATA6 = f"http://[{plan.METADATA_IP6}%eth0]"  # the URL a guest uses over IPv6 (link-local, scoped to eth0)
COLUMNS = ("lease", "routes", "port", "metadata", "upstream", "cloud-init", "l3-agent")


def columns(state: LabState) -> tuple[str, ...]:
    """The check's columns for the lab's mode: router mode's last is the router's L3 agent, network mode's the
    provnet-meta- namespace on the VM's host; with --ipv6 also the VM's IPv6 addresses and metadata over IPv6."""
    base = [c for c in COLUMNS if c != "l3-agent"]
    if state.ipv6:
        base[base.index("metadata") + 1:base.index("metadata") + 1] = ["ipv6", "metadata6"]
    return (*base, "l3-agent" if state.mode == "router" else "meta-ns")

# Run by /usr/bin/python3 (where Debian's cloud-init lives) inside the VM namespace: cloud-init's own
# OpenStack reader, the code a real VM runs at boot, reads the metadata and prints what it found.
CLOUD_INIT_READER = """
import json, sys
from cloudinit.sources.helpers import openstack
res = openstack.MetadataReader(sys.argv[1], timeout=5, retries=1).read_v2()
ud = res.get("userdata") or b""
print(json.dumps({"uuid": res["metadata"].get("uuid"), "hostname": res["metadata"].get("hostname"),
                  "userdata": ud.decode() if isinstance(ud, bytes) else ud,
                  "ec2_instance_id": (res.get("ec2-metadata") or {}).get("instance-id")}))
"""


@dataclass
class Result:
    ok: bool
    detail: str


def run_in(namespace: str, argv: Sequence[str], timeout: float = 15) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout:.0f}s")


def curl(namespace: str, url: str, *extra: str, max_time: float = 5) -> tuple[int, str]:
    """(HTTP status, body) fetched inside `namespace`; status 0 when no response came."""
    proc = run_in(namespace, ["curl", "-s", "--max-time", str(max_time), "-w", "\n%{http_code}", *extra, url],
                  timeout=max_time + 5)
    body, _, code = proc.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


# ---- the pure judgements ----

def judge_lease(vm: Vm, lease: dict[str, str], addresses: list[str]) -> Result:
    if not lease.get("ip"):
        return Result(False, "no lease")
    if lease["ip"] != vm.ip:
        return Result(False, f"leased {lease['ip']}, port has {vm.ip}")
    if f"{vm.ip}/24" not in addresses:
        return Result(False, f"eth0 has {', '.join(addresses) or 'no address'}")
    return Result(True, f"{lease['ip']} from {lease.get('server') or '?'} ({lease.get('client')})")


def judge_routes(vm: Vm, routes: list[tuple[str, str | None, str]], metadata_hop: str = plan.ROUTER_IP) -> Result:
    have = sorted((dst, gw) for dst, gw, _ in routes)
    want = plan.expected_routes(vm.ip, metadata_hop)
    if have != want:
        missing = [f"{d} via {g or 'link'}" for d, g in want if (d, g) not in have]
        extra = [f"{d} via {g or 'link'}" for d, g in have if (d, g) not in want]
        return Result(False, "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                                     f"extra {', '.join(extra)}" if extra else ""])))
    return Result(True, f"default via .1, 169.254.169.254 via .{metadata_hop.rsplit('.', 1)[1]}, /24 link")


def judge_metadata(vm: Vm, meta: tuple[int, str], user_data: tuple[int, str], ec2_id: tuple[int, str]) -> Result:
    if meta[0] != 200:
        return Result(False, f"meta_data.json: HTTP {meta[0] or 'no response'}")
    try:
        uuid = json.loads(meta[1]).get("uuid")
    except ValueError:
        return Result(False, "meta_data.json is not JSON")
    if uuid != vm.instance_id:
        return Result(False, f"meta_data.json uuid {uuid}, expected {vm.instance_id}")
    if user_data != (200, vm.user_data):
        return Result(False, f"user_data: HTTP {user_data[0]}, {'same' if user_data[1] == vm.user_data else 'other'}"
                             " content")
    if ec2_id[0] != 200 or not ec2_id[1].strip():
        return Result(False, f"/latest/meta-data/instance-id: HTTP {ec2_id[0]}")
    return Result(True, f"uuid {uuid[:8]}..., {ec2_id[1].strip()}, own user_data")


def judge_ipv6(vm: Vm, addresses: list[str]) -> Result:
    """A link-local and a SLAAC address from the external router's prefix, made the VM's way: EUI-64 from its MAC,
    or stable privacy (neither address tells the MAC)."""
    link = [a for a in addresses if a.startswith("fe80:")]
    prefix = ipaddress.IPv6Network(plan.CIDR6)
    slaac = [a for a in addresses if ipaddress.IPv6Address(a) in prefix]
    if not link or not slaac:
        return Result(False, f"eth0 has {', '.join(addresses) or 'no IPv6 address'}: want a link-local one and one "
                             f"in {plan.CIDR6} (the external router's advertisements)")
    eui = {plan.eui64("fe80::/64", vm.mac), plan.eui64(plan.CIDR6, vm.mac)}
    made = {str(ipaddress.IPv6Address(a)) for a in (link[0], slaac[0])}
    if vm.addr_gen_mode == plan.ADDR_GEN_EUI64:
        if made != eui:
            return Result(False, f"{', '.join(sorted(made))} are not the EUI-64 addresses of {vm.mac}")
        return Result(True, f"EUI-64 {slaac[0]}")
    if made & eui:
        return Result(False, f"stable privacy expected, {', '.join(sorted(made & eui))} is EUI-64 of {vm.mac}")
    return Result(True, f"stable privacy {slaac[0]}")


def judge_metadata6(vm: Vm, meta: tuple[int, str], proc: subprocess.CompletedProcess) -> Result:
    """meta_data.json over http://[fe80::a9fe:a9fe%eth0] with curl, and cloud-init's reader at the same URL."""
    if meta[0] != 200:
        return Result(False, f"{METADATA6}/openstack/latest/meta_data.json: HTTP {meta[0] or 'no response'}")
    try:
        uuid = json.loads(meta[1]).get("uuid")
    except ValueError:
        return Result(False, "meta_data.json over IPv6 is not JSON")
    if uuid != vm.instance_id:
        return Result(False, f"meta_data.json over IPv6: uuid {uuid}, expected {vm.instance_id}")
    reader = judge_cloud_init(vm, proc)
    if not reader.ok:
        return Result(False, f"cloud-init at {METADATA6}: {reader.detail}")
    return Result(True, f"uuid {uuid[:8]}... from {plan.METADATA_IP6}, cloud-init's reader too")


def judge_meta_ns(vm: Vm, namespace: str, present: set[str], listening: bool) -> Result:
    """Network mode: the VM's host has its L3 agent's provnet-meta- namespace with the proxy listening on 80."""
    if namespace not in present:
        return Result(False, f"{namespace} does not exist on {vm.host}")
    if not listening:
        return Result(False, f"no proxy listens on 169.254.169.254:80 in {namespace}")
    return Result(True, f"{vm.host}'s L3 agent ({namespace})")


def judge_upstream(http: tuple[int, str], route_get: str) -> Result:
    if f"via {plan.EXTERNAL_ROUTER_IP}" not in route_get:
        return Result(False, f"route to {plan.UPSTREAM_IP} is not via {plan.EXTERNAL_ROUTER_IP}: {route_get.strip()}")
    if http[0] != 200 or "upstream ok" not in http[1]:
        return Result(False, f"http://{plan.UPSTREAM_IP}/: HTTP {http[0] or 'no response'}")
    return Result(True, f"{plan.UPSTREAM_IP} via {plan.EXTERNAL_ROUTER_IP}")


def judge_port(vm: Vm, port: Port | None) -> Result:
    if port is None:
        return Result(False, f"port {vm.port_id} is gone")
    if port.binding_host_id != vm.host:
        return Result(False, f"port bound to {port.binding_host_id or 'no host'}, the VM runs on {vm.host}")
    if port.status != "ACTIVE":
        return Result(False, f"port {port.status} (its host's L2 agent has not seen {vm.device} up)")
    return Result(True, f"ACTIVE on {vm.host} ({vm.device})")


def judge_l3(agents: list[Agent], namespace_of: dict[str, str], present: set[str], alive: set[str]) -> Result:
    """Which host's L3 agent serves the router: exactly one, alive, with the router's namespace on its host."""
    if not agents:
        return Result(False, "no L3 agent hosts the router")
    if len(agents) > 1:
        return Result(False, f"hosted by {len(agents)} L3 agents: {', '.join(a.host for a in agents)}")
    host = agents[0].host
    if agents[0].id not in alive:
        return Result(False, f"hosted by {host}'s L3 agent, which is dead")
    ns = namespace_of.get(host, "")
    if ns not in present:
        return Result(False, f"hosted by {host}'s L3 agent, but {ns or 'its namespace'} does not exist")
    return Result(True, f"{host}'s L3 agent ({ns})")


def judge_cloud_init(vm: Vm, proc: subprocess.CompletedProcess) -> Result:
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return Result(False, f"reader failed: {last}")
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Result(False, "reader printed no JSON")
    if found.get("uuid") != vm.instance_id or found.get("userdata") != vm.user_data:
        return Result(False, f"reader saw uuid {found.get('uuid')}, expected {vm.instance_id}")
    return Result(True, f"read_v2: {found.get('hostname')}")


# ---- the shell: gather from the namespaces ----

def check_vm(state_path: str, state: LabState, vm: Vm, port: Result, l3: Result) -> dict[str, Result]:
    lease_file = lab_dir(state_path) / "leases" / f"{vm.namespace}.lease"
    if not netns.namespace_exists(vm.namespace):
        gone = Result(False, f"namespace {vm.namespace} missing")
        return {c: gone for c in columns(state)}
    out: dict[str, Result] = {}
    out["lease"] = judge_lease(vm, clients.read_lease(lease_file), netns.ipv4_addresses(vm.namespace, "eth0"))
    out["routes"] = judge_routes(vm, netns.ipv4_routes(vm.namespace), state.metadata_hop)
    out["port"] = port
    out["metadata"] = judge_metadata(vm, curl(vm.namespace, f"{METADATA}/openstack/latest/meta_data.json"),
                                     curl(vm.namespace, f"{METADATA}/openstack/latest/user_data"),
                                     curl(vm.namespace, f"{METADATA}/latest/meta-data/instance-id"))
    if state.ipv6:
        out["ipv6"] = judge_ipv6(vm, ipv6_addresses(vm.namespace))
        out["metadata6"] = judge_metadata6(
            vm, curl(vm.namespace, f"{METADATA6}/openstack/latest/meta_data.json", "-g"),
            run_in(vm.namespace, ["/usr/bin/python3", "-c", CLOUD_INIT_READER, METADATA6], timeout=40))
    route_get = run_in(vm.namespace, ["ip", "route", "get", plan.UPSTREAM_IP]).stdout
    out["upstream"] = judge_upstream(curl(vm.namespace, f"http://{plan.UPSTREAM_IP}/"), route_get)
    out["cloud-init"] = judge_cloud_init(vm, run_in(vm.namespace, ["/usr/bin/python3", "-c", CLOUD_INIT_READER,
                                                                    METADATA], timeout=40))
    if state.mode == "router":
        out["l3-agent"] = l3
    else:
        ns = plan.metadata_namespace(state.network_id, state.host(vm.host).namespace_suffix)
        present = netns.namespace_exists(ns)
        out["meta-ns"] = judge_meta_ns(vm, ns, {ns} if present else set(), present and _listening(ns, 80))
    return out


def ipv6_addresses(namespace: str) -> list[str]:
    """eth0's usable IPv6 addresses (not tentative), without prefix lengths."""
    proc = run_in(namespace, ["ip", "-6", "-o", "addr", "show", "dev", "eth0"])
    out = []
    for line in proc.stdout.splitlines():
        fields = line.split()
        if "inet6" in fields and "tentative" not in fields and "dadfailed" not in fields:
            out.append(fields[fields.index("inet6") + 1].split("/")[0])
    return out


def _listening(namespace: str, port: int) -> bool:
    out = run_in(namespace, ["ss", "-Hltn"]).stdout
    return any(f":{port} " in line + " " for line in out.splitlines())


def hosting(api: ControllerApi, state: LabState) -> Result:
    """The router's L3 agent, judged from the API and the namespaces on this machine."""
    agents = api.list_l3_agents_hosting_router(state.router_id)
    alive = {a.id for a in api.list_agents({"alive": ["true"]})}
    namespace_of = {h.name: f"qrouter-{state.router_id}{h.namespace_suffix}" for h in state.hosts}
    return judge_l3(agents, namespace_of, set(netns.list_namespaces()), alive)


def check(state_path: str, state: LabState) -> tuple[bool, str]:
    """All VMs' results as a table, and whether every cell passed."""
    api = ControllerApi.for_lab(state_path, state)
    try:
        try:
            ports = {p.id: p for p in api.list_ports({"id": [vm.port_id for vm in state.vms]})}
            port_of = {vm.name: judge_port(vm, ports.get(vm.port_id)) for vm in state.vms}
            l3 = hosting(api, state) if state.mode == "router" else Result(True, "no router (network mode)")
        except Exception as exc:  # noqa: BLE001 - the API is down: every cell that needs it says so
            l3 = Result(False, f"the API at {state.api_url} does not answer: {exc}")
            port_of = {vm.name: l3 for vm in state.vms}
        rows = [(vm, check_vm(state_path, state, vm, port_of[vm.name], l3)) for vm in state.vms]
    finally:
        api.close()
    return all(r.ok for _, res in rows for r in res.values()), render(rows, columns(state)) + "\n" + \
        describe_mode(state)


def describe_mode(state: LabState) -> str:
    """The line naming what was checked: the mode, the path to the metadata, the families."""
    if state.mode == "router":
        path = f"router (169.254.169.254 via router1's qr- device {plan.ROUTER_IP}, its L3 agent's proxy)"
    else:
        path = (f"network (no router; 169.254.169.254 via phy_net's metadata port {state.metadata_ip or '?'}, "
                "each VM host's provnet-meta- namespace)")
    families = f"IPv4 and IPv6 ({plan.METADATA_IP6})" if state.ipv6 else "IPv4"
    return f"mode: {path}; metadata checked over {families}"


def render(rows: list[tuple[Vm, dict[str, Result]]], cols: tuple[str, ...] = COLUMNS) -> str:
    header = ["VM", "IP", *cols]
    table = [header]
    for vm, res in rows:
        table.append([vm.name, vm.ip, *(("ok" if res[c].ok else "FAIL") for c in cols)])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.append("")
    for vm, res in rows:
        for c in cols:
            lines.append(f"{vm.name:<{widths[0]}}  {c:<10}  {'ok  ' if res[c].ok else 'FAIL'}  {res[c].detail}")
    return "\n".join(lines)


def log_hint(state_path: str) -> str:
    return f"logs: {Path(lab_dir(state_path)) / 'logs'}"
