# The lease journal: append-only text file of lease events, fsync batched on a timer, compacted when it grows.
#
# Guarantee: the service sends an ACK only after os.write() of its journal line has returned, so the line is in the
# kernel's page cache: every acknowledged lease survives kill -9 (or any crash) of the provnet process. Against a
# kernel crash or power loss, fdatasync runs at most `sync_interval` seconds (default 0.1) after a write, so at most
# the ACKs of that last interval (plus the fsync's own duration) can be lost. Nothing is ever rewritten in place:
# compaction writes the live leases to a new file, fsyncs it and renames it over the journal.
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

JOURNAL_NAME = "dhcp-leases.journal"
FIELDS = 7  # time, state, expires, ip, mac, port_id, hostname


@dataclass(frozen=True)
class LeaseRecord:
    time: int
    state: str  # ack | release | decline
    expires: int
    ip: str
    mac: str
    port_id: str
    hostname: str

    def line(self) -> str:
        return f"{self.time}\t{self.state}\t{self.expires}\t{self.ip}\t{self.mac}\t{self.port_id}\t{self.hostname}\n"


def parse_line(line: str) -> LeaseRecord | None:
    """One journal line, or None for a torn or foreign line (a power loss can leave the last one incomplete)."""
    if not line.endswith("\n"):
        return None
    parts = line[:-1].split("\t")
    if len(parts) != FIELDS or parts[1] not in ("ack", "release", "decline"):
        return None
    try:
        return LeaseRecord(int(parts[0]), parts[1], int(parts[2]), parts[3], parts[4], parts[5], parts[6])
    except ValueError:
        return None


def replay(text: str) -> dict[str, LeaseRecord]:
    """Latest event per IP address, in journal order."""
    leases: dict[str, LeaseRecord] = {}
    for line in text.splitlines(keepends=True):
        rec = parse_line(line)
        if rec is not None:
            leases[rec.ip] = rec
    return leases


def read_journal(path: str | os.PathLike[str]) -> dict[str, LeaseRecord]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    return replay(text)


class LeaseJournal:
    """Append lease lines; `sync()` on a timer makes them durable; `maybe_compact()` bounds the file's size."""

    def __init__(self, path: str | os.PathLike[str], compact_min_lines: int = 50_000) -> None:
        self.path = Path(path)
        self.compact_min_lines = compact_min_lines
        self.leases: dict[str, LeaseRecord] = {}
        self._fd = -1
        self._dirty = False
        self._lines = 0  # lines in the file

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = self.path.read_text(encoding="utf-8", errors="replace") if self.path.exists() else ""
        self.leases = replay(text)
        self._lines = text.count("\n")
        if text and not text.endswith("\n"):  # a torn last line: end it so the next append starts clean
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("\n")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, records: list[LeaseRecord]) -> None:
        """Append records with one write(2); returns once they are in the page cache (then the ACKs may go out)."""
        data = "".join(r.line() for r in records).encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        for r in records:
            self.leases[r.ip] = r
        self._dirty = True
        self._lines += len(records)

    def sync(self) -> bool:
        """fdatasync if anything was written since the last sync; True if it synced."""
        if not self._dirty or self._fd < 0:
            return False
        self._dirty = False
        os.fdatasync(self._fd)
        return True

    def needs_compaction(self) -> bool:
        return self._lines > max(self.compact_min_lines, 4 * len(self.leases))

    def compact(self, now: float | None = None) -> None:
        """Rewrite the journal as its live leases (acks not yet expired): new file, fsync, rename, fsync dir."""
        now = time.time() if now is None else now
        live = {ip: r for ip, r in self.leases.items() if r.state == "ack" and r.expires > now}
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(r.line() for r in live.values())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        old, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        if old >= 0:
            os.close(old)
        self.leases = live
        self._lines = len(live)
        self._dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1
