# Open vSwitch bridges through ovs-vsctl: is a bridge one, and a device plugged into it with Neutron's external_ids.
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from provnet.dataplane.netns import DataplaneError

VSCTL = "ovs-vsctl"
TIMEOUT = 10  # seconds: ovs-vsctl --timeout, so a hung ovsdb-server fails the call rather than the agent


def _vsctl(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run([VSCTL, f"--timeout={TIMEOUT}", *args], capture_output=True, text=True,
                              timeout=TIMEOUT + 5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataplaneError(f"ovs-vsctl {' '.join(args[:2])}: {exc}") from None
    if check and proc.returncode != 0:
        raise DataplaneError(f"ovs-vsctl {' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc


def is_bridge(bridge: str) -> bool:
    """True when `bridge` is an Open vSwitch bridge (ovs-vsctl installed and its database answering)."""
    if shutil.which(VSCTL) is None:
        return False
    proc = _vsctl(["br-exists", bridge], check=False)
    if proc.returncode not in (0, 2):  # 2: no such bridge; anything else: the database is not reachable
        raise DataplaneError(f"ovs-vsctl br-exists {bridge}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.returncode == 0


def plug(bridge: str, device: str, port_id: str, mac: str) -> None:
    """`device` a port of `bridge` carrying Neutron's external_ids (iface-id = the port's id, attached-mac,
    iface-status active), as neutron's ovs interface driver plugs a router's device. Idempotent."""
    _vsctl(["--may-exist", "add-port", bridge, device, "--", "set", "Interface", device,
            f"external_ids:iface-id={port_id}", "external_ids:iface-status=active",
            f"external_ids:attached-mac={mac}"])


def unplug(devices: Sequence[str]) -> None:
    """The OVS ports named `devices` removed from whatever bridge holds them (no-op for the ones not there, or
    when Open vSwitch is not installed): a veth deleted leaves its port record behind otherwise."""
    if not devices or shutil.which(VSCTL) is None:
        return
    args: list[str] = []
    for device in devices:
        args += [*(["--"] if args else []), "--if-exists", "del-port", device]
    try:
        _vsctl(args, check=False)  # best effort: a host with ovs-vsctl but no database uses Linux bridges
    except DataplaneError:
        pass
