# Acceptance (issue 10 row 5): the lease journal on a small real tmpfs that fills while `provnet dhcp` answers real
# udhcpc clients in namespaces; ACKs withheld, one log line per outage; the disk freed, more leases; kill -9;
# `provnet dhcp-leases` then holds every ACK the clients got, and the journal nothing torn.
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import need_root, need_tool, unique
from nstools import Lan, addresses, in_ns, make_lan, sh, wait_udp_listen
from test_dhcp_clients import PROVNET, seed_registry

from provnet.dhcp.journal import JOURNAL_NAME, read_journal

pytestmark = pytest.mark.root
PAGE = 4096


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs on a directory this test creates (unmounted by the finalizer, whatever happens)."""
    need_root()
    need_tool("mount", "umount")
    mnt = tmp_path / "pnfs"
    mnt.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", unique(), str(mnt))
    yield mnt
    if sh("umount", str(mnt), check=False).returncode != 0:
        sh("umount", "-l", str(mnt), check=False)


@pytest.fixture
def lan(tmp_path):
    need_root()
    need_tool("busybox", "ip", "ss")
    lan = make_lan(tmp_path / "lan")
    yield lan
    lan.teardown()


def fill(directory: Path) -> Path:
    """Take every free block of the file system with a filler file; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * PAGE)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def udhcpc(lan: Lan, ns: str, tries: int = 3) -> dict | None:
    """One real udhcpc run (DISCOVER, REQUEST): the lease the client applied, or None if it got no ACK."""
    res = sh(*in_ns(ns, "busybox", "udhcpc", "-f", "-q", "-n", "-t", str(tries), "-T", "1", "-i", "eth0",
                    "-O", "staticroutes", "-s", str(lan.script(ns))), check=False, timeout=30)
    if res.returncode != 0:
        return None
    lease = lan.lease(ns)
    assert lease is not None
    os.unlink(lan.workdir / ns / "lease-eth0.json")  # the next run's lease must be its own
    return lease


def test_journal_on_a_full_disk_keeps_every_ack_and_nothing_torn(lan, small_disk, tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    reg, net = seed_registry(db)
    clients: dict[str, str] = {}  # namespace -> MAC
    for i in range(8):
        mac = f"fa:16:3e:00:02:{i:02x}"
        reg.create_port({"network_id": net.id, "mac_address": mac, "fixed_ips": [{"ip_address": f"172.16.1.{140 + i}"}],
                         "device_owner": "compute:nova"})
    reg.close()
    state = small_disk / "state"
    log = tmp_path / "server.log"
    proc = lan.spawn(lan.server_ns, PROVNET, "--db", db, "--state-path", str(state), "dhcp", "--interface",
                     lan.bridge, "--network", "phy_net", log=log)
    wait_udp_listen(lan.server_ns, 67, proc)
    journal = state / JOURNAL_NAME
    got: list[tuple[str, str, str]] = []  # (ip, mac, hostname) of every ACK a client received

    def lease(ns: str, tries: int = 3) -> bool:
        applied = udhcpc(lan, ns, tries)
        if applied is not None:
            got.append((applied["ip"], clients[ns], applied["hostname"]))
            assert addresses(ns) == [f"{applied['ip']}/24"]
        return applied is not None

    for i in range(4):  # the first four VMs boot on a healthy disk
        ns = lan.add_client(f"fa:16:3e:00:02:{i:02x}")
        clients[ns] = f"fa:16:3e:00:02:{i:02x}"
        assert lease(ns)
    pool = list(clients)

    # The disk fills. The journal's last page still has room: renewals go on until a record no longer fits
    # (tmpfs then writes part of it and refuses the rest: the torn write), and from then on every ACK is withheld.
    filler = fill(small_disk)
    before = len(got)
    withheld_runs = 0
    for attempt in range(80):
        if not lease(pool[attempt % len(pool)], tries=2):
            withheld_runs += 1
            break
    assert withheld_runs == 1, "the journal's page never filled"
    assert len(got) > before  # some renewals fitted into the last page
    for i in range(4, 6):  # two VMs boot while the disk is full: no lease (their REQUESTs go unanswered)
        ns = lan.add_client(f"fa:16:3e:00:02:{i:02x}")
        clients[ns] = f"fa:16:3e:00:02:{i:02x}"
        assert not lease(ns, tries=2) and addresses(ns) == []
        withheld_runs += 1
    assert proc.poll() is None
    size_full = journal.stat().st_size
    assert not read_journal(journal).damaged  # the partial write was cut back at once

    # The disk is freed: everyone gets a lease again, new VMs too.
    filler.unlink()
    for ns in list(clients):
        assert lease(ns)
    for i in range(6, 8):
        ns = lan.add_client(f"fa:16:3e:00:02:{i:02x}")
        clients[ns] = f"fa:16:3e:00:02:{i:02x}"
        assert lease(ns)
    assert journal.stat().st_size > size_full

    os.kill(proc.pid, signal.SIGKILL)  # no clean shutdown, no final fsync
    proc.wait(timeout=10)

    # What the server logged: one line when the outage began (with the cut torn write), one when it ended.
    text = log.read_text()
    began = [line for line in text.splitlines() if "cannot write" in line]
    ended = [line for line in text.splitlines() if "writable again" in line]
    assert len(began) == 1 and "No space left on device" in began[0] and "cut " in began[0], text
    assert len(ended) == 1, text
    withheld = int(ended[0].split("; ")[-1].split()[0])
    assert withheld >= withheld_runs  # every REQUEST of the failed runs (udhcpc retries) was refused
    assert "Traceback" not in text

    # Replay, as an operator does it: every lease a client holds is there, with its MAC and hostname.
    res = subprocess.run([PROVNET, "--db", db, "--state-path", str(state), "dhcp-leases", "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    held = {row["ip_address"]: row for row in json.loads(res.stdout)}
    for ip, mac, hostname in got:
        assert held[ip]["mac_address"] == mac and held[ip]["hostname"] == hostname and held[ip]["state"] == "active"
    assert len(held) == len(clients) == 8
    # And every single ACK, one record each: none lost, none torn, none for a withheld ACK.
    found = read_journal(journal)
    assert not found.damaged and found.torn_tail == 0
    journaled = Counter((r.ip, r.mac, r.hostname) for r in found.records if r.state == "ack")
    assert journaled == Counter(got)
