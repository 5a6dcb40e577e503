# Every provnet command the README, docs/, `--help` and provnet's own hints show runs as written (after setup.sh),
# or, where it needs root, a network, a running lab or another host, parses with click exactly as written.
#
# Run: the README's "Using it" block (bash, as a block), its doctor example and completion lines, and every
# `--help` example of the resource verbs and `config show`, each on a fresh copy of the world the examples name.
# Parsed only: servers (serve, api, metadata-*, dhcp, agent: they bind ports or need root), lab (root),
# doctor's /etc examples (files of another host), dhcp-config (its owner tests it), remote (--url) and
# --config-file /etc/... examples, docs/lab.md's session, and the hints in provnet's source strings.
from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from cli_run import SEED_NET, SEED_SUBNET, Cli

from provnet.cli import main
from provnet.cli.neutron_args import split_args, take_positionals
from provnet.cli.verbs import NeutronCommand

ROOT = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)
VM_ID = "6c0bd7a0-b3ea-4f77-a67b-1b4fd0a3f1b2"  # the uuid port-create's example names
WRONG_ON_PURPOSE = {"provnet network list"}  # shown in the README as what gets a did-you-mean


def command_words(line: str) -> list[str]:
    """A shell line from `provnet` to the end of that command (a pipe, redirection or && ends it), comments off;
    a command substitution `$(...)` stands for one word."""
    words = shlex.split(re.sub(r"\$\([^()]*\)", "X", line), comments=True)
    start = next(i for i, w in enumerate(words) if w in ("provnet", ".venv/bin/provnet"))
    words = words[start + 1:]
    for i, word in enumerate(words):
        if word in ("|", ">", "&&", ";", "2>&1") or word.startswith(">"):
            return words[:i]
    return words


def parse(line: str) -> None:
    """Parse a provnet command line as the CLI would, without running it: global options, the verb (a group's
    subcommand too), its options and, for a neutron-style verb, its positionals and pass-through options.
    A file that does not exist here (the operator's ~/.ssh key, $STATE/user-data) is not a parse error."""
    try:
        _parse(line)
    except click.BadParameter as exc:
        if not (isinstance(exc.param.type, click.Path) and "does not exist" in exc.message):
            raise


def _parse(line: str) -> None:
    args = command_words(line)
    ctx = main.make_context("provnet", list(args))
    group: click.Group = main
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    while True:
        assert rest, f"no verb in {line!r}"
        name, command, rest = group.resolve_command(ctx, rest)
        ctx = command.make_context(name, list(rest), parent=ctx)
        if not isinstance(command, click.Group):
            break
        group, rest = command, [*getattr(ctx, "_protected_args", []), *ctx.args]
    if isinstance(command, NeutronCommand):
        metavar = next(p for p in command.params if isinstance(p, click.Argument)).metavar or ""
        names = [w.strip("[].") for w in metavar.split() if not w.startswith("[")]
        positionals, _extras = split_args(ctx.params["args"])
        if metavar.endswith("..."):
            assert positionals, line
        else:
            take_positionals(positionals, names)


def fenced_blocks(path: Path) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", path.read_text(), re.S)


def joined_lines(text: str) -> list[str]:
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", text).splitlines() if line.strip()]


def help_examples() -> list[tuple[str, str]]:
    """(verb, line) for every `provnet ...` line in every verb's help and epilog."""
    out = []

    def walk(group: click.Group, ctx: click.Context, path: tuple[str, ...]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            text = f"{command.help or ''}\n{command.epilog or ''}"
            for line in joined_lines(text):
                found = re.search(r"(?:^|\s|\$ )(provnet (?:-|[a-z]).*)$", line)
                if found and not line.startswith("DHCP server"):
                    out.append((" ".join((*path, name)), found.group(1)))
            if isinstance(command, click.Group):
                walk(command, click.Context(command, info_name=name, parent=ctx), (*path, name))

    walk(main, click.Context(main, info_name="provnet"), ())
    return out


def field(value: ast.AST) -> str:
    """An f-string field in a hint: a verb's name reads as a verb (lab_hint's {verb}), anything else as X."""
    expr = value.value if isinstance(value, ast.FormattedValue) else value
    return "net-list" if isinstance(expr, ast.Name) and expr.id == "verb" else "X"


def source_hints() -> list[str]:
    """`provnet ...` commands inside provnet's own strings (errors, hints, progress): f-string fields become X."""
    hints = []
    for path in [*(ROOT / "provnet" / "cli").glob("*.py"), *(ROOT / "provnet" / "lab").glob("*.py")]:
        tree = ast.parse(path.read_text())
        parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if id(node) in parts:
                continue  # a piece of an f-string, read with the whole string
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else field(v) for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            text = text.replace("provnetX ", "provnet ")  # provnet{_sp(ctx)} lab check: an optional --state-path
            hints += re.findall(r"`(provnet [^`]+)`", text)
            hints += re.findall(r"(?:^\s*|: |\n\s*)(provnet (?:-|[a-z])[^\n`]*)$", text)
    return sorted(h for h in set(hints) if h != "provnet X")  # `provnet {args}`: the lab echoing its own run


# ------------------------------------------------------------------------------------------------ parsed


@pytest.mark.parametrize("verb, line", help_examples())
def test_help_examples_parse(verb: str, line: str):
    parse(line)


@pytest.mark.parametrize("line", source_hints())
def test_hints_provnet_prints_parse(line: str):
    parse(line)


def test_there_are_hints_and_examples_to_check():
    hints = source_hints()
    assert "provnet --state-path X lab up" not in hints  # provnetX was read as the optional state path
    assert any(h.startswith("provnet lab down") for h in hints)
    assert any("--config-file X/provnet.conf port-list" in h for h in hints)
    assert len(help_examples()) > 40


def test_readme_and_docs_commands_parse():
    lines = []
    for path in (ROOT / "README.md", ROOT / "docs" / "lab.md"):
        text = path.read_text()
        for block in fenced_blocks(path):
            lines += [ln for ln in joined_lines(block) if re.match(r"(\.venv/bin/)?provnet ", ln)]
        for block in re.findall(r"```\n(.*?)```", text, re.S):  # transcripts: the commands typed
            lines += [ln.removeprefix("$ ") for ln in joined_lines(block) if ln.startswith("$ provnet ")]
        for span in re.findall(r"`((?:\.venv/bin/)?provnet [^`]+)`", text):
            if span in WRONG_ON_PURPOSE or any(c in span for c in "<[|") or "up/check" in span:
                continue  # a synopsis (alternatives, optional parts), not a command line
            words = command_words(span)
            if (len(words) == 2 and words[0].startswith("--")) or words == ["lab"]:
                continue  # a global option or the lab group on its own (`provnet --state-path DIR`)
            lines.append(span)
    assert len(lines) > 30
    for line in lines:
        try:
            parse(line)
        except (click.ClickException, AssertionError) as exc:
            raise AssertionError(f"{line!r} does not parse: {exc}") from None


# ------------------------------------------------------------------------------------------------ run


def env_with(state: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(home),
            "PROVNET_STATE_PATH": str(state)}


def test_readme_using_it_block_runs_as_written(tmp_path: Path):
    block = next(b for b in fenced_blocks(ROOT / "README.md") if "export PROVNET_STATE_PATH" in b)
    script = f"set -euo pipefail\n{block}\necho STATE=$PROVNET_STATE_PATH\n"
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={k: v for k, v in env_with(tmp_path, tmp_path).items() if k != "PROVNET_STATE_PATH"})
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == "", ran.stderr  # no warning: the port names the instance just made
    state = ran.stdout.rsplit("STATE=", 1)[1].strip()
    try:
        cli = Cli("--state-path", state)
        vm = cli.json("instance-show vm1")
        assert vm["metadata"] == {"role": "web"} and vm["key_pairs"][0]["name"] == "mykey"
        port = cli.json("port-show vm1-port")
        assert port["device_id"] == vm["id"]
        assert "| vm1-port" in ran.stdout and vm["id"] in ran.stdout
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_readme_doctor_example_runs_as_written():
    block = next(b for b in fenced_blocks(ROOT / "README.md") if "provnet doctor" in b)
    ran = subprocess.run(["bash", "-c", block], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
    assert ran.returncode in (0, 1) and "Traceback" not in ran.stderr and "Usage:" not in ran.stderr, ran.stderr
    assert "ERROR" in ran.stdout or "WARNING" in ran.stdout


def test_readme_completion_lines_run_in_bash(tmp_path: Path):
    block = next(b for b in fenced_blocks(ROOT / "README.md") if "_PROVNET_COMPLETE" in b)
    bash_line = next(line for line in block.splitlines() if "bash_source" in line)
    ran = subprocess.run(["bash", "-c", f"{bash_line.split('#')[0]}\ncomplete -p provnet"], capture_output=True,
                         text=True, timeout=60, env=env_with(tmp_path, tmp_path))
    assert ran.returncode == 0 and "complete" in ran.stdout and "provnet" in ran.stdout, ran
    zsh = subprocess.run([f"{BIN}/provnet"], capture_output=True, text=True, timeout=60,
                         env={**env_with(tmp_path, tmp_path), "_PROVNET_COMPLETE": "zsh_source"})
    assert zsh.returncode == 0 and "compdef" in zsh.stdout


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[str, Path]:
    """The stores the help examples are written against: empty (net-create), the seed's network alone
    (subnet-create), and the full world every other example names."""
    root = tmp_path_factory.mktemp("worlds")
    net_only = root / "net-only"
    Cli("--state-path", str(net_only)).ok(SEED_NET)
    full = root / "full"
    cli = Cli("--state-path", str(full))
    cli.ok(SEED_NET)
    cli.ok(SEED_SUBNET)
    cli.ok("net-create vlan100 --provider:network_type vlan --provider:physical_network physnet1 "
           "--provider:segmentation_id 100")
    cli.ok("router-create metadata-router")
    cli.ok("port-create phy_net --name router-port")
    cli.ok(f"instance-create vm1 --id {VM_ID} --property old=1")
    cli.ok(f"port-create phy_net --device-id {VM_ID} --device-owner compute:nova --name vm1-port "
           "--fixed-ip ip_address=172.16.1.103")
    from provnet.registry import open_registry

    registry = open_registry(f"sqlite:///{full}/provnet.sqlite")
    registry.report_agent_state("compute1", "Open vSwitch agent", "provnet-agent",
                                {"bridge_mappings": {"physnet1": "br-phy"}})
    l3 = registry.report_agent_state("network1", "L3 agent", "provnet-l3-agent", {})
    registry.add_router_to_l3_agent(l3.id, registry.list_routers({"name": ["metadata-router"]})[0].id)
    registry.close()
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")],
                   check=True)
    (home / "cloud-config.yaml").write_text("#cloud-config\nhostname: vm1\n")
    return {"empty": root / "empty", "net-only": net_only, "full": full, "home": home}


def runnable(verb: str, line: str) -> bool:
    words = command_words(line)
    if any(w in ("--url", "--db", "--config-file") for w in words[:2]):
        return False  # another host, another database, a file of the operator's
    verb_of_line = next(w for w in words if not w.startswith("-"))
    command = main.get_command(click.Context(main), verb_of_line)
    return isinstance(command, NeutronCommand) or verb_of_line == "config"


RUN = [(v, ln) for v, ln in help_examples() if runnable(v, ln)]


def test_the_resource_verbs_examples_are_run():
    assert len(RUN) >= 30 and {v for v, _ in RUN} >= {"net-create", "port-create", "instance-update",
                                                      "router-interface-add", "agent-update", "config show"}


@pytest.mark.parametrize("verb, line", RUN)
def test_help_examples_of_the_resource_verbs_run_as_written(worlds, tmp_path: Path, verb: str, line: str):
    world = {"net-create": "empty", "subnet-create": "net-only"}.get(command_words(line)[0], "full")
    state = tmp_path / "state"
    if world != "empty":
        shutil.copytree(worlds[world], state)
    ran = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=worlds["home"], timeout=120,
                         env=env_with(state, worlds["home"]))
    assert ran.returncode == 0, (line, ran.stderr)
    if verb.endswith("-list"):  # a filter may match nothing here: then the table is empty and says where it looked
        assert ran.stdout.strip() or ran.stderr.startswith("No "), (line, ran)
    else:
        assert ran.stderr == "" and ran.stdout.strip(), (line, ran)


def test_setup_is_quiet_and_puts_provnet_on_path_and_man(tmp_path: Path):
    """scripts/setup.sh as the README runs it, with the links made under tmp_path instead of /usr/local."""
    from conftest import need_tool

    need_tool("dpkg-query", "man")
    bin_dir, man_dir = tmp_path / "bin", tmp_path / "man" / "man1"
    man_dir.mkdir(parents=True)
    (man_dir / "provnet.1").write_text(".TH MINE 1\n")  # an operator's own file: left alone
    ran = subprocess.run(["bash", "scripts/setup.sh"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "PROVNET_BIN_DIR": str(bin_dir), "PROVNET_MAN_DIR": str(man_dir)})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == ""
    assert ran.stderr.splitlines() == [
        f"setup: {man_dir}/provnet.1 exists and is not a symlink: left alone (use {ROOT}/docs/provnet.1)",
        f"setup: done: {bin_dir}/provnet -> {ROOT}/.venv/bin/provnet; man provnet"]
    assert (bin_dir / "provnet").resolve() == (ROOT / ".venv" / "bin" / "provnet").resolve()
    version = subprocess.run(["provnet", "--version"], capture_output=True, text=True, timeout=60,
                             env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert version.returncode == 0 and version.stdout.startswith("provnet, version ")
    (man_dir / "provnet.1").unlink()
    again = subprocess.run(["bash", "scripts/setup.sh"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                           env={**os.environ, "PROVNET_BIN_DIR": str(bin_dir), "PROVNET_MAN_DIR": str(man_dir)})
    assert again.returncode == 0 and len(again.stderr.splitlines()) == 1, again.stderr
    page = subprocess.run(["man", "provnet"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "MANPATH": str(tmp_path / "man"), "MANPAGER": "cat",
                               "MANWIDTH": "100"})
    assert page.returncode == 0 and "provnet net-create [OPTIONS] NAME" in page.stdout
