# Shared machinery of the neutron-style verbs: the command shape, -f/-c options, printing, error reporting.
from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from provnet.cli.complete import complete_positional
from provnet.cli.lookup import find_id
from provnet.cli.neutron_args import ArgError, merge_body, split_args, take_positionals
from provnet.cli.output import OutputError, format_many, format_one, output_options, select
from provnet.model.errors import NeutronError
from provnet.model.resources import Agent, Instance, Network, Port, Router, Subnet
from provnet.registry.base import Registry

log = logging.getLogger(__name__)

EXTRAS_HELP = (
    "Pass-through attributes (as the neutron CLI): any other `--key value`, `--key=value`, bare `--key` "
    "(True), `--key type=int|bool|dict VALUE` or `--key list=true A B`, after `--` or not, goes into the "
    "request body as attribute `key` (dashes become underscores)."
)
FILTERS_HELP = (
    "Filters (as the neutron CLI): `--key value` or `--key=value` keeps what has attribute `key` equal to "
    "value; `--key list=true A B` matches any of A, B; different keys must all match."
)


class NeutronCommand(click.Command):
    """A click command that reads the neutron CLI's `--` as a no-op separator.

    The neutron CLI wanted extras after `--` (`net-create phy_net -- --router:external=True`); here unknown
    options pass through anyway, so dropping the `--` lets `-f json` or `--name` after it still work.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            args = list(args)
            args.remove("--")
        return super().parse_args(ctx, args)


def fields_of(kind: str) -> list[str]:
    """The fields a resource of `kind` shows, to check -c before anything is written."""
    samples: dict[str, Callable[[], Network | Subnet | Port | Router | Agent | Instance]] = {
        "network": lambda: Network(id=""),
        "subnet": lambda: Subnet(id="", network_id="", cidr="0.0.0.0/0"),
        "port": lambda: Port(id="", network_id="", mac_address=""),
        "router": lambda: Router(id=""),
        "agent": lambda: Agent(id="", host=""),
        "instance": lambda: Instance(id=""),
    }
    return sorted(samples[kind]().to_api())


def neutron_command(group: click.Group, name: str, args_metavar: str, epilog: str = "",
                    extras: bool = True, kind: str | None = None) -> Callable[[Callable[..., Any]], click.Command]:
    """A verb taking its positional arguments (and pass-through extras) as `args`, neutron CLI style.

    The decorated function gets `app` (AppContext), `args` (the positionals, checked against
    `args_metavar`'s words), `extras` (dict) and the click options; its errors are reported by `guarded`.
    A verb printing resources names their `kind`, so a bad -c is refused before anything is written (and -c
    may name any field of that kind). Only a -create verb may create a new local store.
    """
    names = [w.strip("[].") for w in args_metavar.split() if not w.startswith("[")]
    variadic = args_metavar.endswith("...")

    def decorate(fn: Callable[..., Any]) -> click.Command:
        @functools.wraps(fn)
        @click.pass_obj
        def callback(app: Any, args: tuple[str, ...], **options: Any) -> None:
            app.verb = name
            app.may_create = name.endswith("-create")

            def run() -> None:
                if kind and options.get("columns"):
                    select(fields_of(kind), options["columns"])
                positionals, extra = split_args(args)
                if variadic:
                    if not positionals:
                        raise ArgError(f"missing argument {names[0]}")
                    got = positionals
                else:
                    got = take_positionals(positionals, names)
                if extra and not extras:
                    raise ArgError(f"no such option(s): {', '.join('--' + k for k in extra)}")
                fn(app, got, extra, **options)

            root = logging.getLogger()
            level = root.level
            if not app.config.debug:  # a verb is a client: the store's INFO lines are noise; --debug shows them
                root.setLevel(logging.WARNING)
            try:
                guarded(app, run)
            finally:
                close_registry(app)
                root.setLevel(level)

        callback = click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar=args_metavar,
                                  shell_complete=complete_positional(args_metavar))(callback)
        doc = inspect.cleandoc(fn.__doc__ or "")
        help_text = doc + ("\n\n" + (FILTERS_HELP if name.endswith("-list") else EXTRAS_HELP) if extras else "")
        return group.command(
            name,
            cls=NeutronCommand,
            help=help_text,
            epilog=epilog or None,
            context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
        )(callback)

    return decorate


def guarded(app: Any, run: Callable[[], None]) -> None:
    """Run a verb; registry errors become one line on stderr and exit 1, argument errors a usage error."""
    try:
        run()
    except (ArgError, OutputError) as exc:
        raise click.UsageError(str(exc)) from None
    except NeutronError as exc:
        raise click.ClickException(f"{exc.message} ({exc.status} {exc.type})") from None
    except click.ClickException:
        raise
    except OSError as exc:
        where = app.api_url or app.config.db_url
        raise click.ClickException(f"cannot reach {where}: {exc}") from None
    except Exception as exc:  # a store/driver error: one readable line; --debug shows the traceback
        if app.config.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        log.debug("verb failed", exc_info=True)
        raise click.ClickException(f"{type(exc).__name__}: {first}") from None


def close_registry(app: Any) -> None:
    """Close the registry if this verb opened it (connections, pools), so nothing lingers after a verb."""
    registry = vars(app).pop("registry", None)
    if registry is not None:
        registry.close()


def emit_one(obj: Mapping[str, Any], fmt: str, columns: Sequence[str], banner: str = "") -> None:
    """Print a show/create/update result; the neutron CLI's banner line only in table format."""
    text = format_one(obj, fmt, columns)
    if banner and fmt == "table":
        click.echo(banner)
    click.echo(text)


def emit_many(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str,
              wanted: Sequence[str], empty: str = "") -> None:
    """Print a list result; an empty table prints `empty` (what is missing, and in which store) on stderr."""
    text = format_many(rows, columns, fmt, wanted)
    if text:
        click.echo(text)
    elif empty and fmt == "table":
        click.echo(empty, err=True)


def nothing_in(app: Any, what: str) -> str:
    """The stderr line of an empty list: `No ports in sqlite:////var/lib/provnet/provnet.sqlite.`"""
    return f"No {what} in {app.store}."


def list_filters(extras: Mapping[str, Any]) -> dict[str, list[str]]:
    """Pass-through extras of a -list verb are the API's filters: `--name x --status ACTIVE`."""
    filters: dict[str, list[str]] = {}
    for key, value in extras.items():
        values = value if isinstance(value, list) else [value]
        filters[key] = [str(v) for v in values]
    return filters


def tri_state(on: bool, off: bool, what: str) -> bool | None:
    """Two opposite flags: True, False, or None when neither was given; both is an error."""
    if on and off:
        raise ArgError(f"give only one of the {what} flags")
    return True if on else (False if off else None)


def admin_state_options(fn: Any) -> Any:
    """--admin-state-up/--admin-state-down of an -update verb, passed as `up` and `down`."""
    fn = click.option("--admin-state-down", "down", is_flag=True, help="Set administratively down.")(fn)
    return click.option("--admin-state-up", "up", is_flag=True, help="Set administratively up.")(fn)


def update_one(app: Any, kind: str, name_or_id: str, body: dict[str, Any], extras: Mapping[str, Any],
               up: bool = False, down: bool = False) -> Any:
    """The end of every -update verb: admin state and extras join the body, an empty update is refused
    (before the name is looked up), then the resource named `name_or_id` is updated and returned."""
    state = tri_state(up, down, "--admin-state-up/--admin-state-down")
    if state is not None:
        body["admin_state_up"] = state
    body = merge_body(body, extras)
    if not body:
        raise ArgError(f"Must specify new values to update {kind}")
    registry: Registry = app.registry
    return getattr(registry, f"update_{kind}")(find_id(registry, kind, name_or_id), body)


def project_option(fn: Any) -> Any:
    """The owner project of a -create verb, under the names the openstack and neutron CLIs use for it."""
    return click.option("--project", "--project-id", "--tenant-id", "project_id", metavar="PROJECT_ID",
                        help="Owner project (default: fake_project_id, as Neutron's noauth).")(fn)


def list_options(fn: Any) -> Any:
    fn = click.option("-D", "--show-details", is_flag=True, help="Show every field, not only the usual columns.")(fn)
    return output_options(fn)


def delete_all(app: Any, kind: str, names: list[str]) -> None:
    """Resolve every name first (a bad one deletes nothing), then delete in order."""
    registry: Registry = app.registry
    targets = [(name, find_id(registry, kind, name)) for name in names]
    for name, rid in targets:
        getattr(registry, f"delete_{kind}")(rid)
        click.echo(f"Deleted {kind}: {name}")


def rows_for(objects: list[Any], columns: tuple[str, ...], details: bool) -> tuple[list[dict], list[str]]:
    rows = [o.to_api() for o in objects]
    if details:
        return rows, sorted(rows[0]) if rows else list(columns)
    return rows, list(columns)
