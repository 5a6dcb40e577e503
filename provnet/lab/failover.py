# `provnet lab failover`: the host whose L3 agent serves the router fails (its agent killed, its router namespace
# and proxy gone), and the time until every VM gets its own metadata again from another host is measured.
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from provnet.dataplane import netns
from provnet.lab import check, plan, procs, supervisor
from provnet.lab.api import ControllerApi
from provnet.lab.state import LabState, lab_dir

TIMEOUT = plan.AGENT_DOWN_TIME * 3 + 60  # seconds before failover is declared failed


class FailoverError(RuntimeError):
    pass


@dataclass(frozen=True)
class Outcome:
    from_host: str
    to_host: str
    seconds: float  # from the failure until every VM got its own metadata again
    router_moved_after: float  # from the failure until the API named the new host


def served(vm_namespace: str, instance_id: str) -> bool:
    """The VM gets its own meta_data.json (one short try)."""
    status, body = check.curl(vm_namespace, f"{check.METADATA}/openstack/latest/meta_data.json", max_time=1)
    if status != 200:
        return False
    try:
        return json.loads(body).get("uuid") == instance_id
    except ValueError:
        return False


def failover(state_path: str, state: LabState, progress: Callable[[str], None],
             clock: Callable[[], float] = time.monotonic) -> Outcome:
    directory = lab_dir(state_path)
    api = ControllerApi.for_lab(state_path, state)
    try:
        agents = api.list_l3_agents_hosting_router(state.router_id)
        if len(agents) != 1:
            raise FailoverError(f"router1 is hosted by {len(agents)} L3 agents; `provnet lab check` says why")
        old = state.host(agents[0].host)
        others = [h.name for h in state.hosts if h.name != old.name]
        if not others:
            raise FailoverError("the lab has one host: there is no other L3 agent to take the router "
                                "(`provnet lab up --hosts 2`)")
        not_served = [vm.name for vm in state.vms if not served(vm.namespace, vm.instance_id)]
        if not_served:
            raise FailoverError(f"{', '.join(not_served)} get no metadata before the failover: run `provnet lab "
                                "check` first")
        progress(f"router1 is served by {old.name}'s L3 agent; {old.name} fails now: its L3 agent is killed and "
                 "its router namespaces go with their proxies (as on a host that lost power)")
        started = clock()
        supervisor.request(directory, {"op": "hold", "name": f"{old.name}-l3-agent", "signal": 9})
        for ns in netns.list_namespaces():
            if ns.startswith("qrouter-") and ns.endswith(old.namespace_suffix):
                for pid in netns.pids_in_namespace(ns):
                    procs.stop_pid(pid, None, grace=0.5)
                netns.delete_namespace(ns)
        moved_after: float | None = None
        new_host = ""
        waiting = list(state.vms)
        while waiting:
            if clock() - started > TIMEOUT:
                raise FailoverError(f"{', '.join(v.name for v in waiting)} still get no metadata "
                                    f"{TIMEOUT:.0f} s after the failure; see {directory / 'logs'}")
            if moved_after is None:
                try:
                    now = api.list_l3_agents_hosting_router(state.router_id)
                except Exception:  # noqa: BLE001 - the API busy: ask again
                    now = []
                if now and now[0].host != old.name:
                    moved_after, new_host = clock() - started, now[0].host
                    progress(f"  the API moved router1 to {new_host} after {moved_after:.1f} s")
            waiting = [vm for vm in waiting if not served(vm.namespace, vm.instance_id)]
            if waiting:
                time.sleep(0.2)
        took = clock() - started
        if moved_after is None:
            new_host = api.list_l3_agents_hosting_router(state.router_id)[0].host
            moved_after = took
        progress(f"every VM gets its own metadata again after {took:.1f} s (agent_down_time "
                 f"{plan.AGENT_DOWN_TIME:g} s, report_interval {plan.REPORT_INTERVAL:g} s)")
        supervisor.request(directory, {"op": "release", "name": f"{old.name}-l3-agent"})
        progress(f"{old.name}'s L3 agent is started again (the router stays on {new_host})")
        return Outcome(old.name, new_host, took, moved_after)
    finally:
        api.close()
