# Shared test fixtures: tool/root requirements that fail loudly in CI, and a registry on SQLite and PostgreSQL.
from __future__ import annotations

import os
import shutil
import uuid

import pytest

# shared fixtures: `reg` (a fresh SqlRegistry) and `setup` (seed + metadata API/agent chain)
pytest_plugins = ["registry_support", "metadata_chain", "keystone_support"]

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


# The fast tier (`pytest -m "not slow"`, scripts/test-fast.sh): pure cores and in-process tests on SQLite. Every test
# in another module, every PostgreSQL variant and every test needing root is marked slow here, so a new test is
# slow unless its module is listed (a fast module must not start processes or namespaces).
FAST_MODULES = frozenset({
    "test_api_wire", "test_architecture", "test_binding", "test_cli_args", "test_cli_output", "test_cli_resources",
    "test_dataplane_rules", "test_dhcp_codec", "test_dhcp_server", "test_doctor_checks", "test_doctor_network_mode",
    "test_doctor_readers", "test_metadata_mode", "test_registry_metadata_port",
    "test_dataplane_arp", "test_l2_plan",
    "test_metadata_api", "test_metadata_content", "test_metadata_proxy", "test_metadata_units",
    "test_metadata_upstream", "test_model_ipam", "test_model_rules", "test_model_validation",
    "test_registry_agents_instances", "test_registry_create_plan", "test_registry_description",
    "test_registry_filters", "test_registry_networks", "test_registry_ports", "test_registry_routers", "test_routes",
    "test_runtime_compose",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        postgres = "[postgresql" in item.nodeid or "-postgresql" in item.nodeid
        if postgres:
            item.add_marker(pytest.mark.postgres)
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module not in FAST_MODULES or postgres or item.get_closest_marker("root"):
            item.add_marker(pytest.mark.slow)


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
