# Pure renderers of Nova's EC2 and OpenStack metadata trees for one instance: path in, (status, type, body) out.
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from provnet.model.metadata_options import guest_properties, options_of
from provnet.model.resources import Instance, Network, Port, Subnet
from provnet.model.routes import port_routes

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"

EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
                "2008-02-01", "2008-09-01", "2009-04-04")
OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06",
                      "2017-02-22", "2018-08-27", "2020-10-14", "2025-04-04")
# OpenStack versions that add something (Nova's release names for them).
GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO, VICTORIA = (
    "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06", "2020-10-14")

MD_JSON, UD, PASSWORD, VD_JSON, NW_JSON, VD2_JSON = (
    "meta_data.json", "user_data", "password", "vendor_data.json", "network_data.json", "vendor_data2.json")
PASSWORD_MAX = 1020  # Nova stores 4 chunks of 255 chars
VIF_TYPES = ("bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser", "vif")
IDENTITY_EC2 = ("dynamic", "instance-identity", "jwt")  # <ec2 version>/dynamic/instance-identity/jwt
IDENTITY_OPENSTACK = "identity.jwt"  # /openstack/<version>/identity.jwt
# what the audit trail calls each secret a guest reads
USER_DATA, VENDOR_DATA, PASSWORD_READ, IDENTITY = "user_data", "vendor_data", "password", "identity"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    seeded: bool = False  # meta_data.json: `body` lacks its closing brace; a fresh random_seed goes there
    etag: str = ""  # of the answer as rendered (a seeded reply's: without its random_seed)
    secret: str = ""  # user_data / vendor_data: reads the audit trail records


def etag_of(status: int, content_type: str, body: bytes) -> str:
    """A strong ETag derived from the answer itself, so it changes exactly when the answer does."""
    digest = hashlib.blake2b(body, digest_size=10, person=b"provnet-etag")
    digest.update(f"\n{status}\n{content_type}".encode())
    return f'"{digest.hexdigest()}"'


NOT_FOUND = Reply(404, b"404 Not Found\n\nThe resource could not be found.\n")
PASSWORD_LEAF = Reply(0)  # marker: the caller handles `password` (GET/POST need the registry)
IDENTITY_LEAF = Reply(0, secret=IDENTITY)  # marker: the caller signs the identity document (per request)


@dataclass(frozen=True)
class Vif:
    """One port of the instance with its network and the subnets of its fixed IPs (in fixed_ips order)."""

    port: Port
    network: Network
    subnets: tuple[Subnet, ...]
    metadata_hops: Mapping[str, str] = field(default_factory=dict)  # subnet id -> metadata port's IP (network mode)


@dataclass
class Source:
    """Everything the trees are rendered from."""

    instance: Instance
    vifs: list[Vif] = field(default_factory=list)
    dhcp_domain: str = "novalocal"
    static_vendor_data: Mapping[str, Any] | None = None  # vendordata_jsonfile_path content ({} when unset)
    request_address: str | None = None  # X-Forwarded-For: the local-ipv4 fallback


def listing(data: object) -> bytes:
    """Nova's listing format: sorted keys one per line, `key/` for a directory (or its `_name`), no final newline."""
    if isinstance(data, dict):
        lines = []
        for key in sorted(data):
            if key == "_name":
                continue
            value = data[key]
            if isinstance(value, dict):
                lines.append(str(value["_name"]) if "_name" in value else f"{key}/")
            else:
                lines.append(key)
        return "\n".join(lines).encode()
    if isinstance(data, list | tuple):
        return "\n".join(str(v) for v in data).encode()
    if isinstance(data, bytes):
        return data
    return str(data).encode()


def root_listing() -> Reply:
    """`GET /`: the EC2 versions and `latest` (answered before any identification, as Nova does)."""
    return Reply(200, listing([*EC2_VERSIONS, "latest"]))


def openstack_versions(today: str | None = None) -> list[str]:
    today = today or datetime.now(UTC).strftime("%Y-%m-%d")
    return [v for v in OPENSTACK_VERSIONS if v <= today] + ["latest"]


def hostname(source: Source) -> str:
    inst = source.instance
    host = inst.hostname or inst.name or f"host-{inst.id[:8]}"
    return f"{host}.{source.dhcp_domain}" if source.dhcp_domain else host


def _ec2_id(prefix: str, seed: str) -> str:
    """A stable EC2-style id (`i-%08x`) derived from a uuid, since provnet has no integer instance ids."""
    return f"{prefix}-{int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16):08x}"


def _first_ipv4(source: Source) -> str | None:
    for vif in source.vifs:
        for ip in vif.port.ips():
            if ipaddress.ip_address(ip).version == 4:
                return ip
    return None


def ec2_tree(source: Source, version: str) -> dict[str, Any]:
    """The EC2 tree of one version (already resolved from `latest`): {"meta-data": {...}, "user-data": bytes}."""
    inst = source.instance
    host = hostname(source)
    groups: list[str] = []
    for vif in source.vifs:
        groups.extend(g for g in vif.port.security_groups if g not in groups)
    md: dict[str, Any] = {
        "ami-id": _ec2_id("ami", f"image-{inst.id}"),
        "ami-launch-index": inst.launch_index,
        "ami-manifest-path": "FIXME",
        "instance-id": _ec2_id("i", inst.id),
        "hostname": host,
        "local-ipv4": _first_ipv4(source) or source.request_address or "",
        "reservation-id": _ec2_id("r", f"reservation-{inst.id}"),
        "security-groups": groups,
    }
    if inst.key_pairs:
        md["public-keys"] = {str(i): {"_name": f"{i}={k.name}", "openssh-key": k.data}
                             for i, k in enumerate(inst.key_pairs)}
    if version >= "2007-01-19":
        md["local-hostname"] = host
        md["public-hostname"] = host
        md["public-ipv4"] = ""
    if version >= "2007-08-29":
        md["instance-type"] = inst.flavor
    if version >= "2007-12-15":
        md["block-device-mapping"] = {"ami": "vda", "root": "/dev/vda"}
    if version >= "2008-02-01":
        md["placement"] = {"availability-zone": inst.availability_zone}
    if version >= "2008-09-01":
        md["instance-action"] = "none"
    tags = instance_tags(inst)
    if tags is not None:
        md["tags"] = {"instance": tags}
    tree: dict[str, Any] = {"meta-data": md}
    if inst.user_data is not None:
        tree["user-data"] = inst.user_data
    return tree


def instance_tags(inst: Instance) -> dict[str, str] | None:
    """The instance's tags (its properties, as OpenStack's EC2 API maps them), when it opted in; tags whose key
    cannot be a path segment are left out of the EC2 tree by the caller's listing rules."""
    if not options_of(inst.metadata).tags:
        return None
    return {k: v for k, v in guest_properties(inst.metadata).items() if "/" not in k and k not in (".", "..")}


def meta_data(source: Source, version: str) -> dict[str, Any]:
    """meta_data.json without `random_seed` (added per request by `MetadataTree`)."""
    inst = source.instance
    md: dict[str, Any] = {"uuid": inst.id}
    meta = guest_properties(inst.metadata)
    if meta:
        md["meta"] = meta
    if inst.key_pairs:
        md["public_keys"] = {k.name: k.data for k in inst.key_pairs}
        md["keys"] = [{"name": k.name, "type": k.type, "data": k.data} for k in inst.key_pairs]
    md["hostname"] = hostname(source)
    md["name"] = inst.name
    md["launch_index"] = inst.launch_index
    md["availability_zone"] = inst.availability_zone
    if version >= LIBERTY:
        md["project_id"] = inst.project_id
    if version >= NEWTON_ONE:
        md["devices"] = []  # no hypervisor reports device metadata here (Nova renders [] then, too)
    if version >= VICTORIA:
        md["dedicated_cpus"] = []
    tags = instance_tags(inst)
    if tags is not None:
        md["tags"] = tags
    return md


def _netmask(subnet: Subnet) -> str:
    return str(subnet.network.netmask)


def _routes(subnet: Subnet, metadata_ip: str | None) -> list[dict[str, str]]:
    if subnet.ip_version == 4:
        return [{"network": str(r.destination.network_address), "netmask": str(r.destination.netmask),
                 "gateway": str(r.nexthop)} for r in port_routes(subnet, metadata_ip)]
    if subnet.gateway_ip:
        return [{"network": "::", "netmask": "::", "gateway": subnet.gateway_ip}]
    return []


def network_data(source: Source) -> dict[str, Any]:
    """network_data.json: links, networks (first v4 and first v6 subnet per port) and DNS services.

    A subnet with enable_dhcp is `ipv4_dhcp`; any other (the seed's external-DHCP subnet) is static with the
    routes of `port_routes`, the same list DHCP options 121/249 carry.
    """
    if not source.vifs:
        return {}
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    services: list[dict[str, str]] = []
    for vif in source.vifs:
        port = vif.port
        link_id = f"tap{port.id[:11]}"
        dhcp = any(s.enable_dhcp for s in vif.subnets)
        links.append({
            "id": link_id,
            "vif_id": port.id,
            "type": port.binding_vif_type if port.binding_vif_type in VIF_TYPES else "phy",
            "mtu": None if dhcp else vif.network.mtu,
            "ethernet_mac_address": port.mac_address,
        })
        seen_versions: set[int] = set()
        for subnet in vif.subnets:
            if subnet.ip_version in seen_versions:
                continue
            seen_versions.add(subnet.ip_version)
            net_id = f"network{len(networks)}"
            family = "ipv4" if subnet.ip_version == 4 else "ipv6"
            dns = [{"type": "dns", "address": a} for a in subnet.dns_nameservers]
            for entry in dns:
                if entry not in services:
                    services.append(entry)
            if subnet.enable_dhcp:
                networks.append({"id": net_id, "type": f"{family}_dhcp", "link": link_id,
                                 "network_id": vif.network.id})
                continue
            address = next((f.ip_address for f in port.fixed_ips if f.subnet_id == subnet.id), None)
            networks.append({
                "id": net_id, "type": family, "link": link_id, "ip_address": address,
                "netmask": _netmask(subnet), "routes": _routes(subnet, vif.metadata_hops.get(subnet.id)),
                "network_id": vif.network.id,
                "services": dns,
            })
    return {"links": links, "networks": networks, "services": services}


def vendor_data(source: Source) -> dict[str, Any]:
    """vendor_data.json: the static JSON file, overlaid by the instance's own vendor data."""
    return {**(source.static_vendor_data or {}), **source.instance.vendor_data}


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(", ", ": ")).encode()


class MetadataTree:
    """One instance's trees, rendered on first use per path and reused (only random_seed is fresh per GET)."""

    def __init__(self, source: Source, today: str | None = None) -> None:
        self.source = source
        self._today = today
        self._replies: dict[str, Reply] = {}
        self._ec2_trees: dict[str, dict[str, Any]] = {}

    def lookup(self, raw_path: str) -> Reply:
        """Reply for a request path; `PASSWORD_LEAF` for an OpenStack `password` path (the caller serves it)."""
        reply = self._replies.get(raw_path)
        if reply is None:
            reply = self._resolve(raw_path)
            if reply.status:  # not a marker
                reply = replace(reply, etag=etag_of(reply.status, reply.content_type, reply.body))
            if len(self._replies) < 256:  # bounded: paths are client-chosen
                self._replies[raw_path] = reply
        if reply.seeded:
            seed = base64.b64encode(os.urandom(512))
            return Reply(200, b"".join((reply.body, b', "random_seed": "', seed, b'"}')), JSON, etag=reply.etag)
        return reply

    def _resolve(self, raw_path: str) -> Reply:
        path = posixpath.normpath("/" + raw_path.lstrip("/"))
        tokens = [t for t in path.split("/") if t]
        if not tokens:
            return root_listing()
        if tokens[0] == "openstack":
            return self._openstack(tokens[1:])
        if tokens[0] == "ec2":
            tokens = tokens[1:]
            if not tokens:
                return Reply(200, listing([*EC2_VERSIONS, "latest"]))
        return self._ec2(tokens)

    def _ec2(self, tokens: list[str]) -> Reply:
        version = EC2_VERSIONS[-1] if tokens[0] == "latest" else tokens[0]
        if version not in EC2_VERSIONS:
            return NOT_FOUND
        if tuple(tokens[1:]) == IDENTITY_EC2:
            return IDENTITY_LEAF
        node: object = self._ec2_trees.get(version)
        if node is None:
            node = self._ec2_trees[version] = ec2_tree(self.source, version)
        for token in tokens[1:]:
            if not isinstance(node, dict) or token == "_name" or token not in node:
                return NOT_FOUND
            node = node[token]
        secret = USER_DATA if tokens[1:] == ["user-data"] else ""
        return Reply(200, listing(node), secret=secret)

    def _openstack(self, tokens: list[str]) -> Reply:
        if not tokens:
            return Reply(200, listing(openstack_versions(self._today)))
        if tokens[0] == "content":
            return NOT_FOUND  # injected files exist only on a config drive here
        version = OPENSTACK_VERSIONS[-1] if tokens[0] == "latest" else tokens[0]
        if version not in OPENSTACK_VERSIONS:
            return NOT_FOUND
        inst = self.source.instance
        if len(tokens) == 1:
            names = [MD_JSON]
            if inst.user_data is not None:
                names.append(UD)
            if version >= GRIZZLY:
                names.append(PASSWORD)
            if version >= HAVANA:
                names.append(VD_JSON)
            if version >= LIBERTY:
                names.append(NW_JSON)
            if version >= NEWTON_TWO:
                names.append(VD2_JSON)
            return Reply(200, listing(names))
        if len(tokens) > 2:
            return NOT_FOUND
        name = tokens[1]
        if name == MD_JSON:
            body = _json(meta_data(self.source, version))
            if version < GRIZZLY:
                return Reply(200, body, JSON)
            return Reply(200, body[:-1], JSON, seeded=True)
        if name == UD and inst.user_data is not None:
            return Reply(200, inst.user_data, secret=USER_DATA)
        if name == PASSWORD and version >= GRIZZLY:
            return PASSWORD_LEAF
        if name == VD_JSON and version >= HAVANA:
            return Reply(200, _json(vendor_data(self.source)), JSON, secret=VENDOR_DATA)
        if name == NW_JSON and version >= LIBERTY:
            return Reply(200, _json(network_data(self.source)))
        if name == VD2_JSON and version >= NEWTON_TWO:
            return Reply(200, _json({"static": vendor_data(self.source)}), JSON, secret=VENDOR_DATA)
        if name == IDENTITY_OPENSTACK:
            return IDENTITY_LEAF
        return NOT_FOUND


def password_post(current: str | None, body: bytes) -> tuple[Reply, str | None]:
    """Nova's password POST rule: once only (409), at most 1020 bytes (400). Returns the reply and what to store."""
    if current:
        return Reply(409, b"409 Conflict\n\nThe password is already set.\n"), None
    if len(body) > PASSWORD_MAX:
        return Reply(400, b"400 Bad Request\n\nRequest is too large.\n"), None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Reply(400, b"400 Bad Request\n\nThe password must be UTF-8 text.\n"), None
    if "\x00" in text:  # no store keeps it (PostgreSQL refuses it)
        return Reply(400, b"400 Bad Request\n\nThe password must not contain NUL.\n"), None
    return Reply(200), text
