# Per-instance metadata-service settings kept as reserved instance properties (AWS's MetadataOptions, by name):
# read from an instance's properties, checked when they are written, hidden from the guest's `meta`.
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "provnet:"
HTTP_TOKENS = PREFIX + "http_tokens"  # optional | required
HOP_LIMIT = PREFIX + "http_put_response_hop_limit"  # 1..64
TAGS = PREFIX + "instance_metadata_tags"  # enabled | disabled
TOKEN_MODES = ("optional", "required")
HOP_MIN, HOP_MAX = 1, 64
_CHECKS = {
    HTTP_TOKENS: (TOKEN_MODES, "optional or required"),
    TAGS: (("enabled", "disabled"), "enabled or disabled"),
}


@dataclass(frozen=True, slots=True)
class MetadataOptions:
    """What one instance asks of the metadata service; None: the deployment's default."""

    http_tokens: str | None = None
    hop_limit: int | None = None
    tags: bool = False


def check_property(key: str, value: str) -> str | None:
    """The error for a reserved property with a bad value (None when fine, or not reserved)."""
    if not key.startswith(PREFIX):
        return None
    if key in _CHECKS:
        allowed, words = _CHECKS[key]
        return None if value in allowed else f"property {key} must be {words}, got {value[:64]!r}"
    if key == HOP_LIMIT:
        ok = value.isascii() and value.isdigit() and HOP_MIN <= int(value) <= HOP_MAX
        return None if ok else f"property {key} must be an integer from {HOP_MIN} to {HOP_MAX}, got {value[:64]!r}"
    known = ", ".join(sorted((*_CHECKS, HOP_LIMIT)))
    return f"property {key} is not a provnet setting (the {PREFIX} prefix is reserved for: {known})"


def options_of(properties: Mapping[str, str]) -> MetadataOptions:
    """The instance's settings; a value that slipped past `check_property` (an older store) counts as unset."""
    tokens = properties.get(HTTP_TOKENS)
    hop = properties.get(HOP_LIMIT, "")
    return MetadataOptions(
        http_tokens=tokens if tokens in TOKEN_MODES else None,
        hop_limit=int(hop) if check_property(HOP_LIMIT, hop) is None and hop else None,
        tags=properties.get(TAGS) == "enabled")


def guest_properties(properties: Mapping[str, str]) -> dict[str, str]:
    """The properties a guest sees (`meta`, tags): all but the reserved settings."""
    return {k: v for k, v in properties.items() if not k.startswith(PREFIX)}
