#!/usr/bin/env bash
# The README's test command: set up (packages, PostgreSQL, .venv), then ruff, mypy and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PROVNET_TEST_PG_URL=${PROVNET_TEST_PG_URL:-$(bash scripts/postgres.sh)}
export PROVNET_TEST_PG_URL
.venv/bin/ruff check provnet tests benchmarks
.venv/bin/mypy  # provnet/, as pyproject.toml's [tool.mypy] says (strict on model/, dhcp/, metadata/)
.venv/bin/python -m pytest -q "$@"
