# Doctor never passes what it did not read: every dnsmasq form operators paste, an options file alone, each input
# checked or named, the inputs summary, the README's seed example, unbroken fixes, and --help examples as written.
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from doctor_seed import SEED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provnet.binding import bind_port, failure_fix
from provnet.doctor.findings import Finding, render_table, wrap
from provnet.model.resources import Agent, Network, Port

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PROVNET = str(VENV_BIN / "provnet")
NO_DEFAULT_121 = "tag:tag0,option:classless-static-route,169.254.169.254/32,172.16.1.2"  # the trap: no 0.0.0.0/0
RANGE = "--dhcp-range=set:tag0,172.16.1.100,172.16.1.109,2h"


def doctor(*args: str, cwd: Path | None = None, env: dict | None = None) -> tuple[int, dict, str]:
    """`provnet doctor ARGS -f json` as a user runs it: (exit code, parsed JSON, stderr)."""
    res = subprocess.run([PROVNET, "doctor", "--no-registry", "-f", "json", *args], capture_output=True, text=True,
                         cwd=cwd, env={**os.environ, "PROVNET_CONFIG": "", **(env or {})}, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


def checks_at(data: dict, base: Path) -> set[tuple[str, str]]:
    return {(f["check"], f["location"].replace(f"{base}/", "")) for f in data["findings"]}


# ---- dnsmasq command lines in every form an operator pastes ----------------------------------------------------

def _proc_cmdline(d: Path) -> str:
    (d / "cmdline").write_bytes(b"\0".join([b"/usr/sbin/dnsmasq", b"--no-hosts", RANGE.encode(),
                                            b"--dhcp-option=" + NO_DEFAULT_121.encode(), b""]))
    return "@cmdline"


FORMS = {
    # /proc/PID/cmdline itself: NUL-separated, the program path first, a trailing NUL
    "proc-cmdline": (_proc_cmdline, "cmdline"),
    # a systemd unit: ExecStart= with a prefix, continuation lines, comments
    "systemd-unit": (lambda d: (d / "dnsmasq-provider.service").write_text(
        "[Unit]\nDescription=provider DHCP\n# keep\n[Service]\nExecStart=-/usr/sbin/dnsmasq -k \\\n"
        f"    {RANGE} \\\n    --dhcp-option={NO_DEFAULT_121}\nRestart=always\n") and "@dnsmasq-provider.service",
        "dnsmasq-provider.service:5"),
    # systemd's @ form: argv[0] given again after the path
    "systemd-at": (lambda d: (d / "u.service").write_text(
        f"ExecStart=@/usr/sbin/dnsmasq dnsmasq -d {RANGE} -O {NO_DEFAULT_121}\n") and "@u.service", "u.service:1"),
    # `ps aux`: the user column is dnsmasq too, the program comes later
    "ps-aux": (lambda d: (d / "ps.txt").write_text(
        "USER PID %CPU %MEM VSZ RSS TTY STAT START TIME COMMAND\n"
        "dnsmasq 812 0.0 0.0 12345 2345 ? S 09:54 0:00 /usr/sbin/dnsmasq -x /run/dnsmasq/dnsmasq.pid -u dnsmasq "
        f"-7 /nonexistent.d,.dpkg-dist {RANGE} --dhcp-option={NO_DEFAULT_121}\n") and "@ps.txt", "ps.txt:2"),
    # Neutron's way: inside a namespace, with sudo
    "netns-sudo": (lambda d: f"sudo ip netns exec qdhcp-1 dnsmasq --no-hosts {RANGE} --dhcp-option={NO_DEFAULT_121}",
                   "dnsmasq command line 1"),
    # bare arguments, no program name: inline and in a file
    "bare-args": (lambda d: f"{RANGE} --dhcp-option={NO_DEFAULT_121}", "dnsmasq command line 1"),
    "bare-args-file": (lambda d: (d / "args").write_text(f"# from a wiki page\n{RANGE}\n-O {NO_DEFAULT_121}\n")
                       and "@args", "args:3"),
    # /etc/default/dnsmasq's variable
    "default-file": (lambda d: (d / "default").write_text(
        f'DNSMASQ_OPTS="{RANGE} --dhcp-option={NO_DEFAULT_121}"\n') and "@default", "default:1"),
    # --conf-file in its three spellings, and a conf-dir: the settings live in the named file
    "conf-file-eq": (lambda d: _conf(d) and f"dnsmasq --conf-file={d}/provider.conf", "provider.conf:2"),
    "conf-file-space": (lambda d: _conf(d) and f"/usr/sbin/dnsmasq --conf-file {d}/provider.conf -k",
                        "provider.conf:2"),
    "conf-file-short": (lambda d: _conf(d) and f"dnsmasq -C{d}/provider.conf", "provider.conf:2"),
    "conf-dir": (lambda d: _conf(d, "conf.d") and f"dnsmasq --conf-dir={d}/conf.d,.bak", "conf.d/provider.conf:2"),
}


def _conf(d: Path, sub: str = "") -> bool:
    where = d / sub if sub else d
    where.mkdir(exist_ok=True)
    (where / "provider.conf").write_text(f"{RANGE[2:]}\ndhcp-option={NO_DEFAULT_121}\n")
    if sub:
        (where / "old.bak").write_text("dhcp-option=tag:tag0,option:router,10.9.9.9\n")  # excluded by ,.bak
    return True


@pytest.mark.parametrize("form", list(FORMS))
def test_every_dnsmasq_form_is_read_and_its_trap_found(tmp_path, form):
    make, where = FORMS[form]
    arg = make(tmp_path)
    code, data, _ = doctor("--dnsmasq-cmdline", arg, cwd=tmp_path)
    found = checks_at(data, str(tmp_path))
    assert ("dhcp.121-no-default", where) in found, data["findings"]
    assert code == 1
    assert not [f for f in data["findings"] if f["check"].startswith("input.")], data["findings"]
    assert all(i["checks"] > 0 for i in data["inputs"] if i["input"] != "registry"), data["inputs"]


def test_proc_cmdline_printed_to_a_terminal_is_named_not_passed(tmp_path):
    glued = f"/usr/sbin/dnsmasq--no-hosts{RANGE}--dhcp-option={NO_DEFAULT_121}"  # `cat /proc/PID/cmdline`
    (tmp_path / "pasted").write_text(glued + "\n")
    for arg in (glued, "@pasted"):
        code, data, _ = doctor("--dnsmasq-cmdline", arg, cwd=tmp_path)
        [f] = data["findings"]
        assert (f["check"], f["severity"]) == ("input.not-understood", "warning")
        assert "NUL separators vanish" in f["problem"] and "@/proc/PID/cmdline" in f["problem"]
        assert code == 0  # a warning; but never "no problems found"


@pytest.mark.parametrize("text, reason", [
    ("#!/bin/sh\necho starting\nexec /usr/bin/kea-dhcp4 -c /etc/kea.conf\n", "no line of it is a dnsmasq command"),
    ("[Service]\nExecStart=/etc/init.d/dnsmasq systemd-exec\n", "not dnsmasq options: systemd-exec"),
    ("", "no line of it is a dnsmasq command"),
])
def test_a_cmdline_file_without_a_dnsmasq_command_is_named(tmp_path, text, reason):
    (tmp_path / "f").write_text(text)
    code, data, _ = doctor("--dnsmasq-cmdline", "@f", cwd=tmp_path)
    [f] = data["findings"]
    assert f["check"] == "input.not-understood" and reason in f["problem"] and f["location"] == "f"
    assert [i["status"] for i in data["inputs"]] == ["not understood", "not read: --no-registry"]


# ---- an options file alone --------------------------------------------------------------------------------------

def test_options_file_alone_is_checked_against_the_routes_it_implies(tmp_path):
    opts = tmp_path / "opts"
    seed = (SEED / "original" / "opts").read_text()
    opts.write_text(seed)
    code, data, _ = doctor("--dnsmasq-opts", str(opts))
    assert (code, data["findings"]) == (0, [])
    assert data["inputs"][0]["check_names"] == ["dhcp.routes"]  # it was read and checked, not skipped
    opts.write_text(seed.replace(",0.0.0.0/0,172.16.1.1", "", 1))  # 121 without the default route
    code, data, _ = doctor("--dnsmasq-opts", str(opts))
    assert code == 1 and checks_at(data, str(tmp_path)) == {("dhcp.121-no-default", "opts:1"),
                                                            ("dhcp.249-differs", "opts:2")}
    f = next(f for f in data["findings"] if f["check"] == "dhcp.121-no-default")
    assert f["fix"] == "append `0.0.0.0/0,172.16.1.1` to the option 121 list"


def test_options_file_alone_against_the_registry_subnet(tmp_path):
    from doctor_seed import apply_registry_ops

    from provnet.registry import open_registry

    db = f"sqlite:///{tmp_path}/p.sqlite"
    reg = open_registry(db)
    apply_registry_ops(reg, SEED / "original" / "registry.json")
    reg.close()
    res = subprocess.run([PROVNET, "--db", db, "doctor", "-f", "json", "--dnsmasq-opts",
                          str(SEED / "original" / "opts")], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PROVNET_CONFIG": ""})
    data = json.loads(res.stdout)
    found = {(f["check"], f["location"].replace(f"{SEED}/", "")) for f in data["findings"]}
    # the seed's subnet says default via its gateway .2 (no host route): 121 says .1
    assert ("dhcp.routes-vs-subnet", "original/opts:1") in found
    routes = next(f for f in data["findings"] if f["check"] == "dhcp.routes-vs-subnet")
    assert "`openstack subnet set --host-route destination=0.0.0.0/0,gateway=172.16.1.1 " \
           "phy_subnet_without_dhcp`" == routes["fix"]
    opts = next(i for i in data["inputs"] if i["input"].endswith("opts"))
    assert opts["check_names"] == ["dhcp.routes"]


# ---- every input checked or named -------------------------------------------------------------------------------

def test_inputs_doctor_cannot_use_are_named_with_why(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "api-paste.ini").write_text("[composite:neutron]\n")
    (tmp_path / "local.conf").write_text("[[local|localrc]]\nADMIN_PASSWORD=secret\n")
    (tmp_path / "commands").write_text("openstack server list\nls -l\n")
    (tmp_path / "hosts").write_text("fa:16:3e:79:1e:2c,172.16.1.103\n")
    code, data, _ = doctor("--config-dir", "etc", "--local-conf", "local.conf", "--commands", "commands",
                           "--dnsmasq-opts", "hosts", cwd=tmp_path)
    found = {f["location"]: (f["check"], f["severity"], f["problem"]) for f in data["findings"]}
    assert found["etc"][:2] == ("input.not-understood", "warning") and "none of neutron.conf" in found["etc"][2]
    assert found["local.conf"][0] == "input.not-understood" and "OVS_BRIDGE_MAPPINGS" in found["local.conf"][2]
    assert found["commands"][0] == "input.not-understood" and "subnet create" in found["commands"][2]
    assert found["hosts"][:2] == ("input.not-checked", "info") and "registry" in found["hosts"][2]
    assert code == 0
    statuses = {i["input"]: i["status"] for i in data["inputs"]}
    assert statuses == {"etc": "not understood", "local.conf": "not understood", "commands": "not understood",
                        "hosts": "not checked", "registry": "not read: --no-registry"}


def test_the_table_ends_with_what_was_read(tmp_path):
    opts = SEED / "original" / "opts"
    res = subprocess.run([PROVNET, "doctor", "--no-registry", "--dnsmasq-opts", str(opts)], capture_output=True,
                         text=True, env={**os.environ, "PROVNET_CONFIG": ""}, timeout=60)
    lines = res.stdout.splitlines()
    assert lines[:3] == ["no problems found", "", "inputs read (checks that ran on each):"]
    assert lines[3].split() == [str(opts), "dnsmasq", "options", "file", "1", "check"]
    assert lines[4].split() == ["registry", "live", "registry", "not", "read:", "--no-registry"]


# ---- the README's "try it on the seed" --------------------------------------------------------------------------

def readme_doctor_example() -> str:
    text = (REPO / "README.md").read_text()
    block = text.split("Try it on the seed", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return block.strip()


def test_readme_seed_example_runs_as_written_and_shows_the_headline_trap():
    command = readme_doctor_example()
    assert command.startswith("provnet doctor --no-registry")
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"  # `provnet` is this checkout's
    res = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PROVNET_CONFIG": "", "COLUMNS": "120", "PATH": path})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    out = res.stdout
    head = next(i for i, line in enumerate(out.splitlines()) if "dhcp.range-vs-pool" in line)
    block = " ".join(line.strip() for line in out.splitlines()[head:head + 12])
    assert out.splitlines()[head].split()[:3] == ["ERROR", "dhcp.range-vs-pool",
                                                 "tests/fixtures/seed/original/dnsmasq.cmdline:1"]
    assert "dhcp-range 172.16.1.100-172.16.1.109" in block and "allocation pool 172.16.1.102-172.16.1.126" in block
    assert "172.16.1.100-172.16.1.101) lie outside the pool" in block
    assert "3 errors, 2 warnings, 0 infos" in out
    assert "not read: --no-registry" in out.splitlines()[-1]


# ---- fixes unbroken in a terminal -------------------------------------------------------------------------------

def test_wrap_never_breaks_a_hyphenated_word_or_a_command():
    text = ("serve only reservations: `dnsmasq --dhcp-range=set:tag0,172.16.1.0,static,255.255.255.0 "
            "--dhcp-host=fa:16:3e:79:1e:2c,172.16.1.103` (or one dhcp-hostsfile line per port) and restart "
            "neutron-openvswitch-agent on compute-node-with-a-long-name")
    lines = wrap(text, 40)
    assert "dnsmasq --dhcp-range=set:tag0,172.16.1.0,static,255.255.255.0 --dhcp-host=fa:16:3e:79:1e:2c," \
           "172.16.1.103" in lines  # alone on its line, without backquotes, however long
    assert all(len(line) <= 40 for line in lines if not line.startswith("dnsmasq"))
    words = " ".join(lines).split()
    assert "neutron-openvswitch-agent" in words and "compute-node-with-a-long-name" in words


@pytest.mark.parametrize("columns", ["70", "100", "160"])
def test_columns_is_respected_and_commands_copy_whole(columns):
    env = {**os.environ, "PROVNET_CONFIG": "", "COLUMNS": columns}
    res = subprocess.run(["bash", "-c", readme_doctor_example()], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env=env)
    data = json.loads(subprocess.run(["bash", "-c", readme_doctor_example() + " -f json"], cwd=REPO,
                                     capture_output=True, text=True, timeout=60, env=env).stdout)
    code = {c for f in data["findings"] for key in ("problem", "symptom", "fix")
            for c in re.findall(r"`([^`]*)`", f[key])}
    lines = res.stdout.split("\n\ninputs read")[0].splitlines()
    command = "openstack subnet set --host-route destination=0.0.0.0/0,gateway=172.16.1.1 phy_subnet_without_dhcp"
    assert command in code and any(command in line for line in lines)  # whole, on one line, at any width
    alone = [line.strip() for line in lines if line.strip() in code]  # overlong commands: a line each, bare
    assert all(len(c) > int(columns) - 18 for c in alone)
    prose = [line for line in lines if line.strip() not in code and not line.startswith(("ERROR", "WARNING"))]
    assert prose and max(len(line) for line in prose) <= int(columns), max(prose, key=len)
    assert not [line for line in lines if re.search(r"[a-z]-$", line)]  # nothing wrapped at a hyphen
    for c in code:  # every code span whole on one line
        assert any(c in line for line in lines), c


def test_render_table_puts_an_overlong_command_on_its_own_line():
    f = Finding("error", "x.y", None, "p", "s", "run `iptables -I neutron-openvswi-i59bbcb56-8 -s 172.16.1.99/32 "
                "-p udp -m udp --sport 67 --dport 68 -j RETURN` on the host")
    out = render_table([f], width=60).splitlines()
    assert "                  iptables -I neutron-openvswi-i59bbcb56-8 -s 172.16.1.99/32 -p udp -m udp --sport 67 " \
           "--dport 68 -j RETURN" in out


# ---- binding.port-failed: the fix for each cause ----------------------------------------------------------------

def _bind(**kw):
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, tzinfo=UTC)
    port = Port(id="p1", network_id="n1", mac_address="fa:16:3e:00:00:01", binding_host_id="compute1",
                binding_vnic_type=kw.pop("vnic", "normal"))
    net = Network(id="n1", name="phy_net", network_type=kw.pop("type", "flat"), physical_network="physnet1")
    agents = kw.pop("agents", [])
    return bind_port(port, net, agents, agent_down_time=75, report_interval=30, now=now), now


@pytest.mark.parametrize("case, expected", [
    ("no-agent", ["start `provnet agent` on compute1 with `bridge_mappings = physnet1:br-phy` in [ovs]"]),
    ("disabled", ["`openstack network agent set --enable agent-1`",
                  "`provnet agent-update compute1 --admin-state-up`"]),
    ("dead", ["restart `provnet agent` on compute1", "`agent_down_time = 75`"]),
    ("unmapped", ["on compute1, set `bridge_mappings = physnet1:br-phy` in [ovs]", "restart the agent"]),
    ("tunnel", ["`tunnel_types = gre` in [agent]"]),
    ("vnic", ["`provnet port-update PORT --vnic-type normal`"]),
])
def test_every_binding_failure_reason_has_its_fix(case, expected):
    from datetime import timedelta

    from provnet.model.resources import OVS_AGENT_TYPE

    def agent(**kw) -> Agent:
        return Agent(id="agent-1", host="compute1", agent_type=OVS_AGENT_TYPE, **kw)

    _, now = _bind()
    alive = now - timedelta(seconds=5)
    kwargs = {
        "no-agent": {},
        "disabled": {"agents": [agent(admin_state_up=False, heartbeat_timestamp=alive)]},
        "dead": {"agents": [agent(heartbeat_timestamp=now - timedelta(seconds=500))]},
        "unmapped": {"agents": [agent(heartbeat_timestamp=alive, configurations={"bridge_mappings": {}})]},
        "tunnel": {"agents": [agent(heartbeat_timestamp=alive)], "type": "gre"},
        "vnic": {"vnic": "direct"},
    }[case]
    binding, _ = _bind(**kwargs)
    assert binding.failure_reason
    fix = failure_fix(binding.failure_reason, "physnet1")
    assert fix is not None, binding.failure_reason
    for words in expected:
        assert words in fix, fix
    assert "fix the cause" not in fix


def test_port_failed_finding_carries_the_fix_in_doctor_output(tmp_path):
    from doctor_seed import apply_registry_ops

    from provnet.registry import open_registry

    db = f"sqlite:///{tmp_path}/p.sqlite"
    reg = open_registry(db)
    apply_registry_ops(reg, SEED / "original" / "registry.json")
    net = reg.list_networks()[0]
    reg.create_port({"network_id": net.id, "mac_address": "fa:16:3e:00:00:99", "binding:host_id": "compute1",
                     "name": "vm2"})
    reg.close()
    res = subprocess.run([PROVNET, "--db", db, "doctor", "-f", "json"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PROVNET_CONFIG": ""})
    fixes = {f["problem"].split(" ")[1]: f["fix"] for f in json.loads(res.stdout)["findings"]
             if f["check"] == "binding.port-failed"}
    assert fixes["vm2"].startswith("start `provnet agent` on compute1 with `bridge_mappings = physnet1:br-phy` in "
                                   "[ovs]")
    assert fixes["vm1"].startswith("on openstack, set `bridge_mappings = physnet1:br-phy` in [ovs]")
    assert all("binds again by itself" in fix for fix in fixes.values())


# ---- every example in --help runs as written --------------------------------------------------------------------

def help_examples(*verb: str) -> list[str]:
    out = subprocess.run([PROVNET, *verb, "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "200"}).stdout
    section = out.split("Examples:", 1)[1].split("\n\n", 1)[0]
    examples: list[str] = []
    for line in section.splitlines():
        line = line.strip()
        if examples and examples[-1].endswith("\\"):
            examples[-1] = examples[-1][:-1] + line
        elif line.startswith("provnet "):
            examples.append(line)
    return examples


@pytest.fixture
def operator_shell(tmp_path):
    """A shell as an operator has it: provnet on PATH, a store with the seed's network, a fresh working dir."""
    from test_dhcp_clients import seed_registry

    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "HOME": str(tmp_path), "PROVNET_CONFIG": "",
           "PROVNET_DB": db, "PROVNET_STATE_PATH": str(tmp_path / "state")}

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    run.work = work  # type: ignore[attr-defined]
    return run


def test_dhcp_config_help_examples_run_as_written(operator_shell):
    examples = help_examples("dhcp-config")
    assert len(examples) == 3 and "--output-dir" in examples[0] and "--interface" not in examples[0]
    for command in examples:
        res = operator_shell(command)
        assert res.returncode == 0, (command, res.stderr)
        assert "Traceback" not in res.stderr and "Usage:" not in res.stderr
    work = operator_shell.work
    argv = (work / "dnsmasq-phy_net" / "dnsmasq.cmdline").read_text().split()
    assert "--interface=br-phy" not in argv and "--bind-interfaces" not in argv  # no interface given: any in subnet
    res = subprocess.run(["dnsmasq", "--test", *argv[1:]], capture_output=True, text=True)
    assert res.returncode == 0 and "syntax check OK" in res.stderr
    note = operator_shell(examples[0]).stderr
    assert note.strip() == ("note: no --interface: the dnsmasq command line answers DHCP on every interface with an "
                            "address in 172.16.1.0/24; give --interface IF (or set [dhcp] interface) to pin it to one")
    printed = operator_shell(examples[1]).stdout
    assert "--interface=br-phy" in printed and "# ==> dnsmasq.opts <==" in printed
    assert json.loads((work / "kea-dhcp4.json").read_text())["Dhcp4"]["subnet4"][0]["subnet"] == "172.16.1.0/24"


def test_doctor_help_examples_run_as_written(operator_shell):
    examples = help_examples("doctor")
    assert len(examples) == 7
    for command in examples:
        res = operator_shell(command)
        assert res.returncode in (0, 1), (command, res.stdout, res.stderr)  # 1: findings (files absent here)
        assert "Traceback" not in res.stderr and "Usage:" not in res.stderr, (command, res.stderr)
        out = res.stdout
        if " -f json" in command:
            assert json.loads(out)["inputs"], command
        else:
            assert "inputs read (checks that ran on each):" in out, (command, out)
    missing = operator_shell(examples[0]).stdout
    assert "ERROR   config.parse                   /etc/neutron" in missing and "config directory not found" \
        in missing


# ---- hostile input: the readers never raise ---------------------------------------------------------------------

_PIECES = st.sampled_from(["dnsmasq", "/usr/sbin/dnsmasq", "ExecStart=", "-C", "--conf-file", "--conf-dir=",
                           "--dhcp-range=", "-F", "-O", "--dhcp-option=", "tag:", "set:", "option:", "121,", "249,",
                           "0.0.0.0/0,", "172.16.1.1", ",", "\\\n", "\n", " ", "\0", "\"", "'", "#", "=", "@",
                           "neutron", "subnet-create", "--allocation-pool", "start=", "end=", "openstack", "subnet",
                           "create", "--subnet-range", "router-interface-add", "net-create", "10.0.0.0/24", "x"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=40).map("".join))
def test_doctor_readers_and_checks_never_raise(text):
    from provnet.doctor import dnsmasq as dm
    from provnet.doctor.commands import parse_commands
    from provnet.doctor.ini import Location
    from provnet.doctor.inputs import Inputs, Snapshot
    from provnet.doctor.run import run_checks

    cfg = dm.parse_cmdline(text, Location("c"))
    cfg.extend(dm.parse_any_file(text, "f"))
    declared = parse_commands(text, "cmds")
    snap = Snapshot(list({n.id: n for n in declared.networks.values()}.values()),
                    list({s.id: s for s in declared.subnets.values()}.values()), declared.ports, [], [], "cmds",
                    live=False)
    run_checks(Inputs(dnsmasq=cfg, snapshot=snap))
