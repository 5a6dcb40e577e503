# `provnet doctor` on the seed's configuration and the registry its commands create (SQLite and PostgreSQL).
from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner
from doctor_seed import SEED, apply_registry_ops

from provnet.cli import main
from provnet.registry import open_registry


def run_doctor(args: list[str], env: dict | None = None) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(main, args, env={"PROVNET_CONFIG": "", **(env or {})}, catch_exceptions=False)
    out = result.stdout
    data = json.loads(out)["findings"] if "-f" in args and out.strip().startswith("{") else []
    return result.exit_code, data, out


def seed_args(variant: str, *, local_conf: bool = True, commands: bool = False) -> list[str]:
    d = SEED / variant
    args = ["--config-dir", str(d / "etc"), "--dnsmasq-opts", str(d / "opts"),
            "--dnsmasq-cmdline", f"@{d / 'dnsmasq.cmdline'}", "--iptables-save", str(d / "iptables.rules"),
            "--dhcp-server", "172.16.1.99"]
    if (d / "hosts").exists():
        args += ["--dnsmasq-opts", str(d / "hosts")]
    if local_conf:
        args += ["--local-conf", str(d / "local.conf")]
    if commands:  # the network's shape without a registry
        args += ["--commands", str(d / "commands")]
    return args


def at(finding: dict) -> str:
    """The finding's location relative to the fixture directory (or "registry")."""
    return finding["location"].replace(f"{SEED}/", "")


@pytest.fixture
def seed_db(db_url):
    registry = open_registry(db_url)
    apply_registry_ops(registry, SEED / "original" / "registry.json")
    registry.close()
    return db_url


@pytest.fixture
def corrected_db(db_url):
    registry = open_registry(db_url)
    apply_registry_ops(registry, SEED / "corrected" / "registry.json")
    registry.close()
    return db_url


def test_seed_traps_each_at_its_file_and_line(seed_db):
    code, data, _ = run_doctor(["--db", seed_db, "doctor", "-f", "json", *seed_args("original")])
    assert code == 1
    got = {(f["check"], at(f)) for f in data}
    expected = {
        # binding_failed, cause 2: agent_down_time too small (neutron.conf line 6)
        ("agent.down-time", "original/etc/neutron.conf:6"),
        # binding_failed, cause 1: the agent reports no mapping for physnet1; the seed's VM port failed
        ("binding.physnet-unmapped", "registry"),
        ("binding.port-failed", "registry"),
        # Q_ML2_TENANT_NETWORK_TYPE=flat,vlan,gre,vxlan: nothing a project network can be allocated from
        ("ml2.tenant-network-types", "original/local.conf:2"),
        # the l3-agent recipe keeps enable_isolated_metadata = True on a network whose gateway is the router's
        ("metadata.isolated-with-router", "original/etc/dhcp_agent.ini:3"),
        # the l3-agent recipe stops the dhcp agent but leaves dhcp_agent_notification on
        ("metadata.dhcp-notification", "original/etc/neutron.conf:1"),
        # dnsmasq range .100-.109 against the port's fixed IP from Neutron's .102-.126 pool
        ("dhcp.lease-not-fixed-ip", "original/dnsmasq.cmdline:1"),
        # option 121's default route (.1) is not what the subnet says (its gateway .2)
        ("dhcp.routes-vs-subnet", "original/opts:1"),
    }
    assert got == expected
    port_failed = next(f for f in data if f["check"] == "binding.port-failed")
    assert "physical network physnet1 is not in the agent's bridge_mappings {}" in port_failed["problem"]
    lease = next(f for f in data if f["check"] == "dhcp.lease-not-fixed-ip")
    assert "172.16.1.100-172.16.1.109" in lease["problem"] and "fa:16:3e:79:1e:2c,172.16.1.103" in lease["fix"]


def test_seed_without_local_conf_finds_bridge_mappings_in_the_wrong_file(seed_db):
    code, data, _ = run_doctor(["--db", seed_db, "doctor", "-f", "json", *seed_args("original", local_conf=False)])
    assert code == 1
    got = {(f["check"], at(f)) for f in data}
    assert ("agent.bridge-mappings", "original/etc/ml2_conf.ini:6") in got
    assert ("ml2.tenant-network-types", "original/etc/ml2_conf.ini:2") in got


def test_seed_dhcp_agent_recipe_serves_no_metadata_here(seed_db, tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    for f in (SEED / "original" / "etc").iterdir():
        (etc / f.name).write_text(f.read_text())
    for f in (SEED / "dhcp-recipe").iterdir():
        (etc / f.name).write_text(f.read_text())
    code, data, _ = run_doctor(["--db", seed_db, "doctor", "-f", "json", "--config-dir", str(etc)])
    got = {(f["check"], f["location"].replace(f"{etc}/", "")) for f in data}
    assert ("metadata.no-server", "l3_agent.ini:3") in got
    assert ("metadata.isolated-with-router", "dhcp_agent.ini:3") in got


def test_corrected_configuration_reports_nothing(corrected_db):
    code, data, _ = run_doctor(["--db", corrected_db, "doctor", "-f", "json", *seed_args("corrected")])
    assert (code, data) == (0, [])


def test_corrected_files_alone_report_nothing_in_table_form():
    code, _, out = run_doctor(["doctor", "--no-registry", *seed_args("corrected", commands=True)])
    assert code == 0 and out.startswith("no problems found\n\ninputs read (checks that ran on each):\n"), out
    rows = [line.split() for line in out.splitlines()[3:]]
    assert [r[0].replace(f"{SEED}/", "") for r in rows] == [
        "corrected/etc/neutron.conf", "corrected/etc/ml2_conf.ini", "corrected/etc/openvswitch_agent.ini",
        "corrected/etc/dhcp_agent.ini", "corrected/etc/l3_agent.ini", "corrected/etc/metadata_agent.ini",
        "corrected/etc/nova.conf", "corrected/local.conf", "corrected/opts", "corrected/hosts",
        "corrected/dnsmasq.cmdline", "corrected/iptables.rules", "corrected/commands", "registry"]
    assert all(int(r[-2]) > 0 and r[-1] in ("check", "checks") for r in rows[:-1]), out  # each one checked
    assert out.splitlines()[-1].split()[-3:] == ["not", "read:", "--no-registry"]


def test_files_alone_name_what_no_check_could_use():
    """Without a registry or the commands, the hosts file cannot be compared with anything: doctor says so."""
    code, data, out = run_doctor(["doctor", "--no-registry", "-f", "json", *seed_args("corrected")])
    assert code == 0
    [f] = data
    assert (f["check"], f["severity"], at(f)) == ("input.not-checked", "info", "corrected/hosts")
    assert "holds 1 dhcp-host" in f["problem"] and "--commands FILE" in f["problem"]
    inputs = {i["input"].replace(f"{SEED}/", ""): i for i in json.loads(out)["inputs"]}
    assert inputs["corrected/hosts"]["checks"] == 0 and inputs["corrected/hosts"]["status"] == "not checked"
    assert inputs["corrected/opts"]["check_names"] == ["dhcp.routes"]
    assert inputs["registry"]["status"] == "not read: --no-registry"


def test_missing_inputs_are_errors_not_tracebacks(tmp_path):
    code, data, _ = run_doctor(["doctor", "--no-registry", "-f", "json", "--config-dir", str(tmp_path / "none"),
                                "--local-conf", str(tmp_path / "no.conf"), "--dnsmasq-opts", str(tmp_path / "x"),
                                "--iptables-save", str(tmp_path / "y"), "--dhcp-server", "10.0.0.1"])
    assert code == 1
    assert [f["check"] for f in data] == ["config.parse"] * 4
    assert all(f["severity"] == "error" for f in data)


def test_bad_dhcp_server_is_a_usage_error():
    result = CliRunner().invoke(main, ["doctor", "--no-registry", "--dhcp-server", "nope"])
    assert result.exit_code == 2 and "'nope' is not an IPv4 address" in result.output


def test_unreachable_registry_is_a_finding():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    code, data, _ = run_doctor(["--url", f"http://127.0.0.1:{port}", "doctor", "-f", "json"])
    assert code == 1 and data[0]["check"] == "registry.unreachable"
    assert "--no-registry" in data[0]["fix"]


def test_help_teaches():
    out = CliRunner().invoke(main, ["doctor", "--help"]).output
    for word in ("--config-dir", "--local-conf", "--dnsmasq-cmdline", "@FILE", "exit status is 1", "Examples"):
        assert word in out


def test_seed_registry_over_the_api_with_url(seed_db):
    from api_server import running_api

    with running_api(seed_db) as (client, _):
        code, data, _ = run_doctor(["--url", client.url, "doctor", "-f", "json", "--dnsmasq-opts",
                                    str(SEED / "original" / "opts"), "--dnsmasq-cmdline",
                                    f"@{SEED / 'original' / 'dnsmasq.cmdline'}"])
    assert code == 1
    assert {f["check"] for f in data} == {"binding.physnet-unmapped", "binding.port-failed",
                                          "dhcp.lease-not-fixed-ip", "dhcp.routes-vs-subnet"}


def test_missing_local_database_is_not_created(tmp_path):
    code, data, _ = run_doctor(["--state-path", str(tmp_path / "state"), "doctor", "-f", "json"])
    assert code == 0 and [(f["check"], f["severity"]) for f in data] == [("registry.unreachable", "info")]
    assert not (tmp_path / "state").exists()


def test_provnet_dnsmasq_export_fixes_the_seed_lease_trap(seed_db, tmp_path):
    out = tmp_path / "dnsmasq"
    result = CliRunner().invoke(main, ["--db", seed_db, "dhcp-config", "--format", "dnsmasq", "--network",
                                       "phy_net", "--output-dir", str(out), "--interface", "br-phy"])
    assert result.exit_code == 0, result.output
    code, data, _ = run_doctor(["--db", seed_db, "doctor", "-f", "json", "--dnsmasq-cmdline",
                                f"@{out / 'dnsmasq.cmdline'}"])
    checks = {f["check"] for f in data}
    assert not {c for c in checks if c.startswith("dhcp.")}, data  # reservations per port, 121 = 249, 3 agrees
    assert checks == {"binding.physnet-unmapped", "binding.port-failed"}  # the seed's agent still lacks physnet1


@pytest.mark.parametrize("cmdline, problem", [
    ("", "the command line is empty: nothing to check"),
    ("   ", "the command line is empty: nothing to check"),
    ("dnsmasq --dhcp-range='172.16.1.0", "cannot split the command line: No closing quotation"),
])
def test_a_dnsmasq_command_line_that_says_nothing_is_an_error_not_a_clean_bill(tmp_path, cmdline, problem):
    code, data, _ = run_doctor(["--state-path", str(tmp_path), "doctor", "--no-registry", "-f", "json",
                                "--dnsmasq-cmdline", cmdline])
    assert code == 1
    assert [(f["check"], f["severity"], f["problem"]) for f in data] == [("config.parse", "error", problem)]
