# RemoteRegistry: the Registry interface over provnet's HTTP API, for agents and CLIs on other hosts.
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from provnet.identity.tls import describe_failure
from provnet.model import errors
from provnet.model.resources import (
    Agent,
    Instance,
    Network,
    Port,
    Router,
    Subnet,
)
from provnet.registry.base import Filters, Page, ReservationRow
from provnet.registry.changes import ChangeBatch

_BY_STATUS: dict[int, type[errors.NeutronError]] = {
    400: errors.BadRequest, 403: errors.NotAuthorized, 404: errors.NotFound, 409: errors.Conflict,
    503: errors.ServiceUnavailable,
}
_BULK: dict[str, tuple[str, Any]] = {"network": ("networks", Network), "subnet": ("subnets", Subnet),
                                     "port": ("ports", Port), "router": ("routers", Router)}
_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.CannotSendRequest)
CA_HINT = "give the CA bundle that signed it with --os-cacert FILE (or OS_CACERT, or cacert in clouds.yaml)"


class TokenSource(Protocol):
    """Where a client's Keystone token comes from (provnet.identity.clouds.CloudAuth)."""

    def token(self) -> str: ...

    def invalidate(self) -> None: ...

    def describe(self) -> str: ...


def error_from_body(status: int, body: bytes) -> errors.NeutronError:
    """The NeutronError a response carries, as the same class the server raised (by its `type`), same message."""
    try:
        fault = json.loads(body)["NeutronError"]
        type_name, message = str(fault["type"]), str(fault["message"])
    except (ValueError, KeyError, TypeError):
        type_name, message = "", body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    cls = getattr(errors, type_name, None)
    if isinstance(cls, type) and issubclass(cls, errors.NeutronError) and cls.status == status:
        return cls(message)
    exc = _BY_STATUS.get(status, errors.NeutronError)(message)
    exc.status = status
    return exc


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _query(filters: Filters | None, extra: Sequence[tuple[str, str]] = ()) -> str:
    pairs: list[tuple[str, str]] = list(extra)
    for key, values in (filters or {}).items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            values = [values]
        pairs.extend((key, str(v)) for v in values if v is not None)
    return f"?{urllib.parse.urlencode(pairs)}" if pairs else ""


def _page_params(page: Page | None) -> list[tuple[str, str]]:
    if page is None:
        return []
    pairs = [("limit", str(page.limit))] if page.limit else []
    if page.marker is not None:
        pairs.append(("marker", page.marker))
    for key, ascending in page.sort:
        pairs += [("sort_key", key), ("sort_dir", "asc" if ascending else "desc")]
    if page.reverse:
        pairs.append(("page_reverse", "True"))
    return pairs


class RemoteRegistry:
    """Every Registry method as an HTTP call to `provnet api` (one keep-alive connection per thread).

    Errors come back as the same NeutronError subclasses SqlRegistry raises; an unreachable API is
    ServiceUnavailable (503) naming the URL.
    """

    what = "the provnet API"  # how errors name the server

    def __init__(self, url: str, timeout: float = 30.0, project_id: str | None = None,
                 auth: TokenSource | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"not an http(s) URL of a provnet API: {url!r}")
        prefix = parsed.path.rstrip("/")  # an endpoint under a path (https://cloud/networking) keeps it
        self.url = f"{parsed.scheme}://{parsed.netloc}{prefix}"
        self._scheme, self._netloc, self._prefix = parsed.scheme, parsed.netloc, prefix
        self.timeout = timeout
        self.auth = auth  # a Keystone token on every request; None: noauth
        self._ssl = ssl_context  # None: the system's CAs
        self._headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if project_id:
            self._headers["X-Project-Id"] = project_id
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    # transport
    def _connection(self, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not fresh:
            return conn, True
        if conn is not None:
            conn.close()
        new: http.client.HTTPConnection
        if self._scheme == "https":
            new = http.client.HTTPSConnection(self._netloc, timeout=self.timeout, context=self._ssl)
        else:
            new = http.client.HTTPConnection(self._netloc, timeout=self.timeout)
        self._local.conn = new
        with self._lock:
            self._all.append(new)
        return new, False

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                headers: Mapping[str, str] | None = None) -> Any:
        """One API call; the decoded JSON answer (None for 204), or the NeutronError the API answered.

        With a token source, a 401 is answered once by a fresh token (the old one expired or was revoked)."""
        status, data = self._exchange(method, path, body, timeout, headers)
        if status == 401 and self.auth is not None:
            self.auth.invalidate()
            status, data = self._exchange(method, path, body, timeout, headers)
        if status == 401:
            how = (f"the token of {self.auth.describe()} was refused" if self.auth is not None else
                   "give credentials with --os-cloud NAME (clouds.yaml) or OS_CLOUD")
            raise errors.NotAuthenticated(f"{self.what} at {self.url} requires authentication: {how}")
        if status >= 400:
            raise error_from_body(status, data)
        if status == 204 or not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            raise errors.ServiceUnavailable(f"{self.what} at {self.url} answered {method} {path} with "
                                            "something that is not JSON") from None

    def _exchange(self, method: str, path: str, body: Any, timeout: float | None,
                  extra: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {**self._headers, **(extra or {})}
        if self.auth is not None:
            headers["X-Auth-Token"] = self.auth.token()
        conn, reused = self._connection()
        while True:
            try:
                if timeout is not None:
                    conn.timeout = timeout
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                conn.request(method, self._prefix + path, body=payload, headers=headers)
                response = conn.getresponse()
                return response.status, response.read()
            except _RETRYABLE:
                conn.close()
                if not reused:  # a fresh connection failed: the API really went away
                    raise errors.ServiceUnavailable(f"{self.what} at {self.url} closed the connection") from None
                conn, reused = self._connection(fresh=True)  # the server closed an idle keep-alive connection
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                tls = describe_failure(self.url, exc, CA_HINT)
                if tls is not None:
                    raise errors.ServiceUnavailable(tls) from None
                reason = "timed out" if isinstance(exc, socket.timeout | TimeoutError) else exc
                raise errors.ServiceUnavailable(f"cannot reach {self.what} at {self.url}: {reason}") from None
            finally:
                if timeout is not None:
                    conn.timeout = self.timeout

    def _create(self, collection: str, member: str, attrs: Mapping[str, Any]) -> dict:
        return self.request("POST", f"/v2.0/{collection}", {member: dict(attrs)})[member]

    def _get(self, collection: str, member: str, obj_id: str) -> dict:
        return self.request("GET", f"/v2.0/{collection}/{urllib.parse.quote(obj_id, safe='')}")[member]

    def _list(self, collection: str, filters: Filters | None, prefix: str = "/v2.0",
              page: Page | None = None) -> list[dict]:
        """One page when `page` is given; else the whole list, following the API's `next` links (its
        pagination_max_limit caps each answer)."""
        body = self.request("GET", f"{prefix}/{collection}{_query(filters, _page_params(page))}")
        items = list(body[collection])
        while page is None:
            nxt = next((link["href"] for link in body.get(f"{collection}_links", []) if link.get("rel") == "next"),
                       None)
            if nxt is None or not body[collection]:
                break
            parts = urllib.parse.urlsplit(nxt)
            path = parts.path  # the API's own view of the path; a prefixed endpoint's prefix is added again
            if self._prefix and path.startswith(self._prefix + "/"):
                path = path[len(self._prefix):]
            body = self.request("GET", f"{path}?{parts.query}")
            items.extend(body[collection])
        return items

    def _update(self, collection: str, member: str, obj_id: str, attrs: Mapping[str, Any],
                if_revision: int | None = None, prefix: str = "/v2.0") -> dict:
        path = f"{prefix}/{collection}/{urllib.parse.quote(obj_id, safe='')}"
        headers = {"If-Match": f"revision_number={int(if_revision)}"} if if_revision is not None else None
        return self.request("PUT", path, {member: dict(attrs)}, headers=headers)[member]

    def _delete(self, collection: str, obj_id: str, prefix: str = "/v2.0") -> None:
        self.request("DELETE", f"{prefix}/{collection}/{urllib.parse.quote(obj_id, safe='')}")

    def create_many(self, kind: str, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        """One bulk POST (`{"ports": [...]}`): the server creates all of them in one transaction, or none."""
        if kind not in _BULK:
            raise ValueError(f"bulk create of {kind!r}: only {', '.join(_BULK)} are supported")
        collection, cls = _BULK[kind]
        if not items:
            return []
        body = self.request("POST", f"/v2.0/{collection}", {collection: [dict(i) for i in items]})
        return [cls.from_api(d) for d in body[collection]]

    # networks
    def create_network(self, attrs: Mapping[str, Any]) -> Network:
        return Network.from_api(self._create("networks", "network", attrs))

    def get_network(self, network_id: str) -> Network:
        return Network.from_api(self._get("networks", "network", network_id))

    def list_networks(self, filters: Filters | None = None, page: Page | None = None) -> list[Network]:
        return [Network.from_api(d) for d in self._list("networks", filters, page=page)]

    def update_network(self, network_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Network:
        return Network.from_api(self._update("networks", "network", network_id, attrs, if_revision))

    def delete_network(self, network_id: str) -> None:
        self._delete("networks", network_id)

    # subnets
    def create_subnet(self, attrs: Mapping[str, Any]) -> Subnet:
        return Subnet.from_api(self._create("subnets", "subnet", attrs))

    def get_subnet(self, subnet_id: str) -> Subnet:
        return Subnet.from_api(self._get("subnets", "subnet", subnet_id))

    def list_subnets(self, filters: Filters | None = None, page: Page | None = None) -> list[Subnet]:
        return [Subnet.from_api(d) for d in self._list("subnets", filters, page=page)]

    def update_subnet(self, subnet_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Subnet:
        return Subnet.from_api(self._update("subnets", "subnet", subnet_id, attrs, if_revision))

    def delete_subnet(self, subnet_id: str) -> None:
        self._delete("subnets", subnet_id)

    # ports
    def create_port(self, attrs: Mapping[str, Any]) -> Port:
        return Port.from_api(self._create("ports", "port", attrs))

    def get_port(self, port_id: str) -> Port:
        return Port.from_api(self._get("ports", "port", port_id))

    def list_ports(self, filters: Filters | None = None, page: Page | None = None) -> list[Port]:
        return [Port.from_api(d) for d in self._list("ports", filters, page=page)]

    def update_port(self, port_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Port:
        return Port.from_api(self._update("ports", "port", port_id, attrs, if_revision))

    def delete_port(self, port_id: str) -> None:
        self._delete("ports", port_id)

    def update_port_status(self, port_id: str, status: str, host: str = "") -> Port:
        body = {"port": {"status": status, "host": host}}
        return Port.from_api(self.request("POST", f"/provnet/v1/ports/{_q(port_id)}/status", body)["port"])

    # routers
    def create_router(self, attrs: Mapping[str, Any]) -> Router:
        return Router.from_api(self._create("routers", "router", attrs))

    def get_router(self, router_id: str) -> Router:
        return Router.from_api(self._get("routers", "router", router_id))

    def list_routers(self, filters: Filters | None = None, page: Page | None = None) -> list[Router]:
        return [Router.from_api(d) for d in self._list("routers", filters, page=page)]

    def update_router(self, router_id: str, attrs: Mapping[str, Any], if_revision: int | None = None) -> Router:
        return Router.from_api(self._update("routers", "router", router_id, attrs, if_revision))

    def delete_router(self, router_id: str) -> None:
        self._delete("routers", router_id)

    def _router_interface(self, action: str, router_id: str, subnet_id: str | None, port_id: str | None) -> dict:
        body = {k: v for k, v in (("subnet_id", subnet_id), ("port_id", port_id)) if v is not None}
        return self.request("PUT", f"/v2.0/routers/{urllib.parse.quote(router_id, safe='')}/{action}", body)

    def add_router_interface(self, router_id: str, subnet_id: str | None = None,
                             port_id: str | None = None) -> dict:
        return self._router_interface("add_router_interface", router_id, subnet_id, port_id)

    def remove_router_interface(self, router_id: str, subnet_id: str | None = None,
                                port_id: str | None = None) -> dict:
        return self._router_interface("remove_router_interface", router_id, subnet_id, port_id)

    # agents
    def report_agent_state(self, host: str, agent_type: str, binary: str,
                           configurations: Mapping[str, Any]) -> Agent:
        body = {"agent": {"host": host, "agent_type": agent_type, "binary": binary,
                          "configurations": dict(configurations)}}
        return Agent.from_api(self.request("POST", "/provnet/v1/agents/report", body)["agent"])

    def get_agent(self, agent_id: str) -> Agent:
        return Agent.from_api(self._get("agents", "agent", agent_id))

    def list_agents(self, filters: Filters | None = None, page: Page | None = None) -> list[Agent]:
        return [Agent.from_api(d) for d in self._list("agents", filters, page=page)]

    def update_agent(self, agent_id: str, attrs: Mapping[str, Any]) -> Agent:
        return Agent.from_api(self._update("agents", "agent", agent_id, attrs))

    def delete_agent(self, agent_id: str) -> None:
        self._delete("agents", agent_id)

    # L3 agent scheduling
    def list_routers_on_l3_agent(self, agent_id: str) -> list[Router]:
        body = self.request("GET", f"/v2.0/agents/{_q(agent_id)}/l3-routers")
        return [Router.from_api(d) for d in body["routers"]]

    def list_l3_agents_hosting_router(self, router_id: str) -> list[Agent]:
        body = self.request("GET", f"/v2.0/routers/{_q(router_id)}/l3-agents")
        return [Agent.from_api(d) for d in body["agents"]]

    def add_router_to_l3_agent(self, agent_id: str, router_id: str) -> None:
        self.request("POST", f"/v2.0/agents/{_q(agent_id)}/l3-routers", {"router_id": router_id})

    def remove_router_from_l3_agent(self, agent_id: str, router_id: str) -> None:
        self.request("DELETE", f"/v2.0/agents/{_q(agent_id)}/l3-routers/{_q(router_id)}")

    # instances
    def create_instance(self, attrs: Mapping[str, Any]) -> Instance:
        body = {"instance": dict(attrs)}
        return Instance.from_api(self.request("POST", "/provnet/v1/instances", body)["instance"])

    def get_instance(self, instance_id: str) -> Instance:
        path = f"/provnet/v1/instances/{urllib.parse.quote(instance_id, safe='')}"
        return Instance.from_api(self.request("GET", path)["instance"])

    def list_instances(self, filters: Filters | None = None, page: Page | None = None) -> list[Instance]:
        return [Instance.from_api(d) for d in self._list("instances", filters, prefix="/provnet/v1", page=page)]

    def update_instance(self, instance_id: str, attrs: Mapping[str, Any],
                        if_revision: int | None = None) -> Instance:
        return Instance.from_api(self._update("instances", "instance", instance_id, attrs, if_revision,
                                              prefix="/provnet/v1"))

    def delete_instance(self, instance_id: str) -> None:
        self._delete("instances", instance_id, prefix="/provnet/v1")

    def get_instance_password(self, instance_id: str) -> str | None:
        path = f"/provnet/v1/instances/{urllib.parse.quote(instance_id, safe='')}/password"
        return self.request("GET", path)["password"]

    def set_instance_password(self, instance_id: str, password: str) -> None:
        path = f"/provnet/v1/instances/{urllib.parse.quote(instance_id, safe='')}/password"
        self.request("POST", path, {"password": password})

    # hot-path lookups: the server's indexed Registry lookups, one call each
    def router_network_ids(self, router_id: str) -> list[str]:
        path = f"/provnet/v1/routers/{urllib.parse.quote(router_id, safe='')}/network_ids"
        return self.request("GET", path)["network_ids"]

    def find_ports_by_ip(self, ip_address: str, network_ids: Sequence[str]) -> list[Port]:
        if not network_ids:
            return []
        query = _query({"ip_address": [ip_address], "network_id": list(network_ids)})
        return [Port.from_api(d) for d in self.request("GET", f"/provnet/v1/ports/by-ip{query}")["ports"]]

    def find_ports_by_mac(self, mac_address: str, network_ids: Sequence[str] | None = None) -> list[Port]:
        filters: dict[str, list[str]] = {"mac_address": [mac_address]}
        if network_ids is not None:
            if not network_ids:
                return []
            filters["network_id"] = list(network_ids)
        return [Port.from_api(d) for d in self.request("GET", f"/provnet/v1/ports/by-mac{_query(filters)}")["ports"]]

    def revision(self) -> int:
        return int(self.request("GET", "/provnet/v1/revision")["revision"])

    def reservation_rows(self, network_ids: Sequence[str], port_ids: Sequence[str] | None = None
                         ) -> list[ReservationRow]:
        body: dict[str, Any] = {"network_ids": list(network_ids)}
        if port_ids is not None:
            body["port_ids"] = list(port_ids)
        rows = self.request("POST", "/provnet/v1/reservations/query", body)["reservations"]
        return [ReservationRow(*row) for row in rows]

    def changes_since(self, after: int, limit: int = 1000) -> ChangeBatch:
        return ChangeBatch.from_api(self.request("GET", f"/provnet/v1/changes?after={int(after)}&limit={int(limit)}"))

    def wait_changes(self, after: int, timeout: float, limit: int = 1000) -> ChangeBatch:
        """Long-poll: the API answers as soon as there are changes after `after`, or empty at `timeout`."""
        timeout = max(0.0, min(timeout, 60.0))
        path = f"/provnet/v1/changes?after={int(after)}&limit={int(limit)}&timeout={timeout:g}"
        return ChangeBatch.from_api(self.request("GET", path, timeout=timeout + self.timeout))

    def wake_waiters(self) -> None:
        """A long-poll in flight cannot be interrupted; it returns by its timeout (feed threads are daemons)."""

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
