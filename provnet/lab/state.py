# What the lab made (namespaces, processes, VMs), kept in <state_path>/lab/state.json so `down` can undo all of it.
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from provnet.lab import plan
from provnet.lab.procs import Proc

DEFAULT_LAB_STATE_PATH = "/var/lib/provnet-lab"


@dataclass
class Vm:
    name: str
    namespace: str
    instance_id: str
    port_id: str
    mac: str
    ip: str
    device: str  # the tap device on its host's bridge
    user_data: str
    host: str = ""  # the host it runs on (its port's binding:host_id)
    addr_gen_mode: int = 0  # `lab up --ipv6`: net.ipv6.conf.eth0.addr_gen_mode (0 EUI-64, 2 stable privacy)


@dataclass
class Host:
    name: str  # as its agents report it (host1, ...)
    namespace: str
    mgmt_ip: str
    namespace_suffix: str  # its L3 agent's [l3_agent] namespace_suffix
    state_path: str  # its provnet.conf's state_path (proxies' pid files, the metadata agent's socket)


@dataclass
class LabState:
    suffix: str
    dhcp_client: str = "udhcpc"
    namespaces: list[str] = field(default_factory=list)  # in creation order; removed in reverse
    processes: list[Proc] = field(default_factory=list)  # what the lab started itself (its supervisor)
    vms: list[Vm] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    controller: str = ""  # the controller's namespace
    api_url: str = ""  # the controller's networking API (reached from inside the controller's namespace)
    router_id: str = ""
    router_port_id: str = ""
    metadata_api_port: int = 0
    keystone_port: int = 0  # `lab up --keystone`: Keystone on 127.0.0.1 at this port (0: no Keystone)
    mode: str = "router"  # `lab up --mode`: router (router1's qr- device) or network (the metadata port)
    ipv6: bool = False  # `lab up --ipv6`: an IPv6 SLAAC subnet too, metadata over fe80::a9fe:a9fe
    network_id: str = ""  # phy_net
    metadata_port_id: str = ""  # network mode: the registry's metadata port of phy_net
    metadata_ip: str = ""  # network mode: its address, the VMs' next hop to 169.254.169.254
    complete: bool = False

    def to_json(self) -> dict:
        d = asdict(self)
        d["processes"] = [p.to_json() for p in self.processes]
        return d

    @classmethod
    def from_json(cls, d: dict) -> LabState:
        if not isinstance(d, dict):
            raise TypeError("not a JSON object")
        d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}  # an older lab's file still loads
        d["processes"] = [Proc.from_json(p) for p in d.get("processes", [])]
        d["vms"] = [Vm(**{k: v for k, v in vm.items() if k in {f.name for f in fields(Vm)}})
                    for vm in d.get("vms", [])]
        d["hosts"] = [Host(**h) for h in d.get("hosts", [])]
        return cls(**d)

    def process(self, name: str) -> Proc | None:
        """The lab's own process of that name (its supervisor; with --keystone also Keystone's gunicorn master)."""
        return next((p for p in self.processes if p.name == name), None)

    @property
    def metadata_hop(self) -> str:
        """The VMs' next hop to 169.254.169.254: router1's gateway .2, or the metadata port's address."""
        return self.metadata_ip if self.mode == "network" else plan.ROUTER_IP

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name} in this lab")


def lab_dir(state_path: str) -> Path:
    return Path(state_path) / "lab"


def load(state_path: str) -> LabState | None:
    path = lab_dir(state_path) / "state.json"
    try:
        return LabState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a lab state file ({exc}); remove it after checking `ip netns list`") \
            from None


def save(state_path: str, state: LabState) -> None:
    """Written atomically after every step, so a crash leaves a file naming everything made so far."""
    d = lab_dir(state_path)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / "state.json.tmp"
    tmp.write_text(json.dumps(state.to_json(), indent=2))
    os.replace(tmp, d / "state.json")


def forget(state_path: str) -> None:
    (lab_dir(state_path) / "state.json").unlink(missing_ok=True)
