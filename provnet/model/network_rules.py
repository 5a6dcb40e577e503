# Provider network rules (ML2 type drivers' checks), pure: which segments are valid and how they are keyed.
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provnet.model.errors import (
    Conflict,
    FlatNetworkInUse,
    InvalidInput,
    NoNetworkAvailable,
    TunnelIdInUse,
    VlanIdInUse,
)

VLAN_MIN, VLAN_MAX = 1, 4094
TUNNEL_MAX = {"vxlan": 2**24 - 1, "gre": 2**32 - 1}
PROVIDER_KEYS = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")


@dataclass(frozen=True)
class Segment:
    network_type: str
    physical_network: str | None
    segmentation_id: int | None

    @property
    def key(self) -> str | None:
        """What must be unique among networks: a flat physnet, a VLAN id on a physnet, a tunnel id."""
        if self.network_type == "flat":
            return f"flat:{self.physical_network}"
        if self.network_type == "vlan":
            return f"vlan:{self.physical_network}:{self.segmentation_id}"
        if self.network_type in TUNNEL_MAX:
            return f"{self.network_type}:{self.segmentation_id}"
        return None


def parse_vlan_ranges(entries: Iterable[str]) -> dict[str, list[tuple[int, int]]]:
    """`physnet[:min:max]` entries (network_vlan_ranges) -> {physnet: [(min, max), ...]}; a bare name has none."""
    out: dict[str, list[tuple[int, int]]] = {}
    for entry in entries:
        parts = [p.strip() for p in entry.split(":")]
        if len(parts) == 1 and parts[0]:
            out.setdefault(parts[0], [])
            continue
        if len(parts) != 3 or not parts[0]:
            raise ValueError(f"network_vlan_ranges entry {entry!r} is not physnet or physnet:min:max")
        low, high = int(parts[1]), int(parts[2])
        if not VLAN_MIN <= low <= high <= VLAN_MAX:
            raise ValueError(f"network_vlan_ranges entry {entry!r}: need {VLAN_MIN} <= min <= max <= {VLAN_MAX}")
        out.setdefault(parts[0], []).append((low, high))
    return out


def _invalid(msg: str) -> InvalidInput:
    return InvalidInput(error_message=msg)


def check_segment(attrs: Mapping[str, Any], flat_networks: Collection[str],
                  vlan_ranges: Mapping[str, Sequence[tuple[int, int]]]) -> Segment | None:
    """The provider segment a network create asks for (segmentation_id may still be None: to allocate).

    None when no provider attribute is given. Raises InvalidInput (400) with ML2's messages.
    """
    network_type = attrs.get("provider:network_type")
    physnet = attrs.get("provider:physical_network")
    seg_id = attrs.get("provider:segmentation_id")
    if network_type is None:
        if physnet is not None or seg_id is not None:
            raise _invalid("network_type required")
        return None
    if network_type == "flat":
        if not physnet:
            raise _invalid("physical_network required for flat provider network")
        if "*" not in flat_networks and physnet not in flat_networks:
            raise _invalid(f"physical_network '{physnet}' unknown for flat provider network")
        if seg_id is not None:
            raise _invalid("segmentation_id prohibited for flat provider network")
    elif network_type == "vlan":
        if physnet and vlan_ranges and physnet not in vlan_ranges:
            raise _invalid(f"physical_network '{physnet}' unknown for VLAN provider network")
        if seg_id is not None:
            if not physnet:
                raise _invalid("segmentation_id requires physical_network for VLAN provider network")
            if not VLAN_MIN <= seg_id <= VLAN_MAX:
                raise _invalid(f"segmentation_id out of range ({VLAN_MIN} through {VLAN_MAX})")
    elif network_type in TUNNEL_MAX:
        if physnet is not None:
            raise _invalid(f"provider:physical_network specified for {network_type} network")
        if seg_id is not None and not 1 <= seg_id <= TUNNEL_MAX[network_type]:
            raise _invalid(f"segmentation_id out of range (1 through {TUNNEL_MAX[network_type]})")
    elif network_type == "local":
        for key, value in (("physical_network", physnet), ("segmentation_id", seg_id)):
            if value is not None:
                raise _invalid(f"{key} prohibited for local provider network")
    else:
        raise _invalid(f"network_type value '{network_type}' not supported")
    return Segment(network_type, physnet, seg_id)


def in_use_error(segment: Segment) -> Conflict:
    """The 409 for a segment whose key another network holds."""
    if segment.network_type == "flat":
        return FlatNetworkInUse(physical_network=segment.physical_network)
    if segment.network_type == "vlan":
        return VlanIdInUse(vlan_id=segment.segmentation_id, physical_network=segment.physical_network)
    return TunnelIdInUse(tunnel_id=segment.segmentation_id)


def allocate_segment(segment: Segment, vlan_ranges: Mapping[str, Sequence[tuple[int, int]]],
                     used_keys: Collection[str]) -> Segment:
    """Fill in a missing segmentation id: the lowest free one of the tenant ranges (VLAN) or from 1 (tunnels)."""
    if segment.segmentation_id is not None or segment.network_type not in ("vlan", *TUNNEL_MAX):
        return segment
    if segment.network_type == "vlan":
        physnets = [segment.physical_network] if segment.physical_network else sorted(vlan_ranges)
        for physnet in physnets:
            for low, high in vlan_ranges.get(physnet or "", []):
                for vid in range(low, high + 1):
                    candidate = Segment("vlan", physnet, vid)
                    if candidate.key not in used_keys:
                        return candidate
        raise NoNetworkAvailable()
    for tid in range(1, TUNNEL_MAX[segment.network_type] + 1):
        candidate = Segment(segment.network_type, None, tid)
        if candidate.key not in used_keys:
            return candidate
    raise NoNetworkAvailable()
