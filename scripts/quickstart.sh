#!/usr/bin/env bash
# The README's main-job command: set up, then build the seed's topology in namespaces and check it end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VMS=${VMS:-3}
CLIENT=${CLIENT:-udhcpc}
.venv/bin/provnet lab up --vms "$VMS" --dhcp-client "$CLIENT"
.venv/bin/provnet lab check
cat <<MSG

The lab is up. Look around:
  provnet lab status
  ip netns list                      # the lab's namespaces (pn*, qrouter-*)
  provnet lab check                  # again, any time
Tear it down with:
  provnet lab down
MSG
