# `lab up --keystone`: a real Keystone beside the lab (scripts/keystone.sh), its users and catalog, and the relays
# that let the DHCP server's namespace reach Keystone and the API on the host's loopback.
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

    def authtoken(self) -> str:
        """The lab's provnet.conf lines that put the networking API behind this Keystone."""
        return ("[keystone_authtoken]\n"
                f"auth_url = {self.url}\n"
                f"username = {SERVICE_USER}\n"
                f"password = {self.service_password}\n"
                "project_name = service\n")


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
