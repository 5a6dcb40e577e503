# `provnet lab down`: stop every process, remove every rule and namespace (and with them every link) the lab made.
from __future__ import annotations

import shutil
from collections.abc import Callable

from provnet.dataplane import firewall, iptables, l3, netns
from provnet.lab import procs
from provnet.lab.state import forget, lab_dir, load


def down(state_path: str, progress: Callable[[str], None]) -> bool:
    """Undo what the state file names; returns False when there was no lab. Safe to run twice, and after a crash."""
    state = load(state_path)
    if state is None:
        return False
    for proc in reversed(state.processes):
        if procs.stop(proc):
            progress(f"      stopped {proc.name} (pid {proc.pid})")
    for ns in reversed(state.namespaces):
        # whatever still runs inside one of our namespaces was started by the lab (a DHCP client's child...)
        for pid in netns.pids_in_namespace(ns):
            if procs.stop_pid(pid, None):
                progress(f"      stopped pid {pid} left in {ns}")
    for ns in reversed(state.namespaces):
        if not netns.namespace_exists(ns):
            continue
        for prefix in (l3.PREFIX, firewall.PREFIX):
            try:
                iptables.remove(ns, prefix)
            except iptables.IptablesError as exc:
                progress(f"      warning: {exc}")
        netns.delete_namespace(ns)
        progress(f"      removed namespace {ns}")
    forget(state_path)
    # the lab's store, socket, config and leases live only in <state_path>/lab; its logs stay for reading
    d = lab_dir(state_path)
    for path in d.iterdir():
        if path.name == "logs":
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return True
