# Checks on the files themselves: unreadable or malformed input, keys set twice, values oslo would refuse.
from __future__ import annotations

from collections.abc import Iterator

from provnet.doctor.findings import Finding
from provnet.doctor.ini import parse_bool
from provnet.doctor.inputs import Inputs

# options the other checks read as booleans: (file kind, section, key)
BOOL_OPTIONS = (
    ("dhcp_agent.ini", "DEFAULT", "enable_isolated_metadata"),
    ("dhcp_agent.ini", "DEFAULT", "enable_metadata_network"),
    ("dhcp_agent.ini", "DEFAULT", "force_metadata"),
    ("l3_agent.ini", "DEFAULT", "enable_metadata_proxy"),
    ("neutron.conf", "DEFAULT", "dhcp_agent_notification"),
    ("nova.conf", "neutron", "service_metadata_proxy"),
)
NUMBER_OPTIONS = (
    ("neutron.conf", "DEFAULT", "agent_down_time"),
    *((kind, "agent", "report_interval") for kind in ("neutron.conf", "openvswitch_agent.ini", "dhcp_agent.ini",
                                                      "l3_agent.ini", "metadata_agent.ini")),
)


def check_parse(inputs: Inputs) -> Iterator[Finding]:
    problems = list(inputs.problems) + [p for ini in inputs.all_ini() for p in ini.problems]
    if inputs.local_conf:
        problems += inputs.local_conf.problems
    problems += inputs.dnsmasq.problems
    if inputs.iptables:
        problems += inputs.iptables.problems
    for where, message in problems:
        yield Finding("error", "config.parse", where, message,
                      "the service reading this file refuses to start or silently ignores the line",
                      "correct or remove the line")
    for where, message in inputs.dnsmasq.unread:
        yield Finding("info", "config.parse", where, message, "its contents were not checked",
                      "pass the file to provnet doctor with --dnsmasq-opts FILE")


def check_duplicates(inputs: Inputs) -> Iterator[Finding]:
    for ini in inputs.all_ini():
        for group in ini.repeated():
            first, last = group[0], group[-1]
            if all(e.value == last.value for e in group):
                continue
            yield Finding(
                "warning", "config.duplicate-key", last.where,
                f"[{last.section}] {last.key} is set {len(group)} times in this file (first at line "
                f"{first.where.line}); the last one, {last.value!r}, is the one used",
                f"editing line {first.where.line} has no effect", f"keep one `{last.key} = ...` line in "
                f"[{last.section}] and delete the others")


def check_values(inputs: Inputs) -> Iterator[Finding]:
    for kind, section, key in BOOL_OPTIONS:
        e = inputs.entry(kind, section, key)
        if e and parse_bool(e.value) is None:
            yield Finding("error", "config.bad-value", e.where,
                          f"[{section}] {key} = {e.value!r} is not a boolean (oslo reads the whole line, an "
                          f"inline # comment included)", "the service exits at start with a ConfigFileValueError",
                          f"write `{key} = True` or `{key} = False`, comments on their own line")
    for kind, section, key in NUMBER_OPTIONS:
        e = inputs.entry(kind, section, key)
        if e:
            try:
                float(e.value)
            except ValueError:
                yield Finding("error", "config.bad-value", e.where, f"[{section}] {key} = {e.value!r} is not a "
                              f"number", "the service exits at start with a ConfigFileValueError",
                              f"write `{key} = <seconds>`")


CHECKS = (check_parse, check_duplicates, check_values)
