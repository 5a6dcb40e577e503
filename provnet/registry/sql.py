# The registry's storage on SQLAlchemy (SQLite or PostgreSQL): rows, statements, transactions; SqlRegistry = rules + it.
from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.sql.util import ClauseAdapter

from provnet.model.errors import InvalidInput, ServiceUnavailable
from provnet.model.resources import Agent, FixedIP, Instance, Network, Port, Router, Subnet
from provnet.registry import schema as t
from provnet.registry import sql_changes as feed
from provnet.registry import sql_l3 as l3
from provnet.registry import sql_pg_port as pg_port
from provnet.registry import sql_reservations
from provnet.registry import sql_rows as rows
from provnet.registry.base import Clock, Filters, Page, ReservationRow, utc_now
from provnet.registry.changes import ChangeBatch, Pending
from provnet.registry.core import NeutronRegistry
from provnet.registry.sql_engine import WRITE_OPTION, make_engine, no_waiting, single_read_engine, upgrade
from provnet.registry.store import LostRace
from provnet.registry.wake import InotifyWatch, LocalBell, PgListener, Waiter

T = TypeVar("T")
log = logging.getLogger(__name__)
RETRYABLE_SQLSTATES = ("23505", "40001", "40P01")  # unique violation, serialization failure, deadlock
# PostgreSQL classes of a lost database: 08 connection exception, 57P admin shutdown / crash / cannot connect now
LOST_SQLSTATE_PREFIXES = ("08", "57P")
# SQLite's: the file cannot be opened or read/written, or stays locked past busy_timeout, or the disk is full
LOST_SQLITE_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL")


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    """A lost race (unique violation, deadlock, serialization failure), not a bug: worth another attempt."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in RETRYABLE_SQLSTATES
    return isinstance(exc, sa.exc.IntegrityError) and "UNIQUE constraint failed" in str(exc.orig)


def _contested(exc: sa.exc.DBAPIError) -> str:
    """What a unique violation was about, from the constraint the database names."""
    text = str(exc.orig)
    if "uniq_ports_mac_network" in text or "ports.mac_address" in text:
        return "mac_address"
    if "ip_allocations" in text:
        return "ip_address"
    return ""


def _lost_database(exc: sa.exc.DBAPIError) -> bool:
    """The database is down, unreachable or unusable right now (not a bug in a statement): worth a 503."""
    if isinstance(exc, sa.exc.InterfaceError) or exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    sqlite_name = getattr(exc.orig, "sqlite_errorname", None)
    if sqlite_name is not None:
        return sqlite_name.startswith(LOST_SQLITE_ERRORS)
    sqlstate = getattr(exc.orig, "sqlstate", None)
    # psycopg: a refused or dropped connection has no SQLSTATE (the server never answered)
    return sqlstate is None or sqlstate.startswith(LOST_SQLSTATE_PREFIXES)


def _port_query(order: Sequence[Any] = (t.ports.c.created_at, t.ports.c.id)) -> sa.Select:
    """Ports LEFT JOIN their allocations, in `order` (then each port's addresses in their order)."""
    a = t.ip_allocations
    return (sa.select(t.ports, a.c.subnet_id.label("alloc_subnet_id"), a.c.ip_address.label("alloc_ip"))
            .select_from(t.ports.outerjoin(a, a.c.port_id == t.ports.c.id))
            .order_by(*order, a.c.position))


def _network_query(order: Sequence[Any] = (t.networks.c.created_at, t.networks.c.id)) -> sa.Select:
    return (sa.select(t.networks, t.subnets.c.id.label("subnet_id"))
            .select_from(t.networks.outerjoin(t.subnets, t.subnets.c.network_id == t.networks.c.id))
            .order_by(*order, t.subnets.c.created_at))


def _group_networks(result: Any) -> list[Network]:
    out: dict[str, Network] = {}
    load = rows.MAPS["network"].load
    for row in result:
        net = out.get(row.id)
        if net is None:
            net = out[row.id] = load(row, subnets=[])
        if row.subnet_id is not None:
            net.subnets.append(row.subnet_id)
    return list(out.values())


class Statements:
    """The hot paths' statements, built once per store (SQLAlchemy then reuses their compiled form)."""

    def __init__(self, postgresql: bool) -> None:
        a, p = t.ip_allocations, t.ports
        # Which of the probed addresses are taken. On PostgreSQL one primary-key lookup per probe: written as
        # `subnet_id = X AND ip_address IN (...)`, statistics from when the table was small made it scan every
        # allocation of the subnet and filter (12 ms per create at 6,000 ports, until the next ANALYZE).
        self.probe = pg_port.TAKEN_PROBES_SQL if postgresql else (
            sa.select(a.c.ip_address).where(a.c.subnet_id == sa.bindparam("subnet_id"),
                                            a.c.ip_address.in_(sa.bindparam("ips", expanding=True))))
        # The networks holding a MAC, by MAC alone: with the network in the query too, PostgreSQL could pick the
        # network's index under stale statistics and read every port of the network.
        self.mac_networks = sa.select(p.c.network_id).where(p.c.mac_address == sa.bindparam("mac"))
        self.by_ip: dict[int, sa.Select] = {}
        # by MAC alone, networks filtered by the caller: with the networks in the query, PostgreSQL could pick the
        # network index under stale statistics and read every port of the network (4 ms at 13,500 ports)
        self.by_mac = _port_query().where(p.c.mac_address == sa.bindparam("mac"))
        self.router_nets = sa.select(p.c.network_id).distinct().where(
            p.c.device_id == sa.bindparam("router_id"), p.c.device_owner.in_(sa.bindparam("owners", expanding=True)))
        self.revision = sa.select(t.revision.c.value).where(t.revision.c.id == 1)
        self.network = _network_query().where(t.networks.c.id == sa.bindparam("network_id"))
        self.network_full = (
            sa.select(t.networks, t.subnets.c.id.label("subnet_id"),
                      *[c.label(f"subnet__{c.name}") for c in t.subnets.c])
            .select_from(t.networks.outerjoin(t.subnets, t.subnets.c.network_id == t.networks.c.id))
            .where(t.networks.c.id == sa.bindparam("network_id"))
            .order_by(t.subnets.c.created_at, t.subnets.c.id))
        self.network_subnets = (sa.select(t.subnets).where(t.subnets.c.network_id == sa.bindparam("network_id"))
                                .order_by(t.subnets.c.created_at, t.subnets.c.id))
        self.port = _port_query().where(p.c.id == sa.bindparam("port_id"))
        self.insert_port = sa.insert(t.ports)
        self.insert_alloc = sa.insert(t.ip_allocations)

    def by_ip_query(self, count: int) -> sa.Select:
        """Lookup by IP on `count` networks, with plain (not "expanding") parameters: no per-call SQL rendering."""
        stmt = self.by_ip.get(count)
        if stmt is None:
            a = t.ip_allocations
            holders = sa.select(a.c.port_id).where(
                a.c.ip_address == sa.bindparam("ip"),
                a.c.network_id.in_([sa.bindparam(f"n{i}") for i in range(count)]))
            stmt = self.by_ip[count] = _port_query().where(t.ports.c.id.in_(holders))
        return stmt


class SqlTx:
    """The Tx (store.py) of one SQL connection: a write transaction, or autocommitted single-statement reads."""

    def __init__(self, conn: sa.Connection, stmts: Statements, pending: Pending | None = None) -> None:
        self.conn = conn
        self.stmts = stmts
        self.pending = pending

    # ---- reads -------------------------------------------------------------------------------------------------

    def _ports(self, *where: Any) -> list[Port]:
        return rows.ports_from_joined(self.conn.execute(_port_query().where(*where)))

    def network(self, network_id: str, lock: bool = False) -> Network | None:
        if lock:  # FOR NO KEY UPDATE: two subnet creates on one network serialise on it (PostgreSQL)
            found = self.conn.execute(sa.select(t.networks.c.id).where(t.networks.c.id == network_id)
                                      .with_for_update(key_share=True)).first()
            if found is None:
                return None
        nets = _group_networks(self.conn.execute(self.stmts.network, {"network_id": network_id}))
        return nets[0] if nets else None

    def network_and_subnets(self, network_id: str) -> tuple[Network, list[Subnet]] | None:
        """The network and its subnets (in creation order) in one query."""
        result = list(self.conn.execute(self.stmts.network_full, {"network_id": network_id}))
        if not result:
            return None
        load = rows.MAPS["subnet"].load
        names = [c.name for c in t.subnets.c]
        subnets = [load([getattr(r, f"subnet__{n}") for n in names]) for r in result if r.subnet_id is not None]
        return _group_networks(result)[0], subnets

    def segment_keys(self) -> set[str]:
        return set(self.conn.execute(sa.select(t.networks.c.segment_key)
                                     .where(t.networks.c.segment_key.is_not(None))).scalars())

    def subnet(self, subnet_id: str) -> Subnet | None:
        row = self.conn.execute(sa.select(t.subnets).where(t.subnets.c.id == subnet_id)).first()
        return None if row is None else rows.MAPS["subnet"].load(row)

    def network_subnets(self, network_id: str) -> list[Subnet]:
        load = rows.MAPS["subnet"].load
        return [load(r) for r in self.conn.execute(self.stmts.network_subnets, {"network_id": network_id})]

    def port(self, port_id: str) -> Port | None:
        found = rows.ports_from_joined(self.conn.execute(self.stmts.port, {"port_id": port_id}))
        return found[0] if found else None

    def ports_of_network(self, network_id: str) -> list[Port]:
        return self._ports(t.ports.c.network_id == network_id)

    def ports_on_subnet(self, subnet_id: str) -> list[Port]:
        holders = sa.select(t.ip_allocations.c.port_id).where(t.ip_allocations.c.subnet_id == subnet_id)
        return self._ports(t.ports.c.id.in_(holders))

    def failed_bindings(self, host: str, vif_type: str) -> list[Port]:
        return self._ports(t.ports.c.binding_host_id == host, t.ports.c.binding_vif_type == vif_type)

    def interface_ports(self, router_id: str, owners: Sequence[str]) -> list[Port]:
        return self._ports(t.ports.c.device_id == router_id, t.ports.c.device_owner.in_(owners))

    def network_has_ports(self, network_id: str, except_owners: Sequence[str]) -> bool:
        return self.conn.execute(sa.select(t.ports.c.id).where(
            t.ports.c.network_id == network_id, t.ports.c.device_owner.not_in(except_owners)).limit(1)).first() \
            is not None

    def subnet_has_allocations(self, subnet_id: str, except_owners: Sequence[str]) -> bool:
        return self.conn.execute(
            sa.select(t.ip_allocations.c.port_id)
            .join(t.ports, t.ports.c.id == t.ip_allocations.c.port_id)
            .where(t.ip_allocations.c.subnet_id == subnet_id, t.ports.c.device_owner.not_in(except_owners))
            .limit(1)).first() is not None

    def taken(self, subnet_id: str, ips: Sequence[str]) -> set[str]:
        taken: set[str] = set()
        for start in range(0, len(ips), 500):  # (SQLite binds at most 32,766 parameters per statement)
            chunk = list(ips[start:start + 500])
            taken.update(self.conn.execute(self.stmts.probe, {"subnet_id": subnet_id, "ips": chunk}).scalars())
        return taken

    def used_ips(self, subnet_id: str) -> set[str]:
        return set(self.conn.execute(sa.select(t.ip_allocations.c.ip_address)
                                     .where(t.ip_allocations.c.subnet_id == subnet_id)).scalars())

    def ip_taken(self, subnet_id: str, ip: str) -> bool:
        return self.conn.execute(sa.select(t.ip_allocations.c.port_id).where(
            t.ip_allocations.c.subnet_id == subnet_id, t.ip_allocations.c.ip_address == ip)).first() is not None

    def mac_networks(self, mac: str) -> list[str]:
        return list(self.conn.execute(self.stmts.mac_networks, {"mac": mac}).scalars())

    def macs_taken(self, network_id: str, macs: Sequence[str]) -> set[str]:
        taken: set[str] = set()
        for start in range(0, len(macs), 500):  # (SQLite binds at most 32,766 parameters per statement)
            chunk = list(macs[start:start + 500])
            taken.update(self.conn.execute(sa.select(t.ports.c.mac_address).where(
                t.ports.c.mac_address.in_(chunk), t.ports.c.network_id == network_id)).scalars())
        return taken

    def router(self, router_id: str, lock: bool = False) -> Router | None:
        """The router; `lock` holds its row (PostgreSQL) so interface changes and its delete serialise."""
        query = sa.select(t.routers).where(t.routers.c.id == router_id)
        row = self.conn.execute(query.with_for_update() if lock else query).first()
        return None if row is None else rows.MAPS["router"].load(row)

    def agents(self, agent_id: str | None = None, host: str | None = None,
               agent_type: str | None = None) -> list[Agent]:
        a = t.agents.c
        where = [c == v for c, v in ((a.id, agent_id), (a.host, host), (a.agent_type, agent_type)) if v is not None]
        load = rows.MAPS["agent"].load
        return [load(r) for r in self.conn.execute(sa.select(t.agents).where(*where).order_by(a.created_at, a.id))]

    def instance(self, instance_id: str) -> Instance | None:
        row = self.conn.execute(sa.select(t.instances).where(t.instances.c.id == instance_id)).first()
        return None if row is None else rows.MAPS["instance"].load(row)

    def list(self, kind: str, filters: Filters | None, page: Page | None = None) -> list[Any] | None:
        rmap = rows.MAPS[kind]
        table = rmap.table
        where = rows.conditions(filters, rmap.filters, rows.SPECIAL_FILTERS.get(kind))
        order = rows.sort_order(kind, page.sort if page else ())
        if page is not None:
            if page.reverse:
                order = [(column, not ascending) for column, ascending in order]
            if page.marker is not None:
                marker = self.conn.execute(sa.select(*[c for c, _ in order])
                                           .where(table.c.id == page.marker)).first()
                if marker is None:
                    return None
                where.append(rows.after(order, tuple(marker)))
        by = [column.asc() if ascending else column.desc() for column, ascending in order]
        if page is not None and page.limit is not None and kind == "port":
            # the page's rows (an index walk of `limit` rows), then their addresses by port id (index lookups):
            # joined as `id IN (page)`, PostgreSQL hash-joined the page against every port and every allocation
            # (74 ms a page at 100,000 ports)
            load = rmap.load
            found = [load(r, fixed_ips=[]) for r in self.conn.execute(
                sa.select(table).where(*where).order_by(*by).limit(page.limit))]
            by_id = {p.id: p for p in found}
            a = t.ip_allocations
            for row in self.conn.execute(sa.select(a.c.port_id, a.c.subnet_id, a.c.ip_address)
                                         .where(a.c.port_id.in_(list(by_id))).order_by(a.c.port_id, a.c.position)):
                by_id[row.port_id].fixed_ips.append(FixedIP(row.subnet_id, row.ip_address))
        elif page is not None and page.limit is not None and kind == "network":
            paged = sa.select(table).where(*where).order_by(*by).limit(page.limit).subquery("page")
            adapt = ClauseAdapter(paged).traverse
            query = (sa.select(paged, t.subnets.c.id.label("subnet_id"))
                     .select_from(paged.outerjoin(t.subnets, t.subnets.c.network_id == paged.c.id))
                     .order_by(*[adapt(b) for b in by], t.subnets.c.created_at))
            found = _group_networks(self.conn.execute(query))
        elif kind == "port":
            found = rows.ports_from_joined(self.conn.execute(_port_query(by).where(*where)))
        elif kind == "network":
            found = _group_networks(self.conn.execute(_network_query(by).where(*where)))
        else:
            query = sa.select(table).where(*where).order_by(*by)
            if page is not None and page.limit is not None:
                query = query.limit(page.limit)
            found = [rmap.load(r) for r in self.conn.execute(query)]
        if page is not None and page.reverse:
            found.reverse()
        return found

    # ---- writes ------------------------------------------------------------------------------------------------

    def insert(self, kind: str, obj: Any, **extra: Any) -> None:
        values = {**rows.MAPS[kind].values(obj), **extra}
        self.conn.execute(self.stmts.insert_port if kind == "port" else sa.insert(rows.TABLES[kind]), values)

    def update(self, kind: str, obj: Any) -> None:
        table = rows.TABLES[kind]
        values = rows.MAPS[kind].values(obj)
        del values["id"]
        self.conn.execute(sa.update(table).where(table.c.id == obj.id).values(**values))

    def delete(self, kind: str, resource_id: str) -> bool:
        if kind == "port":
            self.conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.port_id == resource_id))
        table = rows.TABLES[kind]
        return self.conn.execute(sa.delete(table).where(table.c.id == resource_id)).rowcount > 0

    def set_allocations(self, port: Port, replace: bool = True) -> None:
        if replace:
            self.conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.port_id == port.id))
        if port.fixed_ips:
            self.conn.execute(self.stmts.insert_alloc, [
                {"subnet_id": f.subnet_id, "ip_address": f.ip_address, "port_id": port.id,
                 "network_id": port.network_id, "position": i} for i, f in enumerate(port.fixed_ips)])

    def insert_ports(self, ports: Sequence[Port]) -> None:
        values = rows.MAPS["port"].values
        self.conn.execute(self.stmts.insert_port, [values(p) for p in ports])
        allocations = [{"subnet_id": f.subnet_id, "ip_address": f.ip_address, "port_id": p.id,
                        "network_id": p.network_id, "position": i} for p in ports for i, f in enumerate(p.fixed_ips)]
        if allocations:
            self.conn.execute(self.stmts.insert_alloc, allocations)

    def touch(self, kind: str, resource_id: str, now: datetime) -> None:
        table = rows.TABLES[kind]
        self.conn.execute(sa.update(table).where(table.c.id == resource_id).values(
            updated_at=now, revision_number=table.c.revision_number + 1))

    def delete_network_contents(self, network_id: str) -> None:
        self.conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.network_id == network_id))
        self.conn.execute(sa.delete(t.ports).where(t.ports.c.network_id == network_id))
        self.conn.execute(sa.delete(t.subnets).where(t.subnets.c.network_id == network_id))

    def delete_subnet_allocations(self, subnet_id: str) -> None:
        self.conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.subnet_id == subnet_id))

    def set_password_once(self, instance_id: str, password: str) -> bool:
        done = self.conn.execute(sa.update(t.instances).where(
            t.instances.c.id == instance_id, t.instances.c.password.is_(None)).values(password=password))
        return done.rowcount > 0

    # ---- L3 agent scheduling (sql_l3) --------------------------------------------------------------------------

    def _note_router(self, _conn: sa.Connection, router_id: str) -> None:
        self.note("router", router_id, "update")

    def l3_schedule(self, router_id: str, now: datetime, down_time: float) -> str | None:
        return l3.schedule(self.conn, router_id, now, down_time, self._note_router)

    def l3_reschedule(self, now: datetime, down_time: float) -> bool:
        moved = l3.reschedule_from_dead(self.conn, now, down_time, self._note_router)
        moved += l3.schedule_unhosted(self.conn, now, down_time, self._note_router)
        return bool(moved)

    def l3_forget_router(self, router_id: str) -> None:
        l3.forget_router(self.conn, router_id)

    def l3_forget_agent(self, agent_id: str) -> None:
        l3.forget_agent(self.conn, agent_id, self._note_router)

    def l3_add(self, agent_id: str, router_id: str) -> None:
        l3.add(self.conn, agent_id, router_id, self._note_router)

    def l3_remove(self, agent_id: str, router_id: str) -> None:
        l3.remove(self.conn, agent_id, router_id, self._note_router)

    # builtins.list: in this class `list` names the method above
    def l3_routers_on_agent(self, agent_id: str) -> builtins.list[Router]:
        return l3.routers_on_agent(self.conn, agent_id)

    def l3_agents_hosting(self, router_id: str) -> builtins.list[Agent]:
        return l3.agents_hosting(self.conn, router_id)

    # ---- the change feed ---------------------------------------------------------------------------------------

    def note(self, kind: str, resource_id: str, op: str, network_id: str | None = None) -> None:
        assert self.pending is not None, "a change noted outside a write"
        self.pending.note(kind, resource_id, op, network_id)

    def note_port(self, op: str, *versions: Port) -> None:
        """A port's change, naming the addresses, MACs and devices of every version given (before, after)."""
        assert self.pending is not None, "a change noted outside a write"
        port = versions[-1]
        self.pending.note("port", port.id, op, port.network_id, [f.ip_address for v in versions for f in v.fixed_ips],
                          [v.mac_address.lower() for v in versions], [v.device_id for v in versions])


class SqlStore:
    """The Store (store.py) in one SQL database, with the change feed and its wake-ups."""

    def __init__(self, db_url: str) -> None:
        self.engine = make_engine(db_url)
        upgrade(self.engine)
        self._reader = single_read_engine(self.engine)
        self._postgresql = self.engine.dialect.name == "postgresql"
        self.stmts = Statements(self._postgresql)
        self.one_statement_creates = self._postgresql
        self._port_plans: dict[str, pg_port.Plan] = {}  # network id -> its common creates' plan (PostgreSQL)
        self._bell = LocalBell()  # rung after each commit of this process: wakes its change-feed waiters
        self._waiters = threading.local()
        self._all_waiters: list[Waiter] = []  # every thread's, closed with the store (each holds an fd)
        self._waiters_lock = threading.Lock()

    # ---- transactions ------------------------------------------------------------------------------------------

    def _unavailable(self, exc: sa.exc.DBAPIError) -> ServiceUnavailable:
        where = self.engine.url.render_as_string(hide_password=True)
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        return ServiceUnavailable(f"The database {where} is unavailable: {reason}")

    @staticmethod
    def _unstorable(exc: Exception) -> InvalidInput:
        """A value the database refused (the rules' checks should have caught it first): a 400, never a 500."""
        log.warning("the database refused a value the checks let through: %s", str(exc).splitlines()[0])
        return InvalidInput(error_message="a value cannot be stored (out of range or not storable text)")

    @contextmanager
    def read(self) -> Iterator[SqlTx]:
        """A connection for reads; every read here is one SELECT, atomic without a transaction."""
        try:
            with self._reader.connect() as conn:
                yield SqlTx(conn, self.stmts)
        except (sa.exc.DataError, OverflowError) as exc:
            raise self._unstorable(exc) from None
        except sa.exc.DBAPIError as exc:
            if _lost_database(exc):
                raise self._unavailable(exc) from exc
            raise

    def write(self, fn: Callable[[SqlTx], T], changed: Callable[[T], bool] | None = None) -> T:
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                pending = Pending()
                with conn.begin():
                    result = fn(SqlTx(conn, self.stmts, pending))
                    noted = changed is None or changed(result)
                    if noted:
                        feed.commit(conn, pending, self._postgresql)
            if noted:
                self._bell.ring()
            return result
        except (sa.exc.DataError, OverflowError) as exc:
            raise self._unstorable(exc) from None
        except sa.exc.DBAPIError as exc:
            if _lost_database(exc):
                raise self._unavailable(exc) from exc
            if _retryable(exc):
                raise LostRace(_contested(exc)) from exc
            raise

    def without_waiting(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), except that on SQLite a write that would wait for another process's write lock raises
        WriteWouldWait at once, having written nothing (the API then waits for it in a thread, not its loop)."""
        with no_waiting():
            return fn(*args)

    def revision(self) -> int:
        with self.read() as tx:
            return int(tx.conn.execute(self.stmts.revision).scalar_one())

    # ---- PostgreSQL's one-statement create ---------------------------------------------------------------------

    def port_plan(self, network_id: str) -> pg_port.Plan | None:
        """The network's plan for its common creates: cached, else read (None: no network, or no subnet)."""
        plan = self._port_plans.get(network_id)
        if plan is not None:
            return plan
        with self.read() as tx:
            found = tx.network_and_subnets(network_id)
        if found is None:
            return None  # the general path raises NetworkNotFound
        plan = pg_port.plan_for(found[0].port_security_enabled, found[1])
        if plan is not None:
            if len(self._port_plans) >= pg_port.MAX_PLANS:
                self._port_plans.clear()
            self._port_plans[network_id] = plan
        return plan

    def insert_planned_port(self, port: Port, plan: pg_port.Plan, probes: Sequence[str]) -> str | None:
        """Insert `port` with the first free probe, its change record and NOTIFY, in one autocommit statement:
        that address, or None (the plan is dropped) when the plan went stale, every probe is taken or the
        network is gone. LostRace when a concurrent writer took the address or MAC first."""
        try:
            with self.read() as tx:
                ip = pg_port.insert_port_with_probe(tx.conn, rows.MAPS["port"].values(port), plan, probes)
        except sa.exc.DBAPIError as exc:
            if _retryable(exc):
                raise LostRace(_contested(exc)) from exc
            if getattr(exc.orig, "sqlstate", None) == "23503":  # the network or subnet was deleted
                self._port_plans.pop(port.network_id, None)
                return None
            raise
        if ip is None:
            self._port_plans.pop(port.network_id, None)
            return None
        self._bell.ring()
        return ip

    # ---- hot-path lookups --------------------------------------------------------------------------------------

    def router_network_ids(self, router_id: str, owners: Sequence[str]) -> list[str]:
        with self.read() as tx:
            return sorted(tx.conn.execute(self.stmts.router_nets, {"router_id": router_id, "owners": list(owners)})
                          .scalars())

    def find_ports_by_ip(self, ip_address: str, network_ids: Sequence[str]) -> list[Port]:
        params = {"ip": ip_address, **{f"n{i}": nid for i, nid in enumerate(network_ids)}}
        with self.read() as tx:
            return rows.ports_from_joined(tx.conn.execute(self.stmts.by_ip_query(len(network_ids)), params))

    def find_ports_by_mac(self, mac_address: str) -> list[Port]:
        with self.read() as tx:
            return rows.ports_from_joined(tx.conn.execute(self.stmts.by_mac, {"mac": mac_address}))

    def reservation_rows(self, network_ids: Sequence[str], port_ids: Sequence[str] | None = None
                         ) -> list[ReservationRow]:
        with self.read() as tx:
            return sql_reservations.reservation_rows(tx.conn, network_ids, port_ids)

    # ---- the change feed ---------------------------------------------------------------------------------------

    def changes_since(self, after: int, limit: int = 1000) -> ChangeBatch:
        with self.read() as tx:
            return feed.read(tx.conn, after, limit)

    def wait_changes(self, after: int, timeout: float, limit: int = 1000) -> ChangeBatch:
        """The changes after `after` as soon as there are some, else an empty batch at `timeout` (or earlier:
        a wake-up with nothing new is allowed). Blocks the calling thread: async code runs it in one."""
        deadline = time.monotonic() + timeout
        waiter = self._waiter()
        batch = self.changes_since(after, limit)
        remaining = deadline - time.monotonic()
        if batch.changes or batch.gap or batch.revision != after or remaining <= 0:
            return batch
        waiter.wait(remaining)
        return self.changes_since(after, limit)

    def wake_waiters(self) -> None:
        """Wake this process's threads blocked in wait_changes (they return, possibly with nothing)."""
        self._bell.ring()

    def _waiter(self) -> Waiter:
        waiter = getattr(self._waiters, "waiter", None)
        if waiter is None:
            waiter = self._waiters.waiter = Waiter(self._bell, self._channel_opener())
            with self._waiters_lock:
                self._all_waiters.append(waiter)
        return waiter

    def _channel_opener(self):  # -> Callable[[], InotifyWatch | PgListener] | None
        """How this store tells other processes' commits: NOTIFY on PostgreSQL, its files changing on SQLite."""
        if self._postgresql:
            dialect = self.engine.dialect
            cargs, cparams = dialect.create_connect_args(self.engine.url)
            cparams.setdefault("connect_timeout", 10)
            return lambda: PgListener(lambda: dialect.loaded_dbapi.connect(*cargs, **cparams), feed.CHANNEL)
        database = self.engine.url.database
        if not database or database == ":memory:":
            return None  # one process only: the local bell is all there is
        return lambda: InotifyWatch(database)

    def close(self) -> None:
        with self._waiters_lock:
            waiters, self._all_waiters = self._all_waiters, []
        for waiter in waiters:
            waiter.close()
        self._waiters = threading.local()
        self.engine.dispose()


class SqlRegistry(NeutronRegistry):
    """Networks, subnets, ports, routers, agents and instances in one SQL database (see Registry): Neutron's
    rules (core.py) over SqlStore."""

    store: SqlStore

    def __init__(self, db_url: str, agent_down_time: float = 75.0, flat_networks: Sequence[str] = ("*",),
                 network_vlan_ranges: Sequence[str] = (), report_interval: float = 30.0,
                 clock: Clock = utc_now, metadata_mode: str = "auto") -> None:
        super().__init__(SqlStore(db_url), agent_down_time=agent_down_time, flat_networks=flat_networks,
                         network_vlan_ranges=network_vlan_ranges, report_interval=report_interval, clock=clock,
                         metadata_mode=metadata_mode)

    @property
    def engine(self) -> sa.Engine:
        return self.store.engine

    def without_waiting(self, fn: Callable[..., T], *args: Any) -> T:
        return self.store.without_waiting(fn, *args)


__all__ = ["SqlRegistry", "SqlStore", "SqlTx"]
