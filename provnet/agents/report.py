# An agent's state report (neutron's heartbeat): who it is, where, what it can bind, sent every report_interval.
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from provnet.model.errors import NeutronError
from provnet.model.resources import Agent
from provnet.registry.aio import AsyncRegistry
from provnet.registry.base import Registry

log = logging.getLogger("provnet.agent")


def ovs_configurations(bridge_mappings: Mapping[str, str]) -> dict[str, Any]:
    """What the L2 agent reports, in neutron-openvswitch-agent's shape (binding reads bridge_mappings)."""
    return {"bridge_mappings": dict(bridge_mappings), "integration_bridge": "br-int", "tunnel_types": [],
            "ovs_hybrid_plug": False, "datapath_type": "system"}


class StateReporter:
    """A Service: reports the agent's state now and then every `interval` seconds.

    A failed report (registry unreachable, API error) is logged once per outage and retried at the next
    interval: the agent must outlive a registry restart, and binding judges it dead only after agent_down_time.
    `configurations` is called at each report, so an agent can report what changed (e.g. the routers it hosts).
    """

    name = "state reports"

    def __init__(self, registry: Registry, host: str, agent_type: str, binary: str,
                 configurations: Callable[[], Mapping[str, Any]], interval: float) -> None:
        self.areg = AsyncRegistry(registry, timeout=max(10.0, interval), threads=1, name="report")
        self.host, self.agent_type, self.binary = host, agent_type, binary
        self.configurations = configurations
        self.interval = interval
        self.agent: Agent | None = None
        self.healthy: bool | None = None
        self.failures = 0
        self._task: asyncio.Task | None = None
        self._now = asyncio.Event()

    async def start(self) -> None:
        await self.report()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.areg.close()
        log.info("%s on host %s stopped", self.agent_type, self.host)

    def report_soon(self) -> None:
        """Report now rather than at the next interval (what the agent reports changed)."""
        self._now.set()

    async def report(self) -> bool:
        try:
            agent = await self.areg(self.areg.registry.report_agent_state, self.host, self.agent_type,
                                    self.binary, dict(self.configurations()))
        except Exception as exc:  # noqa: BLE001 - any failure (network, HTTP, API error): retry, never die
            self.failures += 1
            if self.healthy is not False:
                log.warning("%s state report failed, retrying every %g s: %s", self.agent_type, self.interval,
                            exc if isinstance(exc, OSError | NeutronError) else repr(exc))
            self.healthy = False
            return False
        if self.healthy is not True:
            log.info("reported state as %s %s (host %s)", self.agent_type, agent.id, agent.host)
        else:
            log.debug("heartbeat of agent %s", agent.id)
        self.agent = agent
        self.healthy = True
        return True

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._now.wait(), self.interval)
            except TimeoutError:
                pass
            self._now.clear()
            await self.report()
