# Prometheus metrics of the DHCP server, read at scrape time from the plain Counter the hot path increments.
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

_collectors: dict[int, Collector] = {}


class DhcpCollector(Collector):
    """provnet_dhcp_{received,replies,dropped,unknown_clients}_total from the server's counters."""

    def __init__(self, counters: Counter[tuple[str, str]], interface: str) -> None:
        self.counters, self.interface = counters, interface

    def collect(self) -> Iterator[CounterMetricFamily]:
        rx = CounterMetricFamily("provnet_dhcp_received", "DHCP messages received, by type",
                                 labels=["interface", "type"])
        tx = CounterMetricFamily("provnet_dhcp_replies", "DHCP replies sent, by type", labels=["interface", "type"])
        drop = CounterMetricFamily("provnet_dhcp_dropped", "Messages not answered, by reason",
                                   labels=["interface", "reason"])
        unknown = CounterMetricFamily("provnet_dhcp_unknown_clients", "Messages from MACs without a port",
                                      labels=["interface"])
        families = {"rx": rx, "tx": tx, "drop": drop}
        for (kind, label), value in list(self.counters.items()):
            if kind == "unknown":
                continue
            families[kind].add_metric([self.interface, label], value)
        unknown.add_metric([self.interface], self.counters.get(("unknown", ""), 0))
        yield from (rx, tx, drop, unknown)


def register_counters(counters: Counter[tuple[str, str]], interface: str) -> None:
    collector = DhcpCollector(counters, interface)
    REGISTRY.register(collector)
    _collectors[id(counters)] = collector


def unregister_counters(counters: Counter[tuple[str, str]]) -> None:
    collector = _collectors.pop(id(counters), None)
    if collector is not None:
        REGISTRY.unregister(collector)
