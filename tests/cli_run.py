# Test helper for the CLI verbs: run `provnet ...` in-process (click's CliRunner) or as a real subprocess, and
# `provnet api` as a process to point `--url` at.
from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from provnet.cli import main

PROVNET = str(Path(sys.executable).with_name("provnet"))

# The seed's two commands, verbatim (seed/README.md paragraphs 1 and 6), with `neutron` replaced by `provnet`.
SEED_NET = ("net-create phy_net -- --router:external=True --provider:network_type flat "
            "--provider:physical_network physnet1")
SEED_SUBNET = ("subnet-create --allocation-pool start=172.16.1.102,end=172.16.1.126 --gateway 172.16.1.2 "
               "phy_net 172.16.1.101/24 --enable_dhcp=False --name=phy_subnet_without_dhcp")


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """`provnet <global options> <verb ...>` in-process; `ok` asserts success, `fails` a given exit code."""

    def __init__(self, *global_args: str) -> None:
        self.global_args = list(global_args)
        self.runner = CliRunner()

    def run(self, args: str | list[str]) -> Ran:
        argv = shlex.split(args) if isinstance(args, str) else list(args)
        result = self.runner.invoke(main, [*self.global_args, *argv], catch_exceptions=False,
                                    prog_name="provnet")
        return Ran(result.exit_code, result.stdout, result.stderr)

    def ok(self, args: str | list[str]) -> Ran:
        ran = self.run(args)
        assert ran.code == 0, (args, ran)
        return ran

    def json(self, args: str | list[str]) -> Any:
        return self.ok(f"{args} -f json" if isinstance(args, str) else [*args, "-f", "json"]).json()

    def fails(self, args: str | list[str], code: int = 1) -> str:
        """The error text of a verb that must fail with `code` (1: refused, 2: usage) and no traceback."""
        ran = self.run(args)
        assert ran.code == code, (args, ran)
        assert "Traceback" not in ran.stderr
        return ran.stderr

    def snapshot(self) -> dict[str, Any]:
        """Everything the store holds, to show a failed verb wrote nothing."""
        return {kind: self.json(f"{kind}-list -D") for kind in ("net", "subnet", "port", "router", "instance")}


def run_process(*argv: str, env: dict[str, str] | None = None) -> Ran:
    """The installed `provnet` console script as a real subprocess."""
    proc = subprocess.run([PROVNET, *argv], capture_output=True, text=True, timeout=60, env=env)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM a process and wait; its exit code. A process that ignores SIGTERM is killed and fails the test."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("process ignored SIGTERM") from None
    return proc.returncode


@contextmanager
def api_process(tmp_path: Path, *global_args: str) -> Iterator[str]:
    """`provnet <global_args> api` on a free loopback port, state under tmp_path/server, log in tmp_path/api.log;
    yields its URL once /healthz answers, and stops it after."""
    port = free_port()
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([PROVNET, *global_args, "--state-path", str(tmp_path / "server"), "api",
                                 "--bind-host", "127.0.0.1", "--bind-port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"provnet api did not start: {log_path.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            stop(proc)
