# The Registry on SQLAlchemy (SQLite or PostgreSQL): Neutron's rules, one transaction per write, retried on races.
from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, TypeVar

import sqlalchemy as sa

from provnet import binding
from provnet.model import ipam
from provnet.model.errors import AgentNotFound as _AgentNotFound
from provnet.model.errors import (
    BadRequest,
    Conflict,
    InstanceNotFound,
    InUse,
    InvalidInput,
    IpAddressAlreadyAllocated,
    IpAddressGenerationFailure,
    MacAddressInUse,
    NetworkInUse,
    NetworkNotFound,
    NotFound,
    PortNotFound,
    PortSecurityPortHasSecurityGroup,
    RouterInterfaceNotFoundForSubnet,
    RouterInUse,
    RouterNotFound,
    ServiceUnavailable,
    SubnetInUse,
    SubnetNotFound,
)
from provnet.model.network_rules import (
    PROVIDER_KEYS,
    allocate_segment,
    check_segment,
    in_use_error,
    parse_vlan_ranges,
)
from provnet.model.resources import (
    L3_AGENT_TYPE,
    ROUTER_INTERFACE_OWNERS,
    Agent,
    FixedIP,
    Instance,
    Network,
    Port,
    Router,
    Subnet,
)
from provnet.model.subnet_rules import build_subnet, updated_subnet
from provnet.model.validation import hostname_from_name, parse_create, parse_update, to_boolean
from provnet.registry import schema as t
from provnet.registry import sql_changes as feed
from provnet.registry import sql_l3 as l3
from provnet.registry import sql_pg_port as pg_port
from provnet.registry import sql_reservations
from provnet.registry import sql_rows as rows
from provnet.registry.base import Clock, Filters, ReservationRow, utc_now
from provnet.registry.changes import ChangeBatch, Pending
from provnet.registry.sql_engine import WRITE_OPTION, make_engine, no_waiting, single_read_engine, upgrade
from provnet.registry.wake import InotifyWatch, LocalBell, PgListener, Waiter

T = TypeVar("T")
DHCP_OWNER = "network:dhcp"
ROUTER_INTERFACE = "network:router_interface"
AUTO_DELETE_OWNERS = (DHCP_OWNER, *ROUTER_INTERFACE_OWNERS)  # removed with their network
WRITE_ATTEMPTS = 12
RETRYABLE_SQLSTATES = ("23505", "40001", "40P01")  # unique violation, serialization failure, deadlock
# PostgreSQL classes of a lost database: 08 connection exception, 57P admin shutdown / crash / cannot connect now
LOST_SQLSTATE_PREFIXES = ("08", "57P")
# SQLite's: the file cannot be opened or read/written, or stays locked past busy_timeout, or the disk is full
LOST_SQLITE_ERRORS = ("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL")


class AddressPairAndPortSecurityRequired(Conflict):
    message_format = "Port Security must be enabled in order to have allowed address pairs on a port."


class PortInUse(InUse):
    message_format = ("Unable to complete operation on port %(port_id)s for network %(net_id)s. "
                      "Port already has an attached device %(device_id)s.")


class ServicePortInUse(InUse):
    message_format = "Port %(port_id)s cannot be deleted directly via the port API: %(reason)s."


class RouterInterfaceNotFound(NotFound):
    message_format = "Router %(router_id)s does not have an interface with id %(port_id)s"


class InstanceExists(Conflict):
    message_format = "Instance %(instance_id)s already exists."


def _new_id() -> str:
    return str(uuid.uuid4())


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    """A lost race (unique violation, deadlock, serialization failure), not a bug: worth another attempt."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in RETRYABLE_SQLSTATES
    return isinstance(exc, sa.exc.IntegrityError) and "UNIQUE constraint failed" in str(exc.orig)


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


class SqlRegistry:
    """Networks, subnets, ports, routers, agents and instances in one SQL database (see Registry)."""

    def __init__(self, db_url: str, agent_down_time: float = 75.0, flat_networks: Sequence[str] = ("*",),
                 network_vlan_ranges: Sequence[str] = (), report_interval: float = 30.0,
                 clock: Clock = utc_now) -> None:
        self.clock = clock  # every timestamp and every liveness judgement reads it (tests inject one)
        self.agent_down_time = agent_down_time
        self.report_interval = report_interval
        self.flat_networks = tuple(flat_networks)
        self.vlan_ranges = parse_vlan_ranges(network_vlan_ranges)
        self.engine = make_engine(db_url)
        upgrade(self.engine)
        self._reader = single_read_engine(self.engine)
        self._prepare_statements()
        self._rng = random.Random()  # seeded from os.urandom: processes draw differently; no secret here
        self._postgresql = self.engine.dialect.name == "postgresql"
        self._one_statement_creates = self._postgresql
        self._port_plans: dict[str, pg_port.Plan] = {}  # network id -> its common creates' plan (PostgreSQL)
        self.write_retries = 0  # lost races retried (observable in tests and benchmarks)
        self._bell = LocalBell()  # rung after each commit of this process: wakes its change-feed waiters
        self._waiters = threading.local()
        self._all_waiters: list[Waiter] = []  # every thread's, closed with the registry (each holds an fd)
        self._waiters_lock = threading.Lock()

    def _prepare_statements(self) -> None:
        """The hot paths' statements, built once (SQLAlchemy then reuses their compiled form)."""
        a, p = t.ip_allocations, t.ports
        # Which of the probed addresses are taken. On PostgreSQL one primary-key lookup per probe: written as
        # `subnet_id = X AND ip_address IN (...)`, statistics from when the table was small made it scan every
        # allocation of the subnet and filter (12 ms per create at 6,000 ports, until the next ANALYZE).
        self._probe_stmt = pg_port.TAKEN_PROBES_SQL if self.engine.dialect.name == "postgresql" else (
            sa.select(a.c.ip_address).where(a.c.subnet_id == sa.bindparam("subnet_id"),
                                            a.c.ip_address.in_(sa.bindparam("ips", expanding=True))))
        # The networks holding a MAC, by MAC alone: with the network in the query too, PostgreSQL could pick the
        # network's index under stale statistics and read every port of the network.
        self._mac_networks_stmt = sa.select(p.c.network_id).where(p.c.mac_address == sa.bindparam("mac"))
        self._by_ip_stmts: dict[int, sa.Select] = {}
        # by MAC alone, networks filtered here: with the networks in the query, PostgreSQL could pick the
        # network index under stale statistics and read every port of the network (4 ms at 13,500 ports)
        self._by_mac_stmt = self._port_query().where(p.c.mac_address == sa.bindparam("mac"))
        self._router_nets_stmt = sa.select(p.c.network_id).distinct().where(
            p.c.device_id == sa.bindparam("router_id"), p.c.device_owner.in_(ROUTER_INTERFACE_OWNERS))
        self._revision_stmt = sa.select(t.revision.c.value).where(t.revision.c.id == 1)
        self._network_stmt = self._network_query().where(t.networks.c.id == sa.bindparam("network_id"))
        self._network_full_stmt = (
            sa.select(t.networks, t.subnets.c.id.label("subnet_id"),
                      *[c.label(f"subnet__{c.name}") for c in t.subnets.c])
            .select_from(t.networks.outerjoin(t.subnets, t.subnets.c.network_id == t.networks.c.id))
            .where(t.networks.c.id == sa.bindparam("network_id"))
            .order_by(t.subnets.c.created_at, t.subnets.c.id))
        self._network_subnets_stmt = (sa.select(t.subnets).where(t.subnets.c.network_id == sa.bindparam("network_id"))
                                      .order_by(t.subnets.c.created_at, t.subnets.c.id))
        self._port_stmt = self._port_query().where(p.c.id == sa.bindparam("port_id"))
        self._insert_port_stmt = sa.insert(t.ports)
        self._insert_alloc_stmt = sa.insert(t.ip_allocations)

    # ---- transactions ------------------------------------------------------------------------------------------

    def _unavailable(self, exc: sa.exc.DBAPIError) -> ServiceUnavailable:
        where = self.engine.url.render_as_string(hide_password=True)
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        return ServiceUnavailable(f"The database {where} is unavailable: {reason}")

    @contextmanager
    def _read(self):  # -> Iterator[sa.Connection]
        """A connection for reads; every read here is one SELECT, atomic without a transaction."""
        try:
            with self._reader.connect() as conn:
                yield conn
        except sa.exc.DBAPIError as exc:
            if _lost_database(exc):
                raise self._unavailable(exc) from exc
            raise

    def _write(self, fn: Callable[[sa.Connection], T],
               exhausted: Callable[[], Exception] | None = None,
               changed: Callable[[T], bool] | None = None) -> T:
        """Run `fn` in one write transaction that also bumps the revision; retry it on a constraint race.

        A NeutronError from `fn` rolls everything back. After WRITE_ATTEMPTS races, `exhausted()` (or a
        generic Conflict) is raised: 409, nothing written. `changed(result)` False: the write changed nothing
        a cache holds (a bare heartbeat), so the revision stays.
        """
        for attempt in range(WRITE_ATTEMPTS):
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(**{WRITE_OPTION: True})
                    pending = conn.info["provnet_pending"] = Pending()
                    with conn.begin():
                        result = fn(conn)
                        if changed is None or changed(result):
                            feed.commit(conn, pending, self._postgresql)
                        else:
                            pending = None
                if pending is not None:
                    self._bell.ring()
                return result
            except sa.exc.DBAPIError as exc:
                if _lost_database(exc):
                    raise self._unavailable(exc) from exc
                if not _retryable(exc):
                    raise
                self.write_retries += 1
                time.sleep(self._rng.uniform(0, 0.002 * (attempt + 1)))
        raise (exhausted() if exhausted else
               Conflict(message="The request conflicted with concurrent changes; try it again."))

    def without_waiting(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), except that on SQLite a write that would wait for another process's write lock raises
        WriteWouldWait at once, having written nothing (the API then waits for it in a thread, not its loop)."""
        with no_waiting():
            return fn(*args)

    def revision(self) -> int:
        with self._read() as conn:
            return int(conn.execute(self._revision_stmt).scalar_one())

    # ---- the change feed ---------------------------------------------------------------------------------------

    @staticmethod
    def _note(conn: sa.Connection, kind: str, resource_id: str, op: str, network_id: str | None = None) -> None:
        conn.info["provnet_pending"].note(kind, resource_id, op, network_id)

    @staticmethod
    def _note_port(conn: sa.Connection, op: str, *versions: Port) -> None:
        """A port's change, naming the addresses, MACs and devices of every version given (before, after)."""
        port = versions[-1]
        conn.info["provnet_pending"].note(
            "port", port.id, op, port.network_id, [f.ip_address for v in versions for f in v.fixed_ips],
            [v.mac_address.lower() for v in versions], [v.device_id for v in versions])

    def changes_since(self, after: int, limit: int = 1000) -> ChangeBatch:
        with self._read() as conn:
            return feed.read(conn, after, limit)

    def wait_changes(self, after: int, timeout: float, limit: int = 1000) -> ChangeBatch:
        """The changes after `after` as soon as there are some, else an empty batch at `timeout` (or earlier:
        a wake-up with nothing new is allowed). Blocks the calling thread: async code runs it in one."""
        deadline = time.monotonic() + timeout
        waiter = self._waiter()
        while True:
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

    def create_many(self, kind: str, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Create every item in ONE transaction (Neutron's bulk create): all of them, or, when one fails,
        none and the revision unchanged. Every body is validated before anything is written."""
        steps: dict[str, tuple[Callable[[Mapping[str, Any]], Any], Callable[[sa.Connection, Any], Any]]] = {
            "network": (self._prepare_network, self._insert_network),
            "subnet": (lambda attrs: parse_create("subnet", attrs), self._insert_subnet),
            "port": (lambda attrs: parse_create("port", attrs), self._create_port),
            "router": (lambda attrs: parse_create("router", attrs), self._insert_router),
        }
        if kind not in steps:
            raise ValueError(f"bulk create of {kind!r}: only {', '.join(steps)} are supported")
        prepare, insert = steps[kind]
        prepared = [prepare(attrs) for attrs in items]
        if not prepared:
            return []
        exhausted = None
        if kind == "port":
            exhausted = lambda: IpAddressGenerationFailure(net_id=prepared[0]["network_id"])  # noqa: E731
        return self._write(lambda conn: [insert(conn, p) for p in prepared], exhausted=exhausted)

    # ---- networks ----------------------------------------------------------------------------------------------

    @staticmethod
    def _network_query() -> sa.Select:
        return (sa.select(t.networks, t.subnets.c.id.label("subnet_id"))
                .select_from(t.networks.outerjoin(t.subnets, t.subnets.c.network_id == t.networks.c.id))
                .order_by(t.networks.c.created_at, t.networks.c.id, t.subnets.c.created_at))

    def _networks(self, conn: sa.Connection, where: Sequence[Any]) -> list[Network]:
        return self._group_networks(conn.execute(self._network_query().where(*where)))

    @staticmethod
    def _group_networks(result: Any) -> list[Network]:
        out: dict[str, Network] = {}
        for row in result:
            net = out.get(row.id)
            if net is None:
                net = out[row.id] = rows.network_from_row(row, [])
            if row.subnet_id is not None:
                net.subnets.append(row.subnet_id)
        return list(out.values())

    def _network_and_subnets(self, conn: sa.Connection, network_id: str) -> tuple[Network, list[Subnet]]:
        """The network and its subnets (in creation order) in one query."""
        result = list(conn.execute(self._network_full_stmt, {"network_id": network_id}))
        if not result:
            raise NetworkNotFound(net_id=network_id)
        subnets = [rows.subnet_from_row(SimpleNamespace(**{k[len("subnet__"):]: v for k, v in r._mapping.items()
                                                            if k.startswith("subnet__")}))
                   for r in result if r.subnet_id is not None]
        return self._group_networks(result)[0], subnets

    def _network(self, conn: sa.Connection, network_id: str) -> Network:
        found = self._group_networks(conn.execute(self._network_stmt, {"network_id": network_id}))
        if not found:
            raise NetworkNotFound(net_id=network_id)
        return found[0]

    def _prepare_network(self, attrs: Mapping[str, Any]) -> tuple[dict, Any]:
        clean = parse_create("network", attrs)
        return clean, check_segment(clean, self.flat_networks, self.vlan_ranges)

    def _insert_network(self, conn: sa.Connection, prepared: tuple[dict, Any]) -> Network:
        clean, seg = prepared
        if seg is not None:
            used = set(conn.execute(sa.select(t.networks.c.segment_key)
                                    .where(t.networks.c.segment_key.is_not(None))).scalars())
            seg = allocate_segment(seg, self.vlan_ranges, used)
            if seg.key is not None and seg.key in used:
                raise in_use_error(seg)
        net_id = _new_id()
        conn.execute(sa.insert(t.networks).values(
            id=net_id, name=clean["name"], description=clean["description"], project_id=clean["project_id"],
            admin_state_up=clean["admin_state_up"], shared=clean["shared"],
            router_external=clean["router:external"],
            network_type=seg.network_type if seg else None,
            physical_network=seg.physical_network if seg else None,
            segmentation_id=seg.segmentation_id if seg else None,
            segment_key=seg.key if seg else None,
            port_security_enabled=clean["port_security_enabled"], status="ACTIVE", created_at=self.clock()))
        self._note(conn, "network", net_id, "create", net_id)
        return self._network(conn, net_id)

    def create_network(self, attrs: Mapping[str, Any]) -> Network:
        prepared = self._prepare_network(attrs)
        return self._write(lambda conn: self._insert_network(conn, prepared))

    def get_network(self, network_id: str) -> Network:
        with self._read() as conn:
            return self._network(conn, network_id)

    def list_networks(self, filters: Filters | None = None) -> list[Network]:
        where = rows.conditions(filters, rows.NETWORK_FILTERS, {"subnets": rows.network_subnets_condition})
        with self._read() as conn:
            return self._networks(conn, where)

    def update_network(self, network_id: str, attrs: Mapping[str, Any]) -> Network:
        changes = parse_update("network", attrs)

        def tx(conn: sa.Connection) -> Network:
            net = self._network(conn, network_id)
            current = {"provider:network_type": net.network_type, "provider:physical_network": net.physical_network,
                       "provider:segmentation_id": net.segmentation_id}
            for key in PROVIDER_KEYS:
                if key in changes and changes[key] != current[key]:
                    raise InvalidInput(error_message="Plugin does not support updating provider attributes")
            columns = {"name": "name", "description": "description", "admin_state_up": "admin_state_up",
                       "shared": "shared",
                       "router:external": "router_external", "port_security_enabled": "port_security_enabled"}
            values = {col: changes[key] for key, col in columns.items() if key in changes}
            if values:
                conn.execute(sa.update(t.networks).where(t.networks.c.id == network_id).values(**values))
            self._note(conn, "network", network_id, "update", network_id)
            return self._network(conn, network_id)

        return self._write(tx)

    def delete_network(self, network_id: str) -> None:
        def tx(conn: sa.Connection) -> None:
            self._network(conn, network_id)
            busy = conn.execute(sa.select(t.ports.c.id).where(
                t.ports.c.network_id == network_id, t.ports.c.device_owner.not_in(AUTO_DELETE_OWNERS)).limit(1))
            if busy.first() is not None:
                raise NetworkInUse(net_id=network_id)
            for port in self._ports(conn, [t.ports.c.network_id == network_id]):
                self._note_port(conn, "delete", port)
            for subnet_id in conn.execute(sa.select(t.subnets.c.id).where(t.subnets.c.network_id == network_id)):
                self._note(conn, "subnet", subnet_id[0], "delete", network_id)
            self._note(conn, "network", network_id, "delete", network_id)
            conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.network_id == network_id))
            conn.execute(sa.delete(t.ports).where(t.ports.c.network_id == network_id))
            conn.execute(sa.delete(t.subnets).where(t.subnets.c.network_id == network_id))
            conn.execute(sa.delete(t.networks).where(t.networks.c.id == network_id))

        self._write(tx)

    # ---- subnets -----------------------------------------------------------------------------------------------

    def _subnets(self, conn: sa.Connection, where: Sequence[Any]) -> list[Subnet]:
        query = sa.select(t.subnets).where(*where).order_by(t.subnets.c.created_at, t.subnets.c.id)
        return [rows.subnet_from_row(r) for r in conn.execute(query)]

    def _network_subnets(self, conn: sa.Connection, network_id: str) -> list[Subnet]:
        return [rows.subnet_from_row(r) for r in conn.execute(self._network_subnets_stmt,
                                                               {"network_id": network_id})]

    def _subnet(self, conn: sa.Connection, subnet_id: str) -> Subnet:
        found = self._subnets(conn, [t.subnets.c.id == subnet_id])
        if not found:
            raise SubnetNotFound(subnet_id=subnet_id)
        return found[0]

    def _insert_subnet(self, conn: sa.Connection, clean: Mapping[str, Any]) -> Subnet:
        # lock the network row: two concurrent creates cannot both pass the overlap check
        found = conn.execute(sa.select(t.networks.c.id).where(t.networks.c.id == clean["network_id"])
                             .with_for_update(key_share=True)).first()  # FOR NO KEY UPDATE
        if found is None:
            raise NetworkNotFound(net_id=clean["network_id"])
        siblings = self._subnets(conn, [t.subnets.c.network_id == clean["network_id"]])
        subnet = build_subnet(_new_id(), clean, siblings)
        conn.execute(sa.insert(t.subnets).values(**rows.subnet_values(subnet), created_at=self.clock()))
        self._note(conn, "subnet", subnet.id, "create", subnet.network_id)
        return subnet

    def create_subnet(self, attrs: Mapping[str, Any]) -> Subnet:
        clean = parse_create("subnet", attrs)
        return self._write(lambda conn: self._insert_subnet(conn, clean))

    def get_subnet(self, subnet_id: str) -> Subnet:
        with self._read() as conn:
            return self._subnet(conn, subnet_id)

    def list_subnets(self, filters: Filters | None = None) -> list[Subnet]:
        where = rows.conditions(filters, rows.SUBNET_FILTERS)
        with self._read() as conn:
            return self._subnets(conn, where)

    def update_subnet(self, subnet_id: str, attrs: Mapping[str, Any]) -> Subnet:
        changes = parse_update("subnet", attrs)

        def tx(conn: sa.Connection) -> Subnet:
            subnet = updated_subnet(self._subnet(conn, subnet_id), changes)
            values = rows.subnet_values(subnet)
            conn.execute(sa.update(t.subnets).where(t.subnets.c.id == subnet_id).values(**values))
            self._note(conn, "subnet", subnet_id, "update", subnet.network_id)
            return subnet

        return self._write(tx)

    def delete_subnet(self, subnet_id: str) -> None:
        def tx(conn: sa.Connection) -> None:
            subnet = self._subnet(conn, subnet_id)
            held = conn.execute(
                sa.select(t.ip_allocations.c.port_id)
                .join(t.ports, t.ports.c.id == t.ip_allocations.c.port_id)
                .where(t.ip_allocations.c.subnet_id == subnet_id, t.ports.c.device_owner != DHCP_OWNER).limit(1))
            if held.first() is not None:
                raise SubnetInUse(subnet_id=subnet_id)
            holders = sa.select(t.ip_allocations.c.port_id).where(t.ip_allocations.c.subnet_id == subnet_id)
            for port in self._ports(conn, [t.ports.c.id.in_(holders)]):  # DHCP ports lose their address
                self._note_port(conn, "update", port)
            self._note(conn, "subnet", subnet_id, "delete", subnet.network_id)
            conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.subnet_id == subnet_id))
            conn.execute(sa.delete(t.subnets).where(t.subnets.c.id == subnet_id))

        self._write(tx)

    # ---- ports -------------------------------------------------------------------------------------------------

    def _port_query(self) -> sa.Select:
        a = t.ip_allocations
        return (sa.select(t.ports, a.c.subnet_id.label("alloc_subnet_id"), a.c.ip_address.label("alloc_ip"))
                .select_from(t.ports.outerjoin(a, a.c.port_id == t.ports.c.id))
                .order_by(t.ports.c.created_at, t.ports.c.id, a.c.position))

    def _ports(self, conn: sa.Connection, where: Sequence[Any]) -> list[Port]:
        return rows.ports_from_joined(conn.execute(self._port_query().where(*where)))

    def _port(self, conn: sa.Connection, port_id: str) -> Port:
        found = rows.ports_from_joined(conn.execute(self._port_stmt, {"port_id": port_id}))
        if not found:
            raise PortNotFound(port_id=port_id)
        return found[0]

    def _used_ips(self, conn: sa.Connection, subnet_id: str) -> set[str]:
        return set(conn.execute(sa.select(t.ip_allocations.c.ip_address)
                                .where(t.ip_allocations.c.subnet_id == subnet_id)).scalars())

    def _ip_taken(self, conn: sa.Connection, subnet_id: str, ip: str) -> bool:
        return conn.execute(sa.select(t.ip_allocations.c.port_id).where(
            t.ip_allocations.c.subnet_id == subnet_id, t.ip_allocations.c.ip_address == ip)).first() is not None

    def _auto_ip(self, conn: sa.Connection, subnet: Subnet, exclude: set[str]) -> str | None:
        """A free pool address: random probes checked in one indexed query, else the exhaustive way (ipam)."""
        probes = [ip for ip in ipam.probe_addresses(subnet, self._rng) if ip not in exclude]
        if probes:
            taken = set(conn.execute(self._probe_stmt, {"subnet_id": subnet.id, "ips": probes}).scalars())
            free = [ip for ip in probes if ip not in taken]
            if free:
                return self._rng.choice(free)
        return ipam.pick_ip(subnet, self._used_ips(conn, subnet.id) | exclude, self._rng)

    def _allocate(self, conn: sa.Connection, network: Network, subnets: list[Subnet], requests: list[dict] | None,
                  keep: Sequence[FixedIP] = ()) -> list[FixedIP]:
        """Fixed IPs for a port: `requests` None is automatic (one address from the first subnet with room);
        otherwise each entry names a subnet, an address or both. `keep` are the port's current addresses."""
        by_id = {s.id: s for s in subnets}
        if requests is None:
            for subnet in sorted(subnets, key=lambda s: s.ip_version):
                ip = self._auto_ip(conn, subnet, set())
                if ip is not None:
                    return [FixedIP(subnet.id, ip)]
            if subnets:
                raise IpAddressGenerationFailure(net_id=network.id)
            return []
        out: list[FixedIP] = []
        kept = list(keep)
        for req in requests:
            if "subnet_id" in req:
                subnet = by_id.get(req["subnet_id"])
                if subnet is None:
                    raise InvalidInput(error_message=f"Failed to create port on network {network.id}, because "
                                                     f"fixed_ips included invalid subnet {req['subnet_id']}")
            else:
                subnet = ipam.subnet_for_ip(subnets, req["ip_address"])
            if "ip_address" in req:
                ip = ipam.check_requested_ip(subnet, req["ip_address"])
                fixed = FixedIP(subnet.id, ip)
                if fixed in out:
                    raise IpAddressAlreadyAllocated(ip=ip, subnet_id=subnet.id)
                if fixed not in kept and self._ip_taken(conn, subnet.id, ip):
                    raise IpAddressAlreadyAllocated(ip=ip, subnet_id=subnet.id)
                out.append(fixed)
                continue
            reuse = next((f for f in kept if f.subnet_id == subnet.id and f not in out
                          and f not in [FixedIP(subnet.id, r.get("ip_address", "")) for r in requests]), None)
            if reuse is not None:
                out.append(reuse)
                continue
            ip = self._auto_ip(conn, subnet, {f.ip_address for f in out if f.subnet_id == subnet.id})
            if ip is None:
                raise IpAddressGenerationFailure(net_id=network.id)
            out.append(FixedIP(subnet.id, ip))
        return out

    def _mac(self, conn: sa.Connection, network_id: str, requested: str | None, current: str | None = None) -> str:
        def taken(mac: str) -> bool:
            return network_id in conn.execute(self._mac_networks_stmt, {"mac": mac}).scalars().all()

        if requested is not None:
            if requested != current and taken(requested):
                raise MacAddressInUse(net_id=network_id, mac=requested)
            return requested
        # a random MAC is not checked first: a clash (1 in 16M per port) trips the unique constraint, and
        # _write retries the whole transaction with a new draw
        return ipam.random_mac(self._rng)

    def _store_allocations(self, conn: sa.Connection, port: Port, replace: bool = True) -> None:
        if replace:
            conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.port_id == port.id))
        if port.fixed_ips:
            conn.execute(self._insert_alloc_stmt, [
                {"subnet_id": f.subnet_id, "ip_address": f.ip_address, "port_id": port.id,
                 "network_id": port.network_id, "position": i} for i, f in enumerate(port.fixed_ips)])

    def _agents(self, conn: sa.Connection, where: Sequence[Any]) -> list[Agent]:
        query = sa.select(t.agents).where(*where).order_by(t.agents.c.created_at, t.agents.c.id)
        return [rows.agent_from_row(r) for r in conn.execute(query)]

    def _bind(self, conn: sa.Connection, port: Port, network: Network) -> None:
        """Bind `port` in place when ML2 would (a host named, unbound or failed before)."""
        if not port.binding_host_id:
            port.binding_vif_type, port.binding_vif_details, port.binding_failure_reason = "unbound", {}, None
            return
        if not binding.needs_binding(port):
            return
        agents = self._agents(conn, [t.agents.c.host == port.binding_host_id])
        result = binding.bind_port(port, network, agents, agent_down_time=self.agent_down_time,
                                   report_interval=self.report_interval, now=self.clock())
        port.binding_vif_type = result.vif_type
        port.binding_vif_details = dict(result.vif_details)
        port.status = result.status
        port.binding_failure_reason = result.failure_reason

    @staticmethod
    def _check_port_security(port: Port) -> None:
        if not port.port_security_enabled:
            if port.security_groups:
                raise PortSecurityPortHasSecurityGroup()
            if port.allowed_address_pairs:
                raise AddressPairAndPortSecurityRequired()

    def _new_port(self, network_id: str, network_port_security: bool, clean: Mapping[str, Any]) -> Port:
        """The port a create asks for, before its MAC, addresses and binding are decided."""
        port = Port(
            id=_new_id(), network_id=network_id, mac_address="", name=clean["name"],
            description=clean["description"],
            project_id=clean["project_id"], admin_state_up=clean["admin_state_up"],
            device_id=clean["device_id"], device_owner=clean["device_owner"], status="DOWN",
            security_groups=list(clean["security_groups"]),
            port_security_enabled=(network_port_security if clean["port_security_enabled"] is None
                                   else clean["port_security_enabled"]),
            allowed_address_pairs=list(clean["allowed_address_pairs"]),
            binding_host_id=clean["binding:host_id"], binding_vnic_type=clean["binding:vnic_type"],
            binding_profile=dict(clean["binding:profile"]),
        )
        self._check_port_security(port)
        return port

    def _create_port(self, conn: sa.Connection, clean: Mapping[str, Any]) -> Port:
        network, subnets = self._network_and_subnets(conn, clean["network_id"])
        port = self._new_port(network.id, network.port_security_enabled, clean)
        port.mac_address = self._mac(conn, network.id, clean["mac_address"])
        port.fixed_ips = self._allocate(conn, network, subnets, clean["fixed_ips"])
        self._bind(conn, port, network)
        conn.execute(self._insert_port_stmt, {**rows.port_values(port), "created_at": self.clock()})
        self._store_allocations(conn, port, replace=False)
        self._note_port(conn, "create", port)
        return port

    def _create_port_one_statement(self, clean: Mapping[str, Any]) -> Port | None:
        """PostgreSQL, the common create (automatic address, random MAC, no binding): one autocommit statement,
        one round trip, using the network's cached Plan (read on first use; the statement re-checks it). None:
        take the general path instead (not eligible, the plan is stale, every probe taken, or the network went
        away: the general path reads afresh and says so exactly)."""
        if not pg_port.eligible(clean):
            return None
        network_id = clean["network_id"]
        for attempt in range(WRITE_ATTEMPTS):
            plan = self._port_plans.get(network_id) or self._port_plan(network_id)
            if plan is None:
                return None
            probes = ipam.probe_addresses(plan.subnet, self._rng)
            if not probes:
                return None
            port = self._new_port(network_id, plan.port_security_enabled, clean)
            port.mac_address = ipam.random_mac(self._rng)
            port.binding_vif_type, port.binding_vif_details, port.binding_failure_reason = "unbound", {}, None
            try:
                with self._read() as conn:
                    ip = pg_port.insert_port_with_probe(conn, rows.port_values(port), plan, probes, self.clock())
            except sa.exc.DBAPIError as exc:
                if not _retryable(exc):
                    if getattr(exc.orig, "sqlstate", None) == "23503":  # the network or subnet was deleted
                        self._port_plans.pop(network_id, None)
                        return None
                    raise
                self.write_retries += 1
                time.sleep(self._rng.uniform(0, 0.002 * (attempt + 1)))
                continue
            if ip is None:
                self._port_plans.pop(network_id, None)
                return None
            self._bell.ring()
            port.fixed_ips = [FixedIP(plan.subnet.id, ip)]
            return port
        return None

    def _port_plan(self, network_id: str) -> pg_port.Plan | None:
        """Read the network and its subnets and remember the plan for its common creates."""
        try:
            with self._read() as conn:
                network, subnets = self._network_and_subnets(conn, network_id)
        except NetworkNotFound:
            return None  # the general path raises it
        plan = pg_port.plan_for(network.port_security_enabled, subnets)
        if plan is not None:
            if len(self._port_plans) >= pg_port.MAX_PLANS:
                self._port_plans.clear()
            self._port_plans[network_id] = plan
        return plan

    def create_port(self, attrs: Mapping[str, Any]) -> Port:
        clean = parse_create("port", attrs)
        if self._one_statement_creates:
            port = self._create_port_one_statement(clean)
            if port is not None:
                return port
        return self._write(lambda conn: self._create_port(conn, clean),
                           exhausted=lambda: IpAddressGenerationFailure(net_id=clean["network_id"]))

    def get_port(self, port_id: str) -> Port:
        with self._read() as conn:
            return self._port(conn, port_id)

    def list_ports(self, filters: Filters | None = None) -> list[Port]:
        where = rows.conditions(filters, rows.PORT_FILTERS, {"fixed_ips": rows.fixed_ips_condition})
        with self._read() as conn:
            return self._ports(conn, where)

    def update_port(self, port_id: str, attrs: Mapping[str, Any]) -> Port:
        changes = parse_update("port", attrs)

        def tx(conn: sa.Connection) -> Port:
            port = self._port(conn, port_id)
            before = copy.deepcopy(port)
            network = self._network(conn, port.network_id)
            simple = {"name": "name", "description": "description", "admin_state_up": "admin_state_up",
                      "device_id": "device_id",
                      "device_owner": "device_owner", "security_groups": "security_groups",
                      "port_security_enabled": "port_security_enabled",
                      "allowed_address_pairs": "allowed_address_pairs", "binding:vnic_type": "binding_vnic_type",
                      "binding:profile": "binding_profile"}
            for key, attr in simple.items():
                if key in changes:
                    setattr(port, attr, changes[key])
            self._check_port_security(port)
            if "mac_address" in changes:
                port.mac_address = self._mac(conn, port.network_id, changes["mac_address"], port.mac_address)
            if "fixed_ips" in changes:
                port.fixed_ips = self._allocate(conn, network, self._network_subnets(conn, network.id),
                                                changes["fixed_ips"], keep=port.fixed_ips)
                self._store_allocations(conn, port)
            if "binding:host_id" in changes and changes["binding:host_id"] != port.binding_host_id:
                port.binding_host_id = changes["binding:host_id"]
                port.binding_vif_type, port.binding_vif_details, port.status = "unbound", {}, "DOWN"
            self._bind(conn, port, network)
            if port.binding_vif_type == binding.VIF_TYPE_OVS:  # a bound port is up exactly when enabled
                port.status = "ACTIVE" if port.admin_state_up else "DOWN"
            values = rows.port_values(port)
            conn.execute(sa.update(t.ports).where(t.ports.c.id == port_id).values(**values))
            self._note_port(conn, "update", before, port)
            return port

        return self._write(tx, exhausted=lambda: Conflict(
            message=f"Port {port_id} could not be updated: concurrent changes took its addresses; try again."))

    def delete_port(self, port_id: str) -> None:
        def tx(conn: sa.Connection) -> None:
            port = self._port(conn, port_id)
            if port.is_router_interface:
                raise ServicePortInUse(port_id=port_id, reason=f"has device owner {port.device_owner}")
            self._note_port(conn, "delete", port)
            conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.port_id == port_id))
            conn.execute(sa.delete(t.ports).where(t.ports.c.id == port_id))

        self._write(tx)

    # ---- routers -----------------------------------------------------------------------------------------------

    def _router(self, conn: sa.Connection, router_id: str, lock: bool = False) -> Router:
        """The router; `lock` holds its row (PostgreSQL) so interface changes and its delete serialise."""
        query = sa.select(t.routers).where(t.routers.c.id == router_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise RouterNotFound(router_id=router_id)
        return rows.router_from_row(row)

    def _interface_ports(self, conn: sa.Connection, router_id: str) -> list[Port]:
        return self._ports(conn, [t.ports.c.device_id == router_id,
                                  t.ports.c.device_owner.in_(ROUTER_INTERFACE_OWNERS)])

    def _insert_router(self, conn: sa.Connection, clean: Mapping[str, Any]) -> Router:
        router = Router(id=_new_id(), name=clean["name"], project_id=clean["project_id"],
                        admin_state_up=clean["admin_state_up"], status="ACTIVE", description=clean["description"])
        conn.execute(sa.insert(t.routers).values(
            id=router.id, name=router.name, description=router.description, project_id=router.project_id,
            admin_state_up=router.admin_state_up, status=router.status, created_at=self.clock()))
        self._note(conn, "router", router.id, "create")
        return router

    def create_router(self, attrs: Mapping[str, Any]) -> Router:
        clean = parse_create("router", attrs)
        return self._write(lambda conn: self._insert_router(conn, clean))

    def get_router(self, router_id: str) -> Router:
        with self._read() as conn:
            return self._router(conn, router_id)

    def list_routers(self, filters: Filters | None = None) -> list[Router]:
        where = rows.conditions(filters, rows.ROUTER_FILTERS)
        with self._read() as conn:
            query = sa.select(t.routers).where(*where).order_by(t.routers.c.created_at, t.routers.c.id)
            return [rows.router_from_row(r) for r in conn.execute(query)]

    def update_router(self, router_id: str, attrs: Mapping[str, Any]) -> Router:
        changes = parse_update("router", attrs)

        def tx(conn: sa.Connection) -> Router:
            self._router(conn, router_id)
            if changes:
                conn.execute(sa.update(t.routers).where(t.routers.c.id == router_id).values(**changes))
            self._note(conn, "router", router_id, "update")
            return self._router(conn, router_id)

        return self._write(tx)

    def delete_router(self, router_id: str) -> None:
        def tx(conn: sa.Connection) -> None:
            self._router(conn, router_id, lock=True)
            if self._interface_ports(conn, router_id):
                raise RouterInUse(router_id=router_id, reason="still has ports")
            self._note(conn, "router", router_id, "delete")
            l3.forget_router(conn, router_id)
            conn.execute(sa.delete(t.routers).where(t.routers.c.id == router_id))

        self._write(tx)

    @staticmethod
    def _interface_body(router: Router, port: Port, subnet_id: str | None = None) -> dict:
        subnet_ids = [f.subnet_id for f in port.fixed_ips]
        return {"id": router.id, "tenant_id": router.project_id, "project_id": router.project_id,
                "port_id": port.id, "network_id": port.network_id,
                "subnet_id": subnet_id or (subnet_ids[0] if subnet_ids else None), "subnet_ids": subnet_ids}

    def _check_interface_subnets(self, conn: sa.Connection, router: Router, subnets: Sequence[Subnet]) -> None:
        existing = self._interface_ports(conn, router.id)
        held = [self._subnet(conn, f.subnet_id) for p in existing for f in p.fixed_ips]
        for subnet in subnets:
            for other in held:
                if other.id == subnet.id:
                    raise BadRequest(resource="router", msg=f"Router already has a port on subnet {subnet.id}")
                if other.ip_version == subnet.ip_version and other.network.overlaps(subnet.network):  # type: ignore
                    raise BadRequest(resource="router", msg=(
                        f"Cidr {subnet.cidr} of subnet {subnet.id} overlaps with cidr {other.cidr} of subnet "
                        f"{other.id}"))

    def add_router_interface(self, router_id: str, subnet_id: str | None = None,
                             port_id: str | None = None) -> dict:
        if subnet_id and port_id:
            raise BadRequest(resource="router", msg="Cannot specify both subnet-id and port-id")
        if not subnet_id and not port_id:
            raise BadRequest(resource="router", msg="Either subnet_id or port_id must be specified")

        def tx(conn: sa.Connection) -> dict:
            router = self._router(conn, router_id, lock=True)
            if port_id:
                port = self._port(conn, port_id)
                if port.device_id or port.device_owner:
                    raise PortInUse(port_id=port.id, net_id=port.network_id, device_id=port.device_id)
                if not port.fixed_ips:
                    raise BadRequest(resource="router", msg="Router port must have at least one fixed IP")
                self._check_interface_subnets(conn, router, [self._subnet(conn, f.subnet_id)
                                                             for f in port.fixed_ips])
                conn.execute(sa.update(t.ports).where(t.ports.c.id == port.id).values(
                    device_id=router.id, device_owner=ROUTER_INTERFACE))
                after = copy.copy(port)
                after.device_id, after.device_owner = router.id, ROUTER_INTERFACE
                self._note_port(conn, "update", port, after)
                self._note(conn, "router", router.id, "update")
                l3.schedule(conn, router.id, self.clock(), self.agent_down_time, self._note_router)
                return self._interface_body(router, port)
            subnet = self._subnet(conn, subnet_id or "")
            if not subnet.gateway_ip:
                raise BadRequest(resource="router", msg="Subnet for router interface must have a gateway IP")
            self._check_interface_subnets(conn, router, [subnet])
            clean = parse_create("port", {
                "network_id": subnet.network_id, "project_id": router.project_id, "device_id": router.id,
                "device_owner": ROUTER_INTERFACE,
                "fixed_ips": [{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}]})
            port = self._create_port(conn, clean)
            self._note(conn, "router", router.id, "update")
            l3.schedule(conn, router.id, self.clock(), self.agent_down_time, self._note_router)
            return self._interface_body(router, port, subnet.id)

        return self._write(tx)

    def remove_router_interface(self, router_id: str, subnet_id: str | None = None,
                                port_id: str | None = None) -> dict:
        if not subnet_id and not port_id:
            raise BadRequest(resource="router", msg="Either subnet_id or port_id must be specified")

        def tx(conn: sa.Connection) -> dict:
            router = self._router(conn, router_id)
            ports = self._interface_ports(conn, router_id)
            if port_id:
                port = next((p for p in ports if p.id == port_id), None)
                if port is None:
                    raise RouterInterfaceNotFound(router_id=router_id, port_id=port_id)
                if subnet_id and subnet_id not in [f.subnet_id for f in port.fixed_ips]:
                    raise RouterInterfaceNotFoundForSubnet(router_id=router_id, subnet_id=subnet_id)
            else:
                self._subnet(conn, subnet_id or "")
                port = next((p for p in ports if subnet_id in [f.subnet_id for f in p.fixed_ips]), None)
                if port is None:
                    raise RouterInterfaceNotFoundForSubnet(router_id=router_id, subnet_id=subnet_id)
            body = self._interface_body(router, port, subnet_id)
            remaining = [f for f in port.fixed_ips if subnet_id and not port_id and f.subnet_id != subnet_id]
            self._note(conn, "router", router_id, "update")
            if remaining:
                before = copy.deepcopy(port)
                port.fixed_ips = remaining
                self._store_allocations(conn, port)
                self._note_port(conn, "update", before, port)
            else:
                self._note_port(conn, "delete", port)
                conn.execute(sa.delete(t.ip_allocations).where(t.ip_allocations.c.port_id == port.id))
                conn.execute(sa.delete(t.ports).where(t.ports.c.id == port.id))
            return body

        return self._write(tx)

    # ---- agents ------------------------------------------------------------------------------------------------

    def report_agent_state(self, host: str, agent_type: str, binary: str,
                           configurations: Mapping[str, Any]) -> Agent:
        for name, value in (("host", host), ("agent_type", agent_type), ("binary", binary)):
            if not isinstance(value, str) or not value or len(value) > 255:
                raise InvalidInput(error_message=f"{name} must be a non-empty string of at most 255 characters")
        if not isinstance(configurations, Mapping):
            raise InvalidInput(error_message="configurations must be an object")
        configs = dict(configurations)

        def tx(conn: sa.Connection) -> tuple[Agent, bool]:
            now = self.clock()
            found = self._agents(conn, [t.agents.c.host == host, t.agents.c.agent_type == agent_type])
            if found:
                agent = found[0]
                revived = not agent.is_alive(self.agent_down_time, now)
                conn.execute(sa.update(t.agents).where(t.agents.c.id == agent.id).values(
                    binary=binary, configurations=configs, heartbeat_timestamp=now,
                    **({"started_at": now} if revived else {})))
                agent_id = agent.id
                changed = revived or agent.binary != binary or agent.configurations != configs
                if changed:
                    self._note(conn, "agent", agent_id, "update")
            else:
                agent_id = _new_id()
                conn.execute(sa.insert(t.agents).values(
                    id=agent_id, host=host, agent_type=agent_type, binary=binary, topic="N/A",
                    admin_state_up=True, configurations=configs, heartbeat_timestamp=now, created_at=now,
                    started_at=now))
                self._note(conn, "agent", agent_id, "create")
                changed = True
            rebound = self._rebind_failed(conn, host)
            if agent_type == L3_AGENT_TYPE:  # the L3 agents' heartbeats drive router failover (no server timer)
                moved = l3.reschedule_from_dead(conn, now, self.agent_down_time, self._note_router)
                moved += l3.schedule_unhosted(conn, now, self.agent_down_time, self._note_router)
                rebound = rebound or bool(moved)
            return self._agents(conn, [t.agents.c.id == agent_id])[0], changed or rebound

        # a bare heartbeat (same agent, same configurations, no port re-bound) leaves the revision alone: caches
        # keyed on it (metadata agent, API, DHCP view) are not flushed every report_interval per agent
        return self._write(tx, changed=lambda result: result[1])[0]

    def _rebind_failed(self, conn: sa.Connection, host: str) -> bool:
        """ML2 retries a host's binding_failed ports when its agent reports. True: a port's binding changed."""
        failed = self._ports(conn, [t.ports.c.binding_host_id == host,
                                    t.ports.c.binding_vif_type == binding.VIF_TYPE_BINDING_FAILED])
        networks: dict[str, Network] = {}
        changed = False
        for port in failed:
            network = networks.get(port.network_id) or self._network(conn, port.network_id)
            networks[network.id] = network
            before = (port.binding_vif_type, port.binding_vif_details, port.status, port.binding_failure_reason)
            self._bind(conn, port, network)
            after = (port.binding_vif_type, port.binding_vif_details, port.status, port.binding_failure_reason)
            if after == before:
                continue
            changed = True
            self._note_port(conn, "update", port)
            conn.execute(sa.update(t.ports).where(t.ports.c.id == port.id).values(
                binding_vif_type=port.binding_vif_type, binding_vif_details=port.binding_vif_details,
                status=port.status, binding_failure_reason=port.binding_failure_reason))
        return changed

    def get_agent(self, agent_id: str) -> Agent:
        with self._read() as conn:
            found = self._agents(conn, [t.agents.c.id == agent_id])
        if not found:
            raise _AgentNotFound(id=agent_id)
        return found[0]

    def list_agents(self, filters: Filters | None = None) -> list[Agent]:
        filters = dict(filters or {})
        alive = filters.pop("alive", None)
        where = rows.conditions(filters, rows.AGENT_FILTERS)
        with self._read() as conn:
            agents = self._agents(conn, where)
        if alive is not None:
            wanted = {rows.convert_value("alive", to_boolean, v) for v in rows.filter_values({"alive": alive}, "alive")}
            now = self.clock()
            agents = [a for a in agents if a.is_alive(self.agent_down_time, now) in wanted]
        return agents

    def update_agent(self, agent_id: str, attrs: Mapping[str, Any]) -> Agent:
        changes = parse_update("agent", attrs)

        def tx(conn: sa.Connection) -> Agent:
            if not self._agents(conn, [t.agents.c.id == agent_id]):
                raise _AgentNotFound(id=agent_id)
            if changes:
                conn.execute(sa.update(t.agents).where(t.agents.c.id == agent_id).values(**changes))
            self._note(conn, "agent", agent_id, "update")
            return self._agents(conn, [t.agents.c.id == agent_id])[0]

        return self._write(tx)

    def delete_agent(self, agent_id: str) -> None:
        def tx(conn: sa.Connection) -> None:
            l3.forget_agent(conn, agent_id, self._note_router)
            if conn.execute(sa.delete(t.agents).where(t.agents.c.id == agent_id)).rowcount == 0:
                raise _AgentNotFound(id=agent_id)
            self._note(conn, "agent", agent_id, "delete")

        self._write(tx)

    # ---- L3 agent scheduling (sql_l3) ----------------------------------------------------------------------------

    @staticmethod
    def _note_router(conn: sa.Connection, router_id: str) -> None:
        conn.info["provnet_pending"].note("router", router_id, "update")

    def list_routers_on_l3_agent(self, agent_id: str) -> list[Router]:
        with self._read() as conn:
            self._agent_exists(conn, agent_id)
            return l3.routers_on_agent(conn, agent_id)

    def list_l3_agents_hosting_router(self, router_id: str) -> list[Agent]:
        with self._read() as conn:
            self._router(conn, router_id)
            return l3.agents_hosting(conn, router_id)

    def add_router_to_l3_agent(self, agent_id: str, router_id: str) -> None:
        def tx(conn: sa.Connection) -> None:
            self._router(conn, router_id, lock=True)
            self._agent_exists(conn, agent_id)
            l3.add(conn, agent_id, router_id, self._note_router)

        self._write(tx)

    def remove_router_from_l3_agent(self, agent_id: str, router_id: str) -> None:
        def tx(conn: sa.Connection) -> None:
            self._router(conn, router_id, lock=True)
            self._agent_exists(conn, agent_id)
            l3.remove(conn, agent_id, router_id, self._note_router)

        self._write(tx)

    def _agent_exists(self, conn: sa.Connection, agent_id: str) -> None:
        if not self._agents(conn, [t.agents.c.id == agent_id]):
            raise _AgentNotFound(id=agent_id)

    # ---- instances ---------------------------------------------------------------------------------------------

    def _instance(self, conn: sa.Connection, instance_id: str) -> Instance:
        row = conn.execute(sa.select(t.instances).where(t.instances.c.id == instance_id)).first()
        if row is None:
            raise InstanceNotFound(instance_id=instance_id)
        return rows.instance_from_row(row)

    def create_instance(self, attrs: Mapping[str, Any]) -> Instance:
        clean = parse_create("instance", attrs)
        clean["hostname"] = clean["hostname"] or hostname_from_name(clean["name"], clean["id"])

        def tx(conn: sa.Connection) -> Instance:
            exists = conn.execute(sa.select(t.instances.c.id).where(t.instances.c.id == clean["id"])).first()
            if exists is not None:
                raise InstanceExists(instance_id=clean["id"])
            conn.execute(sa.insert(t.instances).values(**clean, created_at=self.clock()))
            self._note(conn, "instance", clean["id"], "create")
            return self._instance(conn, clean["id"])

        return self._write(tx)

    def get_instance(self, instance_id: str) -> Instance:
        with self._read() as conn:
            return self._instance(conn, instance_id)

    def list_instances(self, filters: Filters | None = None) -> list[Instance]:
        where = rows.conditions(filters, rows.INSTANCE_FILTERS)
        with self._read() as conn:
            query = sa.select(t.instances).where(*where).order_by(t.instances.c.created_at, t.instances.c.id)
            return [rows.instance_from_row(r) for r in conn.execute(query)]

    def update_instance(self, instance_id: str, attrs: Mapping[str, Any]) -> Instance:
        changes = parse_update("instance", attrs)

        def tx(conn: sa.Connection) -> Instance:
            current = self._instance(conn, instance_id)
            if "hostname" in changes and not changes["hostname"]:  # "" means: derive it from the name again
                changes["hostname"] = hostname_from_name(changes.get("name", current.name), instance_id)
            if changes:
                conn.execute(sa.update(t.instances).where(t.instances.c.id == instance_id).values(**changes))
            self._note(conn, "instance", instance_id, "update")
            return self._instance(conn, instance_id)

        return self._write(tx)

    def delete_instance(self, instance_id: str) -> None:
        def tx(conn: sa.Connection) -> None:
            if conn.execute(sa.delete(t.instances).where(t.instances.c.id == instance_id)).rowcount == 0:
                raise InstanceNotFound(instance_id=instance_id)
            self._note(conn, "instance", instance_id, "delete")

        self._write(tx)

    def get_instance_password(self, instance_id: str) -> str | None:
        with self._read() as conn:
            return self._instance(conn, instance_id).password

    def set_instance_password(self, instance_id: str, password: str) -> None:
        if not isinstance(password, str):
            raise InvalidInput(error_message="password must be a string")

        def tx(conn: sa.Connection) -> None:
            done = conn.execute(sa.update(t.instances).where(
                t.instances.c.id == instance_id, t.instances.c.password.is_(None)).values(password=password))
            if done.rowcount == 0:
                self._instance(conn, instance_id)  # 404 when it does not exist
                raise Conflict(message=f"The password of instance {instance_id} is already set.")
            self._note(conn, "instance", instance_id, "update")

        self._write(tx)

    # ---- hot-path lookups --------------------------------------------------------------------------------------

    def router_network_ids(self, router_id: str) -> list[str]:
        with self._read() as conn:
            return sorted(conn.execute(self._router_nets_stmt, {"router_id": router_id}).scalars())

    def find_ports_by_ip(self, ip_address: str, network_ids: Sequence[str]) -> list[Port]:
        if not network_ids:
            return []
        stmt = self._by_ip_stmts.get(len(network_ids))
        if stmt is None:
            stmt = self._by_ip_stmts[len(network_ids)] = self._by_ip_query(len(network_ids))
        params = {"ip": ip_address, **{f"n{i}": nid for i, nid in enumerate(network_ids)}}
        with self._read() as conn:
            return rows.ports_from_joined(conn.execute(stmt, params))

    def _by_ip_query(self, count: int) -> sa.Select:
        """Lookup by IP on `count` networks, with plain (not "expanding") parameters: no per-call SQL rendering."""
        a = t.ip_allocations
        holders = sa.select(a.c.port_id).where(
            a.c.ip_address == sa.bindparam("ip"), a.c.network_id.in_([sa.bindparam(f"n{i}") for i in range(count)]))
        return self._port_query().where(t.ports.c.id.in_(holders))

    def reservation_rows(self, network_ids: Sequence[str], port_ids: Sequence[str] | None = None
                         ) -> list[ReservationRow]:
        with self._read() as conn:
            return sql_reservations.reservation_rows(conn, network_ids, port_ids)

    def find_ports_by_mac(self, mac_address: str, network_ids: Sequence[str] | None = None) -> list[Port]:
        with self._read() as conn:
            ports = rows.ports_from_joined(conn.execute(self._by_mac_stmt, {"mac": mac_address.lower()}))
        return ports if network_ids is None else [port for port in ports if port.network_id in network_ids]


__all__ = ["SqlRegistry"]
