#!/usr/bin/env bash
# Install what provnet and its tests need on Debian 12 (as root), and the project into ./.venv. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  iproute2 iptables curl procps psmisc
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

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[test]' 2>&1 | grep -vE 'WARNING: Location|^$' || true
.venv/bin/python -c 'import provnet, sqlalchemy, aiohttp' 
echo "setup: done (.venv/bin/provnet)" >&2
