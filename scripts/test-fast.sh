#!/usr/bin/env bash
# The fast tier for a developer's loop: ruff and mypy, then the pure and in-process tests (SQLite only, no root, no
# processes), about 20 s on an idle machine. The whole suite is scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check provnet tests benchmarks
[ -x .venv/bin/mypy ] || { echo "test-fast: .venv has no mypy yet: run bash scripts/setup.sh" >&2; exit 1; }
.venv/bin/mypy
.venv/bin/python -m pytest -q -m "not slow" "$@"
