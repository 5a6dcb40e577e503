# Engines for the registry: SQLite (WAL, foreign keys, busy timeout, BEGIN IMMEDIATE writes) or PostgreSQL; migrations.
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import StaticPool

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0006"  # the newest migration (a test checks it against migrations/versions)
WRITE_OPTION = "provnet_write"  # execution option: this connection's transaction writes
SINGLE_READ_OPTION = "provnet_single_read"  # execution option: one SELECT, no transaction needed
MIGRATION_LOCK_KEY = 0x70726F76  # "prov": PostgreSQL advisory lock held while migrating
SQLITE_BUSY_TIMEOUT_MS = 30000


class DatabaseError(ValueError):
    """The database URL is unusable or the database unreachable; the message says which and why."""


class WriteWouldWait(Exception):
    """SQLite: another connection holds the write lock, and this thread asked not to wait for it (no_waiting)."""


_no_wait = threading.local()


@contextmanager
def no_waiting() -> Iterator[None]:
    """Within this block, this thread's SQLite writes raise WriteWouldWait instead of waiting for the lock."""
    _no_wait.on = True
    try:
        yield
    finally:
        _no_wait.on = False


def normalise_url(db_url: str) -> str:
    """`postgresql://` and `postgres://` -> psycopg 3; everything else unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if db_url.startswith(prefix):
            return "postgresql+psycopg://" + db_url[len(prefix):]
    return db_url


def make_engine(db_url: str) -> sa.Engine:
    try:
        url = sa.make_url(normalise_url(db_url))
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url)
        if url.get_backend_name() != "postgresql":
            raise DatabaseError(f"database URL {db_url!r}: only sqlite:/// and postgresql:// are supported")
        return sa.create_engine(url, pool_size=10, max_overflow=20, pool_recycle=3600)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise DatabaseError(f"database URL {db_url!r} is not valid: {exc}") from None


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    database = url.database
    memory = database in (None, "", ":memory:")
    if database and not memory:
        directory = Path(database).expanduser().parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create the directory {directory} for the SQLite database: "
                                f"{exc.strerror}") from None
    kwargs: dict = {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A write takes SQLite's write lock at BEGIN, so two writers queue on busy_timeout instead of one
        # failing when it upgrades a read lock.
        options = conn.get_execution_options()
        if options.get(SINGLE_READ_OPTION):
            return  # a single SELECT is atomic on its own; skipping BEGIN/ROLLBACK halves a lookup's cost
        if not options.get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN")
        elif not getattr(_no_wait, "on", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:  # once BEGIN IMMEDIATE holds the lock (WAL), nothing else in the transaction waits on others
            conn.exec_driver_sql("PRAGMA busy_timeout = 0")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except sa.exc.OperationalError as exc:
                if getattr(exc.orig, "sqlite_errorname", "") == "SQLITE_BUSY":
                    raise WriteWouldWait() from None
                raise
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")

    return engine


def single_read_engine(engine: sa.Engine) -> sa.Engine:
    """The same pool for one-statement reads: autocommit (no BEGIN/ROLLBACK round trips) on both databases."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine.execution_options(**{SINGLE_READ_OPTION: True})


def schema_version(engine: sa.Engine) -> str | None:
    """The migration the database is at (None: not created yet)."""
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return None


def upgrade(engine: sa.Engine) -> None:
    """Bring the schema to the newest migration. Safe when several processes open a fresh database at once:
    PostgreSQL serialises them on an advisory lock, SQLite on its write lock. A database already at the
    newest migration costs one SELECT (Alembic is not even imported)."""
    if schema_version(engine) == SCHEMA_HEAD:
        return
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        conn = engine.connect()
    except sa.exc.OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise DatabaseError(f"cannot open the database {where}: {str(exc.orig).strip()}") from None
    with conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
