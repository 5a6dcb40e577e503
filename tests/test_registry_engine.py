# SqlRegistry's storage: migrations equal the schema, concurrent first opens, URLs, SQLite pragmas, threads.
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import PG_URL, need
from registry_support import open_registry

from provnet.registry import schema
from provnet.registry.sql_engine import MIGRATIONS, SCHEMA_HEAD, DatabaseError, normalise_url


def test_migrations_create_exactly_the_schema(db_url: str) -> None:
    reg = open_registry(db_url)
    try:
        with reg.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        assert diff == [] and version == SCHEMA_HEAD == ScriptDirectory(str(MIGRATIONS)).get_current_head()
    finally:
        reg.close()
    again = open_registry(db_url)  # reopening an up-to-date database changes nothing
    assert again.list_networks() == []
    again.close()


def test_two_processes_open_a_fresh_database_at_once(db_url: str) -> None:
    code = ("import sys; from provnet.registry.sql import SqlRegistry; r = SqlRegistry(sys.argv[1]); "
            "r.create_network({'name': 'n'}); print(r.revision())")
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    reg = open_registry(db_url)
    try:
        assert len(reg.list_networks()) == 3
        # every write bumped the one revision row: 1 at creation, +1 per network; each process read it after its
        # own write (another's may have landed in between, so only the bounds are fixed)
        assert reg.revision() == 4
        assert all(2 <= int(o) <= 4 for o, _ in outs)
    finally:
        reg.close()


def test_plain_postgresql_url_uses_psycopg3() -> None:
    assert normalise_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:////x.db") == "sqlite:////x.db"
    need(bool(PG_URL), "needs PostgreSQL: set PROVNET_TEST_PG_URL")
    plain = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    engine = sa.create_engine(normalise_url(plain))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_sqlite_file_directory_created_and_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "provnet.sqlite"
    reg = open_registry(f"sqlite:///{path}")
    try:
        assert path.exists()
        with reg.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 1000
    finally:
        reg.close()


def test_bad_database_urls_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="database URL 'not a url' is not valid"):
        open_registry("not a url")
    with pytest.raises(DatabaseError, match="only sqlite:/// and postgresql:// are supported"):
        open_registry("mysql://nowhere/db")
    with pytest.raises(DatabaseError, match=r"cannot open the database postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/db"):
        open_registry("postgresql://u:secret@127.0.0.1:1/db")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatabaseError, match="cannot create the directory"):
        open_registry(f"sqlite:///{tmp_path}/file/sub/db.sqlite")


def test_threads_share_one_registry(db_url: str) -> None:
    reg = open_registry(db_url)
    try:
        net = reg.create_network({"name": "threads"})
        reg.create_subnet({"network_id": net.id, "ip_version": 4, "cidr": "10.40.0.0/24"})
        results: list = []
        errors: list = []

        def work() -> None:
            try:
                for _ in range(15):
                    results.append(reg.create_port({"network_id": net.id}).fixed_ips[0].ip_address)
                    reg.revision()
                    reg.find_ports_by_ip(results[-1], [net.id])
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert errors == [] and len(results) == 60 and len(set(results)) == 60
    finally:
        reg.close()
