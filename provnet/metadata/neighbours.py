# The requesting VM's MAC, read from the proxy's namespace's neighbour table: the packet came from that segment, so
# the kernel's entry for the source address names the link-layer sender the agent checks against the port.
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SOURCE_MAC_HEADER = "X-Provnet-Source-MAC"  # set by the proxy alone: a guest's own copy is never forwarded
ARP_TABLE = "/proc/net/arp"  # per network namespace: the table of the namespace the reading process is in
ATF_COM = 0x2  # the entry is complete (the kernel has the MAC)


def mac_in_arp_table(text: str, address: str) -> str | None:
    """The MAC of `address` in /proc/net/arp's text, if it has one complete entry (or several that agree)."""
    found: set[str] = set()
    start = 0
    prefix = address + " "
    while True:
        at = text.find("\n" + prefix, start)
        if at < 0:
            break
        start = at + 1
        end = text.find("\n", start)
        fields = text[start:end if end >= 0 else len(text)].split()
        if len(fields) < 4:
            continue
        try:
            flags = int(fields[2], 16)
        except ValueError:
            continue
        if flags & ATF_COM and fields[3] != "00:00:00:00:00:00":
            found.add(fields[3].lower())
    return found.pop() if len(found) == 1 else None


class NeighbourTable:
    """Reads the table afresh for every connection: a cached entry could name the MAC of a guest the address
    belonged to a moment ago. IPv4 from /proc/net/arp; other families are not read (no header is sent)."""

    def __init__(self, arp_table: str = ARP_TABLE) -> None:
        self.arp_table = arp_table
        self.reads = 0
        self.unreadable = False

    def mac_of(self, address: str) -> str:
        """The source's MAC, or "" when the table has none for it (not on a segment of this namespace: loopback,
        routed, IPv6)."""
        if not address or ":" in address:
            return ""
        try:
            with open(self.arp_table, encoding="ascii", errors="replace") as table:
                text = "\n" + table.read()
        except OSError as exc:
            if not self.unreadable:
                log.warning("the neighbour table %s cannot be read (%s): requests go to the agent without the "
                            "VM's MAC", self.arp_table, exc)
                self.unreadable = True
            return ""
        self.reads += 1
        return mac_in_arp_table(text, address) or ""
