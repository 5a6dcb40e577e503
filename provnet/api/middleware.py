# The API's middlewares, outermost first: request id + access log + metrics, errors as NeutronError bodies, context
# (noauth here; the Keystone one is provnet/api/auth.py).
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from provnet.model.errors import HTTPBadRequest, NeutronError
from provnet.model.resources import DEFAULT_PROJECT_ID
from provnet.model.validation import Invalid, check_text

log = logging.getLogger("provnet.api")
access_log = logging.getLogger("provnet.api.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Openstack-Request-Id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,80}$")


@dataclass(frozen=True)
class RequestContext:
    """Who is asking. Without authentication (noauth) everyone is an admin of the project the headers name and
    `creds` is None (no policy); with Keystone it comes from the token (provnet/api/auth.py)."""

    request_id: str
    project_id: str
    is_admin: bool = True
    user_id: str = ""
    is_service: bool = False
    creds: Mapping[str, Any] | None = None  # the policy's view of the caller; None: no policy is enforced


class Metrics:
    """Prometheus figures of one app (own CollectorRegistry, so several apps in one process do not clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("provnet_api_requests", "Networking API requests.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("provnet_api_request_duration_seconds", "Networking API request latency.",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))


REQUEST_ID_KEY = web.RequestKey("request_id", str)
CONTEXT_KEY = web.RequestKey("context", RequestContext)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json",
                        headers=headers)


def error_response(exc: NeutronError) -> web.Response:
    return json_response(exc.to_body(), status=exc.status)


UNMATCHED = "unmatched"


def route_name(request: web.Request) -> str:
    """The route template (`/v2.0/ports/{id}`), not the path: bounded label values for the metrics, the key of
    the route's policy decision (provnet.api.auth.ROUTE_POLICY)."""
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    if resource is None or info.http_exception is not None:
        return UNMATCHED
    return resource.canonical.replace("{ext}", "")


def make_observe_middleware(metrics: Metrics):
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Request id (kept from the caller when it sends one), access log line, metrics."""
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _REQUEST_ID.match(given) else f"req-{uuid.uuid4()}"
        request[REQUEST_ID_KEY] = request_id
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            response.headers[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            elapsed = time.perf_counter() - start
            route = route_name(request)
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(request.method, route).observe(elapsed)
            access_log.info('%s "%s %s" %d %.1fms %s', request.remote, request.method, request.path_qs,
                            status, elapsed * 1000, request_id)

    return observe


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON NeutronError body with the right status; never a traceback on the wire."""
    try:
        check_url(request)
        return await handler(request)
    except NeutronError as exc:
        log.debug("%s %s -> %d %s: %s", request.method, request.path, exc.status, exc.type, exc.message)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response(
            {"NeutronError": {"type": type(exc).__name__, "message": _http_message(request, exc), "detail": ""}},
            status=exc.status, headers={k: v for k, v in exc.headers.items() if k == "Allow"})
    except Exception:
        log.exception("unexpected error in %s %s (request %s)", request.method, request.path,
                      request.get(REQUEST_ID_KEY))
        return json_response({"NeutronError": {
            "type": "HTTPInternalServerError",
            "message": "Request Failed: internal server error while processing your request.",
            "detail": ""}}, status=500)


def check_url(request: web.Request) -> None:
    """A path or query no store can keep (NUL, lone surrogates) is refused before any handler sees it."""
    try:
        for text in (request.path, *request.query.keys(), *request.query.values()):
            check_text(text)
    except Invalid as exc:
        raise HTTPBadRequest(msg=f"Invalid input in the URL: {exc}.") from None


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"The resource could not be found: {request.path}"
    if exc.status == 405:
        return f"The method {request.method} is not allowed for {request.path}."
    if exc.status == 413:
        return "Request body too large."
    return exc.reason


@web.middleware
async def context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """noauth: the project is X-Project-Id / X-Tenant-Id, else Neutron's noauth default (Keystone: api/auth.py)."""
    project = (request.headers.get("X-Project-Id") or request.headers.get("X-Tenant-Id") or "").strip()
    request[CONTEXT_KEY] = RequestContext(request_id=request[REQUEST_ID_KEY], project_id=project or DEFAULT_PROJECT_ID)
    return await handler(request)
