# Which store a client verb opens: only a -create verb may make a new one; the others say there is none, and where
# a lab's own store is when the state path holds a lab.
from __future__ import annotations

import re
from pathlib import Path

import click

from provnet.config import Config
from provnet.identity.client import ClientIdentity
from provnet.registry import registry_from_config
from provnet.registry.base import Registry


class NoStore(click.ClickException):
    """There is no store where the configuration points; exit status 1."""


def mask_url(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


def sqlite_file(db_url: str) -> str | None:
    """The file of an SQLite URL (None for another database or an in-memory one)."""
    prefix = "sqlite:///"
    if not db_url.startswith(prefix):
        return None
    path = db_url[len(prefix):].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def lab_dir_of(state_path: str) -> Path | None:
    """<state_path>/lab when a lab lives there (`provnet lab up` writes its provnet.conf and state.json)."""
    lab = Path(state_path) / "lab"
    return lab if (lab / "provnet.conf").exists() or (lab / "state.json").exists() else None


def lab_hint(state_path: str, verb: str) -> str:
    """For a message about a missing file under a lab's state path: where the lab's own files are."""
    lab = lab_dir_of(state_path)
    if lab is None:
        return ""
    conf = lab / "controller" / "provnet.conf"  # the lab's controller holds its store
    conf = conf if conf.exists() else lab / "provnet.conf"
    return (f"; {state_path} holds a lab, whose store, journal and sockets are in {lab}: "
            f"provnet --config-file {conf} {verb}")


def describe(config: Config, api_url: str | None, client: ClientIdentity | None = None) -> str:
    """The store a verb uses, for messages: the API URL, the cloud's Neutron, or the database URL (password
    hidden)."""
    if client is not None and client.companion:
        return client.describe()
    return api_url or mask_url(config.db_url)


def check_exists(config: Config, verb: str) -> None:
    """NoStore unless the configured database exists and holds provnet's schema; opens nothing that would create
    it (a PostgreSQL that cannot be reached is left for the registry to report)."""
    path = sqlite_file(config.db_url)
    if path is not None:
        if not Path(path).exists():
            raise NoStore(f"no provnet store at {path} (nothing has been created with this state path); point "
                          "to the store of a running provnet with --state-path DIR, --db URL or --url "
                          f"http://HOST:9696, or make one with a -create verb{lab_hint(config.state_path, verb)}")
        return
    if not config.db_url.startswith("postgres"):
        return  # an unsupported URL: the registry says so
    import sqlalchemy as sa

    from provnet.registry.sql_engine import make_engine, schema_version

    engine = make_engine(config.db_url)
    try:
        try:
            with engine.connect():
                pass
        except sa.exc.SQLAlchemyError:
            return
        if schema_version(engine) is None:
            raise NoStore(f"the database {mask_url(config.db_url)} holds no provnet store yet; a -create verb or "
                          "`provnet serve` makes one")
    finally:
        engine.dispose()


def open_for_verb(config: Config, api_url: str | None, verb: str, may_create: bool,
                  client: ClientIdentity | None = None) -> Registry:
    """The registry a client verb works on: the remote API, the cloud's Neutron (companion mode), or the local
    database (which must exist unless `may_create`)."""
    companion = client is not None and client.companion
    if not api_url and not companion and not may_create:
        check_exists(config, verb)
    return registry_from_config(config, api_url, client)
