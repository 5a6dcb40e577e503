# The change feed in SQL: a write's changes recorded under its revision, read back in order, pruned, announced.
from __future__ import annotations

import sqlalchemy as sa

from provnet.registry import schema as t
from provnet.registry.changes import Change, ChangeBatch, Pending

CHANNEL = "provnet_changes"  # PostgreSQL NOTIFY channel: a payload-less "something committed"
RETAIN = 20_000  # revisions of changes kept; a reader further behind rebuilds from the store
PRUNE_EVERY = 1_000  # prune when the revision is a multiple of this

BUMP = (sa.update(t.revision).where(t.revision.c.id == 1).values(value=t.revision.c.value + 1)
        .returning(t.revision.c.value))
POSITION = sa.select(t.revision.c.value, t.revision.c.floor).where(t.revision.c.id == 1)
INSERT = sa.insert(t.changes)
NOTIFY = sa.text(f"SELECT pg_notify('{CHANNEL}', '')")
_c = t.changes.c
READ = (sa.select(_c.revision, _c.kind, _c.resource_id, _c.op, _c.network_id, _c.addresses, _c.macs, _c.devices)
        .where(_c.revision > sa.bindparam("after"), _c.revision <= sa.bindparam("upto"))
        .order_by(_c.revision, _c.seq))


def commit(conn: sa.Connection, pending: Pending, postgresql: bool) -> int:
    """Inside a write transaction, as its last step: take the next revision (the row lock on it orders commits,
    so revisions become visible in order), record the changes under it, announce it at commit."""
    revision = int(conn.execute(BUMP).scalar_one())
    if pending.items:
        conn.execute(INSERT, pending.rows(revision))
    if postgresql:
        conn.execute(NOTIFY)
    if revision % PRUNE_EVERY == 0 and revision > RETAIN:
        prune(conn, revision - RETAIN)
    return revision


def prune(conn: sa.Connection, floor: int) -> None:
    """Forget the changes up to `floor` (readers at or above it lose nothing)."""
    conn.execute(sa.delete(t.changes).where(_c.revision <= floor))
    conn.execute(sa.update(t.revision).where(t.revision.c.id == 1, t.revision.c.floor < floor)
                 .values(floor=floor))


def read(conn: sa.Connection, after: int, limit: int) -> ChangeBatch:
    """The changes after `after`, at most `limit` revisions of them (a write's changes are never split)."""
    value, floor = conn.execute(POSITION).one()
    value, floor = int(value), int(floor)
    if after < floor or after > value:  # pruned past the reader, or the reader is ahead (a restored store)
        return ChangeBatch(value, (), True)
    if after == value:
        return ChangeBatch(value)
    upto = min(value, after + max(1, limit))
    found = tuple(Change(int(r.revision), r.kind, r.resource_id, r.op, r.network_id, tuple(r.addresses or ()),
                         tuple(r.macs or ()), tuple(r.devices or ()))
                  for r in conn.execute(READ, {"after": after, "upto": upto}))
    if int(conn.execute(POSITION).one()[1]) > after:  # pruned while we read: what we have may be partial
        return ChangeBatch(value, (), True)
    return ChangeBatch(upto, found)
