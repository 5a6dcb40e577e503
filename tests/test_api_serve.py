# `provnet api` and `provnet serve` as real processes: state dir, readiness, SIGTERM, clear start-up errors.
from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

PROVNET = str(Path(sys.executable).parent / "provnet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path: Path, verb: str, *extra: str, db: str | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    state = tmp_path / "state"
    conf = tmp_path / "provnet.conf"  # serve also starts the metadata API: keep it off the default 8775
    conf.write_text(f"[DEFAULT]\nmetadata_listen_port = {free_port()}\n")
    args = [PROVNET, "--config-file", str(conf), "--state-path", str(state)]
    if db:
        args += ["--db", db]
    proc = subprocess.Popen([*args, verb, "--bind-port", str(port), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PROVNET_CONFIG": "/dev/null"})
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                assert json.load(r) == {"status": "ok"}
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


@pytest.fixture
def kill_later():
    procs: list[subprocess.Popen] = []
    yield procs.append
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("verb", ["api", "serve"])
def test_runs_on_a_fresh_state_dir_and_stops_cleanly_on_sigterm(tmp_path: Path, verb: str, kill_later) -> None:
    proc, url = start(tmp_path, verb)
    kill_later(proc)
    wait_healthy(proc, url)
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (state / "provnet.sqlite").exists()  # the default store lives under the state path
    body = json.dumps({"network": {"name": "n1"}}).encode()
    req = urllib.request.Request(url + "/v2.0/networks", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "networking API listening on" in err and "Traceback" not in err
    assert '"POST /v2.0/networks" 201' in err  # the access log, on stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path, kill_later) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([PROVNET, "--state-path", str(tmp_path / "s"), "api", "--bind-port", str(port)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PROVNET_CONFIG": "/dev/null"})
    assert proc.returncode == 1
    assert f"127.0.0.1:{port}: address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_database_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    proc = subprocess.run([PROVNET, "--state-path", str(tmp_path / "s"),
                           "--db", "postgresql+psycopg://provnet:topsecret@127.0.0.1:1/nowhere", "api"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PROVNET_CONFIG": "/dev/null"})
    assert proc.returncode == 1
    assert "cannot open the database postgresql+psycopg://provnet:***@127.0.0.1:1/nowhere" in proc.stderr
    assert "topsecret" not in proc.stderr and "Traceback" not in proc.stderr


def test_servers_refuse_a_remote_url(tmp_path: Path) -> None:
    proc = subprocess.run([PROVNET, "--state-path", str(tmp_path / "s"), "--url", "http://127.0.0.1:9696", "api"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PROVNET_CONFIG": "/dev/null"})
    assert proc.returncode == 2 and "local database" in proc.stderr


def test_bad_bind_port_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([PROVNET, "--state-path", str(tmp_path / "s"), "api", "--bind-port", "70000"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PROVNET_CONFIG": "/dev/null"})
    assert proc.returncode != 0 and "bind_port" in proc.stderr and "Traceback" not in proc.stderr


def test_ml2_options_from_the_config_file_reach_the_api(tmp_path: Path, kill_later) -> None:
    conf = tmp_path / "provnet.conf"
    conf.write_text("[ml2_type_flat]\nflat_networks = physnet1\n"
                    "[ml2_type_vlan]\nnetwork_vlan_ranges = physnet2:100:199\n")
    port = free_port()
    proc = subprocess.Popen([PROVNET, "--config-file", str(conf), "--state-path", str(tmp_path / "state"), "api",
                             "--bind-port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_later(proc)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url)

    def create(attrs: dict) -> tuple[int, dict]:
        req = urllib.request.Request(url + "/v2.0/networks", data=json.dumps({"network": attrs}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    status, body = create({"provider:network_type": "flat", "provider:physical_network": "physnet2"})
    assert status == 400
    assert "physical_network 'physnet2' unknown for flat provider network" in body["NeutronError"]["message"]
    status, body = create({"provider:network_type": "vlan", "provider:physical_network": "physnet3",
                           "provider:segmentation_id": 150})
    assert status == 400
    assert "physical_network 'physnet3' unknown for VLAN provider network" in body["NeutronError"]["message"]
    status, _ = create({"provider:network_type": "vlan", "provider:physical_network": "physnet2",
                        "provider:segmentation_id": 150})
    assert status == 201
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
