# Shared test fixtures: tool/root requirements that fail loudly in CI, and a registry on SQLite and PostgreSQL.
from __future__ import annotations

import os
import shutil
import uuid

import pytest

# shared fixtures: `reg` (a fresh SqlRegistry) and `setup` (seed + metadata API/agent chain)
pytest_plugins = ["registry_support", "metadata_chain"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_URL = os.environ.get("PROVNET_TEST_PG_URL", "")


def need(condition: bool, why: str) -> None:
    """Skip a test whose requirement is missing; in CI (CI=true) fail instead, so nothing is silently skipped."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"requirement missing in CI: {why}", pytrace=False)
    pytest.skip(why)


def need_tool(*names: str) -> None:
    for name in names:
        need(shutil.which(name) is not None, f"needs {name} on PATH")


def need_root() -> None:
    need(os.geteuid() == 0, "needs root (network namespaces, iptables)")


def unique(prefix: str = "pn") -> str:
    """A short unique name with our `pn` prefix, fit for a namespace or a link (<= 15 chars)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_url" in metafunc.fixturenames:
        metafunc.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, empty database: SQLite in tmp_path, or a fresh schema on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/provnet.sqlite"
    need(bool(PG_URL), "needs PostgreSQL: set PROVNET_TEST_PG_URL (scripts/postgres.sh prints it)")
    import sqlalchemy as sa

    schema = unique("t")
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    request.addfinalizer(lambda: _drop_schema(engine, schema))
    return url


def _drop_schema(engine, schema: str) -> None:
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()
