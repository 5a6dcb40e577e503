# One doctor finding (severity, check id, where, what is wrong, what a user sees, the exact fix) and its renderings.
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from provnet.doctor.ini import Location
from provnet.doctor.inputs import Source

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    check: str  # stable id, e.g. "agent.down-time"
    where: Location | None  # file and line; None for the live registry
    problem: str  # what is wrong
    symptom: str  # what a user would see
    fix: str  # the exact change

    @property
    def location(self) -> str:
        return str(self.where) if self.where else "registry"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("where")
        d["file"] = self.where.file if self.where else None
        d["line"] = self.where.line if self.where and self.where.line else None
        d["location"] = self.location
        return d


def sort_key(f: Finding) -> tuple:
    return (SEVERITIES.index(f.severity), f.check, f.location)


def has_error(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def _status(s: Source) -> str:
    if s.failed:
        return f"not read: {s.unread}" if s.unread else "not read (see config.parse)"
    if s.checks:
        return "checked"
    return "not understood" if s.unread else "not checked"


def _inputs_rows(sources: Sequence[Source]) -> list[dict]:
    return [{"input": s.label, "read_as": s.kind, "holds": s.held, "status": _status(s), "checks": len(s.checks),
             "check_names": sorted(s.checks)} for s in sources]


def render_json(findings: list[Finding], sources: Sequence[Source] = ()) -> str:
    """{"findings": [...], "inputs": [...]}: the findings, then what was read and how many checks ran on each."""
    return json.dumps({"findings": [f.to_dict() for f in sorted(findings, key=sort_key)],
                       "inputs": _inputs_rows(sources)}, indent=2)


def terminal_width(default: int = 110) -> int:
    """$COLUMNS, else the terminal's width, else `default`; never below 60."""
    return max(60, shutil.get_terminal_size((default, 24)).columns)


_WORD = re.compile(r"(?:`[^`]*`|[^\s`])+|`[^`]*$")  # a run of non-space text, `code spans` (spaces and all) inside


def wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width` characters, broken only at spaces: never inside a word (a hyphenated option, a
    path) nor inside a `code span` (a command line). A code span too long for any line gets a line of its own,
    without its backquotes so that it copies cleanly, however long it is."""
    return [line for line, _ in _wrap(text, width)]


def _wrap(text: str, width: int) -> list[tuple[str, bool]]:
    """wrap()'s lines, each with whether it is a command standing alone."""
    lines: list[tuple[str, bool]] = []
    line = ""

    def put(word: str) -> None:
        nonlocal line
        if line and len(line) + 1 + len(word) > width:
            lines.append((line, False))
            line = ""
        line = f"{line} {word}" if line else word

    for word in _WORD.findall(text):
        m = re.fullmatch(r"([^`]*)`([^`]*)`([^`]*)", word)
        if len(word) <= width or m is None:
            put(word)
            continue
        before, code, after = m.groups()
        if before:
            put(before)
        if line:
            lines.append((line, False))
        lines.append((code, True))
        line = after
    if line:
        lines.append((line, False))
    return lines or [("", False)]


def render_table(findings: list[Finding], sources: Sequence[Source] = (), width: int | None = None) -> str:
    """A block per finding, a summary line, then the inputs read and how many checks ran on each. Plain text, fit
    for a terminal (`width`: $COLUMNS or the terminal's) and a ticket; command lines are never broken."""
    width = width or terminal_width()
    out: list[str] = []
    for f in sorted(findings, key=sort_key):
        out.append(f"{f.severity.upper():7} {f.check:30} {f.location}")
        for label, text in (("problem", f.problem), ("symptom", f.symptom), ("fix", f.fix)):
            wrapped = _wrap(text, width - 18)
            if wrapped[0][1]:  # a command first: on a line of its own, so that it copies without the label
                wrapped.insert(0, ("", False))
            out.append(f"        {label + ':':9} {wrapped[0][0]}".rstrip())
            out.extend(f"                  {line}" for line, _ in wrapped[1:])
        out.append("")
    if findings:
        counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
        out.append(", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items()))
    else:
        out.append("no problems found")
    if sources:
        out += ["", "inputs read (checks that ran on each):"]
        rows = _inputs_rows(sources)
        w = max(len(r["input"]) for r in rows)  # paths are never cut: they are what an operator copies
        k = max(len(r["read_as"]) for r in rows)
        for r in rows:
            status = r["status"]
            if not status.startswith("not read"):
                n = r["checks"]
                status = f"{n} check{'s' if n != 1 else ''}" + ("" if n else f" ({status})")
            out.append(f"  {r['input']:<{w}}  {r['read_as']:<{k}}  {status}")
    return "\n".join(out)
