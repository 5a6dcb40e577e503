#!/usr/bin/env bash
# Start the Debian PostgreSQL cluster and make the test role and database; prints the URL for PROVNET_TEST_PG_URL.
set -euo pipefail
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q .; then
  pg_createcluster "$ver" main >/dev/null 2>&1
fi
pg_ctlcluster "$ver" main start >/dev/null 2>&1 || true
for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q" && break
  sleep 1
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='provnet'\"" | grep -q 1 ||
  su postgres -c "psql -q -c \"CREATE ROLE provnet LOGIN PASSWORD 'provnet' CREATEDB\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='provnet_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O provnet provnet_test"
echo "postgresql+psycopg://provnet:provnet@127.0.0.1:5432/provnet_test"
