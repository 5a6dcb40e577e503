# `provnet <verb>`: the global options (config, state path, database, remote API, logging), the verbs' registration
# and the did-you-mean for a verb that does not exist.
from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cached_property

import click

from provnet.cli.logs import LOG_FORMATS, setup_logging
from provnet.cli.suggest import did_you_mean
from provnet.config import Config, ConfigError, load_config
from provnet.runtime.process import die_with_parent

# Each module defines `register(group: click.Group) -> None` and adds its verbs.
VERB_MODULES = (
    "provnet.cli.config_cmd",
    "provnet.cli.resources",
    "provnet.cli.serve",
    "provnet.cli.metadata_cmd",
    "provnet.cli.explain_cmd",
    "provnet.cli.dhcp_cmd",
    "provnet.cli.agent_cmd",
    "provnet.cli.l3_agent_cmd",
    "provnet.cli.doctor_cmd",
    "provnet.cli.lab_cmd",
)


class AppContext:
    """What every verb gets: the effective configuration and, on first use, the registry.

    `verb` and `may_create` are set by the verb before it touches the registry: only a verb that creates
    something may create a new local store (`provnet net-list` on an empty state path says there is none).

    The registry is the local store; with --url, provnet's API there (with a Keystone token when --os-cloud names
    a cloud, or OS_AUTH_URL is set); with --os-cloud and no --url, the cloud's own Neutron, read-only (companion
    mode). `watch_network` (companion mode) narrows what the registry follows for changes.
    """

    def __init__(self, config: Config, api_url: str | None, os_cloud: str | None = None,
                 os_cacert: str | None = None, reread: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.api_url = api_url
        self.os_cloud = os_cloud
        self.os_cacert = os_cacert
        # the configuration read again as at start (files, environment, global options): a server's SIGHUP
        self.reread: Callable[[], Config] = reread or (lambda: config)
        self.verb = ""
        self.may_create = True
        self.watch_network: str | None = None

    @property
    def companion(self) -> bool:
        return bool(self.os_cloud) and not self.api_url

    @cached_property
    def client(self):  # -> provnet.identity.clouds.ClientIdentity | None
        """How this process reaches a remote registry (None: a local store, or --url without credentials and CA)."""
        from provnet.identity.clouds import CloudError, client_identity

        try:
            return client_identity(self.os_cloud, self.os_cacert, bool(self.api_url), self.watch_network)
        except CloudError as exc:
            raise click.UsageError(str(exc)) from None

    @cached_property
    def registry(self):  # -> provnet.registry.Registry
        from provnet.cli.store import open_for_verb
        from provnet.identity.clouds import CloudError
        from provnet.model.errors import NeutronError

        try:
            return open_for_verb(self.config, self.api_url, self.verb, self.may_create, self.client)
        except CloudError as exc:  # e.g. the cloud's catalog has no network endpoint
            raise click.UsageError(str(exc)) from None
        except NeutronError as exc:  # Keystone refused or unreachable
            raise click.ClickException(exc.message) from None

    @property
    def store(self) -> str:
        """The store this verb works on, for messages."""
        from provnet.cli.store import describe

        return describe(self.config, self.api_url, self.client)


class ProvnetGroup(click.Group):
    """A group whose unknown-verb error suggests the verb meant: the openstack CLI's `network list` is
    `net-list` here; otherwise the closest verbs, closest first."""

    group_class = type  # `lab`, `config`: the same behaviour

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0]
        if self.get_command(ctx, name) is None and not ctx.resilient_parsing and not name.startswith("-"):
            hint = did_you_mean(args, self.list_commands(ctx))
            raise click.UsageError(f"No such command '{name}'." + (f" {hint}" if hint else ""), ctx)
        return super().resolve_command(ctx, args)


def config_error(exc: ConfigError) -> click.ClickException:
    """A configuration error is exit status 1 without a usage banner: the command line was right, the file (or
    environment) is what to fix, and the message says where."""
    return click.ClickException(str(exc))


@click.group(cls=ProvnetGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--config-file", "config_files", multiple=True, type=click.Path(dir_okay=False),
              help="INI file(s) with provnet options (default: $PROVNET_CONFIG or /etc/provnet/provnet.conf).")
@click.option("--state-path", envvar="PROVNET_STATE_PATH", default=None,
              help="State directory (SQLite store, sockets, lease journal). Default /var/lib/provnet.")
@click.option("--db", envvar="PROVNET_DB", default=None,
              help="Database URL. Default: sqlite:///<state-path>/provnet.sqlite; postgresql://... for several hosts.")
@click.option("--url", envvar="PROVNET_URL", default=None,
              help="Use a remote provnet networking API (http(s)://HOST:9696) instead of the local database.")
@click.option("--os-cloud", envvar="OS_CLOUD", default=None, metavar="NAME",
              help="Authenticate with Keystone as cloud NAME of clouds.yaml (envvars: OS_AUTH_URL, OS_USERNAME, ...). "
                   "With --url: to provnet's API there. Without --url: read the cloud's own Neutron from its "
                   "catalog (companion mode: doctor, dhcp-config, dhcp, lists; read-only).")
@click.option("--os-cacert", envvar="OS_CACERT", default=None, metavar="FILE",
              help="CA bundle to verify https servers (the API, Keystone) with; default: clouds.yaml's cacert, "
                   "else the system's CAs.")
@click.option("--debug", is_flag=True, default=None, help="Log at DEBUG level.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
              help="Log lines as text (default) or JSON objects, one per line (config use_json).")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="Write the log to this file instead of stderr; reopened when logrotate moves it "
                   "(config log_file).")
@click.version_option(package_name="provnet")
@click.pass_context
def main(ctx: click.Context, config_files: tuple[str, ...], state_path: str | None, db: str | None,
         url: str | None, os_cloud: str | None, os_cacert: str | None, debug: bool | None, log_format: str | None,
         log_file: str | None) -> None:
    """provnet: instance metadata (169.254.169.254) for VMs on provider networks.

    VMs on flat/VLAN networks routed by an external router, addressed by an external DHCP server, get
    their own metadata through a namespace proxy, a metadata agent and a metadata API wire-compatible
    with Neutron and Nova. Start with `provnet lab up` to see the whole path on one machine.

    \b
    Conventions (every verb): names or ids wherever a resource is named; -f table|json|value|yaml|csv
    and -c FIELD (any field) on every verb that prints records; exit status 0 ok, 1 error (one line
    on stderr, also for a bad configuration file), 2 usage error (with the usage line).
    Shell completion: eval "$(_PROVNET_COMPLETE=bash_source provnet)" (zsh: zsh_source).
    """
    die_with_parent()  # a child of `provnet serve` ends with it
    overrides = {"state_path": state_path, "database.connection": db, "debug": debug, "log_file": log_file,
                 "use_json": None if log_format is None else log_format == "json"}
    try:
        config = load_config(files=config_files or None, overrides=overrides)
    except ConfigError as exc:
        raise config_error(exc) from None
    try:
        setup_logging(config.debug, "json" if config.use_json else "text", config.log_file or None)
    except OSError as exc:
        raise click.ClickException(f"cannot open the log file {config.log_file}: {exc.strerror}") from None
    ctx.obj = AppContext(config, url, os_cloud, os_cacert,
                         lambda: load_config(files=config_files or None, overrides=overrides))


for _name in VERB_MODULES:
    importlib.import_module(_name).register(main)
