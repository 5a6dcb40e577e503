# The Neutron v2.0 subset: version documents, extensions, networks, subnets, ports, routers and agents.
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from provnet.api import wire
from provnet.api.authz import Authz
from provnet.api.backend import Backend
from provnet.api.middleware import CONTEXT_KEY, RequestContext, json_response
from provnet.model.errors import ExtensionNotFound, HTTPBadRequest
from provnet.model.resources import Agent

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


class NetworkingApi:
    def __init__(self, backend: Backend, agent_down_time: float, authz: Authz) -> None:
        self.backend = backend
        self.registry = backend.registry
        self.agent_down_time = agent_down_time
        self.authz = authz  # Neutron's policy: one call per step below (nothing is checked under noauth)

    def to_api(self, obj: Any) -> dict:
        if isinstance(obj, Agent):  # `alive` depends on this server's agent_down_time
            return obj.to_api(self.agent_down_time, self.backend.now())
        return obj.to_api()

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
            query = wire.parse_query(request.query.items())
            items = await self.backend.read_many(kind.method(self.registry, "list"), query.filters)
            visible = await self.authz.visible(request[CONTEXT_KEY], kind.member, [self.to_api(i) for i in items])
            page, next_marker = wire.paginate(visible, query)
            body: dict[str, Any] = {kind.collection: [wire.select_fields(d, query.fields) for d in page]}
            if next_marker is not None:
                href = request.url.update_query({"marker": next_marker})
                body[f"{kind.collection}_links"] = [{"rel": "next", "href": str(href)}]
            return json_response(body)

        async def show(request: web.Request) -> web.Response:
            query = wire.parse_query(request.query.items())
            obj = await self.backend.read(kind.method(self.registry, "get"), request.match_info["id"])
            shown = await self.authz.show(request[CONTEXT_KEY], kind.member, self.to_api(obj))
            return json_response({kind.member: wire.select_fields(shown, query.fields)})

        async def create(request: web.Request) -> web.Response:
            items, bulk = wire.parse_create_body(await request.read(), kind.member, kind.collection)
            ctx = request[CONTEXT_KEY]
            items = [with_project(attrs, ctx) for attrs in items]
            await self.authz.check_create(ctx, kind.member, items)
            if bulk:  # one transaction: all of them, or none (and nobody saw the first ones)
                created = await self.backend.write(self.registry.create_many, kind.member, items)
                shown = [await self.authz.view(ctx, kind.member, self.to_api(o)) for o in created]
                return json_response({kind.collection: shown}, status=201)
            obj = await self.backend.write(kind.method(self.registry, "create"), items[0])
            return json_response({kind.member: await self.authz.view(ctx, kind.member, self.to_api(obj))},
                                 status=201)

        async def update(request: web.Request) -> web.Response:
            attrs = wire.parse_member_body(await request.read(), kind.member)
            ctx = request[CONTEXT_KEY]
            if self.authz.enforcing(ctx):
                current = await self.backend.read(kind.method(self.registry, "get"), request.match_info["id"])
                await self.authz.check_update(ctx, kind.member, self.to_api(current), attrs)
            obj = await self.backend.write(kind.method(self.registry, "update"), request.match_info["id"], attrs)
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
