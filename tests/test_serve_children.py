# `provnet serve` runs the metadata API in a child process: it answers, it stops with serve, and serve stops with it.
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

PROVNET = str(Path(sys.executable).parent / "provnet")
ENV = {**os.environ, "PROVNET_CONFIG": "/dev/null"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`provnet serve` on a fresh state dir; its stderr goes to a file read as it grows."""

    def __init__(self, tmp_path: Path, metadata_port: int | None = None, extra_conf: str = "") -> None:
        self.api_port, self.metadata_port = free_port(), metadata_port or free_port()
        self.state = tempfile.mkdtemp(prefix="pn-")  # short: the agent's unix socket lives under it
        conf = tmp_path / "provnet.conf"
        conf.write_text(f"[DEFAULT]\nmetadata_listen_port = {self.metadata_port}\nbind_port = {self.api_port}\n"
                        f"metadata_proxy_shared_secret = s\n{extra_conf}")
        self.log = tmp_path / "serve.log"
        self.child: int | None = None
        self.proc = subprocess.Popen([PROVNET, "--config-file", str(conf), "--state-path", self.state, "serve"],
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env=ENV)

    def text(self) -> str:
        return self.log.read_text()

    def child_pid(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"metadata API runs in process (\d+)", self.text())
            if found:
                self.child = int(found.group(1))
                return self.child
            assert self.proc.poll() is None, self.text()
            time.sleep(0.05)
        raise AssertionError(f"no child announced:\n{self.text()}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.text()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/healthz", timeout=1).read()
                urllib.request.urlopen(f"http://127.0.0.1:{self.metadata_port}/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"serve did not become ready:\n{self.text()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.child is not None and alive(self.child):  # a failed test must not leave it running
            os.kill(self.child, signal.SIGKILL)
        import shutil

        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def serve(tmp_path: Path):
    started: list[Serve] = []

    def make(**kwargs) -> Serve:
        started.append(Serve(tmp_path, **kwargs))
        return started[-1]

    yield make
    for s in started:
        s.close()


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[1])


def test_metadata_api_is_a_child_and_both_stop_on_sigterm(serve) -> None:
    s = serve()
    child = s.child_pid()
    s.wait_ready()
    assert child != s.proc.pid and parent_of(child) == s.proc.pid
    assert Path(s.state, "metadata_proxy").exists()  # the agent, in serve's own process
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=30) == 0, s.text()
    assert wait_gone(child), "the metadata API outlived serve"
    assert "Traceback" not in s.text() and "metadata-api stopped" in s.text()


def test_serve_stops_with_an_error_when_the_child_dies(serve) -> None:
    s = serve()
    child = s.child_pid()
    s.wait_ready()
    os.kill(child, signal.SIGKILL)
    assert s.proc.wait(timeout=30) == 1, s.text()
    assert f"the metadata API (process {child}) exited with status -9" in s.text()
    with pytest.raises(OSError):  # nothing half-running is left listening
        urllib.request.urlopen(f"http://127.0.0.1:{s.api_port}/healthz", timeout=1)


def test_the_child_does_not_outlive_a_killed_serve(serve) -> None:
    s = serve()
    child = s.child_pid()
    s.wait_ready()
    s.proc.kill()  # SIGKILL: serve cannot clean up; the kernel tells the child (PR_SET_PDEATHSIG)
    s.proc.wait()
    assert wait_gone(child), "the metadata API outlived a killed serve"


def test_metadata_port_in_use_stops_serve_clearly(serve) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        s = serve(metadata_port=busy.getsockname()[1])
        child = s.child_pid()
        assert s.proc.wait(timeout=60) == 1, s.text()
    text = s.text()
    assert f"127.0.0.1:{s.metadata_port}" in text and "address already in use" in text
    assert f"the metadata API (process {child}) exited with status 1" in text and "Traceback" not in text
    assert not alive(child)


def test_bad_vendor_data_is_refused_before_anything_starts(serve, tmp_path: Path) -> None:
    (tmp_path / "vendor.json").write_text("[1, 2]")
    s = serve(extra_conf=f"[api]\nvendordata_jsonfile_path = {tmp_path / 'vendor.json'}\n")
    assert s.proc.wait(timeout=60) == 1  # a configuration error
    assert "expected a JSON object" in s.text() and "runs in process" not in s.text()


def test_an_unreachable_database_stops_serve_and_leaves_no_child(tmp_path: Path) -> None:
    proc = subprocess.run([PROVNET, "--state-path", str(tmp_path / "s"), "--db",
                           "postgresql+psycopg://provnet:pw4711@127.0.0.1:1/nowhere", "serve",
                           "--bind-port", str(free_port())],
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert proc.returncode == 1 and "cannot open the database" in proc.stderr and "pw4711" not in proc.stderr
    child = int(re.search(r"metadata API runs in process (\d+)", proc.stderr).group(1))
    assert wait_gone(child), "the metadata API child was left running"
    assert "Traceback" not in proc.stderr
