# `provnet config show`: the effective configuration and where each value came from.
from __future__ import annotations

import click

from provnet.cli.output import echo_many, output_options
from provnet.config import records

COLUMNS = ("option", "value", "source")


@click.group("config")
def config_group() -> None:
    """Inspect provnet's configuration."""


@config_group.command("show", epilog="\b\nExamples:\n  provnet config show\n"
                      "  provnet --config-file /etc/provnet/provnet.conf config show -f value -c option -c source")
@output_options
@click.pass_obj
def show(app, fmt: str, columns: tuple[str, ...]) -> None:
    """Print every option's effective value and its source (default, file, env, command line); secrets masked."""
    echo_many(records(app.config), COLUMNS, fmt, columns)


def register(group: click.Group) -> None:
    group.add_command(config_group)
