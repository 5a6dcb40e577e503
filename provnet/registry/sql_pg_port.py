# PostgreSQL's one-statement port create: probe, insert the port and its address, bump the revision, atomically.
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from provnet.model.resources import Port

# One statement is its own transaction (autocommit): no BEGIN/COMMIT round trips, and either all of it happens
# (port, allocation, revision bump) or none. `free` picks the first probe nobody holds; if every probe is taken,
# nothing is inserted and no row comes back (the caller then takes the general path, which decides exhaustion).
# The unique constraints still guard every race: a concurrent holder of the same address or MAC makes the whole
# statement fail with a unique violation, which the caller retries.
CREATE_PORT_SQL = sa.text("""
WITH free AS (
    SELECT c.ip FROM unnest(CAST(:probes AS varchar[])) WITH ORDINALITY AS c(ip, n)
    WHERE NOT EXISTS (SELECT 1 FROM ip_allocations a WHERE a.subnet_id = :subnet_id AND a.ip_address = c.ip)
    ORDER BY c.n LIMIT 1
), p AS (
    INSERT INTO ports (id, network_id, name, project_id, admin_state_up, mac_address, device_id, device_owner,
                       status, security_groups, port_security_enabled, allowed_address_pairs, binding_host_id,
                       binding_vnic_type, binding_profile, binding_vif_type, binding_vif_details,
                       binding_failure_reason, description, created_at)
    SELECT :id, :network_id, :name, :project_id, :admin_state_up, :mac_address, :device_id, :device_owner,
           :status, CAST(:security_groups AS json), :port_security_enabled, CAST(:allowed_address_pairs AS json),
           :binding_host_id, :binding_vnic_type, CAST(:binding_profile AS json), :binding_vif_type,
           CAST(:binding_vif_details AS json), :binding_failure_reason, :description, :created_at
    FROM free
    RETURNING id
), a AS (
    INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id, position)
    SELECT :subnet_id, free.ip, p.id, :network_id, 0 FROM free, p
    RETURNING ip_address
), b AS (
    UPDATE provnet_revision SET value = value + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM p)
    RETURNING value
)
SELECT a.ip_address, (SELECT value FROM b) AS revision FROM a
""")

JSON_COLUMNS = ("security_groups", "allowed_address_pairs", "binding_profile", "binding_vif_details")


def insert_port_with_probe(conn: sa.Connection, values: dict, subnet_id: str, probes: Sequence[str],
                           created_at: datetime) -> str | None:
    """Insert the port row `values` holding the first free address of `probes` in `subnet_id`; that address,
    or None when every probe is taken (nothing written)."""
    params = {**values, "subnet_id": subnet_id, "probes": list(probes), "created_at": created_at}
    for column in JSON_COLUMNS:
        params[column] = json.dumps(params[column])
    row = conn.execute(CREATE_PORT_SQL, params).first()
    return None if row is None else row.ip_address


def eligible(clean: dict, port: Port) -> bool:
    """The common create this path serves: automatic address, random MAC, no binding to compute."""
    return clean.get("fixed_ips") is None and clean.get("mac_address") is None and not port.binding_host_id
