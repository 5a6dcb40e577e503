# Output as the neutron CLI printed it (field/value tables, column tables), or as JSON or bare values. Pure.
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

FORMATS = ("table", "json", "value")


class OutputError(ValueError):
    """A bad -f/-c choice; the CLI turns it into a usage error."""


def cell(value: Any) -> str:
    """One value as text: lists one item per line, dicts as JSON, booleans True/False, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True) if value else ""
    if isinstance(value, list | tuple):
        return "\n".join(cell(v) if not isinstance(v, Mapping) else json.dumps(v) for v in value)
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A prettytable-style grid; a multi-line cell spreads over several lines of its row."""
    split = [[c.split("\n") if c else [""] for c in row] for row in rows]
    widths = [len(h) for h in header]
    for row in split:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in lines))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [rule, line(header), rule]
    for row in split:
        height = max(len(lines) for lines in row)
        for k in range(height):
            out.append(line([lines[k] if k < len(lines) else "" for lines in row]))
    out.append(rule)
    return "\n".join(out)


def select(columns: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The -c choices, checked against what exists."""
    if not wanted:
        return list(columns)
    unknown = [c for c in wanted if c not in columns]
    if unknown:
        raise OutputError(f"no such column(s): {', '.join(unknown)} (choose from: {', '.join(columns)})")
    return list(wanted)


def format_one(obj: Mapping[str, Any], fmt: str = "table", wanted: Sequence[str] = ()) -> str:
    """A show/create result: a Field/Value table sorted by field, a JSON object, or one value per line."""
    columns = select(sorted(obj), wanted)
    if fmt == "json":
        return json.dumps({c: obj[c] for c in columns}, indent=2, sort_keys=True)
    if fmt == "value":
        return "\n".join(cell(obj[c]) for c in columns)
    if fmt == "table":
        return table(("Field", "Value"), [(c, cell(obj[c])) for c in columns])
    raise OutputError(f"unknown format {fmt!r} (choose from: {', '.join(FORMATS)})")


def format_many(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str = "table",
                wanted: Sequence[str] = ()) -> str:
    """A list result: a column table, a JSON list of objects, or one space-separated line per row."""
    columns = select(columns, wanted)
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=2, sort_keys=True)
    if fmt == "value":
        return "\n".join(" ".join(cell(r.get(c)).replace("\n", " ") for c in columns) for r in rows)
    if fmt == "table":
        return table(columns, [[cell(r.get(c)) for c in columns] for r in rows]) if rows else ""
    raise OutputError(f"unknown format {fmt!r} (choose from: {', '.join(FORMATS)})")
