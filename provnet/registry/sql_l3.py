# L3 agent scheduling as Neutron's legacy scheduler does it: one alive L3 agent hosts a router, chosen (fewest
# routers) when the router gets its first interface, moved when that agent has been dead for agent_down_time.
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from provnet.model.errors import InvalidL3Agent, RouterHostedByL3Agent, RouterNotHostedByL3Agent
from provnet.model.resources import L3_AGENT_TYPE, Agent, Router
from provnet.registry import schema as t
from provnet.registry import sql_rows as rows

Note = Callable[[sa.Connection, str], None]  # records "router <id> update" in the change feed


def _agents(conn: sa.Connection, *where: sa.ColumnElement[bool]) -> list[Agent]:
    query = sa.select(t.agents).where(t.agents.c.agent_type == L3_AGENT_TYPE, *where)
    return [rows.MAPS["agent"].load(r) for r in conn.execute(query.order_by(t.agents.c.host, t.agents.c.id))]


def hosting_agent_id(conn: sa.Connection, router_id: str) -> str | None:
    b = t.router_l3_agent_bindings
    return conn.execute(sa.select(b.c.l3_agent_id).where(b.c.router_id == router_id)).scalar_one_or_none()


def _load(conn: sa.Connection) -> dict[str, int]:
    b = t.router_l3_agent_bindings
    query = sa.select(b.c.l3_agent_id, sa.func.count()).group_by(b.c.l3_agent_id)
    return {agent_id: int(n) for agent_id, n in conn.execute(query)}


def _candidates(conn: sa.Connection, now: datetime, down_time: float) -> list[Agent]:
    """Alive, enabled L3 agents, least loaded first (then by host: deterministic)."""
    load = _load(conn)
    alive = [a for a in _agents(conn, t.agents.c.admin_state_up.is_(True)) if a.is_alive(down_time, now)]
    return sorted(alive, key=lambda a: (load.get(a.id, 0), a.host, a.id))


def schedule(conn: sa.Connection, router_id: str, now: datetime, down_time: float, note: Note) -> str | None:
    """Bind an unhosted router to the least loaded alive L3 agent; the hosting agent's id (None: no agent)."""
    current = hosting_agent_id(conn, router_id)
    if current is not None:
        return current
    candidates = _candidates(conn, now, down_time)
    if not candidates:
        return None
    conn.execute(sa.insert(t.router_l3_agent_bindings).values(router_id=router_id, l3_agent_id=candidates[0].id))
    note(conn, router_id)
    return candidates[0].id


def reschedule_from_dead(conn: sa.Connection, now: datetime, down_time: float, note: Note) -> list[str]:
    """Move every router whose L3 agent has sent no heartbeat for `down_time` to an alive one (Neutron's
    allow_automatic_l3agent_failover); routers stay where they are while no agent is alive. Moved router ids."""
    b = t.router_l3_agent_bindings
    cutoff = now - timedelta(seconds=down_time)
    dead = sa.select(t.agents.c.id).where(t.agents.c.agent_type == L3_AGENT_TYPE,
                                          sa.or_(t.agents.c.heartbeat_timestamp.is_(None),
                                                 t.agents.c.heartbeat_timestamp < cutoff))
    stranded = [r for (r,) in conn.execute(sa.select(b.c.router_id).where(b.c.l3_agent_id.in_(dead))
                                           .order_by(b.c.router_id))]
    if not stranded:
        return []
    moved = []
    for router_id in stranded:
        candidates = _candidates(conn, now, down_time)
        if not candidates:
            break
        conn.execute(sa.update(b).where(b.c.router_id == router_id).values(l3_agent_id=candidates[0].id))
        note(conn, router_id)
        moved.append(router_id)
    return moved


def _l3_agent(conn: sa.Connection, agent_id: str) -> Agent:
    found = _agents(conn, t.agents.c.id == agent_id)
    if not found or not found[0].admin_state_up:
        raise InvalidL3Agent(id=agent_id)
    return found[0]


def add(conn: sa.Connection, agent_id: str, router_id: str, note: Note) -> None:
    """`l3-agent-router-add`: host the router on this agent (409 when another agent hosts it)."""
    _l3_agent(conn, agent_id)
    current = hosting_agent_id(conn, router_id)
    if current == agent_id:
        return
    if current is not None:
        raise RouterHostedByL3Agent(router_id=router_id, agent_id=current)
    conn.execute(sa.insert(t.router_l3_agent_bindings).values(router_id=router_id, l3_agent_id=agent_id))
    note(conn, router_id)


def remove(conn: sa.Connection, agent_id: str, router_id: str, note: Note) -> None:
    """`l3-agent-router-remove`: the router is hosted nowhere until it is added again (or gets an interface)."""
    b = t.router_l3_agent_bindings
    done = conn.execute(sa.delete(b).where(b.c.router_id == router_id, b.c.l3_agent_id == agent_id))
    if done.rowcount == 0:
        raise RouterNotHostedByL3Agent(router_id=router_id, agent_id=agent_id)
    note(conn, router_id)


def routers_on_agent(conn: sa.Connection, agent_id: str) -> list[Router]:
    b = t.router_l3_agent_bindings
    query = (sa.select(t.routers).join(b, b.c.router_id == t.routers.c.id).where(b.c.l3_agent_id == agent_id)
             .order_by(t.routers.c.created_at, t.routers.c.id))
    return [rows.MAPS["router"].load(r) for r in conn.execute(query)]


def agents_hosting(conn: sa.Connection, router_id: str) -> list[Agent]:
    agent_id = hosting_agent_id(conn, router_id)
    return _agents(conn, t.agents.c.id == agent_id) if agent_id else []


def forget_router(conn: sa.Connection, router_id: str) -> None:
    b = t.router_l3_agent_bindings
    conn.execute(sa.delete(b).where(b.c.router_id == router_id))


def forget_agent(conn: sa.Connection, agent_id: str, note: Note) -> None:
    b = t.router_l3_agent_bindings
    for (router_id,) in conn.execute(sa.select(b.c.router_id).where(b.c.l3_agent_id == agent_id)).all():
        note(conn, router_id)
    conn.execute(sa.delete(b).where(b.c.l3_agent_id == agent_id))


def schedule_unhosted(conn: sa.Connection, now: datetime, down_time: float, note: Note) -> list[str]:
    """Routers with an interface but no agent (none was alive when it was added): scheduled now, as Neutron's
    L3 agents ask for at sync (auto_schedule_routers)."""
    b = t.router_l3_agent_bindings
    owners = ("network:router_interface",)
    query = (sa.select(t.ports.c.device_id).distinct()
             .where(t.ports.c.device_owner.in_(owners), t.ports.c.device_id.not_in(sa.select(b.c.router_id)),
                    t.ports.c.device_id.in_(sa.select(t.routers.c.id)))
             .order_by(t.ports.c.device_id))
    return [r for (r,) in conn.execute(query).all() if schedule(conn, r, now, down_time, note)]
