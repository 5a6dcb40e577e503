# The lease journal: framed records (length + CRC-32) appended before each ACK, torn tails cut, compaction by rename.
"""File format (version 2): one record per line,

    L2 <length> <crc32> <payload>\\n

`payload` is a JSON object (ASCII only, no spaces outside strings, never a newline), `length` its size in bytes
in decimal, `crc32` the CRC-32 of `<length> <payload>` in 8 lowercase hex digits. A record counts only when all of
it is there and its checksum matches, so a write torn by a full disk or a crash, or a flipped bit, costs exactly
the damaged record: replay skips it and picks up at the next record (at the next line start or the next `L2 `,
so a damaged newline hides nothing). The format before version 2 (tab-separated lines, no checksum) is still
read, and the server rewrites such a file in version 2 when it opens it.

Guarantees. The service sends an ACK only after os.write() of its record has returned, so the record is in the
kernel's page cache: every acknowledged lease survives kill -9 of the provnet process. Against a kernel crash or
power loss, fdatasync runs at most `sync_interval` seconds (default 0.1) after a write, so at most the ACKs of that
last interval can be lost. When a write fails (ENOSPC, EIO), whatever part of it reached the file is cut off again
(ftruncate back to the end of the last whole record) before anything else is appended, the ACKs of that batch are
withheld by the caller, and one line is logged per outage, not per packet. Nothing is rewritten in place:
compaction writes the live leases to a new file, fsyncs it, renames it over the journal and fsyncs the directory.
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import json
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

JOURNAL_NAME = "dhcp-leases.journal"
MAGIC = b"L2 "
STATES = ("ack", "release", "decline")
_HEADER = re.compile(rb"L2 ([0-9]{1,6}) ([0-9a-f]{8}) ")
_MAX_PAYLOAD = 1 << 16  # a record is a few hundred bytes; a larger length field is damage
_MAX_TIME = 1 << 36  # seconds since 1970: beyond year 4000 a time field is damage
_LEGACY_FIELDS = 7  # version 1: time, state, expires, ip, mac, port_id, hostname, tab-separated


@dataclass(frozen=True)
class LeaseRecord:
    time: int
    state: str  # ack | release | decline
    expires: int
    ip: str
    mac: str
    port_id: str
    hostname: str

    def encode(self) -> bytes:
        """This record framed as one journal line."""
        text = f"{self.state}{self.ip}{self.mac}{self.port_id}{self.hostname}"
        if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
            # the usual case (addresses, a uuid, a DNS name): the same JSON json.dumps writes, 5x faster
            payload = (f'{{"time":{int(self.time)},"state":"{self.state}","expires":{int(self.expires)},'
                       f'"ip":"{self.ip}","mac":"{self.mac}","port_id":"{self.port_id}",'
                       f'"hostname":"{self.hostname}"}}').encode("ascii")
        else:
            payload = json.dumps({"time": self.time, "state": self.state, "expires": self.expires, "ip": self.ip,
                                  "mac": self.mac, "port_id": self.port_id, "hostname": self.hostname},
                                 separators=(",", ":")).encode("ascii")
        length = str(len(payload)).encode("ascii")
        crc = zlib.crc32(payload, zlib.crc32(length + b" "))
        return b"%s%s %08x %s\n" % (MAGIC, length, crc, payload)


def _checked(rec: LeaseRecord) -> LeaseRecord | None:
    """`rec` if every field has its type and range (an IPv4 address, times a clock can show), else None."""
    ints_ok = all(type(v) is int and 0 <= v < _MAX_TIME for v in (rec.time, rec.expires))
    strs_ok = all(type(v) is str for v in (rec.ip, rec.mac, rec.port_id, rec.hostname))
    if not (ints_ok and strs_ok and rec.state in STATES):
        return None
    try:
        ipaddress.IPv4Address(rec.ip)
    except ValueError:
        return None
    return rec


def _from_payload(payload: bytes) -> LeaseRecord | None:
    try:
        d = json.loads(payload)
        return _checked(LeaseRecord(d["time"], d["state"], d["expires"], d["ip"], d["mac"], d["port_id"],
                                    d["hostname"]))
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def _header(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(payload start, payload length, crc) of a record header at `pos`, or None if there is none."""
    m = _HEADER.match(data, pos)
    if m is None or int(m[1]) > _MAX_PAYLOAD:
        return None
    return m.end(), int(m[1]), int(m[2], 16)


def _record_at(data: bytes, pos: int) -> tuple[LeaseRecord, int] | None:
    """(record, end) for a whole, intact record at `pos`, else None."""
    head = _header(data, pos)
    if head is None:
        return None
    body, length, crc = head
    end = body + length + 1
    if end > len(data) or data[end - 1:end] != b"\n":
        return None  # torn (its end is not in the file) or damaged
    payload = data[body:body + length]
    if zlib.crc32(payload, zlib.crc32(data[pos + len(MAGIC):body - 10] + b" ")) != crc:
        return None
    rec = _from_payload(payload)
    return (rec, end) if rec is not None else None


def _legacy_line(line: bytes) -> LeaseRecord | None:
    """A version-1 line (with its newline), or None."""
    if not line.endswith(b"\n"):
        return None
    parts = line[:-1].decode("utf-8", "replace").split("\t")
    if len(parts) != _LEGACY_FIELDS or parts[1] not in STATES:
        return None
    try:
        return _checked(LeaseRecord(int(parts[0]), parts[1], int(parts[2]), parts[3], parts[4], parts[5],
                                    parts[6]))
    except ValueError:
        return None


@dataclass
class Scan:
    """What a journal's bytes hold: intact records in file order, the byte ranges skipped as damaged, where the
    last intact record ends (appends go there), and how many records were in the old (version 1) format."""

    records: list[LeaseRecord] = field(default_factory=list)
    damaged: list[tuple[int, int]] = field(default_factory=list)
    good_end: int = 0
    size: int = 0
    legacy: int = 0

    @property
    def torn_tail(self) -> int:
        """Bytes after the last intact record (a write cut short by a crash or a full disk)."""
        return self.size - self.good_end

    def leases(self) -> dict[str, LeaseRecord]:
        return latest(self.records)

    def damage_note(self) -> str:
        """One line on what was skipped ('' when nothing was)."""
        if not self.damaged:
            return ""
        skipped = sum(b - a for a, b in self.damaged)
        where = ", ".join(f"{a}-{b}" for a, b in self.damaged[:5]) + (" ..." if len(self.damaged) > 5 else "")
        tail = f", {self.torn_tail} of them a torn tail" if self.torn_tail else ""
        return (f"skipped {len(self.damaged)} damaged or torn region(s), {skipped} bytes{tail} "
                f"(byte offsets {where})")


def scan(data: bytes) -> Scan:
    """Every intact record of `data` (any bytes at all: never raises).

    After damage, the next record is looked for at the next line start and the next `L2 `, whichever comes first,
    so a damaged record (its newline included) never hides the intact one after it."""
    out = Scan(size=len(data))
    n = len(data)
    pos = 0
    bad_from: int | None = None
    while pos < n:
        found = _record_at(data, pos)
        if found is None and (pos == 0 or data[pos - 1:pos] == b"\n"):
            nl = data.find(b"\n", pos)
            legacy = _legacy_line(data[pos:nl + 1]) if nl >= 0 else None
            if legacy is not None:
                out.legacy += 1
                found = legacy, nl + 1
        if found is not None:
            if bad_from is not None:
                out.damaged.append((bad_from, pos))
                bad_from = None
            out.records.append(found[0])
            pos = out.good_end = found[1]
            continue
        if bad_from is None:
            bad_from = pos
        nl = data.find(b"\n", pos)
        magic = data.find(MAGIC, pos + 1)
        pos = min(nl + 1 if nl >= 0 else n, magic if magic >= 0 else n)
    if bad_from is not None:
        out.damaged.append((bad_from, n))
    return out


def latest(records: Iterable[LeaseRecord]) -> dict[str, LeaseRecord]:
    """The latest event per IP address, in journal order."""
    leases: dict[str, LeaseRecord] = {}
    for rec in records:
        leases[rec.ip] = rec
    return leases


def read_journal(path: str | os.PathLike[str]) -> Scan:
    """The journal at `path` (an empty Scan if there is none). OSError if it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return Scan()
    return scan(data)


class LeaseJournal:
    """Append framed records; `sync()` on a timer makes them durable; `compact()` bounds the file's size."""

    def __init__(self, path: str | os.PathLike[str], compact_min_records: int = 50_000,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.compact_min_records = compact_min_records
        self.leases: dict[str, LeaseRecord] = {}
        self._clock, self._wall = clock, wall
        self._fd = -1
        self._dirty = False
        self._records = 0  # records in the file
        self._end = 0  # end of the last whole record: the file's size whenever no write is half-done
        self._cut_pending = False  # a failed write left bytes past _end that could not be cut yet
        self._outage: tuple[float, str] | None = None  # (start, first error) while writes fail
        self._withheld = 0
        self._compact_after = 0  # after a failed compaction: wait until the file holds this many records

    def _open_locked(self, path: Path, flags: int = 0) -> int:
        """The journal file opened for appending and locked: one writer per journal, so that cutting a torn write
        back and compacting can never touch another server's records."""
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | flags, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OSError(errno.EBUSY, f"lease journal {self.path} is in use by another provnet dhcp: give each "
                                       "server its own --state-path") from None
        return fd

    def open(self) -> None:
        """Read the journal, cut a torn tail, upgrade a version-1 file; then appends go to its end."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open_locked(self.path)
        with open(self._fd, "rb", closefd=False) as fh:
            found = scan(fh.read())
        self.leases = found.leases()
        self._records = len(found.records)
        self._end = found.size
        if found.damaged:
            log.warning("lease journal %s: %s", self.path, found.damage_note())
        if found.torn_tail:
            os.ftruncate(self._fd, found.good_end)
            self._end = found.good_end
        if found.legacy:
            try:
                self.compact()
                log.warning("lease journal %s: upgraded from the old line format (%d records, %d live leases "
                            "kept)", self.path, found.legacy, len(self.leases))
            except OSError as exc:  # keep going: version-2 records after version-1 lines are read as well
                log.error("lease journal %s: could not rewrite the old line format (%s); appending to it",
                          self.path, exc)

    def write(self, records: list[LeaseRecord]) -> None:
        """Append records with one write(2); returns once they are in the page cache (then the ACKs may go out).

        OSError if they could not all be written: then nothing of them stays in the file (it is cut back to the
        last whole record at once, or before the next append if even that failed)."""
        data = b"".join(r.encode() for r in records)
        try:
            if self._cut_pending:
                os.ftruncate(self._fd, self._end)
                self._cut_pending = False
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            self._failed(exc, len(records))
            raise
        self._end += len(data)
        for r in records:
            self.leases[r.ip] = r
        self._dirty = True
        self._records += len(records)
        if self._outage is not None:
            started, first = self._outage
            log.warning("lease journal %s: writable again after %.1f s (%s); %d lease event(s) were not "
                        "journaled and their ACKs withheld", self.path, self._clock() - started, first,
                        self._withheld)
            self._outage, self._withheld = None, 0

    def _failed(self, exc: OSError, count: int) -> None:
        cut = ""
        try:
            size = os.fstat(self._fd).st_size
            if size != self._end:
                os.ftruncate(self._fd, self._end)
                cut = f"; cut {size - self._end} bytes of a partial write"
            self._cut_pending = False
        except OSError:
            self._cut_pending = True
        self._withheld += count
        if self._outage is None:
            self._outage = (self._clock(), exc.strerror or str(exc))
            log.error("lease journal %s: cannot write (%s)%s: withholding ACKs until it can; one line when it "
                      "recovers", self.path, exc.strerror or exc, cut)

    @property
    def failing(self) -> bool:
        return self._outage is not None

    def sync(self) -> bool:
        """fdatasync if anything was written since the last sync; True if it synced."""
        if not self._dirty or self._fd < 0:
            return False
        self._dirty = False
        os.fdatasync(self._fd)
        return True

    def needs_compaction(self) -> bool:
        return self._records > max(self.compact_min_records, 4 * len(self.leases), self._compact_after)

    def compact(self, now: float | None = None) -> None:
        """Rewrite the journal as its live leases (acks not yet expired): new file, fsync, rename, fsync dir.

        OSError if that fails (the journal is then unchanged, and the next try waits until it has grown by half)."""
        now = self._wall() if now is None else now
        live = {ip: r for ip, r in self.leases.items() if r.state == "ack" and r.expires > now}
        tmp = self.path.with_name(self.path.name + ".compact")
        data = b"".join(r.encode() for r in live.values())
        fd = -1
        try:
            fd = self._open_locked(tmp, os.O_TRUNC)  # locked before it takes the journal's name
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            os.replace(tmp, self.path)
        except OSError:
            self._compact_after = self._records + self._records // 2
            if fd >= 0:
                os.close(fd)
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        old, self._fd = self._fd, fd  # from the rename on, appends must go to the new file
        if old >= 0:
            os.close(old)
        self.leases = live
        self._records = len(live)
        self._end = len(data)
        self._cut_pending = False
        self._compact_after = 0
        self._dirty = False
        dfd = os.open(self.path.parent, os.O_RDONLY)  # the rename itself durable
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1
