# `provnet lab down`: stop the lab's supervisor (and with it every service), whatever still runs in the lab's
# namespaces (the L3 agents' proxies), and remove every namespace of the lab, the agents' qrouter ones included.
from __future__ import annotations

import shutil
from collections.abc import Callable

from provnet.dataplane import netns
from provnet.lab import procs
from provnet.lab.state import LabState, forget, lab_dir, load

SUPERVISOR_GRACE = 30.0  # seconds for the supervisor to stop its services (each gets SIGTERM, then SIGKILL)


def lab_namespaces(state: LabState) -> list[str]:
    """The namespaces the lab made, then the ones its hosts' agents made (their names carry the lab's suffix)."""
    made = list(state.namespaces)
    agents = [ns for ns in netns.list_namespaces() if ns not in made and any(
        ns.endswith(h.namespace_suffix) for h in state.hosts)]
    return agents + list(reversed(made))


def down(state_path: str, progress: Callable[[str], None]) -> bool:
    """Undo what the state file names; returns False when there was no lab. Safe to run twice, and after a crash."""
    state = load(state_path)
    if state is None:
        return False
    for proc in reversed(state.processes):
        if procs.stop_pid(proc.pid, proc.start_time, grace=SUPERVISOR_GRACE):
            progress(f"      stopped {proc.name} (pid {proc.pid})")
    namespaces = lab_namespaces(state)
    for ns in namespaces:
        # whatever still runs inside one of our namespaces was started by the lab or its agents (a proxy...)
        for pid in netns.pids_in_namespace(ns):
            if procs.stop_pid(pid, None):
                progress(f"      stopped pid {pid} left in {ns}")
    for ns in namespaces:
        if netns.namespace_exists(ns):
            netns.delete_namespace(ns)  # its links and its iptables go with it
            progress(f"      removed namespace {ns}")
    forget(state_path)
    # the lab's stores, sockets, configs and leases live only in <state_path>/lab; its logs stay for reading
    d = lab_dir(state_path)
    for path in d.iterdir():
        if path.name == "logs":
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return True
