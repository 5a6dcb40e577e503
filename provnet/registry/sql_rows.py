# Rows <-> resources and API list filters -> SQL conditions, all derived from the declared attributes (SPECS).
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from provnet.model.errors import HTTPBadRequest
from provnet.model.forms import stored_attrs
from provnet.model.resources import Agent, FixedIP, Instance, Network, Port, Router, Subnet
from provnet.model.validation import INT32, INT64, SPECS, Invalid, to_boolean, to_int, to_text
from provnet.registry import schema as t

TABLES: dict[str, sa.Table] = {"network": t.networks, "subnet": t.subnets, "port": t.ports, "router": t.routers,
                               "agent": t.agents, "instance": t.instances}
CLASSES: dict[str, type] = {"network": Network, "subnet": Subnet, "port": Port, "router": Router, "agent": Agent,
                            "instance": Instance}
Column = sa.ColumnElement
# filter key -> (column, converter of one query-string value)
FilterMap = Mapping[str, tuple[Column, Callable[[Any], Any]]]


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _column_converter(column: sa.Column) -> Callable[[Any], Any] | None:
    """How a query-string value for this column is converted; None: not a filter (JSON, bytes, times)."""
    kind = column.type
    if isinstance(kind, sa.Boolean):
        return to_boolean
    if isinstance(kind, sa.Integer):  # checked against the column's range before it reaches SQL
        bounds = INT64 if isinstance(kind, sa.BigInteger) else INT32
        return lambda value: to_int(value, bounds)
    if isinstance(kind, sa.String) and not isinstance(kind, sa.JSON):
        return to_text
    return None


class RowMap:
    """One kind's table as its declared attributes map onto it: row values, resources from rows, filters."""

    def __init__(self, kind: str) -> None:
        table = TABLES[kind]
        self.kind, self.table, self.cls = kind, table, CLASSES[kind]
        names = [c.name for c in table.c]
        self.fields: list[tuple[str, int, Callable[[Any], Any] | None]] = []  # (field, position in the row, loader)
        self._dumps: list[tuple[str, Callable[[Any], Any] | None]] = []  # (field, dumper) of every stored field
        for _name, attr in stored_attrs(kind):
            field = attr.field
            if not field or field not in table.c:
                continue
            column = table.c[field]
            loader = None
            if isinstance(column.type, sa.JSON):
                loader = attr.load
                self._dumps.append((field, attr.dump))
            else:
                self._dumps.append((field, None))
                if isinstance(column.type, sa.DateTime):
                    loader = utc
            self.fields.append((field, names.index(field), loader))
        for extra in dataclasses.fields(self.cls):  # kept but not an API attribute (an instance's password)
            if extra.init and extra.name in table.c and extra.name not in [f for f, _, _ in self.fields]:
                self._dumps.append((extra.name, None))
                self.fields.append((extra.name, names.index(extra.name),
                                    utc if isinstance(table.c[extra.name].type, sa.DateTime) else None))
        self.filters: dict[str, tuple[sa.Column[Any], Callable[[Any], Any]]] = {}
        for name, attr in SPECS[kind].items():
            if not attr.field or attr.field not in table.c or attr.filter is False:
                continue
            convert = attr.filter if callable(attr.filter) else _column_converter(table.c[attr.field])
            if convert is not None:
                self.filters[name] = (table.c[attr.field], convert)

    def values(self, obj: Any) -> dict:
        """The row of `obj` (JSON columns hold the attribute's API form)."""
        out = {}
        for field, dump in self._dumps:
            value = getattr(obj, field)
            out[field] = dump(value) if dump is not None and value is not None else value
        return out

    def load(self, row: Sequence[Any], **extra: Any) -> Any:
        """The resource a row (table columns first, in table order) holds; `extra`: fields not in the table."""
        kwargs = {}
        for field, index, loader in self.fields:
            value = row[index]
            kwargs[field] = loader(value) if loader is not None and value is not None else value
        return self.cls(**kwargs, **extra)


MAPS: dict[str, RowMap] = {kind: RowMap(kind) for kind in TABLES}


def ports_from_joined(rows: Iterable[Any]) -> list[Port]:
    """Rows of ports LEFT JOIN ip_allocations (ordered by port, then position) -> ports with their fixed IPs."""
    out: dict[str, Port] = {}
    load = MAPS["port"].load
    for row in rows:
        port = out.get(row.id)
        if port is None:
            port = out[row.id] = load(row, fixed_ips=[])
        if row.alloc_ip is not None:
            port.fixed_ips.append(FixedIP(row.alloc_subnet_id, row.alloc_ip))
    return list(out.values())


# ---- filters ---------------------------------------------------------------------------------------------------

def filter_values(filters: Mapping[str, Any], key: str) -> list:
    raw = filters[key]
    return list(raw) if isinstance(raw, list | tuple) else [raw]


def convert_value(key: str, convert: Callable[[Any], Any], value: Any) -> Any:
    try:
        return convert(value)
    except Invalid as exc:
        raise HTTPBadRequest(msg=f"Invalid input for {key}. Reason: {exc}.") from None


def check_filter_keys(filters: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(filters) - set(allowed))
    if unknown:
        raise HTTPBadRequest(msg=f"{unknown} is invalid attribute for filtering")


def conditions(filters: Mapping[str, Any] | None, fmap: FilterMap,
               special: Mapping[str, Callable[[list], Column]] | None = None,
               extra_keys: Sequence[str] = ()) -> list[Column]:
    """SQL conditions for `filters`: values of one key are OR'ed (IN), keys AND'ed. Unknown key -> 400."""
    if not filters:
        return []
    special = special or {}
    check_filter_keys(filters, [*fmap, *special, *extra_keys])
    out: list[Column] = []
    for key in filters:
        if key in extra_keys:
            continue
        values = filter_values(filters, key)
        if key in special:
            out.append(special[key](values))
            continue
        column, convert = fmap[key]
        out.append(column.in_([convert_value(key, convert, v) for v in values]))
    return out


def fixed_ips_condition(values: list) -> Column:
    """`fixed_ips=ip_address=X&fixed_ips=subnet_id=Y`: ports with an allocation having one of the IPs (if any
    given) on one of the subnets (if any given), as Neutron's port query does."""
    ips: list[str] = []
    subnet_ids: list[str] = []
    for value in values:
        pairs = value.items() if isinstance(value, dict) else [str(value).partition("=")[::2]]
        for key, val in pairs:
            if key == "ip_address":
                ips.append(convert_value("fixed_ips", to_text, val))
            elif key == "subnet_id":
                subnet_ids.append(convert_value("fixed_ips", to_text, val))
            else:
                raise HTTPBadRequest(msg=f"Invalid input for fixed_ips. Reason: '{value}' is not of the form "
                                         f"ip_address=IP or subnet_id=ID.")
    sub = sa.select(t.ip_allocations.c.port_id)
    if ips:
        sub = sub.where(t.ip_allocations.c.ip_address.in_(ips))
    if subnet_ids:
        sub = sub.where(t.ip_allocations.c.subnet_id.in_(subnet_ids))
    return t.ports.c.id.in_(sub)


def network_subnets_condition(values: list) -> Column:
    """`subnets=<id>`: networks holding that subnet."""
    ids = [convert_value("subnets", to_text, v) for v in values]
    return t.networks.c.id.in_(sa.select(t.subnets.c.network_id).where(t.subnets.c.id.in_(ids)))


# filters that are not a column of the kind's table
SPECIAL_FILTERS: dict[str, dict[str, Callable[[list], Column]]] = {
    "network": {"subnets": network_subnets_condition}, "port": {"fixed_ips": fixed_ips_condition},
}


# ---- sorting and keyset pagination -----------------------------------------------------------------------------

SORT_NULLS: dict[type, Any] = {sa.String: "", sa.Integer: -(2**31)}  # what a null sorts as (first, ascending)


def _sortable(column: sa.Column[Any]) -> Column:
    """The column as it sorts: a nullable one with nulls as the least value, so keyset comparisons hold."""
    if not column.nullable:
        return column
    for kind, least in SORT_NULLS.items():
        if isinstance(column.type, kind):
            return sa.func.coalesce(column, sa.literal(least, column.type))
    return column


def sort_order(kind: str, sort: Sequence[tuple[str, bool]]) -> list[tuple[Column, bool]]:
    """The ORDER BY of a list: the requested (attribute, ascending) keys, then the id (a total order); none
    requested: creation order. A key that is not a sortable attribute is Neutron's 400."""
    rmap = MAPS[kind]
    unknown = [key for key, _ in sort if key not in rmap.filters]
    if unknown:
        raise HTTPBadRequest(msg=f"{unknown} is invalid attribute for sort_keys")
    table = rmap.table
    if not sort:
        return [(table.c.created_at, True), (table.c.id, True)]
    order = [(_sortable(rmap.filters[key][0]), ascending) for key, ascending in sort]
    if not any(key == "id" for key, _ in sort):
        order.append((table.c.id, True))
    return order


def after(order: Sequence[tuple[Column, bool]], marker: tuple) -> Column:
    """Rows that come after the marker row (its values of the order's columns) in `order`: one row-value
    comparison when every key goes the same way (an index range), else Neutron's chain of ORs."""
    params = [sa.bindparam(None, value, type_=column.type) for (column, _), value in zip(order, marker, strict=True)]
    if len({ascending for _, ascending in order}) == 1:
        left, right = sa.tuple_(*[c for c, _ in order]), sa.tuple_(*params)
        return left > right if order[0][1] else left < right
    alternatives = []
    for i, (column, ascending) in enumerate(order):
        equal = [c == p for (c, _), p in zip(order[:i], params[:i], strict=True)]
        alternatives.append(sa.and_(*equal, column > params[i] if ascending else column < params[i]))
    return sa.or_(*alternatives)
