# TLS: the networking API and the metadata API over https with certificates made here; clients verify them with a
# CA bundle and refuse a certificate they cannot trust with a message that says how to fix it.
from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cli_run import PROVNET, free_port, stop
from keystone_support import keystone_api
from metadata_chain import SECRET, LoopThread, agent_get, build_seed
from tls_support import make_ca

from provnet.identity.tls import server_context
from provnet.metadata.agent import MetadataAgent, api_target
from provnet.metadata.api import MetadataApi
from provnet.registry import open_registry


@pytest.fixture
def pki(tmp_path: Path):
    ca = make_ca(tmp_path / "ca")
    other = make_ca(tmp_path / "other", "someone else's CA")
    cert, key = ca.issue(tmp_path / "ca", "server")
    return ca, other, cert, key


def start_https_api(tmp_path: Path, conf: Path, ca: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 (closed by the caller's stop)
    proc = subprocess.Popen([PROVNET, "--config-file", str(conf), "api", "--bind-port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1, context=context) as resp:
                if resp.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError((tmp_path / "api.log").read_text())
        time.sleep(0.1)


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROVNET, *args], capture_output=True, text=True, timeout=60,
                          env=env or {k: v for k, v in os.environ.items() if not k.startswith("OS_")})


def test_networking_api_over_https_and_clients_that_verify_it(pki, tmp_path: Path) -> None:
    ca, other, cert, key = pki
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n[ssl]\ncert_file = {cert}\nkey_file = {key}\n")
    proc, url = start_https_api(tmp_path, conf, ca.path)
    try:
        made = run("--url", url, "--os-cacert", str(ca.path), "net-create", "tls-net", "-f", "json")
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["name"] == "tls-net"
        for extra in ([], ["--os-cacert", str(other.path)]):
            refused = run("--url", url, *extra, "net-list")
            assert refused.returncode == 1 and "Traceback" not in refused.stderr
            assert f"the certificate of {url} is not trusted" in refused.stderr
            assert "--os-cacert" in refused.stderr
        missing = run("--url", url, "--os-cacert", str(tmp_path / "nope.pem"), "net-list")
        assert missing.returncode == 2 and "no such file" in missing.stderr
        plain = run("--url", url.replace("https", "http"), "net-list")  # http to an https server: refused cleanly
        assert plain.returncode == 1 and "Traceback" not in plain.stderr
    finally:
        stop(proc)


@pytest.mark.parametrize("ssl_lines, message", [
    ("cert_file = {cert}\n", "the key is missing"),
    ("cert_file = {cert}\nkey_file = {tmp}/none.key\n", "no such file"),
    ("cert_file = {other}\nkey_file = {key}\n", "are not a PEM certificate and its private key"),
])
def test_bad_tls_settings_stop_the_api_with_the_option_named(pki, tmp_path: Path, ssl_lines: str, message: str):
    ca, other, cert, key = pki
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n[ssl]\n"
                    + ssl_lines.format(cert=cert, key=key, tmp=tmp_path, other=other.path))
    proc = run("--config-file", str(conf), "api", "--bind-port", str(free_port()))
    assert proc.returncode == 1 and "[ssl] cert_file/key_file" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_metadata_api_over_https_and_the_agent_verifies_it(pki, tmp_path: Path, caplog) -> None:
    ca, other, cert, key = pki
    registry = open_registry(f"sqlite:///{tmp_path}/p.sqlite")
    seed = build_seed(registry)
    loop = LoopThread()
    api = MetadataApi(registry, shared_secret=SECRET, port=0, ssl_context=server_context(str(cert), str(key)))
    loop.run(api.start())
    agents = []
    try:
        for name, bundle in (("good", ca.path), ("bad", other.path)):
            agent = MetadataAgent(registry, shared_secret=SECRET, socket_path=str(tmp_path / f"{name}.sock"),
                                  api=api_target("127.0.0.1", api.port, "https", ca_cert=str(bundle)))
            loop.run(agent.start())
            agents.append(agent)
        headers = [("X-Forwarded-For", seed.ips["vm1"]), ("X-Neutron-Router-ID", seed.router_id)]
        good = agent_get(str(tmp_path / "good.sock"), "/openstack/latest/meta_data.json", headers)
        assert good.status == 200 and json.loads(good.body)["uuid"] == seed.instances["vm1"]
        bad = agent_get(str(tmp_path / "bad.sock"), "/openstack/latest/meta_data.json", headers)
        assert bad.status == 503
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
        # plain http to the https API gets nowhere either
        conn_refused = urllib.request.Request(f"http://127.0.0.1:{api.port}/healthz")
        with pytest.raises(OSError):
            urllib.request.urlopen(conn_refused, timeout=5).read()
    finally:
        for agent in agents:
            loop.run(agent.stop())
        loop.run(api.stop())
        loop.close()
        registry.close()


def test_metadata_api_refuses_half_a_tls_setting(tmp_path: Path, pki) -> None:
    ca, other, cert, key = pki
    conf = tmp_path / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n[wsgi]\nssl_key_file = {key}\n")
    proc = run("--config-file", str(conf), "metadata-api", "--port", str(free_port()))
    assert proc.returncode == 1 and "[wsgi] ssl_cert_file/ssl_key_file" in proc.stderr
    assert "the certificate is missing" in proc.stderr


def test_companion_mode_over_https_with_the_clouds_cacert(keystone, pki, tmp_path: Path) -> None:
    ca, other, cert, key = pki
    with keystone_api(keystone, f"sqlite:///{tmp_path}/c.sqlite",
                      ssl_context=server_context(str(cert), str(key))) as api:
        assert api.url.startswith("https://")
        trusted = keystone.clouds_yaml(tmp_path / "trusted.yaml", cacert=str(ca.path))
        untrusted = keystone.clouds_yaml(tmp_path / "untrusted.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        ok = run("--os-cloud", "root", "net-list", "-f", "json", env={**env, "OS_CLIENT_CONFIG_FILE": str(trusted)})
        assert ok.returncode == 0 and json.loads(ok.stdout) == [], ok.stderr
        refused = run("--os-cloud", "root", "net-list", env={**env, "OS_CLIENT_CONFIG_FILE": str(untrusted)})
        assert refused.returncode == 1 and f"the certificate of {api.url} is not trusted" in refused.stderr
