# Keystone administration over REST for the lab and the tests: projects, users, role assignments, the catalog.
"""Idempotent (ensure_*): run it again and nothing is duplicated. One keystoneauth session as Keystone's bootstrap
admin does every call, so setting up a cloud costs seconds, not one `openstack` process (2 s) per step."""
from __future__ import annotations

from dataclasses import dataclass

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

DEFAULT_DOMAIN = "default"


class KeystoneAdminError(RuntimeError):
    pass


@dataclass(frozen=True)
class User:
    id: str
    name: str
    project_id: str


class KeystoneAdmin:
    def __init__(self, auth_url: str, password: str, username: str = "admin", project: str = "admin") -> None:
        self.auth_url = auth_url.rstrip("/")
        if not self.auth_url.endswith("/v3"):
            self.auth_url += "/v3"
        auth = v3.Password(auth_url=self.auth_url, username=username, password=password, project_name=project,
                           user_domain_id=DEFAULT_DOMAIN, project_domain_id=DEFAULT_DOMAIN)
        self.session = ks_session.Session(auth=auth, timeout=30)

    def _call(self, method: str, path: str, body: dict | None = None, ok: tuple[int, ...] = (200, 201, 204)):
        response = self.session.request(f"{self.auth_url}{path}", method, json=body, raise_exc=False)
        if response.status_code not in ok:
            raise KeystoneAdminError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None

    def _find(self, collection: str, name: str, **extra: str) -> dict | None:
        query = "&".join([f"name={name}", *(f"{k}={v}" for k, v in extra.items())])
        found = self._call("GET", f"/{collection}?{query}")[collection]
        return found[0] if found else None

    def ensure_project(self, name: str) -> str:
        found = self._find("projects", name, domain_id=DEFAULT_DOMAIN)
        if found:
            return found["id"]
        body = {"project": {"name": name, "domain_id": DEFAULT_DOMAIN, "enabled": True}}
        return self._call("POST", "/projects", body)["project"]["id"]

    def role_id(self, name: str) -> str:
        found = self._find("roles", name)
        if found is None:
            raise KeystoneAdminError(f"no role {name!r} in Keystone (bootstrap creates reader, member, manager, "
                                     "admin, service)")
        return found["id"]

    def ensure_user(self, name: str, password: str, project: str, roles: tuple[str, ...]) -> User:
        """The user with this password, `roles` on `project` (only those: other roles there are removed)."""
        project_id = self.ensure_project(project)
        found = self._find("users", name, domain_id=DEFAULT_DOMAIN)
        body = {"user": {"name": name, "password": password, "domain_id": DEFAULT_DOMAIN, "enabled": True,
                         "default_project_id": project_id}}
        if found:
            user_id = found["id"]
            self._call("PATCH", f"/users/{user_id}", body)
        else:
            user_id = self._call("POST", "/users", body)["user"]["id"]
        wanted = {self.role_id(r) for r in roles}
        assigned = self._call("GET", f"/projects/{project_id}/users/{user_id}/roles")["roles"]
        for role in assigned:
            if role["id"] not in wanted:
                self._call("DELETE", f"/projects/{project_id}/users/{user_id}/roles/{role['id']}")
        for role_id in wanted:
            self._call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")
        return User(user_id, name, project_id)

    def ensure_endpoint(self, service_type: str, service_name: str, url: str, region: str = "RegionOne") -> None:
        """The catalog's `service_type` service with public, internal and admin endpoints at `url` (replaced)."""
        service = next((s for s in self._call("GET", f"/services?type={service_type}")["services"]
                        if s["name"] == service_name), None)
        if service is None:
            body = {"service": {"type": service_type, "name": service_name, "enabled": True}}
            service = self._call("POST", "/services", body)["service"]
        for endpoint in self._call("GET", f"/endpoints?service_id={service['id']}")["endpoints"]:
            self._call("DELETE", f"/endpoints/{endpoint['id']}")
        for interface in ("public", "internal", "admin"):
            body = {"endpoint": {"service_id": service["id"], "interface": interface, "url": url,
                                 "region_id": region, "enabled": True}}
            self._call("POST", "/endpoints", body)

    def token(self, username: str, password: str, project: str) -> str:
        """A project-scoped token for the user (what a client gets with password auth)."""
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": username, "domain": {"id": DEFAULT_DOMAIN}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": DEFAULT_DOMAIN}}}}}
        response = self.session.post(f"{self.auth_url}/auth/tokens?nocatalog", json=body, authenticated=False,
                                     raise_exc=False)
        if response.status_code != 201:
            raise KeystoneAdminError(f"token for {username}: HTTP {response.status_code}")
        return response.headers["X-Subject-Token"]

    def revoke(self, token: str) -> None:
        """Revoke a token (Keystone then answers 404 when it is validated)."""
        response = self.session.delete(f"{self.auth_url}/auth/tokens", headers={"X-Subject-Token": token},
                                       raise_exc=False)
        if response.status_code != 204:
            raise KeystoneAdminError(f"revoking a token: HTTP {response.status_code}")
