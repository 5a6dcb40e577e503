# `lab up --keystone`: a real Keystone beside the lab (scripts/keystone.sh), its users and catalog, the admin's token
# for the lab's own API calls, and the relays that let the lab's namespaces reach Keystone on the host's loopback.
from __future__ import annotations

import secrets
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

import provnet
from provnet.identity.keystone_admin import KeystoneAdmin
from provnet.lab.procs import Proc, start_time

SCRIPT = Path(provnet.__file__).resolve().parent.parent / "scripts" / "keystone.sh"
SERVICE_USER = "provnet-lab"
ADMIN_CLOUD, SERVICE_CLOUD = "lab-admin", "lab-service"


class KeystoneLabError(RuntimeError):
    pass


@dataclass
class LabKeystone:
    dir: Path
    port: int
    admin: KeystoneAdmin
    service_password: str
    clouds: Path  # clouds.yaml (0600) with ADMIN_CLOUD and SERVICE_CLOUD

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v3"

    def authtoken(self) -> dict[str, str]:
        """The controller's [keystone_authtoken] options that put its networking API behind this Keystone."""
        return {"auth_url": self.url, "username": SERVICE_USER, "password": self.service_password,
                "project_name": "service"}


class AdminToken:
    """The lab's own API calls (the seed, `lab check`, `lab status`, `lab failover`) as Keystone's admin: the
    token of its keystoneauth session, renewed before it expires (a TokenSource for RemoteRegistry). The password
    is read from Keystone's directory at the first token, so a lab whose Keystone is gone fails at the call."""

    def __init__(self, lab: Path, port: int) -> None:
        self.auth_url = f"http://127.0.0.1:{port}/v3"
        self.password_file = lab / "keystone" / "admin-password"
        self._admin: KeystoneAdmin | None = None

    def _session(self):
        if self._admin is None:
            try:
                password = self.password_file.read_text().strip()
            except OSError as exc:
                raise KeystoneLabError(f"the lab's Keystone admin password ({self.password_file}) is unreadable: "
                                       f"{exc.strerror}") from None
            self._admin = KeystoneAdmin(self.auth_url, password)
        return self._admin.session

    def token(self) -> str:
        token = self._session().get_token()
        if not token:
            raise KeystoneLabError("Keystone gave the lab's admin no token")
        return token

    def invalidate(self) -> None:
        self._session().invalidate()

    def describe(self) -> str:
        return "the lab's admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(lab: Path) -> tuple[LabKeystone, Proc]:
    """Keystone on 127.0.0.1 (its gunicorn master as a lab process), the lab's service user, a clouds.yaml."""
    if not SCRIPT.exists():
        raise KeystoneLabError(f"lab up --keystone needs scripts/keystone.sh of provnet's source tree ({SCRIPT} is "
                               "missing)")
    directory, port = lab / "keystone", free_port()
    proc = subprocess.run(["bash", str(SCRIPT), "start", str(directory), str(port)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise KeystoneLabError(f"Keystone did not start: {proc.stderr.strip()[-1500:]}")
    pid = int((directory / "gunicorn.pid").read_text().strip())
    master = Proc("keystone", pid, start_time(pid) or 0, None, ["gunicorn", f"127.0.0.1:{port}"],
                  str(directory / "keystone.log"))
    admin_password = (directory / "admin-password").read_text().strip()
    admin = KeystoneAdmin(f"http://127.0.0.1:{port}/v3", admin_password)
    service_password = secrets.token_urlsafe(18)
    admin.ensure_user(SERVICE_USER, service_password, "service", ("service",))
    clouds = lab / "clouds.yaml"
    auth = {"auth_url": f"http://127.0.0.1:{port}/v3", "user_domain_name": "Default",
            "project_domain_name": "Default"}
    clouds.write_text(yaml.safe_dump({"clouds": {
        ADMIN_CLOUD: {"auth": {**auth, "username": "admin", "password": admin_password, "project_name": "admin"},
                      "region_name": "RegionOne"},
        SERVICE_CLOUD: {"auth": {**auth, "username": SERVICE_USER, "password": service_password,
                                 "project_name": "service"}, "region_name": "RegionOne"}}}))
    clouds.chmod(0o600)
    return LabKeystone(directory, port, admin, service_password, clouds), master


def relay_argv(lab: Path, port: int) -> tuple[list[str], list[str]]:
    """socat on the host (a unix socket file -> 127.0.0.1:port) and inside a namespace (127.0.0.1:port -> that
    file): the namespace reaches the host's loopback service at the same URL, and no host interface is touched."""
    path = lab / f"relay-{port}.sock"
    return (["socat", f"UNIX-LISTEN:{path},fork,unlink-early", f"TCP:127.0.0.1:{port}"],
            ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{path}"])
