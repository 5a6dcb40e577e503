# The lease journal: replay, torn last line, compaction by rename, and `provnet dhcp-leases` on it.
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from provnet.dhcp.journal import LeaseJournal, LeaseRecord, read_journal

PROVNET = str(Path(sys.executable).with_name("provnet"))


def rec(ip: str, state: str = "ack", expires: int = 2_000_000_000, t: int = 1_700_000_000) -> LeaseRecord:
    return LeaseRecord(t, state, expires, ip, "fa:16:3e:00:00:01", "port-1", "vm1")


def test_write_then_replay_keeps_the_latest_event_per_address(tmp_path):
    j = LeaseJournal(tmp_path / "j")
    j.open()
    j.write([rec("10.0.0.1"), rec("10.0.0.2")])
    j.write([rec("10.0.0.1", "release")])
    # no sync, no close: what a kill -9 leaves is what was written
    leases = read_journal(tmp_path / "j")
    assert leases["10.0.0.1"].state == "release" and leases["10.0.0.2"].state == "ack"
    j.close()


def test_torn_last_line_is_ignored_and_appends_continue_cleanly(tmp_path):
    path = tmp_path / "j"
    path.write_text(rec("10.0.0.1").line() + "1700000000\tack\t20000")  # power loss mid-line
    j = LeaseJournal(path)
    j.open()
    assert set(j.leases) == {"10.0.0.1"}
    j.write([rec("10.0.0.3")])
    j.close()
    assert set(read_journal(path)) == {"10.0.0.1", "10.0.0.3"}


def test_foreign_lines_are_skipped(tmp_path):
    path = tmp_path / "j"
    path.write_text("garbage\n1\tack\tnot-a-number\t10.0.0.9\tm\tp\th\n" + rec("10.0.0.1").line())
    assert set(read_journal(path)) == {"10.0.0.1"}


def test_compaction_keeps_only_live_leases_and_replaces_the_file(tmp_path):
    path = tmp_path / "j"
    j = LeaseJournal(path, compact_min_lines=10)
    j.open()
    for i in range(30):
        j.write([rec("10.0.0.1", t=i), rec("10.0.0.2", expires=5)])  # 10.0.0.2 expired long ago
    j.write([rec("10.0.0.3"), rec("10.0.0.3", "release")])
    assert j.needs_compaction()
    inode = path.stat().st_ino
    j.compact(now=1_700_000_000)
    assert path.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place
    assert path.read_text().count("\n") == 1
    assert set(read_journal(path)) == {"10.0.0.1"}
    j.write([rec("10.0.0.4")])  # still appending to the new file
    j.close()
    assert set(read_journal(path)) == {"10.0.0.1", "10.0.0.4"}
    assert not (tmp_path / "j.compact").exists()


def test_sync_only_when_something_was_written(tmp_path):
    j = LeaseJournal(tmp_path / "j")
    j.open()
    assert j.sync() is False
    j.write([rec("10.0.0.1")])
    assert j.sync() is True and j.sync() is False
    j.close()


def _leases_cli(state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROVNET, "--state-path", str(state), "dhcp-leases", *args], capture_output=True, text=True)


def test_dhcp_leases_shows_active_by_default_and_everything_with_all(tmp_path):
    j = LeaseJournal(tmp_path / "dhcp-leases.journal")
    j.open()
    j.write([rec("172.16.1.103"), rec("172.16.1.104", expires=5), rec("172.16.1.9", "release")])
    j.close()
    res = _leases_cli(tmp_path)
    assert res.returncode == 0
    lines = res.stdout.splitlines()  # the CLI's one table style: a grid, header between rules
    assert lines[1].replace("|", " ").split()[:4] == ["ip_address", "mac_address", "hostname", "state"]
    assert len(lines) == 5 and "172.16.1.103" in lines[3] and "active" in lines[3]
    rows = json.loads(_leases_cli(tmp_path, "--all", "--format", "json").stdout)
    assert [(r["ip_address"], r["state"]) for r in rows] == [
        ("172.16.1.9", "release"), ("172.16.1.103", "active"), ("172.16.1.104", "expired")]


def test_dhcp_leases_without_a_journal_says_so(tmp_path):
    res = _leases_cli(tmp_path)
    assert res.returncode == 1 and "no lease journal at" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    res = _leases_cli(tmp_path, "--journal", str(tmp_path / "hosts"))
    assert res.returncode == 1 and "is not a lease journal" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "empty.journal").write_text("")
    res = _leases_cli(tmp_path, "--journal", str(tmp_path / "empty.journal"), "--format", "json")
    assert res.returncode == 0 and json.loads(res.stdout) == []  # a server that has leased nothing yet
    res = _leases_cli(tmp_path, "--format", "xml")
    assert res.returncode == 2 and "Invalid value for '-f' / '--format'" in res.stderr
