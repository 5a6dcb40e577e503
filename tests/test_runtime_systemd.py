# systemd integration: the notify protocol spoken to a socket the test owns, and the shipped unit files verified
# by systemd's own checker.
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import need_tool

from provnet.runtime import notify

PROVNET = str(Path(sys.executable).parent / "provnet")
UNITS = Path(__file__).resolve().parent.parent / "contrib" / "systemd"
INSTALLED = "/usr/local/bin/provnet"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_notify(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    return sock


def test_notify_sends_to_a_path_and_to_the_abstract_namespace(tmp_path: Path) -> None:
    with listen_notify(tmp_path / "notify") as sock:
        assert notify.notify("READY=1", "STATUS=up", environ={"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
    name = f"provnet-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(5)
        assert notify.notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert abstract.recv(100) == b"WATCHDOG=1"
    # not under systemd, or a socket that went away: no error, just False
    assert not notify.notify("READY=1", environ={})
    assert not notify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_us() -> None:
    assert notify.watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert notify.watchdog_interval({}) is None


def test_a_server_says_ready_once_it_answers_feeds_the_watchdog_and_says_stopping(tmp_path: Path) -> None:
    port = free_port()
    with listen_notify(tmp_path / "notify") as sock:
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000",
               "PROVNET_CONFIG": "/dev/null"}
        proc = subprocess.Popen([PROVNET, "--state-path", str(tmp_path / "s"), "api", "--bind-port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            first = sock.recv(1000).decode().split("\n")
            assert "READY=1" in first
            # ready means serving: the API answers now, without a retry
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
            pings = [sock.recv(1000) for _ in range(3)]  # every 0.2 s: half of WATCHDOG_USEC
            assert all(p == b"WATCHDOG=1" for p in pings)
            proc.send_signal(signal.SIGTERM)
            seen = []
            deadline = time.monotonic() + 30
            while b"STOPPING=1" not in seen and time.monotonic() < deadline:
                seen.append(sock.recv(1000))
            assert b"STOPPING=1" in seen
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_shipped_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    need_tool("systemd-analyze")
    units = sorted(UNITS.glob("*.service"))
    assert {u.name for u in units} >= {"provnet-serve.service", "provnet-api.service", "provnet-dhcp.service",
                                       "provnet-metadata-api.service", "provnet-metadata-agent.service",
                                       "provnet-agent.service"}
    for unit in units:
        text = unit.read_text()
        assert "Type=notify" in text and "Restart=always" in text and "WatchdogSec=" in text, unit.name
        if unit.name == "provnet-l3-agent.service":  # its namespaces must be the host's (see the unit's comment)
            assert "NoNewPrivileges=yes" in text and "KillMode=process" in text and "ProtectSystem=" not in text
        else:
            assert "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text, unit.name
        copy = tmp_path / unit.name
        # verify checks that ExecStart's program exists: where setup.sh has not installed it (a developer's
        # checkout), point the copy at this checkout's console script instead
        copy.write_text(text if os.path.exists(INSTALLED) else text.replace(INSTALLED, PROVNET))
    done = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(tmp_path.glob("*.service")))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


@pytest.mark.parametrize("unit", sorted(p.name for p in UNITS.glob("*.service")))
def test_each_unit_runs_a_verb_provnet_has(unit: str) -> None:
    exec_start = next(line for line in (UNITS / unit).read_text().splitlines() if line.startswith("ExecStart="))
    verb = exec_start.split()[-1]
    done = subprocess.run([PROVNET, verb, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
