# The small value objects resources are made of (pools, routes, fixed IPs, key pairs) and the default project.
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime

DEFAULT_PROJECT_ID = "fake_project_id"


@dataclass(frozen=True)
class AllocationPool:
    start: str
    end: str

    def to_api(self) -> dict[str, str]:
        return {"start": self.start, "end": self.end}

    def __contains__(self, ip: object) -> bool:
        addr = ipaddress.ip_address(str(ip))
        start, end = ipaddress.ip_address(self.start), ipaddress.ip_address(self.end)
        return addr.version == start.version == end.version and int(start) <= int(addr) <= int(end)


@dataclass(frozen=True)
class HostRoute:
    destination: str
    nexthop: str

    def to_api(self) -> dict[str, str]:
        return {"destination": self.destination, "nexthop": self.nexthop}


@dataclass(frozen=True)
class FixedIP:
    subnet_id: str
    ip_address: str

    def to_api(self) -> dict[str, str]:
        return {"subnet_id": self.subnet_id, "ip_address": self.ip_address}


@dataclass(frozen=True)
class KeyPair:
    name: str
    data: str
    type: str = "ssh"

    def to_api(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "data": self.data}


def agent_time(value: datetime | None) -> str | None:
    """Neutron's agent timestamps: `2017-09-12 19:40:38` (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else None


def api_time(value: datetime | None) -> str | None:
    """Neutron's standard attribute timestamps: `2016-03-08T20:19:41Z` (UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def parse_time(value: str | None) -> datetime | None:
    """Either of Neutron's timestamp forms (`2017-09-12 19:40:38`, `2017-09-12T19:40:38Z`), as UTC."""
    if not value:
        return None
    return datetime.strptime(value[:19].replace("T", " "), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
