# The lease journal: framing and replay (hypothesis: truncation, bit flips, garbage), torn-tail repair, write
# failures, compaction by rename, the old line format, and `provnet dhcp-leases` on it.
from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provnet.dhcp import journal as jmod
from provnet.dhcp.journal import LeaseJournal, LeaseRecord, read_journal, scan

PROVNET = str(Path(sys.executable).with_name("provnet"))
REAL_WRITE = os.write


def rec(ip: str, state: str = "ack", expires: int = 2_000_000_000, t: int = 1_700_000_000,
        hostname: str = "vm1") -> LeaseRecord:
    return LeaseRecord(t, state, expires, ip, "fa:16:3e:00:00:01", "port-1", hostname)


def legacy_line(r: LeaseRecord) -> str:
    """A record in the format before version 2 (what provnet wrote until now)."""
    return f"{r.time}\t{r.state}\t{r.expires}\t{r.ip}\t{r.mac}\t{r.port_id}\t{r.hostname}\n"


# ---- framing and replay, pure -----------------------------------------------------------------------------------

records_st = st.lists(st.builds(
    LeaseRecord,
    time=st.integers(0, 2**35), state=st.sampled_from(jmod.STATES), expires=st.integers(0, 2**35),
    ip=st.ip_addresses(v=4).map(str), mac=st.text(max_size=20), port_id=st.text(max_size=40),
    hostname=st.text(max_size=70)), min_size=1, max_size=12)


def framed(records: list[LeaseRecord]) -> tuple[bytes, list[tuple[int, int]]]:
    """The file for `records` and each record's byte span."""
    spans, data = [], b""
    for r in records:
        line = r.encode()
        spans.append((len(data), len(data) + len(line)))
        data += line
    return data, spans


def test_a_record_is_one_readable_line():
    line = rec("172.16.1.103").encode()
    assert line.startswith(b"L2 ") and line.endswith(b"\n") and line.count(b"\n") == 1
    assert b'"ip":"172.16.1.103"' in line and b'"state":"ack"' in line
    fast = rec("172.16.1.103", hostname="vm-1.example")  # the fast path writes what json.dumps writes
    assert fast.encode().split(b" ", 3)[3] == json.dumps(
        {"time": fast.time, "state": "ack", "expires": fast.expires, "ip": fast.ip, "mac": fast.mac,
         "port_id": fast.port_id, "hostname": fast.hostname}, separators=(",", ":")).encode() + b"\n"
    hostile = rec("10.0.0.1", hostname="a\nL2 5 00000000 {}\n\u2028\"\\").encode()
    assert hostile.count(b"\n") == 1 and scan(hostile).records == [rec("10.0.0.1", hostname="a\nL2 5 00000000 {}"
                                                                     "\n\u2028\"\\")]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(records_st)
def test_replay_returns_every_record_in_order(records):
    data, _ = framed(records)
    found = scan(data)
    assert found.records == records and not found.damaged and found.good_end == len(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(records_st, st.data())
def test_any_truncation_loses_only_the_cut_record(records, draw):
    data, spans = framed(records)
    cut = draw.draw(st.integers(0, len(data)))
    found = scan(data[:cut])
    whole = [r for r, (_, end) in zip(records, spans, strict=True) if end <= cut]
    assert found.records == whole
    assert found.good_end == max([end for _, end in spans if end <= cut], default=0)
    assert found.torn_tail == cut - found.good_end  # what the server cuts off before its next append


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(records_st, st.data())
def test_any_bit_flips_lose_only_the_records_they_hit(records, draw):
    data, spans = framed(records)
    flips = draw.draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 7)), min_size=1,
                               max_size=3, unique_by=lambda f: f[0]))
    damaged = bytearray(data)
    for at, bit in flips:
        damaged[at] ^= 1 << bit
    found = scan(bytes(damaged))
    hit = {i for i, (start, end) in enumerate(spans) for at, _ in flips if start <= at < end}
    intact = [r for i, r in enumerate(records) if i not in hit]
    assert found.records == intact  # CRC-32 catches every 1-3 bit error: no damaged record is taken for whole
    assert bool(found.damaged) == bool(hit)


@settings(max_examples=300)
@given(st.binary(max_size=600), records_st)
def test_garbage_around_records_never_raises_and_never_hides_them(garbage, records):
    data, _ = framed(records)
    found = scan(garbage + b"\n" + data + garbage)
    assert all(r in found.records for r in records)
    scan(garbage)  # any bytes at all: no exception


def test_a_crafted_record_with_a_good_checksum_but_bad_fields_is_skipped():
    for payload in (b'{"time":1}', b'[1,2]', b'{"time":-1,"state":"ack","expires":1,"ip":"1.2.3.4","mac":"m",'
                    b'"port_id":"p","hostname":"h"}', b'{"time":1,"state":"ack","expires":1,"ip":"nope","mac":"m",'
                    b'"port_id":"p","hostname":"h"}', b"[" * 5000 + b"]" * 5000):
        length = str(len(payload)).encode()
        line = b"L2 %s %08x %s\n" % (length, jmod.zlib.crc32(payload, jmod.zlib.crc32(length + b" ")), payload)
        found = scan(line + rec("10.0.0.1").encode())
        assert found.records == [rec("10.0.0.1")] and found.damaged == [(0, len(line))]


# ---- the journal file -------------------------------------------------------------------------------------------

def test_write_then_replay_keeps_the_latest_event_per_address(tmp_path):
    j = LeaseJournal(tmp_path / "j")
    j.open()
    j.write([rec("10.0.0.1"), rec("10.0.0.2")])
    j.write([rec("10.0.0.1", "release")])
    # no sync, no close: what a kill -9 leaves is what was written
    leases = read_journal(tmp_path / "j").leases()
    assert leases["10.0.0.1"].state == "release" and leases["10.0.0.2"].state == "ack"
    j.close()


def test_torn_tail_is_cut_on_open_and_the_next_record_is_not_glued_to_it(tmp_path):
    path = tmp_path / "j"
    whole = rec("10.0.0.1").encode()
    path.write_bytes(whole + rec("10.0.0.2").encode()[:40])  # power loss mid-record
    assert read_journal(path).records == [rec("10.0.0.1")] and read_journal(path).torn_tail == 40
    j = LeaseJournal(path)
    j.open()
    assert set(j.leases) == {"10.0.0.1"} and path.stat().st_size == len(whole)
    j.write([rec("10.0.0.3")])
    j.close()
    found = read_journal(path)
    assert [r.ip for r in found.records] == ["10.0.0.1", "10.0.0.3"] and not found.damaged


def test_damage_in_the_middle_is_kept_out_of_replay_but_not_truncated(tmp_path, caplog):
    path = tmp_path / "j"
    a, b, c = (rec(f"10.0.0.{i}").encode() for i in (1, 2, 3))
    bad = bytearray(b)
    bad[30] ^= 0x10
    path.write_bytes(a + bytes(bad) + c)
    j = LeaseJournal(path)
    with caplog.at_level(logging.WARNING, logger="provnet.dhcp.journal"):
        j.open()
    assert set(j.leases) == {"10.0.0.1", "10.0.0.3"}
    assert path.stat().st_size == len(a + b + c)  # nothing after the damage is thrown away
    assert "skipped 1 damaged or torn region(s)" in caplog.text
    j.close()


class FullDisk:
    """os.write that accepts `room` more bytes and then fails with ENOSPC, as a full file system does (a write
    that straddles the limit is cut short). A fake of the file system only: the real one is in
    test_dhcp_journal_full_disk.py (a small tmpfs that fills under `provnet dhcp`)."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, fd: int, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = REAL_WRITE(fd, bytes(data)[:self.room])
        self.room -= n
        return n


def test_failed_write_is_cut_back_logged_once_and_recovers(tmp_path, monkeypatch, caplog):
    path = tmp_path / "j"
    now = [100.0]
    j = LeaseJournal(path, clock=lambda: now[0])
    j.open()
    j.write([rec("10.0.0.1")])
    size = path.stat().st_size
    disk = FullDisk(room=50)
    monkeypatch.setattr(jmod.os, "write", disk)
    with caplog.at_level(logging.WARNING, logger="provnet.dhcp.journal"):
        for i in range(2, 7):  # one partial write, then nothing fits: five batches withheld
            with pytest.raises(OSError):
                j.write([rec(f"10.0.0.{i}")])
            assert path.stat().st_size == size  # never a half record left behind
        assert j.failing
        now[0] = 112.5
        disk.room = 10_000  # the disk is freed
        j.write([rec("10.0.0.9")])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "cannot write (No space left on device); cut 50 bytes of a partial write" \
        in errors[0].getMessage()
    recovered = [r.getMessage() for r in caplog.records if "writable again" in r.getMessage()]
    assert recovered == [f"lease journal {path}: writable again after 12.5 s (No space left on device); "
                         "5 lease event(s) were not journaled and their ACKs withheld"]
    assert not j.failing
    found = read_journal(path)
    assert [r.ip for r in found.records] == ["10.0.0.1", "10.0.0.9"] and not found.damaged


def test_a_failed_cut_is_done_before_the_next_append(tmp_path, monkeypatch):
    path = tmp_path / "j"
    j = LeaseJournal(path)
    j.open()
    j.write([rec("10.0.0.1")])
    monkeypatch.setattr(jmod.os, "write", FullDisk(room=30))
    real_truncate = os.ftruncate
    monkeypatch.setattr(jmod.os, "ftruncate", lambda fd, n: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError):
        j.write([rec("10.0.0.2")])
    assert read_journal(path).torn_tail == 30  # the torn record is in the file for now
    monkeypatch.setattr(jmod.os, "ftruncate", real_truncate)
    monkeypatch.setattr(jmod.os, "write", FullDisk(room=10_000))
    j.write([rec("10.0.0.3")])
    j.close()
    found = read_journal(path)
    assert [r.ip for r in found.records] == ["10.0.0.1", "10.0.0.3"] and not found.damaged


def test_compaction_keeps_only_live_leases_and_replaces_the_file(tmp_path):
    path = tmp_path / "j"
    j = LeaseJournal(path, compact_min_records=10)
    j.open()
    for i in range(30):
        j.write([rec("10.0.0.1", t=i), rec("10.0.0.2", expires=5)])  # 10.0.0.2 expired long ago
    j.write([rec("10.0.0.3"), rec("10.0.0.3", "release")])
    assert j.needs_compaction()
    inode = path.stat().st_ino
    j.compact(now=1_700_000_000)
    assert path.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert [r.ip for r in read_journal(path).records] == ["10.0.0.1"]
    assert not j.needs_compaction()
    j.write([rec("10.0.0.4")])  # still appending to the new file
    j.close()
    assert set(read_journal(path).leases()) == {"10.0.0.1", "10.0.0.4"}
    assert not (tmp_path / "j.compact").exists()


def test_failed_compaction_leaves_the_journal_whole_and_backs_off(tmp_path, monkeypatch):
    path = tmp_path / "j"
    j = LeaseJournal(path, compact_min_records=4)
    j.open()
    for i in range(10):
        j.write([rec("10.0.0.1", t=i)])
    before = path.read_bytes()
    monkeypatch.setattr(jmod.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        j.compact()
    assert path.read_bytes() == before and not (tmp_path / "j.compact").exists()
    assert not j.needs_compaction()  # no retry on every tick of a full disk
    for i in range(6):
        j.write([rec("10.0.0.1", t=100 + i)])
    assert j.needs_compaction()  # grown by half: try again
    j.close()


def test_sync_only_when_something_was_written(tmp_path):
    j = LeaseJournal(tmp_path / "j")
    j.open()
    assert j.sync() is False
    j.write([rec("10.0.0.1")])
    assert j.sync() is True and j.sync() is False
    j.close()


def test_old_format_is_read_and_upgraded_when_the_server_opens_it(tmp_path, caplog):
    path = tmp_path / "j"
    old = [rec("10.0.0.1"), rec("10.0.0.2", expires=5), rec("10.0.0.3"), rec("10.0.0.3", "release")]
    path.write_text("".join(legacy_line(r) for r in old) + "1700000000\tack\t20")  # and a torn last line
    found = read_journal(path)
    assert found.legacy == 4 and found.leases() == {r.ip: r for r in old}
    j = LeaseJournal(path)
    with caplog.at_level(logging.WARNING, logger="provnet.dhcp.journal"):
        j.open()
    assert "upgraded from the old line format (4 records, 1 live leases kept)" in caplog.text
    assert path.read_bytes() == rec("10.0.0.1").encode()  # version 2 now, only the live lease
    j.write([rec("10.0.0.4")])
    j.close()
    assert read_journal(path).legacy == 0 and set(read_journal(path).leases()) == {"10.0.0.1", "10.0.0.4"}


# ---- provnet dhcp-leases ----------------------------------------------------------------------------------------

def _leases_cli(state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROVNET, "--state-path", str(state), "dhcp-leases", *args], capture_output=True, text=True)


def test_dhcp_leases_shows_active_by_default_and_everything_with_all(tmp_path):
    j = LeaseJournal(tmp_path / "dhcp-leases.journal")
    j.open()
    j.write([rec("172.16.1.103"), rec("172.16.1.104", expires=5), rec("172.16.1.9", "release")])
    j.close()
    res = _leases_cli(tmp_path)
    assert res.returncode == 0 and res.stderr == ""
    lines = res.stdout.splitlines()  # the CLI's one table style: a grid, header between rules
    assert lines[1].replace("|", " ").split()[:4] == ["ip_address", "mac_address", "hostname", "state"]
    assert len(lines) == 5 and "172.16.1.103" in lines[3] and "active" in lines[3]
    rows = json.loads(_leases_cli(tmp_path, "--all", "--format", "json").stdout)
    assert [(r["ip_address"], r["state"]) for r in rows] == [
        ("172.16.1.9", "release"), ("172.16.1.103", "active"), ("172.16.1.104", "expired")]


def test_dhcp_leases_reads_a_torn_journal_and_the_old_format(tmp_path):
    path = tmp_path / "dhcp-leases.journal"
    path.write_bytes(rec("172.16.1.103").encode() + rec("172.16.1.104").encode()[:-9])
    res = _leases_cli(tmp_path, "--format", "json")
    assert res.returncode == 0 and [r["ip_address"] for r in json.loads(res.stdout)] == ["172.16.1.103"]
    assert res.stderr.startswith(f"warning: {path}: skipped 1 damaged or torn region(s), ")
    assert "a torn tail" in res.stderr and "Traceback" not in res.stderr
    path.write_text(legacy_line(rec("172.16.1.105")))
    res = _leases_cli(tmp_path, "--format", "json")
    assert res.returncode == 0 and [r["ip_address"] for r in json.loads(res.stdout)] == ["172.16.1.105"]


def test_dhcp_leases_without_a_journal_says_so(tmp_path):
    res = _leases_cli(tmp_path)
    assert res.returncode == 1 and "no lease journal at" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    res = _leases_cli(tmp_path, "--journal", str(tmp_path / "hosts"))
    assert res.returncode == 1 and "is not a lease journal" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "bin").write_bytes(os.urandom(3000))
    res = _leases_cli(tmp_path, "--journal", str(tmp_path / "bin"))
    assert res.returncode == 1 and "is not a lease journal" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "empty.journal").write_text("")
    res = _leases_cli(tmp_path, "--journal", str(tmp_path / "empty.journal"), "--format", "json")
    assert res.returncode == 0 and json.loads(res.stdout) == []  # a server that has leased nothing yet
    res = _leases_cli(tmp_path, "--format", "xml")
    assert res.returncode == 2 and "Invalid value for '-f' / '--format'" in res.stderr


def test_one_writer_per_journal(tmp_path):
    """Cutting a torn write back and compaction assume one writer: a second server on the same journal is refused
    with a line that says what to do, also after a compaction replaced the file."""
    path = tmp_path / "j"
    first = LeaseJournal(path, compact_min_records=1)
    first.open()
    second = LeaseJournal(path)
    with pytest.raises(OSError) as exc:
        second.open()
    assert exc.value.errno == errno.EBUSY and "in use by another provnet dhcp" in str(exc.value)
    first.write([rec("10.0.0.1"), rec("10.0.0.1")])
    first.compact(now=0)
    with pytest.raises(OSError):
        LeaseJournal(path).open()
    first.close()
    third = LeaseJournal(path)
    third.open()  # free again once the first has closed it
    assert set(third.leases) == {"10.0.0.1"}
    third.close()
