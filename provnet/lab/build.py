# `provnet lab up`: the seed's topology in namespaces, its registry made with the seed's commands, provnet's services.
from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from provnet.dataplane import firewall, iptables, l3, netns
from provnet.lab import clients, plan, procs, teardown
from provnet.lab import keystone as lab_keystone
from provnet.lab.plan import Names
from provnet.lab.state import LabState, Vm, lab_dir, save

Progress = Callable[[str], None]
MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL


class LabError(RuntimeError):
    """A lab step failed; the message says which and where its log is."""


def provnet_argv() -> list[str]:
    """How to run this provnet: the console script beside this interpreter, else the interpreter itself."""
    script = Path(sys.executable).with_name("provnet")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "provnet.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(state_path: str, api_port: int, keystone: str = "") -> Path:
    """The lab's provnet.conf: its own SQLite store, socket, secret and metadata API port (loopback only); with
    `keystone` ([keystone_authtoken] lines), the networking API's auth_strategy is keystone.

    Everything of the lab's provnet lives in <state_path>/lab, so a lab never touches a real store.
    """
    root = lab_dir(state_path)
    path = root / "provnet.conf"
    path.write_text(
        "# Written by `provnet lab up`; every lab process reads it.\n"
        "[DEFAULT]\n"
        f"state_path = {root}\n"
        + ("auth_strategy = keystone\n" if keystone else "") +
        f"metadata_proxy_shared_secret = {secrets.token_hex(16)}\n"
        "metadata_listen = 127.0.0.1\n"
        f"metadata_listen_port = {api_port}\n"
        "nova_metadata_host = 127.0.0.1\n"
        f"nova_metadata_port = {api_port}\n"
        f"metadata_port = {plan.METADATA_PORT}\n"
        "[database]\n"
        f"connection = sqlite:///{root}/provnet.sqlite\n"
        "[ovs]\n"
        f"bridge_mappings = physnet1:{plan.BRIDGE}\n"
        + keystone
    )
    path.chmod(0o600)
    return path


class Builder:
    def __init__(self, state_path: str, vms: int, dhcp_client: str, progress: Progress,
                 keystone: bool = False) -> None:
        self.state_path = state_path
        self.keystone: lab_keystone.LabKeystone | None = None  # `lab up --keystone`: set by the keystone step
        self.with_keystone = keystone
        self.client_args: list[str] = []  # how the lab's verbs and services reach the registry
        self.service_args: list[str] = []
        self.env: dict[str, str] = {}
        self.dir = lab_dir(state_path)
        self.vms = plan.parse_vms(vms)
        if dhcp_client not in plan.DHCP_CLIENTS:
            raise ValueError(f"--dhcp-client must be one of {', '.join(plan.DHCP_CLIENTS)}, got {dhcp_client!r}")
        self.progress = progress
        self.names = Names("pn" + secrets.token_hex(3))
        self.state = LabState(suffix=self.names.suffix, dhcp_client=dhcp_client)
        self.conf = self.dir / "provnet.conf"
        longest = self.dir / "proxy-status.sock"
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

    def _spawn(self, name: str, argv: Sequence[str], namespace: str | None = None) -> procs.Proc:
        proc = procs.spawn(name, argv, self.dir / "logs", namespace, env=self.env)
        self.state.processes.append(proc)
        self._save()
        return proc

    def provnet(self, *args: str) -> str:
        """Run one `provnet` verb against the lab's store, as an operator's shell would, and return its stdout."""
        self.progress("  $ provnet " + " ".join(args))
        done = subprocess.run([*provnet_argv(), "--config-file", str(self.conf), *self.client_args, *args],
                              capture_output=True, text=True, env={**procs.inherited_env(), **self.env}, timeout=120)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise LabError(f"`provnet {' '.join(args)}` failed: {reason}")
        return done.stdout

    def provnet_json(self, *args: str) -> dict:
        out = self.provnet(*args, "-f", "json")
        return json.loads(out[out.index("{"):])

    # ---- steps ----
    def run(self) -> LabState:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("clean up a previous lab", self.clean),
            ("write config and DHCP client script", self.files),
            *([("Keystone, its service user and the networking API behind it", self.identity)]
              if self.with_keystone else []),
            ("create the registry with the seed's commands", self.registry),
            (f"fabric namespace {self.names.fabric} with bridge {plan.BRIDGE}", self.fabric),
            (f"external router {plan.EXTERNAL_ROUTER_IP} ({self.names.external}), upstream host {plan.UPSTREAM_IP}",
             self.external),
            ("router namespace, qr- port 172.16.1.2, metadata rules", self.router),
            ("metadata API, metadata agent, metadata proxy", self.metadata),
            (f"DHCP server {plan.DHCP_SERVER_IP} ({self.names.dhcp})", self.dhcp),
            (f"{self.vms} VM namespaces with port firewall rules", self.vm_namespaces),
            (f"DHCP clients ({self.state.dhcp_client}) and leases", self.leases),
        ]
        for i, (title, step) in enumerate(steps, 1):
            started = time.monotonic()
            self.progress(f"[{i}/{len(steps)}] {title}")
            try:
                step()
            except LabError:
                raise
            except Exception as exc:  # netlink, iptables, a tool: name the step, keep the tool's words
                raise LabError(f"step {i} ({title}): {type(exc).__name__}: {exc}") from exc
            self.progress(f"      done in {time.monotonic() - started:.1f}s")
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

    def files(self) -> None:
        self.state.metadata_api_port = free_port()
        write_config(self.state_path, self.state.metadata_api_port)
        clients.write_client_files(self.dir)
        (self.dir / "www" / "index.html").write_text("upstream ok: you came through the external router\n")
        self._save()

    def identity(self) -> None:
        """Keystone (scripts/keystone.sh), the lab's service user, `provnet api` with auth_strategy = keystone in
        the catalog as the `network` service; from here on the seed's commands run as the admin through the API
        and the lab's services as the service user."""
        self.keystone, master = lab_keystone.start(self.dir)
        self.state.processes.append(master)
        self._save()
        write_config(self.state_path, self.state.metadata_api_port, self.keystone.authtoken())
        self.env = {"OS_CLIENT_CONFIG_FILE": str(self.keystone.clouds)}
        port = free_port()
        api = self._spawn("networking-api", [*provnet_argv(), "--config-file", str(self.conf), "api",
                                             "--bind-port", str(port)])
        url = f"http://127.0.0.1:{port}"
        self._wait(api, lambda: _http_ok(f"{url}/healthz"))
        self.keystone.admin.ensure_endpoint("network", "neutron", url)
        self.client_args = ["--url", url, "--os-cloud", lab_keystone.ADMIN_CLOUD]
        self.service_args = ["--url", url, "--os-cloud", lab_keystone.SERVICE_CLOUD]


    def registry(self) -> None:
        self.provnet(*plan.SEED_NET)
        self.provnet(*plan.SEED_SUBNET)
        self.provnet(*plan.SEED_HOST_ROUTE)
        self.state.router_id = self.provnet_json(*plan.SEED_ROUTER)["id"]
        self.provnet(*plan.SEED_INTERFACE)
        router_ports = json.loads(self.provnet("port-list", "--device_id", self.state.router_id, "-f", "json"))
        if len(router_ports) != 1:
            raise LabError(f"expected one router interface port, found {len(router_ports)}")
        self.state.router_port_id = router_ports[0]["id"]
        for i in range(1, self.vms + 1):
            vm = self.names.vm(i)
            port = self.provnet_json("port-create", "phy_net", "--name", f"{vm}-port")
            user_data = f"#!/bin/sh\necho 'hello from {vm}, user data {secrets.token_hex(4)}'\n"
            ud_file = self.dir / "user-data" / f"{vm}.sh"
            ud_file.write_text(user_data)
            instance = self.provnet_json("instance-create", vm, "--user-data", str(ud_file),
                                         "--port", port["id"], "--property", f"lab={self.names.suffix}")
            self.state.vms.append(Vm(vm, vm, instance["id"], port["id"], port["mac_address"],
                                     port["fixed_ips"][0]["ip_address"], Names.vm_port(port["id"]), user_data))
        self._save()

    def fabric(self) -> None:
        self._namespace(self.names.fabric)
        netns.ensure_bridge(self.names.fabric, plan.BRIDGE)
        netns.set_sysctl(self.names.fabric, "net.bridge.bridge-nf-call-iptables", "1")

    def external(self) -> None:
        """The external router (172.16.1.1, forwarding) and an upstream host behind it on 198.51.100.0/24."""
        ns, up = self.names.external, self.names.upstream
        self._namespace(ns)
        netns.ensure_veth(self.names.fabric, self.names.external_port, ns, "eth0")
        netns.attach_to_bridge(self.names.fabric, self.names.external_port, plan.BRIDGE)
        netns.ensure_address(ns, "eth0", plan.EXTERNAL_ROUTER_IP, 24)
        netns.set_sysctl(ns, "net.ipv4.ip_forward", "1")
        self._namespace(up)
        netns.ensure_veth(ns, "upstream0", up, "eth0")
        netns.ensure_address(ns, "upstream0", plan.UPSTREAM_ROUTER_IP, 24)
        netns.ensure_address(up, "eth0", plan.UPSTREAM_IP, 24)
        netns.ensure_route(up, "0.0.0.0/0", plan.UPSTREAM_ROUTER_IP)
        self._spawn("upstream-httpd", ["busybox", "httpd", "-f", "-v", "-p", f"{plan.UPSTREAM_IP}:80",
                                       "-h", str(self.dir / "www")], up)

    def router(self) -> None:
        port = json.loads(self.provnet("port-show", self.state.router_port_id, "-f", "json"))
        ns = l3.router_namespace(self.state.router_id)
        if ns not in self.state.namespaces:
            self.state.namespaces.append(ns)
            self._save()
        l3.plug_router_port(self.state.router_id, port["id"], port["mac_address"], plan.CIDR,
                            port["fixed_ips"][0]["ip_address"], self.names.fabric, plan.BRIDGE,
                            Names.router_port(port["id"]), plan.METADATA_PORT)
        # metadata only, as in the seed: L3 goes through the external router, so this namespace never forwards
        # (explicit, in case the host makes new namespaces inherit its own forwarding setting)
        netns.set_sysctl(ns, "net.ipv4.ip_forward", "0")

    def metadata(self) -> None:
        api = self._spawn("metadata-api", [*provnet_argv(), "--config-file", str(self.conf), *self.service_args,
                                           "metadata-api"])
        agent = self._spawn("metadata-agent", [*provnet_argv(), "--config-file", str(self.conf), *self.service_args,
                                               "metadata-agent"])
        ns = l3.router_namespace(self.state.router_id)
        proxy = self._spawn("metadata-proxy", [
            *provnet_argv(), "--config-file", str(self.conf), "metadata-proxy", "--router-id",
            self.state.router_id, "--port", str(plan.METADATA_PORT),
            "--socket", str(self.dir / "metadata_proxy"), "--status-socket", str(self.dir / "proxy-status.sock")], ns)
        self._wait(api, lambda: _http_ok(f"http://127.0.0.1:{self.state.metadata_api_port}/healthz"))
        self._wait(agent, lambda: (self.dir / "metadata_proxy").exists())
        self._wait(proxy, lambda: _listening(ns, "tcp", plan.METADATA_PORT))

    def dhcp(self) -> None:
        ns = self.names.dhcp
        self._namespace(ns)
        netns.ensure_veth(self.names.fabric, self.names.dhcp_port, ns, "eth0")
        netns.attach_to_bridge(self.names.fabric, self.names.dhcp_port, plan.BRIDGE)
        netns.ensure_address(ns, "eth0", plan.DHCP_SERVER_IP, 24)
        if self.keystone is not None:  # the server reaches Keystone and the API on the host's loopback via relays
            for port in (self.keystone.port, int(self.service_args[1].rsplit(":", 1)[1])):
                host_side, ns_side = lab_keystone.relay_argv(self.dir, port)
                self._spawn(f"relay-{port}", host_side)
                relay = self._spawn(f"relay-{port}-{ns}", ns_side, ns)
                self._wait(relay, functools.partial(_listening, ns, "tcp", port))
        server = self._spawn("dhcp-server", [*provnet_argv(), "--config-file", str(self.conf), *self.service_args,
                                             "dhcp", "--interface", "eth0", "--network", "phy_net"], ns)
        self._wait(server, lambda: _listening(ns, "udp", 67))

    def vm_namespaces(self) -> None:
        for vm in self.state.vms:
            self._namespace(vm.namespace)
            netns.ensure_veth(self.names.fabric, vm.device, vm.namespace, "eth0", mac=vm.mac)
        self.apply_firewall()
        for vm in self.state.vms:
            netns.attach_to_bridge(self.names.fabric, vm.device, plan.BRIDGE)

    def apply_firewall(self) -> None:
        members = tuple(vm.ip for vm in self.state.vms)
        ports = [firewall.PortFilter(vm.device, vm.mac, (vm.ip,), members) for vm in self.state.vms]
        iptables.apply(self.names.fabric, firewall.firewall_ruleset(ports))

    def leases(self) -> None:
        for vm in self.state.vms:
            argv = clients.client_argv(self.state.dhcp_client, self.dir, vm.name)
            self._spawn(f"{vm.name}-{self.state.dhcp_client}", argv, vm.namespace)
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

    def _wait(self, proc: procs.Proc, ready: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not procs.is_running(proc):
                break
            time.sleep(0.1)
        tail = _tail(Path(proc.log))
        state = "exited" if not procs.is_running(proc) else f"not ready after {timeout:.0f}s"
        raise LabError(f"{proc.name} {state}; {proc.log}:\n{tail}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


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


def up(state_path: str, vms: int, dhcp_client: str, progress: Progress, keystone: bool = False) -> LabState:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, iptables)")
    missing = [t for t in ("ip", "iptables-restore", "curl", "busybox", "ss",
                           *(("dhclient",) if dhcp_client == "dhclient" else ()),
                           *(("socat",) if keystone else ())) if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")
    return Builder(state_path, vms, dhcp_client, progress, keystone).run()
