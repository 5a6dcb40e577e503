# provnet's own API beside Neutron's (/provnet/v1): instances (Nova's side), passwords, agent reports, revision.
from __future__ import annotations

import asyncio
import ipaddress
import math
import re

from aiohttp import web

from provnet.api import wire
from provnet.api.backend import Backend
from provnet.api.middleware import CONTEXT_KEY, json_response
from provnet.api.networking import EXT, ID, LIST_LANES, list_response, with_project
from provnet.model.errors import HTTPBadRequest

PREFIX = "/provnet/v1"
MAX_LONG_POLL = 60.0
MAX_PASSWORD = 256  # Nova's metadata password limit


_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")


def _one(request: web.Request, name: str) -> str:
    values = request.query.getall(name, [])
    if len(values) != 1 or not values[0]:
        raise HTTPBadRequest(msg=f"Failed to parse request. Required attribute '{name}' not specified (once)")
    return values[0]


def _integer(request: web.Request, name: str, default: int | None, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise HTTPBadRequest(msg=f"Failed to parse request. Required attribute '{name}' not specified")
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise HTTPBadRequest(msg=f"Invalid input for {name}. Reason: '{raw[:64]}' is not an integer from {low} "
                                 f"to {high}.")
    return int(raw)


class ProvnetApi:
    def __init__(self, backend: Backend, agent_down_time: float, max_limit: int = wire.PAGINATION_MAX_LIMIT) -> None:
        self.backend = backend
        self.registry = backend.registry
        self.agent_down_time = agent_down_time
        self.max_limit = max_limit
        self.list_lanes = asyncio.Semaphore(LIST_LANES)

    # instances: {"instance": {...}} like a Neutron resource; user_data is base64 on the wire
    async def list_instances(self, request: web.Request) -> web.Response:
        return await list_response(request, self.backend, self.registry.list_instances, "instances",
                                   lambda i: i.to_api(), self.max_limit, self.list_lanes)

    async def show_instance(self, request: web.Request) -> web.Response:
        query = wire.parse_query(request.query.items())
        instance = await self.backend.read(self.registry.get_instance, request.match_info["id"])
        return json_response({"instance": wire.select_fields(instance.to_api(), query.fields)})

    async def create_instance(self, request: web.Request) -> web.Response:
        attrs = wire.parse_member_body(await request.read(), "instance")
        ctx = request[CONTEXT_KEY]
        instance = await self.backend.write(self.registry.create_instance, with_project(attrs, ctx))
        return json_response({"instance": instance.to_api()}, status=201)

    async def update_instance(self, request: web.Request) -> web.Response:
        attrs = wire.parse_member_body(await request.read(), "instance")
        if_revision = wire.parse_if_match(request.headers.get("If-Match"))
        instance = await self.backend.write(self.registry.update_instance, request.match_info["id"], attrs,
                                            if_revision)
        return json_response({"instance": instance.to_api()})

    async def delete_instance(self, request: web.Request) -> web.Response:
        await self.backend.write(self.registry.delete_instance, request.match_info["id"])
        return web.Response(status=204)

    # the instance password (Nova's os-server-password): set once, read back
    async def get_password(self, request: web.Request) -> web.Response:
        password = await self.backend.read(self.registry.get_instance_password, request.match_info["id"])
        return json_response({"password": password})

    async def set_password(self, request: web.Request) -> web.Response:
        body = wire.parse_json(await request.read())
        if not isinstance(body, dict) or set(body) != {"password"}:
            raise HTTPBadRequest(msg='Invalid format: the body must be {"password": "<text>"}')
        password = body["password"]
        if not isinstance(password, str):
            raise HTTPBadRequest(msg="Invalid input for password. Reason: not a string.")
        if len(password) > MAX_PASSWORD:
            raise HTTPBadRequest(msg=f"Invalid input for password. Reason: longer than {MAX_PASSWORD} characters.")
        await self.backend.write(self.registry.set_instance_password, request.match_info["id"], password)
        return web.Response(status=204)

    # agents report their state here (Neutron does it over RPC; there is no POST /v2.0/agents)
    async def report_agent(self, request: web.Request) -> web.Response:
        body = wire.parse_member_body(await request.read(), "agent")
        unknown = sorted(set(body) - {"host", "agent_type", "binary", "configurations"})
        if unknown:
            raise HTTPBadRequest(msg=f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        for name in ("host", "agent_type", "binary"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise HTTPBadRequest(msg=f"Failed to parse request. Required attribute '{name}' not specified")
        configurations = body.get("configurations", {})
        if not isinstance(configurations, dict):
            raise HTTPBadRequest(msg="Invalid input for configurations. Reason: must be a JSON object.")
        agent = await self.backend.write(self.registry.report_agent_state, body["host"], body["agent_type"],
                                         body["binary"], configurations)
        return json_response({"agent": agent.to_api(self.agent_down_time, self.backend.now())})

    # the Registry's indexed hot-path lookups, for agents on other hosts (RemoteRegistry): one call, one answer
    async def ports_by_ip(self, request: web.Request) -> web.Response:
        ip_address = _one(request, "ip_address")
        try:
            ipaddress.ip_address(ip_address)
        except ValueError:
            raise HTTPBadRequest(
                msg=f"Invalid input for ip_address. Reason: '{ip_address}' is not a valid IP address.") from None
        network_ids = request.query.getall("network_id", [])
        ports = await self.backend.read(self.registry.find_ports_by_ip, ip_address, network_ids)
        return json_response({"ports": [p.to_api() for p in ports]})

    async def ports_by_mac(self, request: web.Request) -> web.Response:
        mac_address = _one(request, "mac_address")
        if not _MAC.match(mac_address):
            raise HTTPBadRequest(
                msg=f"Invalid input for mac_address. Reason: '{mac_address}' is not a valid MAC address.")
        network_ids = request.query.getall("network_id", None)
        ports = await self.backend.read(self.registry.find_ports_by_mac, mac_address, network_ids)
        return json_response({"ports": [p.to_api() for p in ports]})

    async def router_network_ids(self, request: web.Request) -> web.Response:
        network_ids = await self.backend.read(self.registry.router_network_ids, request.match_info["id"])
        return json_response({"network_ids": network_ids})

    # what a DHCP server on another host reads: each fixed IP of the ports on some networks (ports, or a POSTed
    # query since a list of ports can be long)
    async def reservations(self, request: web.Request) -> web.Response:
        body = wire.parse_json(await request.read())
        if not isinstance(body, dict) or not set(body) <= {"network_ids", "port_ids"} or "network_ids" not in body:
            raise HTTPBadRequest(msg='Invalid format: the body must be {"network_ids": [...], "port_ids": [...]}')
        ids = {key: body[key] for key in ("network_ids", "port_ids") if key in body}
        for key, value in ids.items():
            if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 255 for v in value):
                raise HTTPBadRequest(msg=f"Invalid input for {key}. Reason: not a list of ids.")
        rows = await self.backend.read(self.registry.reservation_rows, ids["network_ids"], ids.get("port_ids"))
        return json_response({"reservations": [list(row) for row in rows]})

    # the revision: the change feed's position
    async def revision(self, request: web.Request) -> web.Response:
        return json_response({"revision": await self.backend.read(self.registry.revision)})

    # the change feed for agents on other hosts: `?after=N[&limit=L][&timeout=S]` answers the changes after N,
    # waiting up to S seconds for some (long-poll); {"gap": true} when they are gone (rebuild, then follow)
    async def changes(self, request: web.Request) -> web.Response:
        after = _integer(request, "after", None, 0, 2**62)
        limit = _integer(request, "limit", 1000, 1, 1_000_000)
        timeout_raw = request.query.get("timeout", "0")
        try:
            timeout = float(timeout_raw)
        except ValueError:
            timeout = math.nan
        if not 0 <= timeout <= MAX_LONG_POLL:
            raise HTTPBadRequest(
                msg=f"Invalid input for timeout. Reason: '{timeout_raw}' is not a number of seconds "
                    f"from 0 to {MAX_LONG_POLL:g}.")
        batch = await self.backend.changes(after, timeout, limit)
        return json_response(batch.to_api())

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{PREFIX}/instances{EXT}", self.list_instances)
        r.add_post(f"{PREFIX}/instances{EXT}", self.create_instance)
        r.add_get(f"{PREFIX}/instances/{ID}{EXT}", self.show_instance)
        r.add_put(f"{PREFIX}/instances/{ID}{EXT}", self.update_instance)
        r.add_delete(f"{PREFIX}/instances/{ID}{EXT}", self.delete_instance)
        r.add_get(PREFIX + "/instances/{id}/password", self.get_password)
        r.add_post(PREFIX + "/instances/{id}/password", self.set_password)
        r.add_post(f"{PREFIX}/agents/report", self.report_agent)
        r.add_get(f"{PREFIX}/ports/by-ip", self.ports_by_ip)
        r.add_get(f"{PREFIX}/ports/by-mac", self.ports_by_mac)
        r.add_get(PREFIX + "/routers/{id}/network_ids", self.router_network_ids)
        r.add_get(f"{PREFIX}/revision", self.revision)
        r.add_get(f"{PREFIX}/changes", self.changes)
        r.add_post(f"{PREFIX}/reservations/query", self.reservations)
