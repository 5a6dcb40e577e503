# Test helper: a real Keystone (scripts/keystone.sh: PyPI keystone under gunicorn on SQLite, 127.0.0.1) for the
# session, its users and projects, and provnet's API behind it registered in the catalog as the `network` service.
from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from api_server import Client
from conftest import need

from provnet.api.auth import Auth
from provnet.api.thread import ApiThread
from provnet.identity.keystone_admin import KeystoneAdmin
from provnet.identity.tokens import KeystoneSettings, KeystoneValidator
from provnet.registry import open_registry
from provnet.registry.base import Registry

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "keystone.sh"

# name: (project, roles). Keystone's bootstrap implies admin -> manager -> member -> reader.
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "alice": ("demo", ("member",)),  # a member of demo
    "carol": ("demo", ("reader",)),  # a reader of demo
    "bob": ("other", ("member",)),  # a member of another project
    "root": ("admin", ("admin",)),  # a cloud admin
    "provnet": ("service", ("service",)),  # provnet's service user: validates tokens, runs the agents
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Keystone:
    """One running Keystone, its bootstrap admin, and a password per test user."""

    dir: Path
    port: int
    admin_password: str
    admin: KeystoneAdmin
    passwords: dict[str, str] = field(default_factory=dict)
    projects: dict[str, str] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    def token(self, user: str) -> str:
        """A token of `user` (one per user for the session: they last an hour)."""
        if user not in self._tokens:
            self._tokens[user] = self.fresh_token(user)
        return self._tokens[user]

    def fresh_token(self, user: str) -> str:
        return self.admin.token(user, self.passwords[user], USERS[user][0])

    def settings(self, **overrides) -> KeystoneSettings:
        """[keystone_authtoken] of a provnet API behind this Keystone, as the service user."""
        values = dict(auth_url=self.url, username="provnet", password=self.passwords["provnet"],
                      project_name="service")
        values.update(overrides)
        return KeystoneSettings(**values)

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.dir)], check=True, timeout=60)

    def start(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "start", str(self.dir), str(self.port)], check=True, timeout=300,
                       capture_output=True)

    def clouds_yaml(self, path: Path, network_endpoint: str | None = None, cacert: str | None = None) -> Path:
        """A clouds.yaml with one cloud per test user (password auth through the catalog)."""
        clouds = {}
        for user, (project, _roles) in USERS.items():
            cloud: dict = {"auth": {"auth_url": self.url, "username": user, "password": self.passwords[user],
                                    "project_name": project, "user_domain_name": "Default",
                                    "project_domain_name": "Default"},
                           "region_name": "RegionOne", "identity_api_version": 3}
            if cacert:
                cloud["cacert"] = cacert
            clouds[user] = cloud
        path.write_text(yaml.safe_dump({"clouds": clouds}))
        path.chmod(0o600)
        return path


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    """Keystone for the whole session (about 15 s to set up from nothing; the virtualenv comes from setup.sh)."""
    need(SCRIPT.exists(), "needs scripts/keystone.sh")
    need(subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, timeout=600).returncode == 0,
         "needs Keystone in its virtualenv: bash scripts/keystone.sh install")
    directory = tmp_path_factory.mktemp("keystone")
    port = free_port()
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(directory), str(port)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    password = (directory / "admin-password").read_text().strip()
    ks = Keystone(directory, port, password, KeystoneAdmin(f"http://127.0.0.1:{port}/v3", password))
    for user, (project, roles) in USERS.items():
        ks.passwords[user] = f"{user}-{os.urandom(6).hex()}"
        ks.projects[project] = ks.admin.ensure_user(user, ks.passwords[user], project, roles).project_id
    try:
        yield ks
    finally:
        ks.stop()


@dataclass
class KeystoneApi:
    """provnet's API behind Keystone: the thread, its registry, its validator (clock injectable), a client."""

    api: ApiThread
    registry: Registry
    validator: KeystoneValidator
    keystone: Keystone

    @property
    def url(self) -> str:
        return self.api.url

    def client(self, user: str | None = None, token: str | None = None) -> Client:
        client = Client(self.url)
        if user is not None or token is not None:
            client.session.headers["X-Auth-Token"] = token or self.keystone.token(user)  # type: ignore[arg-type]
        return client


@contextmanager
def keystone_api(keystone: Keystone, db_url: str, *, register: bool = True, clock=None, ssl_context=None,
                 policy=None, **settings) -> Iterator[KeystoneApi]:
    """provnet's networking API with auth_strategy keystone on `db_url`; with `register` it is the catalog's
    `network` service (it stands in for Neutron there)."""
    registry = open_registry(db_url, metadata_mode="router")  # policy tests list exact ports
    kwargs = {"clock": clock} if clock is not None else {}
    validator = KeystoneValidator(keystone.settings(**settings), **kwargs)
    auth = Auth("keystone", policy, validator) if policy is not None else Auth("keystone", validator=validator)
    api = ApiThread(registry, auth=auth, ssl_context=ssl_context).start()
    try:
        if register:
            keystone.admin.ensure_endpoint("network", "neutron", api.url)
        yield KeystoneApi(api, registry, validator, keystone)
    finally:
        api.stop()
        registry.close()


class FakeClock:
    """A monotonic clock the test moves (the token cache's TTL passes without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):
    """Poll `predicate` until it returns something true (a real event, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
