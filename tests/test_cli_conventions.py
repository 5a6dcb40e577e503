# The CLI's conventions over every verb (README "CLI conventions"): the same -f/-c everywhere, -c for any field, one
# table style, the same option names, exit codes; did-you-mean; no store created by a reading verb; warnings.
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import click
import pytest
import yaml
from cli_run import SEED_NET, SEED_SUBNET, Cli, run_process

from provnet.cli import main
from provnet.cli.output import FORMATS

# every verb is in exactly one class, so a new verb must be placed (and so follow the conventions) to pass
RECORD_VERBS = {
    "net-create", "net-list", "net-show", "net-update", "subnet-create", "subnet-list", "subnet-show",
    "subnet-update", "port-create", "port-list", "port-show", "port-update", "router-create", "router-list",
    "router-show", "router-update", "router-interface-add", "router-port-list", "instance-create", "instance-list",
    "instance-show", "instance-update", "agent-list", "agent-show", "agent-update", "config show", "dhcp-leases",
    "doctor", "router-list-on-l3-agent", "l3-agent-list-hosting-router", "metadata-explain",
}
MESSAGE_VERBS = {"net-delete", "subnet-delete", "port-delete", "router-delete", "instance-delete", "agent-delete",
                 "router-interface-delete", "l3-agent-router-add",
                 "l3-agent-router-remove"}  # print one line per thing done
SERVER_VERBS = {"serve", "api", "metadata-api", "metadata-agent", "metadata-proxy", "dhcp", "agent",
                "l3-agent"}  # logs only
OTHER_VERBS = {  # with the reason they print what they print
    "dhcp-config": "-f names the DHCP server whose files it writes (dnsmasq, kea, isc)",
    "lab up": "progress on stderr", "lab check": "a grid of checks per VM", "lab status": "a report",
    "lab failover": "progress and one measured line", "lab restart": "one line: the new pid",
    "lab down": "progress",
}
LIST_VERBS = {"net-list": "networks", "subnet-list": "subnets", "port-list": "ports", "router-list": "routers",
              "instance-list": "instances", "agent-list": "agents"}


def leaves(group: click.Group = main, ctx: click.Context | None = None, path: tuple[str, ...] = ()):
    ctx = ctx or click.Context(main, info_name="provnet")
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from leaves(command, click.Context(command, info_name=name, parent=ctx), (*path, name))
        else:
            yield " ".join((*path, name)), command


def option(command: click.Command, name: str) -> click.Option | None:
    return next((p for p in command.params if isinstance(p, click.Option) and p.name == name), None)


def test_every_verb_is_classified_and_record_verbs_take_the_same_f_and_c():
    verbs = dict(leaves())
    classes = [RECORD_VERBS, MESSAGE_VERBS, SERVER_VERBS, set(OTHER_VERBS)]
    assert set(verbs) == set().union(*classes), "a verb is not classified: place it in one of the sets"
    assert sum(len(c) for c in classes) == len(verbs)
    for name in RECORD_VERBS:
        fmt, col = option(verbs[name], "fmt"), option(verbs[name], "columns")
        assert fmt is not None and fmt.opts == ["-f", "--format"], name
        assert tuple(fmt.type.choices) == FORMATS and fmt.default == "table", name
        assert col is not None and col.opts == ["-c", "--column"] and col.multiple, name
    for name in MESSAGE_VERBS | SERVER_VERBS:
        assert option(verbs[name], "fmt") is None and option(verbs[name], "columns") is None, name


def test_the_same_thing_has_the_same_option_names_everywhere():
    forms: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for _, command in leaves():
        for param in command.params:
            if isinstance(param, click.Option):
                forms[param.name].add(tuple(param.opts + param.secondary_opts))
    different = {name: f for name, f in forms.items() if len(f) > 1 and name != "fmt"}
    assert different == {}
    assert forms["project_id"] == {("--project", "--project-id", "--tenant-id")}
    creates = [c for n, c in leaves() if n.endswith("-create") and n != "instance-create"] + \
              [c for n, c in leaves() if n == "instance-create"]
    assert all(option(c, "project_id") is not None for c in creates)


@pytest.fixture
def world(tmp_path: Path) -> Cli:
    """The seed's network and subnet, a router with an interface, an instance with its port, an agent."""
    cli = Cli("--state-path", str(tmp_path / "state"))
    cli.ok(SEED_NET)
    cli.ok(SEED_SUBNET)
    cli.ok("router-create router1")
    cli.ok("router-interface-add router1 phy_subnet_without_dhcp")
    vm = cli.json("instance-create vm1 --property role=web")["id"]
    cli.ok(f"port-create phy_net --device-id {vm} --device-owner compute:nova --name vm1-port")
    from provnet.registry import open_registry

    registry = open_registry(f"sqlite:///{tmp_path}/state/provnet.sqlite")
    registry.report_agent_state("compute1", "Open vSwitch agent", "provnet-agent", {"bridge_mappings": {}})
    registry.close()
    return cli


def test_every_format_of_every_list_and_show_verb_parses(world: Cli):
    shows = {"net-show": "phy_net", "subnet-show": "phy_subnet_without_dhcp", "port-show": "vm1-port",
             "router-show": "router1", "instance-show": "vm1", "agent-show": "compute1"}
    for verb in [*LIST_VERBS, *shows, "router-port-list"]:
        argv = [verb, shows.get(verb, "router1" if verb == "router-port-list" else "")]
        argv = [a for a in argv if a]
        as_json = json.loads(world.ok([*argv, "-f", "json"]).stdout)
        assert yaml.safe_load(world.ok([*argv, "-f", "yaml"]).stdout) == as_json, verb
        rows = list(csv.reader(io.StringIO(world.ok([*argv, "-f", "csv"]).stdout)))
        header = rows[0]
        if isinstance(as_json, list):
            assert header == list(as_json[0]) or sorted(header) == sorted(as_json[0]), verb
            assert len(rows) == len(as_json) + 1, verb
        else:
            assert sorted(header) == sorted(as_json) and len(rows) == 2, verb
        table = world.ok(argv).stdout.splitlines()
        # one table style: a grid, rules and rows, the header between two rules
        assert table[0].startswith("+-") and table[2].startswith("+-") and table[-1].startswith("+-"), verb
        assert all(line[0] in "+|" for line in table), verb
        assert world.ok([*argv, "-f", "value", "-c", "id"]).stdout.strip(), verb


def test_c_takes_any_field_not_only_the_default_columns(world: Cli):
    out = world.ok("port-list -c device_id -c status -c binding:vnic_type")
    assert "| device_id" in out.stdout and "| status" in out.stdout and "normal" in out.stdout
    assert sorted(world.ok("port-list -f value -c device_owner -c name").stdout.splitlines()) == [
        "compute:nova vm1-port", "network:distributed metadata", "network:router_interface "]
    assert world.ok("net-list -f value -c router:external -c name").stdout == "True phy_net\n"
    assert world.ok("agent-list -f value -c host -c configurations").stdout.startswith("compute1 ")
    err = world.fails("port-list -c nope", 2)
    assert "no such column(s): nope (choose from: " in err and "device_id" in err and "Usage:" in err
    # nothing to list: the -c check still refuses a field the resource does not have
    assert "no such column(s): nope" in world.fails("router-list --name none -c nope", 2)


def test_config_show_and_dhcp_leases_take_f_and_c(tmp_path: Path):
    cli = Cli("--state-path", str(tmp_path))
    rows = cli.json("config show -c option -c source")
    assert {"option": "[DEFAULT] state_path", "source": "command line"} in rows
    assert "option: '[DEFAULT] bind_port'" in cli.ok("config show -f yaml").stdout
    from provnet.dhcp.journal import JOURNAL_NAME

    (tmp_path / JOURNAL_NAME).write_text("")
    assert cli.ok("dhcp-leases -f csv").stdout.startswith('"ip_address","mac_address"')


def test_exit_status_1_error_2_usage_and_a_config_error_is_1_without_usage(world: Cli, tmp_path: Path):
    refused = world.fails("net-show nonet", 1)
    assert refused == "Error: Unable to find network with name or id 'nonet' (404 NotFoundByName)\n"
    usage = world.fails("net-show", 2)
    assert "Usage: provnet net-show" in usage and "missing argument NETWORK" in usage
    conf = tmp_path / "bad.conf"
    conf.write_text("[DEFAULT]\n# the API's port\nbind_prot = 9696\n")
    bad = run_process("--config-file", str(conf), "net-list")
    assert bad.code == 1 and "Usage:" not in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stderr == f"Error: [DEFAULT] bind_prot in {conf}:3 is not a provnet option; did you mean bind_port?\n"
    conf.write_text("[DEFAULT]\nstate_path = /tmp\nbind_port = ninety\n")
    bad = run_process("--config-file", str(conf), "serve")
    assert bad.code == 1 and "Usage:" not in bad.stderr
    assert bad.stderr == f"Error: [DEFAULT] bind_port in {conf}:3 must be an integer 1..65535, got 'ninety'\n"


@pytest.mark.parametrize("argv, hint", [
    ("network list", "Did you mean `provnet net-list`? (provnet's verbs are the neutron CLI's: net-list, not "
                     "`network list`)"),
    ("network show phy_net -f json", "Did you mean `provnet net-show phy_net -f json`?"),
    ("network", "Did you mean `provnet net-list`?"),
    ("server list", "Did you mean `provnet instance-list`?"),
    ("server create vm1", "Did you mean `provnet instance-create vm1`?"),
    ("subnet set s1 --name x", "Did you mean `provnet subnet-update s1 --name x`?"),
    ("router add subnet r1 s1", "Did you mean `provnet router-interface-add r1 s1`?"),
    ("router remove port r1 p1", "Did you mean `provnet router-interface-delete r1 port=p1`?"),
    ("network agent list", "Did you mean `provnet agent-list`?"),
    ("net-lsit", "Did you mean `net-list`? (or: "),
    ("prot-create", "Did you mean `port-create`?"),
    ("instnce-show", "Did you mean `instance-show`?"),
])
def test_unknown_verbs_get_the_verb_meant(argv: str, hint: str):
    err = Cli().fails(argv, 2)
    assert f"No such command '{argv.split()[0]}'. {hint}" in err


def test_lab_subcommands_get_suggestions_too():
    assert "No such command 'chek'. Did you mean `check`?" in Cli().fails("lab chek", 2)


def test_suggestions_are_ranked_by_closeness():
    err = Cli().fails("net-lsit", 2)
    first = err.index("`net-list`")
    assert all(first < err.index(other) for other in ("subnet-list",) if other in err)
    assert "Did you mean" not in Cli().fails("zzzzqqq", 2)


def test_a_reading_verb_never_creates_a_store(tmp_path: Path):
    state = tmp_path / "fresh"
    for verb in ("net-list", "port-show x", "router-port-list r", "net-update n --name m", "port-delete p",
                 "agent-list", "instance-list"):
        ran = run_process("--state-path", str(state), *verb.split())
        assert ran.code == 1, (verb, ran)
        assert ran.stderr.startswith(f"Error: no provnet store at {state}/provnet.sqlite (nothing has been "
                                     "created with this state path)"), ran.stderr
        assert "--state-path DIR, --db URL or --url http://HOST:9696" in ran.stderr
        assert not state.exists(), verb
    # a -create verb makes it; then reading works and an empty list says which store it read
    assert run_process("--state-path", str(state), "router-create", "r1").code == 0
    empty = run_process("--state-path", str(state), "net-list")
    assert empty.code == 0 and empty.stdout == ""
    assert empty.stderr == f"No networks in sqlite:///{state}/provnet.sqlite.\n"
    assert run_process("--state-path", str(state), "net-list", "-f", "json").stdout == "[]\n"


def test_a_reading_verb_on_a_labs_state_path_points_to_the_lab(tmp_path: Path):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "provnet.conf").write_text(f"[DEFAULT]\nstate_path = {lab}\n")
    ran = run_process("--state-path", str(tmp_path), "port-list")
    assert ran.code == 1
    assert (f"{tmp_path} holds a lab, whose store, journal and sockets are in {lab}: provnet --config-file "
            f"{lab}/provnet.conf port-list") in ran.stderr
    leases = run_process("--state-path", str(tmp_path), "dhcp-leases")
    assert leases.code == 1 and f"no lease journal at {tmp_path}/dhcp-leases.journal" in leases.stderr
    assert f"provnet --config-file {lab}/provnet.conf dhcp-leases" in leases.stderr


def test_lab_hints_keep_the_state_path(tmp_path: Path):
    ran = run_process("--state-path", str(tmp_path), "lab", "status")
    assert ran.code == 1
    assert ran.stderr == f"Error: no lab in {tmp_path}/lab: run `provnet --state-path {tmp_path} lab up` first\n"


def test_a_read_only_verb_on_an_empty_postgresql_creates_no_schema():
    from conftest import PG_URL, need, unique

    need(bool(PG_URL), "needs PostgreSQL: set PROVNET_TEST_PG_URL (scripts/postgres.sh prints it)")
    import sqlalchemy as sa

    schema = unique("t")
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
        err = Cli("--db", url).fails("net-list")
        assert "holds no provnet store yet" in err and "pw" not in err.split("postgresql://")[-1].split("@")[0][-3:]
        with engine.connect() as conn:
            tables = conn.execute(sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"),
                                  {"s": schema}).scalar()
        assert tables == 0
        assert Cli("--db", url).ok("net-create n1")
        assert Cli("--db", url).json("net-list")[0]["name"] == "n1"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def test_port_create_warns_when_no_instance_has_the_device_id(world: Cli):
    # the README's old literal, as an operator copies it
    ran = world.ok(["port-create", "phy_net", "--device-id", "<instance uuid>", "--name", "p1"])
    assert "Created a new port:" in ran.stdout
    assert ran.stderr.startswith("Warning: device_id '<instance uuid>' is not an instance uuid, so the metadata "
                                 "service answers this port's VM with 404.")
    assert "provnet port-update " in ran.stderr and "--device-id UUID" in ran.stderr
    missing = "6c0bd7a0-b3ea-4f77-a67b-1b4fd0a3f1b2"
    ran = world.ok(f"port-create phy_net --device-id {missing} -f value -c id")
    assert ran.stderr == (f"Warning: no instance has uuid {missing}: until one does, the metadata service answers "
                          f"this port's VM with 404 (`provnet instance-create NAME --id {missing}` makes it).\n")
    port = ran.stdout.strip()
    assert world.ok(f"port-update {port} --device-id {missing}").stderr.startswith("Warning: no instance")
    # an instance that exists, a router's port, no device: no warning
    vm = world.json("instance-show vm1")["id"]
    assert world.ok(f"port-create phy_net --device-id {vm}").stderr == ""
    router = world.json("router-show router1")["id"]
    assert world.ok(f"port-create phy_net --device-id {router} --device-owner network:router_interface").stderr == ""
    assert world.ok("port-create phy_net").stderr == ""


def test_completion_lists_names_from_the_store_and_creates_none(world: Cli, tmp_path: Path):
    state = str(tmp_path / "state")

    def complete(words: str, shell: str = "bash") -> list[str]:
        env = {"_PROVNET_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)), "PATH": "/usr/bin:/bin"}
        if shell == "zsh":
            env["COMP_CWORD"] = str(int(env["COMP_CWORD"]) + 1)
        ran = run_process(env=env)
        assert ran.code == 0 and ran.stderr == "", ran
        return ran.stdout.split("\n") if shell == "zsh" else ran.stdout.split()

    assert complete(f"provnet --state-path {state} net-show ") == ["plain,phy_net"]
    assert complete(f"provnet --state-path {state} port-show vm") == ["plain,vm1-port"]
    assert complete(f"provnet --state-path {state} router-interface-add router1 phy") == \
        ["plain,phy_subnet_without_dhcp"]
    assert complete(f"provnet --state-path {state} subnet-create ") == ["plain,phy_net"]
    assert complete(f"provnet --state-path {state} subnet-create phy_net ") == []  # CIDR: nothing to offer
    assert complete(f"provnet --state-path {state} agent-show ") == ["plain,compute1"]
    assert complete(f"provnet --state-path {state} instance-delete vm1 ") == ["plain,vm1"]
    assert "phy_net" in complete(f"provnet --state-path {state} net-show ", "zsh")
    assert "plain,net-list" in complete(f"provnet --state-path {state} net-l")
    # no store there: nothing offered, nothing created, nothing printed
    fresh = tmp_path / "none"
    assert complete(f"provnet --state-path {fresh} net-show ") == []
    assert not fresh.exists()


def test_man_page_is_current():
    from provnet.cli.manpage import render

    page = Path(__file__).resolve().parent.parent / "docs" / "provnet.1"
    assert page.read_text() == render(main), "docs/provnet.1 is stale: python -m provnet.cli.manpage > docs/provnet.1"
    text = page.read_text()
    for verb, _ in leaves():
        assert f'.SS "provnet {verb}' .replace("-", "\\-") in text, verb
    assert "\\-\\-log\\-format" in text and ".SH EXIT STATUS" in text


def test_man_renders_with_man(tmp_path: Path):
    from conftest import need_tool

    need_tool("man")
    import subprocess

    page = Path(__file__).resolve().parent.parent / "docs" / "provnet.1"
    out = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, env={"MANWIDTH": "100",
                         "PATH": "/usr/bin:/bin", "MANPAGER": "cat", "PAGER": "cat"}, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "provnet net-create [OPTIONS] NAME" in out.stdout
    assert "provnet net-create phy_net -- --router:external=True" in out.stdout
