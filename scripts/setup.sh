#!/usr/bin/env bash
# Install what provnet and its tests need on Debian 12 (as root), and the project into ./.venv. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  iproute2 iptables curl procps psmisc socat   # socat: loopback services reached from inside a namespace
  busybox isc-dhcp-client            # real DHCP clients for tests and the lab
  dnsmasq-base kea-dhcp4-server kea-admin isc-dhcp-server   # peers: exports are checked by the real servers; perfdhcp
  haproxy nginx-light wrk            # HTTP anchor for the metadata benchmark
  iputils-ping time tcpdump          # ../shared/bench/dhcp/run.sh (link check, CPU figures, smoke decode)
  cloud-init                          # cloud-init's own reader, run by /usr/bin/python3
  postgresql                          # the multi-host store, tested for real
  python3-venv
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# isc-dhcp-server and cloud-init must not run as services on this host: we run them ourselves.
systemctl disable --now isc-dhcp-server 2>/dev/null || true
# Open vSwitch for tests/test_l3_agent_ovs.py (its userspace datapath, run by the test in a namespace): unpacked into
# .venv/ovs, not installed, so no ovs-vswitchd service starts on this host and no kernel module is loaded.
if ! command -v ovs-vsctl >/dev/null && [ ! -x .venv/ovs/usr/bin/ovs-vsctl ]; then
  dest="$PWD/.venv/ovs"
  tmp=$(mktemp -d)
  if (cd "$tmp" && { apt-get download -qq openvswitch-common openvswitch-switch libxdp1 >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get download -qq openvswitch-common openvswitch-switch libxdp1 >/dev/null 2>&1; }; }); then
    mkdir -p "$dest" && for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$dest"; done
  else
    echo "setup: Open vSwitch could not be downloaded; tests/test_l3_agent_ovs.py will say so" >&2
  fi
  rm -rf "$tmp"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
# quiet unless it fails: then the whole log, which says why
if ! .venv/bin/pip install -q -e '.[test]' >.venv/pip-install.log 2>&1; then
  cat .venv/pip-install.log >&2
  exit 1
fi
.venv/bin/python -c 'import provnet, sqlalchemy, aiohttp'
# Keystone for the identity tests and `lab up --keystone`, in its own virtualenv (its pins never meet provnet's)
if ! bash scripts/keystone.sh install >.venv/keystone-install.log 2>&1; then
  cat .venv/keystone-install.log >&2
  exit 1
fi

# `provnet` on PATH and `man provnet`: symlinks to this checkout's venv and its generated manual page. Something
# there that is not a symlink (an operator's own install) is left alone.
BIN_DIR=${PROVNET_BIN_DIR:-/usr/local/bin}
MAN_DIR=${PROVNET_MAN_DIR:-/usr/local/share/man/man1}
link() {
  if [ -e "$2" ] && [ ! -L "$2" ]; then
    echo "setup: $2 exists and is not a symlink: left alone (use $1)" >&2
  else
    mkdir -p "$(dirname "$2")" && ln -sfn "$1" "$2"
  fi
}
link "$PWD/.venv/bin/provnet" "$BIN_DIR/provnet"
link "$PWD/docs/provnet.1" "$MAN_DIR/provnet.1"
echo "setup: done: $BIN_DIR/provnet -> $PWD/.venv/bin/provnet; man provnet" >&2
