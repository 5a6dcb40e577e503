# The metadata verbs as an operator runs them: Neutron's metadata_agent.ini read as is, bad input refused with a
# message (and nothing started), serve running the whole chain with a proxy process in front.
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from metadata_chain import UnixHTTPConnection, build_seed, http_request, wait_for

from provnet.registry import open_registry

PROVNET = str(Path(sys.executable).parent / "provnet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def provnet(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([PROVNET, *args], capture_output=True, text=True, timeout=timeout)


class Running:
    def __init__(self, *args: str, log: Path) -> None:
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen([PROVNET, *args], stdout=fh, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


@pytest.mark.parametrize("args,message", [
    (["metadata-proxy"], "exactly one of --router-id or --network-id"),
    (["metadata-proxy", "--router-id", "r", "--network-id", "n"], "exactly one of --router-id or --network-id"),
    (["metadata-proxy", "--router-id", "r", "--port", "70000"], "metadata_port"),
    (["metadata-proxy", "--router-id", "r", "--bind", "notanaddress"], "--bind: 'notanaddress' is not an IP address"),
    (["metadata-proxy", "--router-id", "r", "--bind", "0.0.0.0,::,localhost"], "'localhost' is not an IP address"),
    (["metadata-proxy", "--router-id", "r", "--bind", "fe80::a9fe:a9fe"], "link-local: name its device"),
])
def test_proxy_usage_errors(tmp_path, args, message):
    result = provnet("--state-path", str(tmp_path), *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_agent_refuses_a_bad_neutron_file(tmp_path):
    bad = tmp_path / "metadata_agent.ini"
    bad.write_text("[DEFAULT]\nnova_metadata_protocol = gopher\n")
    result = provnet("--state-path", str(tmp_path), "metadata-agent", "--config-file", str(bad))
    assert result.returncode == 1 and "nova_metadata_protocol" in result.stderr and str(bad) in result.stderr
    assert "Usage:" not in result.stderr  # a configuration error
    missing = provnet("--state-path", str(tmp_path), "metadata-agent", "--config-file", str(tmp_path / "nope.ini"))
    assert missing.returncode == 1 and "nope.ini" in missing.stderr
    assert not (tmp_path / "metadata_proxy").exists()


def test_api_refuses_a_bad_vendordata_file(tmp_path):
    conf = tmp_path / "provnet.conf"
    (tmp_path / "vendor.json").write_text("[1, 2]")
    conf.write_text(f"[api]\nvendordata_jsonfile_path = {tmp_path / 'vendor.json'}\n")
    result = provnet("--config-file", str(conf), "--state-path", str(tmp_path), "metadata-api", "--port",
                     str(free_port()))
    assert result.returncode == 1 and "expected a JSON object" in result.stderr and "Usage:" not in result.stderr


def test_agent_runs_from_neutrons_metadata_agent_ini(tmp_path):
    db = f"sqlite:///{tmp_path}/provnet.sqlite"
    registry = open_registry(db)
    seed = build_seed(registry, {"vm1": "172.16.1.103"})
    registry.close()
    api_port = free_port()
    ini = tmp_path / "metadata_agent.ini"
    ini.write_text(f"""[DEFAULT]
nova_metadata_ip = 127.0.0.1
nova_metadata_port = {api_port}
metadata_proxy_shared_secret = from-neutron
metadata_proxy_socket = {tmp_path}/mp.sock
metadata_workers = 2
log_dir = /var/log/neutron

[agent]
report_interval = 30

[cache]
enabled = True
""")
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = from-neutron\nmetadata_listen_port = {api_port}\n")
    api = Running("--config-file", str(conf), "--state-path", str(tmp_path), "--db", db, "metadata-api",
                  log=tmp_path / "api.log")
    agent = Running("--state-path", str(tmp_path), "--db", db, "metadata-agent", "--config-file", str(ini),
                    log=tmp_path / "agent.log")
    try:
        wait_for(lambda: Path(f"{tmp_path}/mp.sock").exists(), 20, "the agent's socket")

        def api_up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", api_port), 1).close()
                return True
            except OSError:
                return False

        wait_for(api_up, 20, "the metadata API")
        conn = UnixHTTPConnection(f"{tmp_path}/mp.sock")
        answer = http_request(conn, "GET", "/openstack/latest/meta_data.json",
                              [("Host", "x"), ("X-Forwarded-For", "172.16.1.103"),
                               ("X-Neutron-Router-ID", seed.router_id)])
        conn.close()
        assert answer.status == 200 and json.loads(answer.body)["uuid"] == seed.instances["vm1"]
    finally:
        agent_log = agent.stop()
        api.stop()
    assert "ignoring options provnet does not use" in agent_log and "[cache] enabled" in agent_log


def test_serve_runs_api_and_agent_behind_a_proxy(tmp_path):
    db = f"sqlite:///{tmp_path}/provnet.sqlite"
    registry = open_registry(db)
    seed = build_seed(registry, {"vm1": "127.0.0.1"}, cidr="127.0.0.0/24", gateway="127.0.0.2",
                      external_router="127.0.0.3")
    vm1 = seed.instances["vm1"]
    registry.close()
    api_port, bind_port, proxy_port = free_port(), free_port(), free_port()
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = s\nmetadata_listen_port = {api_port}\n"
                    f"bind_port = {bind_port}\n")
    state = tempfile.mkdtemp(prefix="pn-")  # short: the proxy's status socket lives under it (107-byte limit)
    base = ["--config-file", str(conf), "--state-path", state, "--db", db]
    serve = Running(*base, "serve", log=tmp_path / "serve.log")
    proxy = Running(*base, "metadata-proxy", "--router-id", seed.router_id, "--bind", "127.0.0.1", "--port",
                    str(proxy_port), log=tmp_path / "proxy.log")
    try:
        wait_for(lambda: Path(state, "metadata_proxy").exists(), 20, "serve's agent socket")
        import urllib.request

        def fetch(path: str) -> bytes | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}{path}", timeout=5) as resp:
                    return resp.read()
            except OSError:
                return None

        wait_for(lambda: fetch("/") is not None, 20, "the proxy")
        assert json.loads(fetch("/openstack/latest/meta_data.json"))["uuid"] == vm1
        user_data = fetch("/openstack/latest/user_data")
        assert user_data.startswith(b"#cloud-config")
        # the networking API of the same process changes the instance; the next answer shows it
        body = json.dumps({"instance": {"hostname": "renamed"}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{bind_port}/provnet/v1/instances/{vm1}", data=body,
                                     method="PUT", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()
        # serve's metadata API (a child process) learns it from the change feed, milliseconds later
        deadline = time.monotonic() + 30
        while fetch("/latest/meta-data/hostname") != b"renamed.novalocal":
            assert time.monotonic() < deadline, "the change never reached the metadata API"
        status = UnixHTTPConnection(str(Path(state, "metadata-proxy", f"{seed.router_id}.sock")))
        assert http_request(status, "GET", "/readyz", [("Host", "x")]).status == 200
        status.close()
    finally:
        proxy.stop()
        log = serve.stop()
        shutil.rmtree(state, ignore_errors=True)
    # one start line per service, saying where it serves (no second "... started" line)
    assert "metadata agent on " in log and "metadata API on 127.0.0.1:" in log and " started" not in log
    assert "Traceback" not in log



def test_agent_with_metadata_workers_forks_that_many_and_stops_them(tmp_path):
    db = f"sqlite:///{tmp_path}/provnet.sqlite"
    registry = open_registry(db)
    seed = build_seed(registry, {"vm1": "172.16.1.103"})
    registry.close()
    api_port = free_port()
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = w\nmetadata_listen_port = {api_port}\n"
                    f"nova_metadata_port = {api_port}\nmetadata_workers = 3\n")
    base = ["--config-file", str(conf), "--state-path", str(tmp_path), "--db", db]
    api = Running(*base, "metadata-api", log=tmp_path / "api.log")
    agent = Running(*base, "metadata-agent", log=tmp_path / "agent.log")
    sock = tmp_path / "metadata_proxy"
    try:
        wait_for(sock.exists, 20, "the agent's socket")

        def children() -> list[int]:
            path = Path(f"/proc/{agent.proc.pid}/task/{agent.proc.pid}/children")
            return [int(p) for p in path.read_text().split()]

        wait_for(lambda: len(children()) == 3, 20, "three workers")
        workers = children()

        def ask() -> int:
            conn = UnixHTTPConnection(str(sock))
            try:
                return http_request(conn, "GET", "/latest/meta-data/instance-id",
                                    [("Host", "x"), ("X-Forwarded-For", "172.16.1.103"),
                                     ("X-Neutron-Router-ID", seed.router_id)]).status
            finally:
                conn.close()

        wait_for(lambda: ask() == 200, 20, "an answer through a worker")
        assert all(ask() == 200 for _ in range(30))
    finally:
        log = agent.stop()
        api.stop()
    assert agent.proc.returncode == 0, log
    assert not sock.exists()
    assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
               for pid in workers)
    assert "3 workers" in log


def _worker_pids(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(")")[1].split()[0] == "Z"


def test_agent_workers_are_restarted_and_die_with_the_parent(tmp_path):
    import os
    import re
    import signal

    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = w\nnova_metadata_port = {free_port()}\n"
                    "metadata_workers = 2\n")
    base = ["--config-file", str(conf), "--state-path", str(tmp_path), "--db", f"sqlite:///{tmp_path}/p.sqlite"]
    # one worker killed once both are ready: it is restarted, the other keeps serving, the agent keeps running
    agent = Running(*base, "--debug", "metadata-agent", log=tmp_path / "agent.log")
    try:
        wait_for(lambda: agent.text().count(") is ready") == 2, 30, "two ready workers")
        first, second = _worker_pids(agent.proc.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(_worker_pids(agent.proc.pid)) == 2 and first not in _worker_pids(agent.proc.pid),
                 30, "the worker restarted")
        assert second in _worker_pids(agent.proc.pid) and agent.proc.poll() is None
        log = agent.text()
        assert re.search(rf"worker \d \(process {first}\) exited with signal 9 .* restarting it", log), log
        assert "Traceback" not in log
    finally:
        agent.stop()
    assert not (tmp_path / "metadata_proxy").exists()
    # the agent itself SIGKILLed: the kernel stops its workers (PR_SET_PDEATHSIG)
    agent = Running(*base, "metadata-agent", log=tmp_path / "agent2.log")
    workers: list[int] = []
    try:
        wait_for(lambda: len(_worker_pids(agent.proc.pid)) == 2, 20, "two workers")
        workers = _worker_pids(agent.proc.pid)
        agent.proc.kill()
        agent.proc.wait()
        wait_for(lambda: all(_gone(pid) for pid in workers), 20, "the workers to die with the agent")
    finally:
        agent.stop()
        for pid in workers:  # a failed test must not leave them running
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
