# Did-you-mean for a verb that does not exist: the openstack CLI's `NOUN ACTION` mapped to provnet's verbs, then
# the closest verb names. Pure.
from __future__ import annotations

import difflib
import shlex
from collections.abc import Collection, Sequence

# the openstack CLI's nouns -> the neutron-style prefix provnet's verbs carry
NOUNS = {
    "network": "net", "net": "net", "subnet": "subnet", "port": "port", "router": "router",
    "server": "instance", "instance": "instance", "agent": "agent",
}
# the openstack CLI's actions -> the neutron CLI's
ACTIONS = {
    "list": "list", "show": "show", "create": "create", "delete": "delete", "set": "update", "unset": "update",
    "update": "update",
}


def openstack_form(words: Sequence[str], verbs: Collection[str]) -> list[str] | None:
    """`network list` -> [`net-list`], `router add subnet R S` -> [`router-interface-add`, R, S],
    `network agent list` -> [`agent-list`]: the provnet command line for an openstack CLI one, or None."""
    words = list(words)
    if len(words) >= 2 and words[0] == "network" and words[1] == "agent":
        words = words[1:]
    if not words or words[0] not in NOUNS:
        return None
    prefix = NOUNS[words[0]]
    if len(words) >= 3 and prefix == "router" and words[1] in ("add", "remove") and words[2] in ("subnet", "port"):
        verb = "router-interface-add" if words[1] == "add" else "router-interface-delete"
        rest = words[3:]
        if words[2] == "port" and len(rest) >= 2:
            rest = [rest[0], f"port={rest[1]}", *rest[2:]]
        return [verb, *rest]
    if len(words) >= 2 and words[1] in ACTIONS and f"{prefix}-{ACTIONS[words[1]]}" in verbs:
        return [f"{prefix}-{ACTIONS[words[1]]}", *words[2:]]
    return [f"{prefix}-list"] if len(words) == 1 and f"{prefix}-list" in verbs else None


def did_you_mean(words: Sequence[str], verbs: Collection[str]) -> str:
    """The sentence after "No such command 'X'.": the openstack form's equivalent first, else the closest verbs,
    closest first (empty when nothing is close)."""
    mapped = openstack_form(words, verbs)
    if mapped:
        return (f"Did you mean `provnet {shlex.join(mapped)}`? (provnet's verbs are the neutron CLI's: "
                f"{mapped[0]}, not `{' '.join(words[:2])}`)")
    name = words[0] if words else ""
    close = difflib.get_close_matches(name, sorted(verbs), n=4, cutoff=0.6)
    if not close:  # a prefix or a part of a verb: `net` -> net-create, net-list...
        close = sorted(v for v in verbs if name and (v.startswith(name + "-") or name in v.split("-")))[:4]
    if not close:
        return ""
    first, others = close[0], close[1:]
    tail = f" (or: {', '.join(others)})" if others else ""
    return f"Did you mean `{first}`?{tail}"
