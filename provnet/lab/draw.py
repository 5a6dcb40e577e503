# `provnet lab status --format svg`: the lab as it stands, drawn: every machine (namespace) with its devices, MACs and
# addresses, the routes the VMs hold, the services and which L3 agent hosts the router, and what is down, in red.
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from provnet.dataplane import netns
from provnet.lab import plan
from provnet.lab.state import LabState
from provnet.lab.status import Snapshot

FONT = 11
LINE = 14
COL = 540  # column width
PAD = 8
BAR = 22  # height of a switch bar
GAP = 14  # between boxes in a column
MAX_CHARS = 72  # a box's line is cut here (namespace names, in titles, never are)
COLOURS = {"host": "#eef4fb", "controller": "#f3eefb", "vm": "#eefbf0", "qrouter": "#fbf6ea", "external": "#f4f4f4",
           "upstream": "#f4f4f4", "dhcp": "#fbeef3", "switch": "#e8e8e8"}


@dataclass
class Line:
    text: str
    bad: bool = False  # something down or wrong: drawn in red


@dataclass
class Box:
    namespace: str
    title: str
    role: str  # host, controller, vm, qrouter, external, upstream, dhcp
    present: bool
    lines: list[Line] = field(default_factory=list)
    column: int = 0
    mgmt: bool = False  # has a cable to the management network
    provider: bool = False  # has a cable to the provider segment
    via_host: str = ""  # a VM or router plugged into this host's bridge


@dataclass
class Topology:
    title: str
    subtitle: str
    boxes: list[Box]
    columns: list[str]  # column headings
    switch: str = ""  # the switches' namespace (both bars)
    switch_present: bool = True


def _device_lines(namespace: str) -> list[Line]:
    out = []
    try:
        links = netns.links(namespace)
    except netns.DataplaneError as exc:  # gone, or being made or removed by an agent this very moment
        return [Line(f"devices unreadable: {exc}", bad=True)]
    for link in links:
        if link.name == "lo":
            continue
        parts = [link.name, link.mac, *link.addresses]
        if link.master:
            parts.append(f"on {link.master}")
        out.append(Line(" ".join(parts) + ("" if link.up else "  DOWN"), bad=not link.up))
    return out


def _service_lines(snap: Snapshot, namespace: str) -> list[Line]:
    out = []
    for row in snap.services:
        if row.namespace == namespace:
            restarts = f", {row.restarts} restart(s)" if row.restarts else ""
            out.append(Line(f"[{row.name}] pid {row.pid or '-'} {row.state}{restarts}", bad=not row.running))
    return out


def gather(state: LabState, snap: Snapshot) -> Topology:
    """What stands now, from the namespaces themselves, the supervisor's truth and the registry (a shell)."""
    boxes: list[Box] = []
    host_column = {h.name: i for i, h in enumerate(state.hosts)}
    extra = len(state.hosts)

    def box(namespace: str, title: str, role: str, column: int, **kw: object) -> Box:
        present = snap.namespaces.get(namespace, netns.namespace_exists(namespace))
        b = Box(namespace, title, role, present, column=column, **kw)  # type: ignore[arg-type]
        if not present:
            b.lines.append(Line("namespace GONE", bad=True))
        else:
            b.lines.extend(_device_lines(namespace))
        b.lines.extend(_service_lines(snap, namespace))
        boxes.append(b)
        return b

    for host in state.hosts:
        b = box(host.namespace, f"{host.name} ({host.namespace})", "host", host_column[host.name], mgmt=True,
                provider=True)
        for kind in ("Open vSwitch agent", "L3 agent"):
            found = snap.agents.get(f"{host.name}/{kind}")
            if found is not None:
                b.lines.append(Line(f"{kind}: {'alive' if found[1] else 'DEAD'}", bad=not found[1]))
            elif not snap.api_error:
                b.lines.append(Line(f"{kind}: not registered", bad=True))
    for ns in sorted(n for n in snap.namespaces if n.startswith("qrouter-")):
        owner = next((h for h in state.hosts if ns.endswith(h.namespace_suffix)), None)
        if owner is None:
            continue
        b = box(ns, ns, "qrouter", host_column[owner.name], via_host=owner.name)
        hosted = owner.name in snap.hosting
        b.lines.append(Line(f"router1 hosted here by {owner.name}'s L3 agent" if hosted else
                            f"router1 is NOT hosted by {owner.name} (left over)", bad=not hosted))
        proxy = snap.proxies.get(owner.name)
        if proxy is not None and ns.startswith(f"qrouter-{state.router_id}"):
            b.lines.append(Line(f"metadata proxy pid {proxy[0]} {'running' if proxy[1] else 'STOPPED'} "
                                f":{plan.METADATA_PORT}", bad=not proxy[1]))
    for ns in sorted(n for n in snap.namespaces if n.startswith(plan.METADATA_NAMESPACE_PREFIX)):
        owner = next((h for h in state.hosts if ns.endswith(h.namespace_suffix)), None)
        if owner is None:
            continue
        b = box(ns, ns, "qrouter", host_column[owner.name], via_host=owner.name)
        b.lines.append(Line(f"network mode: phy_net's metadata port {state.metadata_ip}, {owner.name}'s L3 agent"))
        proxy = snap.proxies.get(owner.name)
        if proxy is not None:
            b.lines.append(Line(f"metadata proxy pid {proxy[0]} {'running' if proxy[1] else 'STOPPED'} :80",
                                bad=not proxy[1]))
    for vm in state.vms:
        b = box(vm.namespace, f"{vm.name} on {vm.host}", "vm", host_column.get(vm.host, 0), via_host=vm.host)
        status = snap.ports.get(vm.port_id, "?" if snap.api_error else "GONE")
        b.lines.append(Line(f"port {vm.port_id[:8]}... {status} (binding:host_id {vm.host})", bad=status != "ACTIVE"))
        if b.present:
            for dst, gw, dev in netns.ipv4_routes(vm.namespace):
                b.lines.append(Line(f"route {dst} {'via ' + gw if gw else 'link'} dev {dev}"))
    ctl = box(state.controller, f"controller ({state.controller})", "controller", extra, mgmt=True)
    ctl.lines.append(Line(f"API {state.api_url}: " + (f"NOT ANSWERING ({snap.api_error})" if snap.api_error
                                                         else "answering"), bad=bool(snap.api_error)))
    names = {"dhcp": (f"DHCP server's host ({state.suffix}-dhcp)", True, True),
             "ext": (f"external router ({state.suffix}-ext)", False, True),
             "up": (f"upstream host ({state.suffix}-up)", False, False)}
    for key, (title, mgmt, provider) in names.items():
        role = {"dhcp": "dhcp", "ext": "external", "up": "upstream"}[key]
        box(f"{state.suffix}-{key}", title, role, extra, mgmt=mgmt, provider=provider)
    hosting = ", ".join(snap.hosting) or "no L3 agent"
    where = f"router1 {state.router_id} hosted by {hosting}" if state.mode == "router" else \
        f"network mode, metadata port {state.metadata_ip}"
    subtitle = (f"{len(state.hosts)} host(s), {len(state.vms)} VM(s); {where}{', IPv6' if state.ipv6 else ''}; "
                f"supervisor {'running' if snap.supervisor_running else 'STOPPED'}")
    switch = f"{state.suffix}-sw"
    return Topology(f"lab {state.suffix} (provnet)", subtitle, boxes,
                    [*(h.name for h in state.hosts), "controller, DHCP server's host, external router"], switch,
                    snap.namespaces.get(switch, netns.namespace_exists(switch)))


# ---- the pure drawing ----

def _height(b: Box) -> int:
    return PAD * 2 + LINE * (1 + len(b.lines))


def render_svg(topo: Topology) -> str:
    """The topology as an SVG document: one column per host (its router and VMs under it), one for the rest,
    the management network across the top and the provider segment across the bottom."""
    columns = len(topo.columns)
    top = 70  # title, subtitle, management bar
    y_of: dict[int, int] = {c: top + BAR + 30 for c in range(columns)}
    placed: list[tuple[Box, int, int, int]] = []  # box, x, y, height
    for b in topo.boxes:
        x = 20 + b.column * COL + 30
        y = y_of[b.column]
        h = _height(b)
        placed.append((b, x, y, h))
        y_of[b.column] = y + h + GAP
    bottom = max(y_of.values()) + 20
    width = 20 + columns * COL + 20
    height = bottom + BAR + 30
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", width=str(width), height=str(height),
                     viewBox=f"0 0 {width} {height}", attrib={"font-family": "monospace", "font-size": str(FONT)})
    ET.SubElement(svg, "title").text = topo.title
    ET.SubElement(svg, "rect", x="0", y="0", width=str(width), height=str(height), fill="white")
    ET.SubElement(svg, "text", x="20", y="22", attrib={"font-size": "15", "font-weight": "bold"}).text = topo.title
    ET.SubElement(svg, "text", x="20", y="40").text = topo.subtitle
    for c, heading in enumerate(topo.columns):
        ET.SubElement(svg, "text", x=str(20 + c * COL + 30), y=str(top + BAR + 22),
                      attrib={"font-weight": "bold", "fill": "#555"}).text = heading
    mgmt_y, prov_y = top, bottom
    # cables first, boxes over them
    for b, x, y, _h in placed:
        if b.mgmt:
            ET.SubElement(svg, "line", x1=str(x + 40), y1=str(mgmt_y + BAR), x2=str(x + 40), y2=str(y),
                          stroke="#7a5ea8", attrib={"stroke-width": "2"})
        if b.provider:
            ET.SubElement(svg, "line", x1=str(x - 12), y1=str(y + 12), x2=str(x - 12), y2=str(prov_y),
                          stroke="#2f6db5", attrib={"stroke-width": "2"})
            ET.SubElement(svg, "line", x1=str(x - 12), y1=str(y + 12), x2=str(x), y2=str(y + 12),
                          stroke="#2f6db5", attrib={"stroke-width": "2"})
        if b.via_host:
            ET.SubElement(svg, "line", x1=str(x - 24), y1=str(y + 12), x2=str(x), y2=str(y + 12), stroke="#2f6db5",
                          attrib={"stroke-width": "1.5", "stroke-dasharray": "4 2"})
    for c in range(len(topo.columns) - 1):  # a host's taps: a dashed bus down its column from its bridge
        hosts = [(x, y) for b, x, y, _ in placed if b.column == c and b.role == "host"]
        plugged = [y for b, _x, y, _ in placed if b.column == c and b.via_host]
        if hosts and plugged:
            x, y = hosts[0]
            ET.SubElement(svg, "line", x1=str(x - 24), y1=str(y + 30), x2=str(x - 24), y2=str(max(plugged) + 12),
                          stroke="#2f6db5", attrib={"stroke-width": "1.5", "stroke-dasharray": "4 2"})
            ET.SubElement(svg, "line", x1=str(x - 24), y1=str(y + 30), x2=str(x), y2=str(y + 30), stroke="#2f6db5",
                          attrib={"stroke-width": "1.5", "stroke-dasharray": "4 2"})
    where = f"in {topo.switch}" + ("" if topo.switch_present else ": namespace GONE")
    for label, y, colour in ((f"management network {plan.MGMT_CIDR} (switch mgmt {where})", mgmt_y, "#7a5ea8"),
                             (f"provider segment {plan.CIDR}, physnet1 (switch provider {where})", prov_y, "#2f6db5")):
        group = ET.SubElement(svg, "g", attrib={"data-namespace": topo.switch, "data-role": "switch"})
        ET.SubElement(group, "rect", x="20", y=str(y), width=str(width - 40), height=str(BAR),
                      fill=colour if topo.switch_present else "#c62828", rx="4")
        ET.SubElement(group, "text", x="30", y=str(y + 15), fill="white",
                      attrib={"font-weight": "bold"}).text = label
    for b, x, y, h in placed:
        group = ET.SubElement(svg, "g", attrib={"data-namespace": b.namespace, "data-role": b.role})
        ET.SubElement(group, "rect", x=str(x), y=str(y), width=str(COL - 50), height=str(h), rx="6",
                      fill=COLOURS.get(b.role, "#fff"), stroke="#c62828" if not b.present else "#555",
                      attrib={"stroke-width": "2.5" if not b.present else "1"})
        ET.SubElement(group, "text", x=str(x + PAD), y=str(y + PAD + FONT),
                      attrib={"font-weight": "bold"}).text = b.title
        for i, line in enumerate(b.lines, 1):
            attrs = {"fill": "#c62828", "font-weight": "bold"} if line.bad else {}
            text = line.text if len(line.text) <= MAX_CHARS else line.text[:MAX_CHARS - 1] + "…"
            ET.SubElement(group, "text", x=str(x + PAD), y=str(y + PAD + FONT + i * LINE), attrib=attrs).text = text
    return ET.tostring(svg, encoding="unicode", xml_declaration=True) + "\n"
