# `provnet config show`: the effective configuration and where each value came from.
from __future__ import annotations

import click

from provnet.config import render


@click.group("config")
def config_group() -> None:
    """Inspect provnet's configuration."""


@config_group.command("show")
@click.pass_obj
def show(app) -> None:
    """Print every option's effective value and its source (default, file, env, command line)."""
    click.echo(render(app.config))


def register(group: click.Group) -> None:
    group.add_command(config_group)
