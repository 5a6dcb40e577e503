#!/usr/bin/env bash
# A real Keystone (PyPI, gunicorn, SQLite, 127.0.0.1) for tests and the lab: install, start DIR PORT, stop DIR.
#
#   scripts/keystone.sh install            the virtualenv (default /opt/provnet-keystone; PROVNET_KEYSTONE_VENV)
#   scripts/keystone.sh start DIR [PORT]   configure DIR once (database, fernet keys, bootstrap), serve on
#                                          127.0.0.1:PORT (default 5000); prints OS_AUTH_URL=... and the admin's
#                                          password file (DIR/admin-password, mode 0600)
#   scripts/keystone.sh stop DIR           stop the gunicorn DIR/gunicorn.pid names (that process only)
#   scripts/keystone.sh status DIR         exit 0 when it answers
#
# Keystone gets its own virtualenv so that its pinned dependencies never meet provnet's. Users, projects, roles
# and the catalog are made over REST by provnet/identity/keystone_admin.py (one process, not one CLI per call).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${PROVNET_KEYSTONE_VENV:-/opt/provnet-keystone}
KEYSTONE_VERSION=${PROVNET_KEYSTONE_VERSION:-30.0.0}
GUNICORN_SPEC=${PROVNET_GUNICORN_SPEC:-gunicorn>=22,<28}

# importing keystone.wsgi.api builds the app (it reads a configuration): look for the module, do not import it
CHECK='import importlib.util as u, gunicorn, keystone; assert u.find_spec("keystone.wsgi.api")'

die() { echo "keystone.sh: $*" >&2; exit 1; }

install() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
    return 0
  fi
  echo "keystone.sh: installing keystone $KEYSTONE_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/pip" install -q "keystone==$KEYSTONE_VERSION" "$GUNICORN_SPEC" 2>&1 \
    | grep -vE 'WARNING: Location|^$' || true
  "$VENV/bin/python" -c "$CHECK" || die "keystone did not install into $VENV"
}

manage() {  # keystone-manage with DIR's configuration
  OS_KEYSTONE_CONFIG_DIR="$DIR" "$VENV/bin/keystone-manage" --config-file "$DIR/keystone.conf" "$@" \
    >>"$DIR/manage.log" 2>&1 || die "keystone-manage $1 failed; see $DIR/manage.log"
}

configure() {
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  cat >"$DIR/keystone.conf" <<EOF
[DEFAULT]
log_file = $DIR/keystone-app.log
[database]
connection = sqlite:///$DIR/keystone.db
[token]
provider = fernet
expiration = 3600
[fernet_tokens]
key_repository = $DIR/fernet-keys
[credential]
key_repository = $DIR/credential-keys
[cache]
# one process (below) with an in-memory cache: validations cost ms, and a revocation is seen at once
enabled = true
backend = dogpile.cache.memory
[identity]
# a Keystone for tests and the lab: bcrypt's cheapest cost, so that each password login costs ms, not 0.3 s
password_hash_rounds = 4
EOF
  # Keystone parses the process's command line (gunicorn's options would be taken for its own): reset it first.
  printf 'import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa: E402,F401\n' \
    >"$DIR/provnet_keystone_wsgi.py"
  (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(18))' >"$DIR/admin-password")
  manage db_sync
  manage fernet_setup --keystone-user root --keystone-group root
  manage credential_setup --keystone-user root --keystone-group root
  manage bootstrap --bootstrap-password "$(cat "$DIR/admin-password")" \
    --bootstrap-admin-url "$URL/v3/" --bootstrap-internal-url "$URL/v3/" --bootstrap-public-url "$URL/v3/" \
    --bootstrap-region-id RegionOne
  touch "$DIR/configured"
}

running() {
  [ -f "$DIR/gunicorn.pid" ] && kill -0 "$(cat "$DIR/gunicorn.pid")" 2>/dev/null
}

start() {
  install
  if [ ! -f "$DIR/configured" ]; then
    configure
  fi
  if ! running; then
    rm -f "$DIR/gunicorn.pid"
    OS_KEYSTONE_CONFIG_DIR="$DIR" "$VENV/bin/gunicorn" --chdir "$DIR" --bind "127.0.0.1:$PORT" --workers 1 \
      --threads 4 --timeout 60 --daemon --pid "$DIR/gunicorn.pid" --error-logfile "$DIR/keystone.log" \
      --capture-output provnet_keystone_wsgi:application
  fi
  for _ in $(seq 1 150); do
    if curl -fs -o /dev/null "$URL/v3"; then
      echo "OS_AUTH_URL=$URL/v3"
      echo "OS_PASSWORD_FILE=$DIR/admin-password"
      return 0
    fi
    sleep 0.2
  done
  die "keystone did not answer on $URL within 30 s; see $DIR/keystone.log"
}

stop() {
  if running; then
    pid=$(cat "$DIR/gunicorn.pid")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$DIR/gunicorn.pid"
}

cmd=${1:-}
case "$cmd" in
  install) install ;;
  start|stop|status)
    [ $# -ge 2 ] || die "usage: $0 $cmd DIR${cmd/start/ [PORT]}"
    DIR=$(realpath -m "$2")
    PORT=${3:-5000}
    URL="http://127.0.0.1:$PORT"
    case "$cmd" in
      start) start ;;
      stop) stop ;;
      status) running ;;
    esac
    ;;
  *) die "usage: $0 install | start DIR [PORT] | stop DIR | status DIR" ;;
esac
