# Test helper run as a separate process: create N ports on one network and report addresses, MACs and errors as JSON.
from __future__ import annotations

import json
import os
import sys
import time

from provnet.model.errors import NeutronError
from provnet.registry.sql import SqlRegistry


def main(db_url: str, network_id: str, count: int, go_file: str) -> None:
    registry = SqlRegistry(db_url)
    while not os.path.exists(go_file):  # start together with the other worker
        time.sleep(0.005)
    created, errors = [], {}
    for _ in range(count):
        try:
            port = registry.create_port({"network_id": network_id})
        except NeutronError as exc:
            key = f"{exc.status} {exc.type}"
            errors[key] = errors.get(key, 0) + 1
            continue
        created.append([port.fixed_ips[0].ip_address, port.mac_address])
    print(json.dumps({"created": created, "errors": errors, "retries": registry.write_retries}))
    registry.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
