# What each server verb runs, built from the configuration: the services of this process and the children that
# `provnet serve` (and a metadata agent with workers) supervise.
from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from provnet.agents.l2 import l2_agent_from_config
from provnet.agents.l3 import l3_agent_from_config
from provnet.api.app import ApiService
from provnet.config import Config, ConfigError
from provnet.dhcp.service import DhcpService
from provnet.metadata.agent import MetadataAgent
from provnet.metadata.api import MetadataApi
from provnet.metadata.serving import bind_unix
from provnet.registry.base import Registry
from provnet.runtime.service import Service
from provnet.runtime.supervise import ChildSpec

LISTEN_FD = "PROVNET_LISTEN_FD"  # env: a listening socket the parent bound and the child serves on
# the parent hands its whole effective configuration to its children in a file; these would outrank it
_PARENT_ENV = ("PROVNET_CONFIG", "PROVNET_STATE_PATH", "PROVNET_DB", "PROVNET_URL", "PROVNET_DEBUG")


def provnet_argv(conf_path: str, *verb: str) -> list[str]:
    """The command line of a provnet child reading `conf_path` (this interpreter, this provnet)."""
    return [sys.executable, "-m", "provnet.cli", "--config-file", conf_path, *verb]


def child_env() -> dict[str, str]:
    return {name: "" for name in _PARENT_ENV}


@contextmanager
def child_config(config: Config, name: str) -> Iterator[str]:
    """The effective configuration in a file (0600: it may hold secrets) under state_path/run, removed after."""
    directory = os.path.join(config.state_path, "run")
    os.makedirs(config.state_path, mode=0o700, exist_ok=True)  # the state directory is private
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for stale in os.listdir(directory):  # left by a parent that was killed: its pid is gone
        pid = stale.rpartition("-")[2].removesuffix(".conf")
        if stale.endswith(".conf") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            os.unlink(os.path.join(directory, stale))
    path = os.path.join(directory, f"{name}-{os.getpid()}.conf")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(config.to_ini())
    try:
        yield path
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def rewrite_child_config(config: Config, path: str, children: Config | None = None) -> Config:
    """Reload: the children's configuration file written again (atomically) from `children` (default: `config`
    itself); returns `config`, for the parent's own services."""
    children = config if children is None else children
    temp = f"{path}.new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(children.to_ini())
    os.replace(temp, path)
    return config


def api_services(config: Config, registry: Registry | None) -> list[Service]:
    assert registry is not None
    return [ApiService.from_config(config, registry)]


def metadata_api_services(config: Config, registry: Registry | None) -> list[Service]:
    assert registry is not None
    return [MetadataApi.from_config(config, registry)]


def metadata_agent_services(config: Config, registry: Registry | None) -> list[Service]:
    """One agent; on the socket a parent bound when PROVNET_LISTEN_FD says so (a worker of metadata_workers)."""
    assert registry is not None
    inherited = os.environ.pop(LISTEN_FD, "")
    sock = socket.socket(fileno=int(inherited)) if inherited.isdigit() else None
    return [MetadataAgent.from_config(config, registry, listen_sock=sock)]


def dhcp_services(config: Config, registry: Registry | None, interface: str = "", network: str = "",
                  metrics_port: int | None = None) -> list[Service]:
    """The DHCP server on `interface` (default [dhcp] interface), checked now: the interface exists, has an IPv4
    address, and the network to serve is known (ConfigError otherwise)."""
    assert registry is not None
    return [DhcpService.from_config(config, registry, interface or config.get("dhcp.interface"),
                                    network or config.get("dhcp.network") or None, metrics_port=metrics_port)]


def local_address(listen: str) -> str:
    """Where a local client reaches a server listening on `listen` (0.0.0.0 -> 127.0.0.1, :: -> ::1)."""
    try:
        ip = ipaddress.ip_address(listen)
    except ValueError:
        return listen
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return listen


def serve_config(config: Config) -> Config:
    """serve's agent forwards to serve's own metadata API, whatever nova_metadata_* say (https when [wsgi] gives
    the API a certificate: verified with auth_ca_cert, else with that certificate itself)."""
    tls = bool(config.get("wsgi.ssl_cert_file"))
    return config.with_overrides({"nova_metadata_host": local_address(config.metadata_listen),
                                  "nova_metadata_port": config.metadata_listen_port,
                                  "nova_metadata_protocol": "https" if tls else "http",
                                  "auth_ca_cert": (config.auth_ca_cert or config.get("wsgi.ssl_cert_file")) if tls
                                  else config.auth_ca_cert}, source="provnet serve")


def serve_children(config: Config, conf_path: str) -> list[ChildSpec]:
    """What `provnet serve` runs beside the networking API, each in a supervised process of its own, so that a
    crash, a hung loop or a slow database in one stops none of the others (DHCP least of all)."""
    env = child_env()
    children = [ChildSpec("metadata API", provnet_argv(conf_path, "metadata-api"), env),
                ChildSpec("metadata agent", provnet_argv(conf_path, "metadata-agent"), env)]
    if config.get("dhcp.interface"):
        children.append(ChildSpec("DHCP server", provnet_argv(conf_path, "dhcp"), env))
    return children


def agent_workers(config: Config, conf_path: str, sock: socket.socket) -> list[ChildSpec]:
    """metadata_workers agents serving one socket bound by their parent."""
    env = {**child_env(), LISTEN_FD: str(sock.fileno())}
    return [ChildSpec(f"metadata agent worker {n}", provnet_argv(conf_path, "metadata-agent"), env,
                      pass_fds=(sock.fileno(),))
            for n in range(1, config.metadata_workers + 1)]


def bind_agent_socket(config: Config) -> socket.socket:
    try:
        return bind_unix(config.metadata_proxy_socket, config.metadata_backlog)
    except OSError as exc:
        raise ConfigError(f"metadata_proxy_socket {config.metadata_proxy_socket}: {exc}") from None


def l3_agent_services(config: Config, registry: Registry | None, host: str = "") -> list[Service]:
    assert registry is not None
    return [l3_agent_from_config(config, registry, host or config.host)]


def l2_agent_services(config: Config, registry: Registry | None, host: str = "") -> list[Service]:
    assert registry is not None
    return [l2_agent_from_config(config, registry, host or config.host)]


def no_services(config: Config, registry: Registry | None) -> Sequence[Service]:
    return []
