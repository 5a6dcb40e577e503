# `man provnet`, generated from the CLI's own help (every verb, option and example), so the two cannot drift.
# `python -m provnet.cli.manpage > docs/provnet.1`; a test checks the committed page is current.
from __future__ import annotations

import inspect
import sys
from importlib.metadata import PackageNotFoundError, version

import click

SECTIONS_AFTER = """.SH EXIT STATUS
.TP
.B 0
Success.
.TP
.B 1
An error: the message on stderr says what failed and what to do (a refused request, a missing store, a bad
configuration file with its file:line).
.TP
.B 2
A usage error: a wrong verb, option or argument on the command line; the usage line is printed with it.
.SH ENVIRONMENT
.TP
.B PROVNET_CONFIG
Configuration file read when no \\-\\-config\\-file is given.
.TP
.B PROVNET_STATE_PATH, PROVNET_DB, PROVNET_URL, PROVNET_DEBUG
The same as \\-\\-state\\-path, \\-\\-db, \\-\\-url and \\-\\-debug.
.TP
.B _PROVNET_COMPLETE
Shell completion: eval "$(_PROVNET_COMPLETE=bash_source provnet)" in ~/.bashrc, or zsh_source in ~/.zshrc.
.SH FILES
.TP
.I /etc/provnet/provnet.conf
The configuration file (provnet config show prints every option, its value and its source).
.TP
.I /var/lib/provnet
The state path: the SQLite store provnet.sqlite, the metadata agent's socket, the DHCP lease journal.
.TP
.I /var/lib/provnet-lab/lab
The lab's own configuration, store, state, logs and leases.
.SH SEE ALSO
.BR openstack (1),
.BR dnsmasq (8),
.BR kea-dhcp4 (8),
.BR dhcpd (8)
"""


def escape(text: str) -> str:
    """Text safe in roff: backslashes, hyphens (so `--state-path` copies as typed), leading dots and quotes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n"))


def paragraphs(text: str) -> list[str]:
    """Help text as roff: click's paragraphs become .PP, a `\\b` paragraph (examples, tables) stays as written."""
    out: list[str] = []
    for block in inspect.cleandoc(text or "").split("\n\n"):
        if not block.strip():
            continue
        if block.startswith("\b"):
            out += [".PP", ".nf", escape(block.lstrip("\b").strip("\n")), ".fi"]
        else:
            out += [".PP", escape(" ".join(line.strip() for line in block.splitlines()))]
    return out


def options(command: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out += [".TP", f"\\fB{escape(names)}\\fR", escape(help_text) or "."]
    return out


def command_section(name: str, command: click.Command, parent: click.Context) -> list[str]:
    ctx = click.Context(command, info_name=name, parent=parent)
    pieces = command.collect_usage_pieces(ctx)
    out = [f'.SS "{escape(ctx.command_path)} {escape(" ".join(pieces))}"']
    out += paragraphs(command.help or "")
    opts = options(command, ctx)
    if opts:
        out += [".PP", "Options:", ".RS", *opts, ".RE"]
    if command.epilog:
        out += paragraphs(command.epilog)
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            subcommand = command.get_command(ctx, sub)
            if subcommand is not None:  # every listed name is a command
                out += command_section(sub, subcommand, ctx)
    return out


def render(group: click.Group, prog: str = "provnet") -> str:
    try:
        release = version("provnet")
    except PackageNotFoundError:
        release = "dev"
    ctx = click.Context(group, info_name=prog, **group.context_settings)
    summary = (group.help or "").strip().splitlines()[0].split(": ", 1)[-1].rstrip(".")
    lines = [
        f'.TH PROVNET 1 "" "provnet {release}" "provnet manual"',
        ".SH NAME",
        f"{prog} \\- {escape(summary)}",
        ".SH SYNOPSIS",
        f".B {prog}",
        "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        *paragraphs("\n\n".join((group.help or "").split("\n\n")[1:])),
        ".SH GLOBAL OPTIONS",
        *options(group, ctx),
        ".SH COMMANDS",
    ]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            lines += command_section(name, command, ctx)
    return "\n".join(lines) + "\n" + SECTIONS_AFTER


def main() -> None:
    from provnet.cli import main as cli

    sys.stdout.write(render(cli))


if __name__ == "__main__":
    main()
