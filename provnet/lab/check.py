# `provnet lab check`: from inside each VM namespace, prove lease, routes, own metadata, upstream and cloud-init; from
# the controller's API, that each VM's port is ACTIVE on its host and which host's L3 agent serves its router.
from __future__ import annotations

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
COLUMNS = ("lease", "routes", "port", "metadata", "upstream", "cloud-init", "l3-agent")

# Run by /usr/bin/python3 (where Debian's cloud-init lives) inside the VM namespace: cloud-init's own
# OpenStack reader, the code a real VM runs at boot, reads the metadata and prints what it found.
CLOUD_INIT_READER = """
import json
from cloudinit.sources.helpers import openstack
res = openstack.MetadataReader("http://169.254.169.254", timeout=5, retries=1).read_v2()
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


def judge_routes(vm: Vm, routes: list[tuple[str, str | None, str]]) -> Result:
    have = sorted((dst, gw) for dst, gw, _ in routes)
    want = plan.expected_routes(vm.ip)
    if have != want:
        missing = [f"{d} via {g or 'link'}" for d, g in want if (d, g) not in have]
        extra = [f"{d} via {g or 'link'}" for d, g in have if (d, g) not in want]
        return Result(False, "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                                     f"extra {', '.join(extra)}" if extra else ""])))
    return Result(True, "default via .1, 169.254.169.254 via .2, /24 link")


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

def check_vm(state_path: str, vm: Vm, port: Result, l3: Result) -> dict[str, Result]:
    lease_file = lab_dir(state_path) / "leases" / f"{vm.namespace}.lease"
    if not netns.namespace_exists(vm.namespace):
        gone = Result(False, f"namespace {vm.namespace} missing")
        return {c: gone for c in COLUMNS}
    out: dict[str, Result] = {}
    out["lease"] = judge_lease(vm, clients.read_lease(lease_file), netns.ipv4_addresses(vm.namespace, "eth0"))
    out["routes"] = judge_routes(vm, netns.ipv4_routes(vm.namespace))
    out["port"] = port
    out["metadata"] = judge_metadata(vm, curl(vm.namespace, f"{METADATA}/openstack/latest/meta_data.json"),
                                     curl(vm.namespace, f"{METADATA}/openstack/latest/user_data"),
                                     curl(vm.namespace, f"{METADATA}/latest/meta-data/instance-id"))
    route_get = run_in(vm.namespace, ["ip", "route", "get", plan.UPSTREAM_IP]).stdout
    out["upstream"] = judge_upstream(curl(vm.namespace, f"http://{plan.UPSTREAM_IP}/"), route_get)
    out["cloud-init"] = judge_cloud_init(vm, run_in(vm.namespace, ["/usr/bin/python3", "-c", CLOUD_INIT_READER],
                                                    timeout=40))
    out["l3-agent"] = l3
    return out


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
            l3 = hosting(api, state)
        except Exception as exc:  # noqa: BLE001 - the API is down: every cell that needs it says so
            l3 = Result(False, f"the API at {state.api_url} does not answer: {exc}")
            port_of = {vm.name: l3 for vm in state.vms}
        rows = [(vm, check_vm(state_path, vm, port_of[vm.name], l3)) for vm in state.vms]
    finally:
        api.close()
    return all(r.ok for _, res in rows for r in res.values()), render(rows)


def render(rows: list[tuple[Vm, dict[str, Result]]]) -> str:
    header = ["VM", "IP", *COLUMNS]
    table = [header]
    for vm, res in rows:
        table.append([vm.name, vm.ip, *(("ok" if res[c].ok else "FAIL") for c in COLUMNS)])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.append("")
    for vm, res in rows:
        for c in COLUMNS:
            lines.append(f"{vm.name:<{widths[0]}}  {c:<10}  {'ok  ' if res[c].ok else 'FAIL'}  {res[c].detail}")
    return "\n".join(lines)


def log_hint(state_path: str) -> str:
    return f"logs: {Path(lab_dir(state_path)) / 'logs'}"
