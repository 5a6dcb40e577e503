# Output as the neutron/openstack CLIs print it (field/value tables, column tables), or JSON, YAML, CSV or bare
# values; `-f`/`-c` with the same names on every verb that prints records. Formatting is pure.
from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import click
import yaml

FORMATS = ("table", "json", "value", "yaml", "csv")


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


def select(columns: Sequence[str], wanted: Sequence[str], available: Iterable[str] | None = None) -> list[str]:
    """The -c choices (any of `available`, default `columns`), or `columns` when none were given."""
    if not wanted:
        return list(columns)
    known = set(columns) | set(available or ())
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise OutputError(f"no such column(s): {', '.join(unknown)} (choose from: {', '.join(sorted(known))})")
    return list(dict.fromkeys(wanted))


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=True, allow_unicode=True).rstrip("\n")


def _csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().rstrip("\n")


def _unknown(fmt: str) -> OutputError:
    return OutputError(f"unknown format {fmt!r} (choose from: {', '.join(FORMATS)})")


def format_one(obj: Mapping[str, Any], fmt: str = "table", wanted: Sequence[str] = ()) -> str:
    """A show/create result: a Field/Value table sorted by field, a JSON or YAML object, one value per line, or a
    CSV header and row."""
    columns = select(sorted(obj), wanted)
    if fmt == "json":
        return json.dumps({c: obj[c] for c in columns}, indent=2, sort_keys=True)
    if fmt == "yaml":
        return _yaml({c: obj[c] for c in columns})
    if fmt == "value":
        return "\n".join(cell(obj[c]) for c in columns)
    if fmt == "csv":
        return _csv(columns, [[cell(obj[c]) for c in columns]])
    if fmt == "table":
        return table(("Field", "Value"), [(c, cell(obj[c])) for c in columns])
    raise _unknown(fmt)


def format_many(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str = "table",
                wanted: Sequence[str] = ()) -> str:
    """A list result: a column table, a JSON or YAML list of objects, one space-separated line per row, or CSV.
    -c may name any field the rows have, not only the default `columns` (as the openstack CLI)."""
    columns = select(columns, wanted, (key for r in rows for key in r))
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=2, sort_keys=True)
    if fmt == "yaml":
        return _yaml([{c: r.get(c) for c in columns} for r in rows]) if rows else "[]"
    if fmt == "value":
        return "\n".join(" ".join(cell(r.get(c)).replace("\n", " ") for c in columns) for r in rows)
    if fmt == "csv":
        return _csv(columns, [[cell(r.get(c)) for c in columns] for r in rows])
    if fmt == "table":
        return table(columns, [[cell(r.get(c)) for c in columns] for r in rows]) if rows else ""
    raise _unknown(fmt)


def output_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """-f/--format and -c/--column, the same on every verb that prints records (passed as `fmt` and `columns`)."""
    fn = click.option("-c", "--column", "columns", multiple=True, metavar="FIELD",
                      help="Show only this field (repeatable); any field, not only the default columns.")(fn)
    return click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output format.")(fn)


def echo_one(obj: Mapping[str, Any], fmt: str, columns: Sequence[str]) -> None:
    """Print one record, a bad -c being a usage error (exit 2)."""
    try:
        click.echo(format_one(obj, fmt, columns))
    except OutputError as exc:
        raise click.UsageError(str(exc)) from None


def echo_many(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str, wanted: Sequence[str],
              empty: str = "") -> None:
    """Print records; with none, a table prints nothing on stdout and `empty` (what and where) on stderr."""
    try:
        text = format_many(rows, columns, fmt, wanted)
    except OutputError as exc:
        raise click.UsageError(str(exc)) from None
    if text:
        click.echo(text)
    elif empty and fmt == "table":
        click.echo(empty, err=True)
