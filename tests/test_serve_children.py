# `provnet serve` supervises its children: they answer, stop with serve, die with it, and come back when they die.
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
        self.proc = subprocess.Popen([PROVNET, "--config-file", str(conf), "--state-path", self.state, "--debug",
                                      "serve"],
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


def child_pids(s: Serve, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"{name} runs in process (\d+)", s.text())]


def metadata_answers(s: Serve) -> bool:
    """The metadata API and the agent answer (their /healthz, over TCP and the agent's unix socket)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{s.metadata_port}/healthz", timeout=2).read()
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(Path(s.state, "metadata_proxy")))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_for(predicate, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_children_are_serves_and_all_stop_on_sigterm(serve) -> None:
    s = serve()
    child = s.child_pid()
    s.wait_ready()
    agent = child_pids(s, "metadata agent")[0]
    assert child != s.proc.pid and parent_of(child) == s.proc.pid and parent_of(agent) == s.proc.pid
    assert metadata_answers(s)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=30) == 0, s.text()
    assert wait_gone(child) and wait_gone(agent), "a child outlived serve"
    assert "Traceback" not in s.text()


@pytest.mark.parametrize("name", ["metadata API", "metadata agent"])
def test_a_dead_child_is_restarted_and_counted(serve, name: str) -> None:
    s = serve()
    s.child_pid()
    s.wait_ready()
    first = child_pids(s, name)[0]
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: len(child_pids(s, name)) == 2), s.text()
    second = child_pids(s, name)[1]
    assert second != first and parent_of(second) == s.proc.pid
    assert wait_for(lambda: metadata_answers(s)), s.text()
    assert s.proc.poll() is None  # serve never stopped
    assert f"{name} (process {first}) exited with signal 9" in s.text()
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{s.api_port}/metrics", timeout=5).read().decode()
    assert f'provnet_child_restarts_total{{child="{name}"}} 1.0' in metrics


def test_a_child_whose_loop_is_stuck_is_killed_and_restarted(serve) -> None:
    s = serve(extra_conf="watchdog_timeout = 1.5\n")
    child = s.child_pid()
    s.wait_ready()
    os.kill(child, signal.SIGSTOP)  # a wedged event loop: alive, silent
    try:
        assert wait_for(lambda: len(child_pids(s, "metadata API")) == 2), s.text()
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)
    assert "sent no watchdog ping" in s.text()
    assert wait_for(lambda: metadata_answers(s)), s.text()


def test_the_children_do_not_outlive_a_killed_serve(serve) -> None:
    s = serve()
    child = s.child_pid()
    s.wait_ready()
    agent = child_pids(s, "metadata agent")[0]
    s.proc.kill()  # SIGKILL: serve cannot clean up; the kernel tells the children (PR_SET_PDEATHSIG)
    s.proc.wait()
    assert wait_gone(child) and wait_gone(agent), "a child outlived a killed serve"


def test_metadata_port_in_use_stops_serve_clearly(serve) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        s = serve(metadata_port=busy.getsockname()[1])
        child = s.child_pid()
        assert s.proc.wait(timeout=60) == 1, s.text()
    text = s.text()
    assert f"127.0.0.1:{s.metadata_port}" in text and "address already in use" in text
    assert f"the metadata API (process {child}) exited with status 1 before it was ready" in text
    assert "Traceback" not in text and not alive(child)
    for agent in child_pids(s, "metadata agent"):
        assert wait_gone(agent)


def test_bad_vendor_data_is_refused_before_anything_starts(serve, tmp_path: Path) -> None:
    (tmp_path / "vendor.json").write_text("[1, 2]")
    s = serve(extra_conf=f"[api]\nvendordata_jsonfile_path = {tmp_path / 'vendor.json'}\n")
    assert s.proc.wait(timeout=60) == 1  # a configuration error
    assert "expected a JSON object" in s.text() and "runs in process" not in s.text()


def test_an_unreachable_database_stops_serve_and_starts_no_child(tmp_path: Path) -> None:
    proc = subprocess.run([PROVNET, "--state-path", str(tmp_path / "s"), "--db",
                           "postgresql+psycopg://provnet:pw4711@127.0.0.1:1/nowhere", "serve",
                           "--bind-port", str(free_port())],
                          capture_output=True, text=True, timeout=60, env=ENV)
    assert proc.returncode == 1 and "cannot open the database" in proc.stderr and "pw4711" not in proc.stderr
    assert "metadata API on" not in proc.stderr and "Traceback" not in proc.stderr  # no child ever started
