# oslo.config's INI dialect, read for diagnosis: every assignment with its file and line, repeats kept.
"""The dialect OpenStack services read (oslo.config's iniparser), as the services see it:

- `[section]` headers; section names other than DEFAULT are case-insensitive (lower-cased);
- `key = value` or `key: value`, whichever separator comes first; surrounding quotes of the value stripped;
- lines starting with `#` or `;` are comments; an inline `#` is part of the value (oslo does not strip it);
- a line starting with a space or tab continues the previous value (joined with a newline);
- a key given twice: the later one wins for ordinary options (both are kept here, so a check can say so).

Parse problems do not stop the reading: they become `problems` (file, line, message) for a finding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Location:
    """Where a value was written: a file and a 1-based line (line 0 when the whole file or a default)."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class Entry:
    section: str
    key: str
    value: str
    where: Location


@dataclass
class IniFile:
    path: str
    entries: list[Entry] = field(default_factory=list)
    sections: dict[str, Location] = field(default_factory=dict)
    problems: list[tuple[Location, str]] = field(default_factory=list)

    def all(self, section: str, key: str) -> list[Entry]:
        section = _norm_section(section)
        return [e for e in self.entries if e.section == section and e.key == key]

    def get(self, section: str, key: str) -> Entry | None:
        """The entry oslo uses: the last assignment of the key in the section."""
        found = self.all(section, key)
        return found[-1] if found else None

    def repeated(self) -> list[list[Entry]]:
        """Keys assigned more than once in one section, each as its list of assignments in file order."""
        groups: dict[tuple[str, str], list[Entry]] = {}
        for e in self.entries:
            groups.setdefault((e.section, e.key), []).append(e)
        return [g for g in groups.values() if len(g) > 1]


def _norm_section(name: str) -> str:
    return name if name == "DEFAULT" else name.lower()


def parse_ini(text: str, path: str, first_line: int = 1) -> IniFile:
    """Parse `text` as oslo does; `first_line` is the file line of text's first line (for embedded blocks)."""
    ini = IniFile(path)
    section: str | None = None
    pending: tuple[str, list[str], int] | None = None  # key, value lines, line number

    def flush() -> None:
        nonlocal pending
        if pending is None:
            return
        key, lines, lineno = pending
        pending = None
        if section is None:
            ini.problems.append((Location(path, lineno), f"{key!r} is set before any [section] header"))
            return
        ini.entries.append(Entry(section, key, "\n".join(lines), Location(path, lineno)))

    for offset, raw in enumerate(text.splitlines()):
        lineno = first_line + offset
        line = raw.rstrip()
        if not line:
            flush()
            continue
        if line[0] in " \t":
            if pending is None:
                ini.problems.append((Location(path, lineno), "indented line continues nothing (oslo rejects it)"))
            else:
                pending[1].append(line.lstrip())
            continue
        flush()
        if line.startswith("["):
            if not line.endswith("]") or len(line) <= 2:
                ini.problems.append((Location(path, lineno), f"invalid section header {line!r}"))
                continue
            section = _norm_section(line[1:-1])
            ini.sections.setdefault(section, Location(path, lineno))
        elif line.startswith(("#", ";")):
            continue
        else:
            key, value = _split(line)
            if key is None:
                ini.problems.append((Location(path, lineno), f"no '=' or ':' in {line!r}"))
            elif not key:
                ini.problems.append((Location(path, lineno), f"empty key in {line!r}"))
            else:
                pending = (key, [value], lineno)
    flush()
    return ini


def _split(line: str) -> tuple[str | None, str]:
    colon, equal = line.find(":"), line.find("=")
    if colon < 0 and equal < 0:
        return None, ""
    cut = equal if colon < 0 or (0 <= equal < colon) else colon
    key, value = line[:cut].strip(), line[cut + 1:].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return key, value


def read_ini(path: str | Path) -> IniFile:
    """Read a file; an unreadable file is an IniFile with one problem, never an exception."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        ini = IniFile(str(path))
        ini.problems.append((Location(str(path)), f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
        return ini
    return parse_ini(text, str(path))


def split_list(value: str) -> list[str]:
    """oslo ListOpt: comma-separated, items stripped, empty items dropped."""
    return [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]


def parse_bool(value: str) -> bool | None:
    """oslo BoolOpt's accepted spellings; None when oslo would refuse the value."""
    text = value.strip().lower()
    if text in ("true", "1", "on", "yes"):
        return True
    if text in ("false", "0", "off", "no"):
        return False
    return None
