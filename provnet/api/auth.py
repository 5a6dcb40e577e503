# Who is asking the networking API: noauth (admin, loopback only) or a Keystone token; the policy and TLS settings.
from __future__ import annotations

import ipaddress
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from provnet.api.authz import Authz
from provnet.api.middleware import CONTEXT_KEY, REQUEST_ID_KEY, UNMATCHED, Handler, RequestContext, context, route_name
from provnet.api.wire import RESOURCES
from provnet.config import Config, ConfigError
from provnet.identity.neutron_policy import DEFAULT_RULES
from provnet.identity.policy import Policy, PolicyError, read_policy_file
from provnet.identity.tls import TlsError, server_context
from provnet.identity.tokens import InvalidToken, KeystoneSettings, KeystoneUnavailable, KeystoneValidator
from provnet.model import errors

log = logging.getLogger("provnet.api.auth")

# Every route's policy decision, by (method, route template as middleware.route_name gives it; HEAD as GET):
#   PUBLIC: no token (the version document as Neutron's `/` app, the operational endpoints, the identity documents'
#     public keys: verifiers that hold no OpenStack credentials fetch them);
#   AUTHENTICATED: any valid token, no rule (Neutron's resource and extension lists);
#   RESOURCE: Neutron's per-resource rules (<action>_<member>, its attributes, the owner and network checks),
#     applied by the handler through Authz, as Neutron's controllers do;
#   any other value: the policy rule checked here before the handler runs.
# Behind Keystone a route missing here is refused (403) before its handler runs: a new route needs its line.
PUBLIC, AUTHENTICATED, RESOURCE = "public", "authenticated", "resource"


def _route_policy() -> dict[tuple[str, str], str]:
    table = {("GET", path): PUBLIC for path in ("/", "/healthz", "/readyz", "/metrics",
                                                 "/provnet/v1/metadata/jwks.json")}
    table.update({("GET", "/v2.0/"): AUTHENTICATED, ("GET", "/v2.0/extensions"): AUTHENTICATED,
                  ("GET", "/v2.0/extensions/{alias}"): AUTHENTICATED})
    for collection in RESOURCES:
        table.update({("GET", f"/v2.0/{collection}"): RESOURCE, ("GET", f"/v2.0/{collection}/{{id}}"): RESOURCE,
                      ("PUT", f"/v2.0/{collection}/{{id}}"): RESOURCE,
                      ("DELETE", f"/v2.0/{collection}/{{id}}"): RESOURCE})
        if collection != "agents":  # agents are created by their reports only
            table[("POST", f"/v2.0/{collection}")] = RESOURCE
    table.update({
        ("PUT", "/v2.0/routers/{id}/{action}"): RESOURCE,  # add/remove_router_interface on a visible router
        ("GET", "/v2.0/agents/{id}/l3-routers"): "get_l3-routers",
        ("POST", "/v2.0/agents/{id}/l3-routers"): "create_l3-router",
        ("DELETE", "/v2.0/agents/{id}/l3-routers/{router_id}"): "delete_l3-router",
        ("GET", "/v2.0/routers/{id}/l3-agents"): "get_l3-agents",
        # provnet's own API: user data, keys and passwords; agents' reports; agents' lookups and change feed
        ("GET", "/provnet/v1/instances"): "provnet:instances",
        ("POST", "/provnet/v1/instances"): "provnet:instances",
        ("GET", "/provnet/v1/instances/{id}"): "provnet:instances",
        ("PUT", "/provnet/v1/instances/{id}"): "provnet:instances",
        ("DELETE", "/provnet/v1/instances/{id}"): "provnet:instances",
        ("GET", "/provnet/v1/instances/{id}/password"): "provnet:instances",
        ("POST", "/provnet/v1/instances/{id}/password"): "provnet:instances",
        ("POST", "/provnet/v1/agents/report"): "provnet:report_agent_state",
        ("POST", "/provnet/v1/ports/{id}/status"): "provnet:update_port_status",
        ("GET", "/provnet/v1/ports/by-ip"): "provnet:agent_lookups",
        ("GET", "/provnet/v1/ports/by-mac"): "provnet:agent_lookups",
        ("GET", "/provnet/v1/routers/{id}/network_ids"): "provnet:agent_lookups",
        ("GET", "/provnet/v1/revision"): "provnet:agent_lookups",
        ("GET", "/provnet/v1/changes"): "provnet:agent_lookups",
        ("POST", "/provnet/v1/reservations/query"): "provnet:agent_lookups",
        ("GET", "/provnet/v1/metadata/explain"): "provnet:metadata_explain",  # any VM's ports, probes: admin
    })
    return table


ROUTE_POLICY: dict[tuple[str, str], str] = _route_policy()


def route_policy(method: str, template: str) -> str | None:
    """The decision for a matched route (None: the route has none, and is refused behind Keystone)."""
    return ROUTE_POLICY.get(("GET" if method == "HEAD" else method, template))


@dataclass
class Auth:
    """The API's identity settings: the strategy, the policy, and with Keystone the token validator."""

    strategy: str = "noauth"
    policy: Policy | None = None
    validator: KeystoneValidator | None = None

    def __post_init__(self) -> None:
        if self.policy is None:
            self.policy = Policy(DEFAULT_RULES)
        if self.strategy == "keystone" and self.validator is None:
            raise ValueError("auth_strategy keystone needs a token validator")

    @classmethod
    def from_config(cls, config: Config) -> Auth:
        """From [DEFAULT] auth_strategy, [keystone_authtoken] and [oslo_policy]; ConfigError naming the option."""
        policy = load_policy(config.get("oslo_policy.policy_file"))
        strategy = config.auth_strategy
        if strategy == "noauth":
            check_noauth_bind(config)
            return cls("noauth", policy)
        return cls("keystone", policy, KeystoneValidator(keystone_settings(config)))

    def close(self) -> None:
        if self.validator is not None:
            self.validator.close()


def load_policy(path: str) -> Policy:
    policy = Policy(DEFAULT_RULES)
    if not path:
        return policy
    try:
        rules = read_policy_file(path)
        policy = policy.override(rules, str(path))
    except PolicyError as exc:
        raise ConfigError(f"[oslo_policy] policy_file: {exc}") from None
    log.info("policy: %d rule(s) from %s override Neutron's defaults", len(rules), path)
    return policy


def check_noauth_bind(config: Config) -> None:
    """noauth makes every caller admin: refuse it on anything but loopback unless the configuration says so."""
    host = config.bind_host
    if is_loopback(host) or config.noauth_allow_remote:
        if not is_loopback(host):
            log.warning("auth_strategy = noauth on %s (noauth_allow_remote): anyone who reaches port %s is admin",
                        host, config.bind_port)
        return
    raise ConfigError(
        f"auth_strategy = noauth with bind_host = {host} would let anyone who reaches {host}:{config.bind_port} "
        "create, delete and rebind ports and read every instance's user data: set [DEFAULT] auth_strategy = "
        "keystone (and [keystone_authtoken]), bind to 127.0.0.1, or set [DEFAULT] noauth_allow_remote = true in "
        "the configuration file to accept it")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def keystone_settings(config: Config) -> KeystoneSettings:
    def opt(name: str):
        return config.get(f"keystone_authtoken.{name}")

    missing = [n for n in ("auth_url", "username", "password") if not opt(n)]
    if missing:
        raise ConfigError("auth_strategy = keystone needs [keystone_authtoken] " + ", ".join(missing))
    if opt("memcached_servers"):
        log.info("[keystone_authtoken] memcached_servers is ignored: provnet caches validated tokens in memory "
                 "for at most token_cache_time")
    return KeystoneSettings(
        auth_url=opt("auth_url"), username=opt("username"), password=opt("password"),
        project_name=opt("project_name"), user_domain_name=opt("user_domain_name"),
        project_domain_name=opt("project_domain_name"), www_authenticate_uri=opt("www_authenticate_uri"),
        cafile=opt("cafile"), insecure=opt("insecure"), token_cache_time=opt("token_cache_time"),
        negative_cache_time=opt("negative_cache_time"), timeout=opt("http_connect_timeout"))


def api_ssl_context(config: Config) -> ssl.SSLContext | None:
    try:
        return server_context(config.get("ssl.cert_file"), config.get("ssl.key_file"), "[ssl] cert_file/key_file")
    except TlsError as exc:
        raise ConfigError(str(exc)) from None


def _keystone_error(status: int, title: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """keystonemiddleware's error body (what Neutron behind it answers before its own code runs)."""
    body = {"error": {"code": status, "title": title, "message": message}}
    return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json",
                        headers=headers)


def make_context_middleware(auth: Auth, authz: Authz):
    """The `context` step of the API's middlewares for this Auth."""
    if auth.strategy == "noauth":
        return context
    validator = auth.validator
    policy = auth.policy
    assert validator is not None and policy is not None
    challenge = {"WWW-Authenticate": f'Keystone uri="{validator.settings.public_uri}"'}

    def unauthorized() -> web.Response:
        return _keystone_error(401, "Unauthorized", "The request you have made requires authentication.", challenge)

    @web.middleware
    async def keystone_context(request: web.Request, handler: Handler) -> web.StreamResponse:
        """X-Auth-Token -> the caller (cached); no or bad token 401, Keystone unreachable 503, never a pass."""
        template = route_name(request)
        decision = route_policy(request.method, template)
        if decision == PUBLIC:
            request[CONTEXT_KEY] = RequestContext(request[REQUEST_ID_KEY], "", is_admin=False, creds={"roles": ()})
            return await handler(request)
        token = request.headers.get("X-Auth-Token", "").strip()
        if not token:
            return unauthorized()
        try:
            identity = await validator.identify(token)
        except InvalidToken:
            return unauthorized()
        except KeystoneUnavailable as exc:
            log.warning("token validation failed (request %s): %s", request[REQUEST_ID_KEY], exc)
            return _keystone_error(503, "Service Unavailable",
                                   f"The server is currently unavailable: {exc}. Please try again later.")
        creds = identity.creds
        ctx = RequestContext(request[REQUEST_ID_KEY], identity.project_id,
                             is_admin=policy.check("context_is_admin", {}, creds), user_id=identity.user_id,
                             is_service=policy.check("service_api", {}, creds), creds=creds)
        request[CONTEXT_KEY] = ctx
        if decision is None and template != UNMATCHED:  # (an unmatched path is the handler's 404/405)
            log.error("route %s %s has no policy decision (provnet.api.auth.ROUTE_POLICY): refused",
                      request.method, template)
            raise errors.PolicyNotAuthorized(action=f"{request.method} {template}")
        if decision not in (None, AUTHENTICATED, RESOURCE):
            authz.check_rule(ctx, decision)
        return await handler(request)

    return keystone_context
