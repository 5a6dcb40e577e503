# Network mode's devices kept to their host (OVN's localport, on a Linux bridge): ebtables rules in one chain of ours,
# so that a host's metadata namespace answers only its own VMs although every host holds the same MAC and address.
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from provnet.dataplane.netns import DataplaneError

CHAIN = "provnet-meta"
EBTABLES = "ebtables"
LOCAL_PORTS = "tap+"  # the devices Nova and provnet plug into the bridge; anything else is the way off the host


def rules(devices: Iterable[tuple[str, str]]) -> list[str]:
    """The chain's rules (pure) for (bridge device, MAC) pairs: what the device sends never leaves through a port
    that is not a local one (the uplink), and nothing from the uplink is delivered to its MAC (another host's
    VM asks its own host's namespace), so the bridges never learn the MAC on their uplinks."""
    out = []
    for device, mac in sorted({(device, mac.lower()) for device, mac in devices}):
        out.append(f"-i {device} -o ! {LOCAL_PORTS} -j DROP")
        out.append(f"-d {mac} -i ! {LOCAL_PORTS} -j DROP")
    return out


def restore_text(chain_rules: Iterable[str]) -> str:
    """ebtables-restore input (with --noflush) that replaces the chain's rules at once and leaves all else alone."""
    return "\n".join(["*filter", f":{CHAIN} RETURN", *(f"-A {CHAIN} {r}" for r in chain_rules), "COMMIT", ""])


def _run(argv: list[str], stdin: str | None = None) -> str:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataplaneError(f"{argv[0]}: {exc}") from None
    if proc.returncode != 0:
        raise DataplaneError(f"{' '.join(argv)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def apply(devices: Iterable[tuple[str, str]]) -> bool:
    """Make this namespace's bridge filter hold exactly the rules for `devices` (a chain of ours, jumped to from
    FORWARD). A host with none and no chain is not touched. False when ebtables is not installed."""
    if shutil.which(EBTABLES) is None:
        return False
    wanted = rules(devices)
    saved = _run([f"{EBTABLES}-save"])
    exists = f":{CHAIN} " in saved
    if not wanted and not exists:
        return True
    _run([f"{EBTABLES}-restore", "--noflush"], restore_text(wanted))
    if f"-A FORWARD -j {CHAIN}" not in saved:
        _run([EBTABLES, "-t", "filter", "-I", "FORWARD", "1", "-j", CHAIN])
    return True
