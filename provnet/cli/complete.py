# Shell completion of resource names (bash, zsh through click): `provnet net-show <TAB>` lists the store's networks,
# quietly, and never creates a store.
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import click
from click.shell_completion import CompletionItem

from provnet.cli.lookup import KINDS

# the words of a verb's usage line that name a resource of a kind (INTERFACE: a subnet, the usual form)
KIND_OF_WORD = {"NETWORK": "network", "SUBNET": "subnet", "PORT": "port", "ROUTER": "router",
                "INSTANCE": "instance", "AGENT": "agent", "INTERFACE": "subnet"}


def positional_index(tokens: Sequence[str]) -> int:
    """How many positionals come before the word being completed (an option's value is not one; a bare option
    is taken to have a value only when written `--key value`, which is how the neutron CLI's extras read)."""
    count = 0
    previous_is_option = False
    for token in tokens:
        if token == "--":
            previous_is_option = False
            continue
        if token.startswith("-"):
            previous_is_option = "=" not in token
            continue
        if not previous_is_option:
            count += 1
        previous_is_option = False
    return count


def resource_names(ctx: click.Context, kind: str) -> list[str]:
    """Names (ids for unnamed ones; hosts for agents) of `kind` in the store the command line points to; [] when
    there is no store, it cannot be read, or the configuration is bad. Logs nothing."""
    from provnet.cli.store import open_for_verb
    from provnet.config import load_config
    from provnet.identity.clouds import client_identity

    params = ctx.find_root().params
    logging.disable(logging.CRITICAL)
    try:
        overrides = {"state_path": params.get("state_path"), "database.connection": params.get("db")}
        config = load_config(files=params.get("config_files") or None, overrides=overrides)
        url = params.get("url")  # with --os-cloud / OS_* / --os-cacert as the verb itself would use them
        client = client_identity(params.get("os_cloud"), params.get("os_cacert"), bool(url))
        registry = open_for_verb(config, url, "", may_create=False, client=client)
    except Exception:  # noqa: BLE001 - completion must never print an error into the user's prompt
        logging.disable(logging.NOTSET)
        return []
    try:
        _getter, lister, attr = KINDS[kind]
        return sorted({getattr(item, attr) or item.id for item in getattr(registry, lister)(None)})
    except Exception:  # noqa: BLE001
        return []
    finally:
        registry.close()
        logging.disable(logging.NOTSET)


def complete_positional(args_metavar: str) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """A click shell_complete for a verb's positionals (`NETWORK CIDR`, `ROUTER INTERFACE`, `PORT...`)."""
    words = [w.strip("[].") for w in args_metavar.split()]
    variadic = args_metavar.endswith("...")

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        if not words or incomplete.startswith("-"):
            return []
        index = positional_index(ctx.params.get(param.name or "args") or ())
        if index >= len(words):
            if not variadic:
                return []
            index = len(words) - 1
        kind = KIND_OF_WORD.get(words[index])
        if kind is None:
            return []
        return [CompletionItem(n) for n in resource_names(ctx, kind) if n.startswith(incomplete)]

    return complete
