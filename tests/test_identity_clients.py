# provnet's own clients against `provnet api` behind Keystone: the CLI's --url mode, `provnet agent`, the metadata
# agent and API on a remote registry, all with clouds.yaml credentials; and no secret in logs, titles or errors.
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from cli_run import PROVNET, api_process, free_port, stop
from keystone_support import wait_until
from metadata_chain import SECRET, agent_get


def write_conf(path: Path, keystone, **defaults: object) -> Path:
    lines = ["[DEFAULT]", "auth_strategy = keystone", f"metadata_proxy_shared_secret = {SECRET}",
             *(f"{key} = {value}" for key, value in defaults.items()),
             "[keystone_authtoken]", f"auth_url = {keystone.url}", "username = provnet",
             f"password = {keystone.passwords['provnet']}", "project_name = service",
             "memcached_servers = 127.0.0.1:11211"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def remote(keystone, tmp_path: Path):
    """`provnet api` as its own process with auth_strategy = keystone from a config file, and a clouds.yaml."""
    conf = write_conf(tmp_path / "provnet.conf", keystone)
    clouds = keystone.clouds_yaml(tmp_path / "clouds.yaml")
    data = yaml.safe_load(clouds.read_text())  # one more cloud: right user, wrong password
    data["clouds"]["badpass"] = json.loads(json.dumps(data["clouds"]["alice"]))
    data["clouds"]["badpass"]["auth"]["password"] = "not-alices-password-42"
    clouds.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(clouds), HOME=str(tmp_path))
    with api_process(tmp_path, "--config-file", str(conf)) as url:
        yield url, env, conf


def provnet(env: dict, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([PROVNET, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


def test_cli_url_mode_authenticates_with_clouds_yaml(remote, keystone) -> None:
    url, env, _conf = remote
    made = json.loads(provnet(env, "--url", url, "--os-cloud", "alice", "net-create", "alice-net", "-f",
                              "json").stdout)
    assert made["project_id"] == keystone.projects["demo"]
    listed = json.loads(provnet(env, "--url", url, "--os-cloud", "bob", "net-list", "-f", "json").stdout)
    assert listed == []  # bob's project has nothing
    err = provnet(env, "--url", url, "net-list", code=1).stderr
    assert "requires authentication" in err and "--os-cloud" in err
    err = provnet(env, "--url", url, "--os-cloud", "carol", "net-create", "x", code=1).stderr
    assert "rule:create_network is disallowed by policy (403 PolicyNotAuthorized)" in err
    err = provnet(env, "--url", url, "--os-cloud", "badpass", "net-list", code=1).stderr
    assert "refused the credentials of cloud 'badpass'" in err and "not-alices-password-42" not in err
    err = provnet(env, "--url", url, "--os-cloud", "nosuch", "net-list", code=2).stderr
    assert "nosuch" in err
    # OS_* variables alone (as an openrc file sets them) authenticate the --url mode too
    alice = yaml.safe_load(Path(env["OS_CLIENT_CONFIG_FILE"]).read_text())["clouds"]["alice"]["auth"]
    openrc = {**env, "OS_AUTH_URL": alice["auth_url"], "OS_USERNAME": "alice", "OS_PASSWORD": alice["password"],
              "OS_PROJECT_NAME": "demo", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default"}
    names = [n["name"] for n in json.loads(provnet(openrc, "--url", url, "net-list", "-f", "json").stdout)]
    assert names == ["alice-net"]


def test_agents_run_with_the_service_user_only(remote, keystone) -> None:
    url, env, _conf = remote
    provnet(env, "--url", url, "--os-cloud", "provnet", "agent", "--once", "--host", "compute1")
    agents = json.loads(provnet(env, "--url", url, "--os-cloud", "root", "agent-list", "-f", "json").stdout)
    assert [a["host"] for a in agents] == ["compute1"]
    provnet(env, "--url", url, "--os-cloud", "alice", "agent", "--once", "--host", "compute2", code=1)
    provnet(env, "--url", url, "--os-cloud", "root", "agent", "--once", "--host", "compute3", code=1)


def test_metadata_agent_and_api_on_the_remote_registry_with_the_service_user(remote, keystone, tmp_path) -> None:
    url, env, conf = remote
    admin = ["--url", url, "--os-cloud", "root"]
    provnet(env, *admin, "net-create", "phy_net", "--", "--router:external=True", "--provider:network_type",
            "flat", "--provider:physical_network", "physnet1")
    provnet(env, *admin, "subnet-create", "phy_net", "172.16.1.0/24", "--gateway", "172.16.1.2", "--name", "s1")
    router = json.loads(provnet(env, *admin, "router-create", "r1", "-f", "json").stdout)
    provnet(env, *admin, "router-interface-add", "r1", "s1")
    port = json.loads(provnet(env, *admin, "port-create", "phy_net", "--fixed-ip", "ip_address=172.16.1.103",
                              "-f", "json").stdout)
    (tmp_path / "ud").write_text("#!/bin/sh\necho hi\n")
    instance = json.loads(provnet(env, *admin, "instance-create", "vm1", "--user-data", str(tmp_path / "ud"),
                                  "--port", port["id"], "-f", "json").stdout)
    api_port = free_port()
    sock = tmp_path / "mp.sock"
    md_conf = write_conf(tmp_path / "metadata.conf", keystone, nova_metadata_port=api_port)
    service = ["--config-file", str(md_conf), "--url", url, "--os-cloud", "provnet", "--debug"]
    logs = tmp_path / "md-api.log", tmp_path / "md-agent.log"
    with open(logs[0], "wb") as api_log, open(logs[1], "wb") as agent_log:
        md_api = subprocess.Popen([PROVNET, *service, "metadata-api", "--port", str(api_port)], env=env,
                                  stdout=api_log, stderr=subprocess.STDOUT)
        agent_env = {**env, "PROVNET_STATE_PATH": str(tmp_path / "agent")}
        agent = subprocess.Popen([PROVNET, *service, "metadata-agent", "--socket", str(sock)], env=agent_env,
                                 stdout=agent_log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: sock.exists() or agent.poll() is not None, timeout=60)
        assert agent.poll() is None, logs[1].read_text()
        answer = None

        def fetched():
            nonlocal answer
            answer = agent_get(str(sock), "/openstack/latest/meta_data.json", [
                ("X-Forwarded-For", "172.16.1.103"), ("X-Neutron-Router-ID", router["id"])])
            return answer.status != 503 or md_api.poll() is not None

        wait_until(fetched, timeout=60)
        assert answer is not None and answer.status == 200, (answer, logs[1].read_text(), logs[0].read_text())
        assert json.loads(answer.body)["uuid"] == instance["id"]
        # no secret in the logs (debug level), on the command lines, or anywhere a token could leak
        text = logs[0].read_text() + logs[1].read_text() + (tmp_path / "api.log").read_text()
        for secret in (keystone.passwords["provnet"], keystone.passwords["root"]):
            assert secret not in text
            for proc in (md_api, agent):
                assert secret.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert "gAAAAA" not in text  # Fernet tokens
    finally:
        stop(agent)
        stop(md_api)


def test_config_show_masks_the_service_password(keystone, tmp_path) -> None:
    conf = write_conf(tmp_path / "provnet.conf", keystone)
    out = provnet(os.environ.copy(), "--config-file", str(conf), "config", "show").stdout
    assert "[keystone_authtoken] password" in out and keystone.passwords["provnet"] not in out
    assert "***" in out


def test_the_l3_agent_runs_with_the_service_user_and_reads_its_schedule(remote, keystone, tmp_path) -> None:
    """`provnet l3-agent` behind Keystone: its heartbeat (service only) and its reads of the schedule
    (get_l3-routers: admin or service) pass with the service user; no router is scheduled, so it builds nothing."""
    from conftest import need_root, unique

    need_root()  # the agent lists and adopts qrouter namespaces at start
    url, env, _conf = remote
    host = unique("pnl3")
    log = tmp_path / "l3.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen([PROVNET, "--url", url, "--os-cloud", "provnet", "--debug", "l3-agent", "--host",
                                  host], env={**env, "PROVNET_STATE_PATH": str(tmp_path / "l3")}, stdout=out,
                                 stderr=subprocess.STDOUT)
    try:
        def listed():
            agents = json.loads(provnet(env, "--url", url, "--os-cloud", "root", "agent-list", "-f", "json").stdout)
            return [a for a in agents if a["host"] == host] or agent.poll() is not None

        found = wait_until(listed, timeout=60)
        assert agent.poll() is None, log.read_text()
        assert found[0]["agent_type"] == "L3 agent" and found[0]["alive"] in (True, ":-)")
        wait_until(lambda: "l3-routers" in (tmp_path / "api.log").read_text(), timeout=30)
        api_log = (tmp_path / "api.log").read_text()
        assert [line for line in api_log.splitlines() if "l3-routers" in line and '" 200 ' in line]
        text = log.read_text()
        assert "PolicyNotAuthorized" not in text and "requires authentication" not in text, text
        assert keystone.passwords["provnet"] not in text
    finally:
        stop(agent)


def test_shell_completion_over_url_uses_the_same_credentials(remote) -> None:
    """`provnet --url URL --os-cloud alice net-show <TAB>` offers alice's networks (completion authenticates as
    the verb would); without credentials the API refuses and completion offers nothing, quietly."""
    url, env, _conf = remote
    provnet(env, "--url", url, "--os-cloud", "alice", "net-create", "alice-tab-net")

    def complete(words: str) -> list[str]:
        ran = subprocess.run([PROVNET], env={**env, "_PROVNET_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                             "COMP_CWORD": str(len(words.split()))},
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0 and ran.stderr == "", ran
        return ran.stdout.split()

    assert complete(f"provnet --url {url} --os-cloud alice net-show ") == ["plain,alice-tab-net"]
    assert complete(f"provnet --url {url} --os-cloud bob net-show ") == []  # another project: not visible
    assert complete(f"provnet --url {url} net-show ") == []


def test_doctor_and_dhcp_config_over_url_read_with_the_callers_credentials(remote, tmp_path) -> None:
    """`provnet --url URL --os-cloud NAME doctor` reads the registry through the API as NAME (its agents and
    bindings checks run); without credentials it says it could not read it, as a finding, not a traceback; the
    DHCP exports over --url read the reservations with the service user."""
    url, env, _conf = remote
    admin = ["--url", url, "--os-cloud", "root"]
    provnet(env, *admin, "net-create", "phy_net", "--", "--router:external=True", "--provider:network_type",
            "flat", "--provider:physical_network", "physnet1")
    provnet(env, *admin, "subnet-create", "phy_net", "172.16.1.0/24", "--gateway", "172.16.1.2", "--name", "s1")
    provnet(env, *admin, "port-create", "phy_net", "--fixed-ip", "ip_address=172.16.1.103", "--binding:host_id",
            "compute9")
    doctor = subprocess.run([PROVNET, *admin, "doctor", "-f", "json"], env=env, capture_output=True, text=True,
                            timeout=120)
    checks = {f["check"] for f in json.loads(doctor.stdout)["findings"]}
    assert "registry.unreachable" not in checks and "binding.port-failed" in checks, doctor.stdout
    anonymous = subprocess.run([PROVNET, "--url", url, "doctor", "-f", "json"], env=env, capture_output=True,
                               text=True, timeout=120)
    assert anonymous.returncode == 1 and "Traceback" not in anonymous.stderr
    [unread] = [f for f in json.loads(anonymous.stdout)["findings"] if f["check"] == "registry.unreachable"]
    assert "requires authentication" in unread["problem"]
    out = tmp_path / "export"
    provnet(env, "--url", url, "--os-cloud", "provnet", "dhcp-config", "--format", "dnsmasq", "--network",
            "phy_net", "--interface", "lo", "--output-dir", str(out))
    assert "172.16.1.103" in "".join(p.read_text() for p in out.iterdir())
