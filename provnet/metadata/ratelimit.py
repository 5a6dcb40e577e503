# Per-source-address request limits (a base and a burst sliding window, as Neutron's haproxy stick tables). Pure.
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    seconds: float
    limit: int  # requests allowed within `seconds`; 0 allows none


class RateLimiter:
    """`check(source, now)` -> 0 when allowed (and counted), else the seconds to wait (Retry-After).

    A source is an address, or a VM's MAC when the proxy read it (so its IPv4 and IPv6 addresses count together);
    IPv4 and IPv6 sources share one table; only allowed requests are counted, so a client that waits
    `Retry-After` seconds is served. At most `max_sources` addresses are tracked (oldest forgotten first).
    """

    def __init__(self, windows: list[Window], max_sources: int = 10_000) -> None:
        self.windows = [w for w in windows if w.seconds > 0]
        self.horizon = max((w.seconds for w in self.windows), default=0.0)
        self.max_sources = max_sources
        self._seen: dict[str, deque[float]] = {}

    def check(self, address: str, now: float) -> int:
        times = self._seen.get(address)
        if times is None:
            if len(self._seen) >= self.max_sources:
                self._seen.pop(next(iter(self._seen)))
            times = self._seen[address] = deque()
        while times and times[0] <= now - self.horizon:
            times.popleft()
        wait = 0.0
        for window in self.windows:
            if window.limit == 0:
                wait = max(wait, window.seconds)
                continue
            recent = [t for t in times if t > now - window.seconds]
            if len(recent) >= window.limit:
                wait = max(wait, recent[-window.limit] + window.seconds - now)
        if wait > 0:
            return max(1, math.ceil(wait))
        times.append(now)
        return 0
