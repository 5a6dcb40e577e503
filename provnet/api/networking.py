# The Neutron v2.0 subset: version documents, extensions, networks, subnets, ports, routers and agents.
from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from provnet.api import wire
from provnet.api.authz import Authz
from provnet.api.backend import LIST_THREADS, Backend
from provnet.api.middleware import CONTEXT_KEY, RequestContext, json_response
from provnet.model.errors import ExtensionNotFound, HTTPBadRequest
from provnet.model.resources import Agent

# Lists rendered at once per app (the others wait their turn on the loop): each is Python work that holds the
# GIL, and every thread wanting it delays the event loop's next turn by up to a switch interval
LIST_LANES = LIST_THREADS
VISIBLE_CHUNK = 200  # items read per store page when the policy may hide some of them
LARGE_BODY = 64 * 1024  # create bodies past this size are handled wholly off the event loop
EXT = "{ext:(\\.json)?}"  # clients may add `.json` to any path
ID = "{id:[^/]+?}"


@dataclass(frozen=True)
class Kind:
    """One Neutron collection and the registry methods behind it."""

    collection: str
    member: str
    creatable: bool = True

    def method(self, registry: Any, verb: str) -> Callable[..., Any]:
        suffix = self.collection if verb == "list" else self.member
        return getattr(registry, f"{verb}_{suffix}")


KINDS = [Kind(collection, member, creatable=collection != "agents") for collection, member in wire.RESOURCES.items()]


def base_url(request: web.Request) -> str:
    """The URL the client reached us by (its Host header), so the links we hand out work for it."""
    return f"{request.scheme}://{request.host}"


def with_project(attrs: dict, ctx: RequestContext) -> dict:
    if "project_id" not in attrs and "tenant_id" not in attrs:
        return {**attrs, "project_id": ctx.project_id}
    return attrs


async def list_response(request: web.Request, backend: Backend, list_fn: Callable[..., Any], collection: str,
                        to_api: Callable[[Any], dict], max_limit: int, lanes: asyncio.Semaphore) -> web.Response:
    """A list as Neutron answers it: filtered, sorted and cut by the store (a page costs what it holds), at most
    `max_limit` items (pagination_max_limit; past it the client follows `<collection>_links` `next`)."""
    query = wire.parse_query(request.query.items())
    page = wire.page_of(query, max_limit)
    url, pairs = f"{base_url(request)}{request.path}", list(request.query.items())

    def render() -> bytes:
        """Read, shape and encode the answer in the registry's thread: the loop only sends bytes."""
        items = list_fn(query.filters, page)
        extra = {}
        # links as Neutron builds them when the client pages (limit given); when only the cap applies, links
        # only when it cut the list, so a list that fits reads as it always did
        if page is not None and page.limit is not None and (query.limit or len(items) >= page.limit):
            extra[f"{collection}_links"] = wire.pagination_links(url, pairs, [i.id for i in items], page.limit,
                                                                 page.reverse)
        return wire.encode_collection(collection, (wire.select_fields(to_api(i), query.fields) for i in items),
                                      extra)

    async with lanes:  # (waiting here holds no thread and no GIL)
        body = await backend.read_many(render)
    return web.Response(body=body, content_type="application/json")


class NetworkingApi:
    def __init__(self, backend: Backend, agent_down_time: float, authz: Authz,
                 max_limit: int = wire.PAGINATION_MAX_LIMIT) -> None:
        self.backend = backend
        self.registry = backend.registry
        self.agent_down_time = agent_down_time
        self.authz = authz  # Neutron's policy: one call per step below (nothing is checked under noauth)
        self.max_limit = max_limit
        self.list_lanes = asyncio.Semaphore(LIST_LANES)

    def to_api(self, obj: Any) -> dict:
        if isinstance(obj, Agent):  # `alive` depends on this server's agent_down_time
            return obj.to_api(self.agent_down_time, self.backend.now())
        return obj.to_api()

    def _create_many(self, raw: bytes, kind: Kind, ctx: RequestContext) -> bytes:
        """A large create body, whole: parse, create (one transaction), encode the answer (blocking)."""
        items, bulk = wire.parse_create_body(raw, kind.member, kind.collection)
        items = [with_project(attrs, ctx) for attrs in items]
        if bulk:
            created = self.registry.create_many(kind.member, items)
            return wire.encode_collection(kind.collection, (self.to_api(o) for o in created))
        return json.dumps({kind.member: self.to_api(kind.method(self.registry, "create")(items[0]))}).encode()

    async def _list_visible(self, request: web.Request, ctx: RequestContext, kind: Kind) -> web.Response:
        """A list under Neutron's policy: the store's pages (sorted, from the marker) read until `limit` items the
        caller may see are found or the store has no more; the links name only items the caller sees."""
        query = wire.parse_query(request.query.items())
        page = wire.page_of(query, self.max_limit)
        list_fn = kind.method(self.registry, "list")
        limit = page.limit if page is not None else None
        reverse = page is not None and page.reverse
        chunk = max(limit, VISIBLE_CHUNK) if limit is not None else None
        found: list[dict] = []
        marker = page.marker if page is not None else None
        while True:
            store_page = dataclasses.replace(page, marker=marker, limit=chunk) if page is not None else None
            async with self.list_lanes:
                items = await self.backend.read_many(list_fn, query.filters, store_page)
            visible = await self.authz.visible(ctx, kind.member, [self.to_api(i) for i in items])
            if reverse:
                found[:0] = visible
            else:
                found.extend(visible)
            if chunk is None or limit is None or len(items) < chunk or len(found) >= limit:
                break
            marker = items[0].id if reverse else items[-1].id
        if limit is not None and len(found) > limit:
            found = found[-limit:] if reverse else found[:limit]
        extra = {}
        if limit is not None and (query.limit or len(found) >= limit):
            url, pairs = f"{base_url(request)}{request.path}", list(request.query.items())
            extra[f"{kind.collection}_links"] = wire.pagination_links(url, pairs, [i["id"] for i in found], limit,
                                                                      reverse)
        body = wire.encode_collection(kind.collection, (wire.select_fields(i, query.fields) for i in found), extra)
        return web.Response(body=body, content_type="application/json")

    # documents
    async def versions(self, request: web.Request) -> web.Response:
        return json_response(wire.version_doc(base_url(request)))

    async def resources(self, request: web.Request) -> web.Response:
        return json_response(wire.resources_doc(base_url(request)))

    async def extensions(self, request: web.Request) -> web.Response:
        return json_response(wire.extensions_doc())

    async def extension(self, request: web.Request) -> web.Response:
        alias = request.match_info["alias"]
        found = wire.find_extension(alias)
        if found is None:
            raise ExtensionNotFound(extension_alias=alias)
        return json_response(found)

    # collections
    def handlers(self, kind: Kind) -> dict[str, Callable]:
        async def list_(request: web.Request) -> web.Response:
            ctx = request[CONTEXT_KEY]
            if self.authz.enforcing(ctx):
                return await self._list_visible(request, ctx, kind)
            return await list_response(request, self.backend, kind.method(self.registry, "list"), kind.collection,
                                       self.to_api, self.max_limit, self.list_lanes)

        async def show(request: web.Request) -> web.Response:
            query = wire.parse_query(request.query.items())
            obj = await self.backend.read(kind.method(self.registry, "get"), request.match_info["id"])
            shown = await self.authz.show(request[CONTEXT_KEY], kind.member, self.to_api(obj))
            return json_response({kind.member: wire.select_fields(shown, query.fields)})

        async def create(request: web.Request) -> web.Response:
            raw, ctx = await request.read(), request[CONTEXT_KEY]
            enforcing = self.authz.enforcing(ctx)
            if len(raw) > LARGE_BODY and not enforcing:  # a bulk: parsed, created and encoded in the writer
                body = await self.backend.write(self._create_many, raw, kind, ctx, inline=False)  # thread
                return web.Response(body=body, status=201, content_type="application/json")
            if len(raw) > LARGE_BODY:  # parsed off the loop, then checked item by item against the policy
                items, bulk = await asyncio.to_thread(wire.parse_create_body, raw, kind.member, kind.collection)
            else:
                items, bulk = wire.parse_create_body(raw, kind.member, kind.collection)
            items = [with_project(attrs, ctx) for attrs in items]
            await self.authz.check_create(ctx, kind.member, items)
            if bulk:  # one transaction: all of them, or none (and nobody saw the first ones)
                created = await self.backend.write(self.registry.create_many, kind.member, items, inline=False)
                shown = [await self.authz.view(ctx, kind.member, self.to_api(o)) for o in created]
                return json_response({kind.collection: shown}, status=201)
            obj = await self.backend.write(kind.method(self.registry, "create"), items[0])
            return json_response({kind.member: await self.authz.view(ctx, kind.member, self.to_api(obj))},
                                 status=201)

        async def update(request: web.Request) -> web.Response:
            attrs = wire.parse_member_body(await request.read(), kind.member)
            if_revision = wire.parse_if_match(request.headers.get("If-Match"))
            ctx = request[CONTEXT_KEY]
            if self.authz.enforcing(ctx):
                current = await self.backend.read(kind.method(self.registry, "get"), request.match_info["id"])
                await self.authz.check_update(ctx, kind.member, self.to_api(current), attrs)
            update = kind.method(self.registry, "update")
            if if_revision is None:  # (agents have no revision)
                obj = await self.backend.write(update, request.match_info["id"], attrs)
            else:
                obj = await self.backend.write(update, request.match_info["id"], attrs, if_revision)
            return json_response({kind.member: await self.authz.view(ctx, kind.member, self.to_api(obj))})

        async def delete(request: web.Request) -> web.Response:
            ctx = request[CONTEXT_KEY]
            if self.authz.enforcing(ctx):
                current = await self.backend.read(kind.method(self.registry, "get"), request.match_info["id"])
                await self.authz.check_delete(ctx, kind.member, self.to_api(current))
            await self.backend.write(kind.method(self.registry, "delete"), request.match_info["id"])
            return web.Response(status=204)

        return {"list": list_, "show": show, "create": create, "update": update, "delete": delete}

    # router interfaces
    async def router_interface(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body = wire.parse_json(await request.read())
        if not isinstance(body, dict):
            raise HTTPBadRequest(msg="Invalid format: the body must be a JSON object with subnet_id or port_id")
        unknown = sorted(set(body) - {"subnet_id", "port_id"})
        if unknown:
            raise HTTPBadRequest(msg=f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        subnet_id, port_id = body.get("subnet_id"), body.get("port_id")
        for name, value in (("subnet_id", subnet_id), ("port_id", port_id)):
            if value is not None and not isinstance(value, str):
                raise HTTPBadRequest(msg=f"Invalid input for {name}. Reason: '{value}' is not a valid UUID.")
        if not subnet_id and not port_id:
            raise HTTPBadRequest(msg="Bad router request: Either subnet_id or port_id must be specified.")
        if subnet_id and port_id and action == "add_router_interface":
            raise HTTPBadRequest(msg="Bad router request: Cannot specify both subnet-id and port-id.")
        ctx = request[CONTEXT_KEY]
        if self.authz.enforcing(ctx):
            router = await self.backend.read(self.registry.get_router, request.match_info["id"])
            await self.authz.check_action(ctx, action, "router", router.to_api())
            if subnet_id:
                subnet = await self.backend.read(self.registry.get_subnet, subnet_id)
                await self.authz.show(ctx, "subnet", subnet.to_api())
            if port_id:
                port = await self.backend.read(self.registry.get_port, port_id)
                await self.authz.show(ctx, "port", port.to_api())
        fn = getattr(self.registry, action)
        result = await self.backend.write(fn, request.match_info["id"], subnet_id, port_id)
        return json_response(result)

    # L3 agent scheduling (Neutron's l3_agent_scheduler extension); its rules are checked before the handler
    # (provnet.api.auth.ROUTE_POLICY)
    async def l3_routers(self, request: web.Request) -> web.Response:
        routers = await self.backend.read(self.registry.list_routers_on_l3_agent, request.match_info["id"])
        return json_response({"routers": [r.to_api() for r in routers]})

    async def l3_router_add(self, request: web.Request) -> web.Response:
        body = wire.parse_json(await request.read())
        # ha_chassis_priority (OVN's) is accepted and ignored: one agent hosts a router here
        if (not isinstance(body, dict) or not isinstance(body.get("router_id"), str)
                or set(body) - {"router_id", "ha_chassis_priority"}):
            raise HTTPBadRequest(msg="Invalid format: the body must be {\"router_id\": \"<router id>\"}")
        await self.backend.write(self.registry.add_router_to_l3_agent, request.match_info["id"], body["router_id"])
        return json_response({}, status=201)

    async def l3_router_remove(self, request: web.Request) -> web.Response:
        await self.backend.write(self.registry.remove_router_from_l3_agent, request.match_info["id"],
                                 request.match_info["router_id"])
        return web.Response(status=204)

    async def l3_agents(self, request: web.Request) -> web.Response:
        agents = await self.backend.read(self.registry.list_l3_agents_hosting_router, request.match_info["id"])
        return json_response({"agents": [self.to_api(a) for a in agents]})

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.versions)
        r.add_get("/v2.0/", self.resources)
        r.add_get("/v2.0/extensions" + EXT, self.extensions)
        r.add_get("/v2.0/extensions/{alias:[^/]+?}" + EXT, self.extension)
        for kind in KINDS:
            h = self.handlers(kind)
            collection = f"/v2.0/{kind.collection}"
            r.add_get(collection + EXT, h["list"])
            r.add_get(f"{collection}/{ID}{EXT}", h["show"])
            r.add_put(f"{collection}/{ID}{EXT}", h["update"])
            r.add_delete(f"{collection}/{ID}{EXT}", h["delete"])
            if kind.creatable:
                r.add_post(collection + EXT, h["create"])
        r.add_put("/v2.0/routers/{id}/{action:add_router_interface|remove_router_interface}" + EXT,
                  self.router_interface)
        r.add_get(f"/v2.0/agents/{ID}/l3-routers{EXT}", self.l3_routers)
        r.add_post(f"/v2.0/agents/{ID}/l3-routers{EXT}", self.l3_router_add)
        r.add_delete(f"/v2.0/agents/{ID}/l3-routers/{{router_id:[^/]+?}}{EXT}", self.l3_router_remove)
        r.add_get(f"/v2.0/routers/{ID}/l3-agents{EXT}", self.l3_agents)
