# `provnet <verb>`: the global options (config, state path, database, remote API) and the verbs' registration.
from __future__ import annotations

import importlib
import logging
import sys
from functools import cached_property

import click

from provnet.config import Config, ConfigError, load_config
from provnet.runtime.process import die_with_parent

# Each module defines `register(group: click.Group) -> None` and adds its verbs.
VERB_MODULES = (
    "provnet.cli.config_cmd",
    "provnet.cli.resources",
    "provnet.cli.serve",
    "provnet.cli.metadata_cmd",
    "provnet.cli.dhcp_cmd",
    "provnet.cli.agent_cmd",
    "provnet.cli.doctor_cmd",
    "provnet.cli.lab_cmd",
)


class AppContext:
    """What every verb gets: the effective configuration and, on first use, the registry."""

    def __init__(self, config: Config, api_url: str | None) -> None:
        self.config = config
        self.api_url = api_url

    @cached_property
    def registry(self):  # -> provnet.registry.Registry
        from provnet.registry import registry_from_config

        return registry_from_config(self.config, self.api_url)


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config-file", "config_files", multiple=True, type=click.Path(dir_okay=False),
              help="INI file(s) with provnet options (default: $PROVNET_CONFIG or /etc/provnet/provnet.conf).")
@click.option("--state-path", envvar="PROVNET_STATE_PATH", default=None,
              help="State directory (SQLite store, sockets, lease journal). Default /var/lib/provnet.")
@click.option("--db", envvar="PROVNET_DB", default=None,
              help="Database URL. Default: sqlite:///<state-path>/provnet.sqlite; postgresql://... for several hosts.")
@click.option("--url", envvar="PROVNET_URL", default=None,
              help="Use a remote provnet networking API (http://HOST:9696) instead of the local database.")
@click.option("--debug", is_flag=True, default=None, help="Log at DEBUG level.")
@click.version_option(package_name="provnet")
@click.pass_context
def main(ctx: click.Context, config_files: tuple[str, ...], state_path: str | None, db: str | None,
         url: str | None, debug: bool | None) -> None:
    """provnet: instance metadata (169.254.169.254) for VMs on provider networks.

    VMs on flat/VLAN networks routed by an external router, addressed by an external DHCP server, get
    their own metadata through a namespace proxy, a metadata agent and a metadata API wire-compatible
    with Neutron and Nova. Start with `provnet lab up` to see the whole path on one machine.
    """
    die_with_parent()  # a child of `provnet serve` ends with it
    try:
        config = load_config(files=config_files or None,
                             overrides={"state_path": state_path, "database.connection": db, "debug": debug})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(config.debug)
    ctx.obj = AppContext(config, url)


for _name in VERB_MODULES:
    importlib.import_module(_name).register(main)
