# One doctor finding (severity, check id, where, what is wrong, what a user sees, the exact fix) and its renderings.
from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass

from provnet.doctor.ini import Location

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


def render_json(findings: list[Finding]) -> str:
    return json.dumps([f.to_dict() for f in sorted(findings, key=sort_key)], indent=2)


def render_table(findings: list[Finding], width: int = 110) -> str:
    """A block per finding; a summary line at the end. Plain text, fit for a terminal and a ticket."""
    if not findings:
        return "no problems found"
    out: list[str] = []
    for f in sorted(findings, key=sort_key):
        out.append(f"{f.severity.upper():7} {f.check:30} {f.location}")
        for label, text in (("problem", f.problem), ("symptom", f.symptom), ("fix", f.fix)):
            wrapped = textwrap.wrap(text, width=width - 18) or [""]
            out.append(f"        {label + ':':9} {wrapped[0]}")
            out.extend(f"                  {line}" for line in wrapped[1:])
        out.append("")
    counts = {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES}
    out.append(", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items()))
    return "\n".join(out)
