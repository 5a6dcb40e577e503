# The DHCP server's lean read: each fixed IP of the ports on some networks, with the port's MAC and its instance's
# hostname, in one query (no Port objects).
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from provnet.registry import schema as t
from provnet.registry.base import ReservationRow

_p, _a, _i = t.ports, t.ip_allocations, t.instances
QUERY = (sa.select(_p.c.id, _p.c.network_id, _a.c.subnet_id, _p.c.mac_address, _a.c.ip_address, _p.c.device_id,
                   sa.func.coalesce(_i.c.hostname, ""))
         .select_from(_p.join(_a, _a.c.port_id == _p.c.id).outerjoin(_i, _i.c.id == _p.c.device_id))
         .where(sa.not_(_p.c.device_owner.startswith("network:")))
         .order_by(_p.c.id, _a.c.position))


def reservation_rows(conn: sa.Connection, network_ids: Sequence[str],
                     port_ids: Sequence[str] | None = None) -> list[ReservationRow]:
    if not network_ids or (port_ids is not None and not port_ids):
        return []
    query = QUERY.where(_p.c.network_id.in_(list(network_ids)))
    if port_ids is not None:
        query = query.where(_p.c.id.in_(list(port_ids)))
    return [ReservationRow(*row) for row in conn.execute(query)]
