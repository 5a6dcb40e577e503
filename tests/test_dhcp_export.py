# dhcp-config exports: the seed's forms, accepted by dnsmasq/Kea/dhcpd, and real clients served by them as by ours.
from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from conftest import need_root, need_tool
from dhcp_seed import seed_network, seed_ports, seed_subnet
from nstools import addresses, make_lan, routes, sh, wait_udp_listen
from test_dhcp_clients import MAC1, PROVNET, SEED_TABLE, seed_registry, start_server

from provnet.dhcp import export
from provnet.dhcp.view import Settings, snapshot_from

SEED_ROUTES = "169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1"


def seed_files(fmt: str, directory: str, settings: Settings | None = None, interface: str = "br-phy"):
    snap = snapshot_from(7, [seed_network()], [seed_subnet()], seed_ports(), {"inst-vm1": "vm1"})
    return export.render(fmt, snap, settings or Settings(), interface, directory)


def test_dnsmasq_export_is_the_seeds_form(tmp_path):
    files = seed_files("dnsmasq", str(tmp_path))
    opts = files["dnsmasq.opts"].splitlines()
    assert f"tag:tag0,option:classless-static-route,{SEED_ROUTES}" in opts
    assert f"tag:tag0,249,{SEED_ROUTES}" in opts
    assert "tag:tag0,option:router,172.16.1.1" in opts
    hosts = [h for h in files["dnsmasq.hosts"].splitlines() if not h.startswith("#")]
    assert hosts == ["fa:16:3e:00:00:03,vm1,172.16.1.103", "fa:16:3e:00:00:04,host-172-16-1-104,172.16.1.104"]
    argv = shlex.split(files["dnsmasq.cmdline"])
    assert "--dhcp-range=set:tag0,172.16.1.0,static,255.255.255.0,86400s" in argv
    assert "--interface=br-phy" in argv and "--no-ping" in argv
    assert f"--dhcp-optsfile={tmp_path}/dnsmasq.opts" in argv


def test_kea_export_has_raw_121_and_249_and_one_reservation_per_port(tmp_path):
    conf = json.loads(seed_files("kea", str(tmp_path))["kea-dhcp4.json"])["Dhcp4"]
    sub = conf["subnet4"][0]
    assert sub["subnet"] == "172.16.1.0/24" and sub["pools"] == []
    raw = {o["code"]: o for o in sub["option-data"] if "code" in o}
    assert raw[121]["data"] == raw[249]["data"] == "20A9FEA9FEAC10010200AC100101"
    assert raw[121]["csv-format"] is False and raw[121]["always-send"] is True
    assert {"name": "routers", "data": "172.16.1.1"} in sub["option-data"]
    assert sub["reservations"] == [
        {"hw-address": "fa:16:3e:00:00:03", "ip-address": "172.16.1.103", "hostname": "vm1"},
        {"hw-address": "fa:16:3e:00:00:04", "ip-address": "172.16.1.104", "hostname": "host-172-16-1-104"}]


def test_isc_export_defines_the_route_options(tmp_path):
    text = seed_files("isc", str(tmp_path))["dhcpd.conf"]
    assert "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;" in text
    assert "option rfc3442-classless-static-routes 32, 169, 254, 169, 254, 172, 16, 1, 2, 0, 172, 16, 1, 1;" in text
    assert "hardware ethernet fa:16:3e:00:00:03; fixed-address 172.16.1.103;" in text
    assert "concat(option dhcp-parameter-request-list" in text
    assert "concat(" not in seed_files("isc", str(tmp_path), Settings(force_routes=False))["dhcpd.conf"]


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        seed_files("bind", str(tmp_path))


def _write(files: dict[str, str], d) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_real_servers_accept_the_exports(tmp_path):
    need_tool("dnsmasq", "kea-dhcp4", "dhcpd")
    d = tmp_path / "out"
    for fmt in export.FORMATS:  # Kea checks that the interface exists: use one every host has
        _write(seed_files(fmt, str(d), interface="lo"), d)
    argv = shlex.split((d / "dnsmasq.cmdline").read_text())
    res = sh(argv[0], "--test", *argv[1:], check=False)
    assert res.returncode == 0 and "syntax check OK" in res.stderr + res.stdout, res.stderr
    res = sh("kea-dhcp4", "-t", str(d / "kea-dhcp4.json"), check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    res = sh("dhcpd", "-4", "-t", "-cf", str(d / "dhcpd.conf"), check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_real_servers_reject_a_broken_export(tmp_path):
    """The check above can fail: a damaged file is refused by each server."""
    need_tool("kea-dhcp4", "dhcpd")
    d = tmp_path / "out"
    _write(seed_files("kea", str(d), interface="lo"), d)
    _write(seed_files("isc", str(d)), d)
    (d / "kea-dhcp4.json").write_text((d / "kea-dhcp4.json").read_text().replace('"code": 121', '"code": 121x'))
    (d / "dhcpd.conf").write_text((d / "dhcpd.conf").read_text().replace("array of unsigned integer 8;", "array;", 1))
    assert sh("kea-dhcp4", "-t", str(d / "kea-dhcp4.json"), check=False).returncode != 0
    assert sh("dhcpd", "-4", "-t", "-cf", str(d / "dhcpd.conf"), check=False).returncode != 0


@pytest.mark.root
def test_clients_served_by_exported_dnsmasq_kea_and_dhcpd_get_what_ours_gives(tmp_path):
    need_root()
    need_tool("busybox", "dnsmasq", "kea-dhcp4", "dhcpd")
    lan = make_lan(tmp_path / "lan")
    try:
        db = f"sqlite:///{tmp_path}/p.sqlite"
        seed_registry(db)[0].close()
        got = {}
        ours = start_server(lan, db, tmp_path / "state")
        got["provnet"] = _lease_of(lan)
        ours.terminate()
        ours.wait(timeout=10)

        out = tmp_path / "exports"
        for fmt in ("dnsmasq", "kea"):
            sh(PROVNET, "--db", db, "--state-path", str(tmp_path / "state"), "dhcp-config", "--format", fmt,
               "--network", "phy_net", "--interface", lan.bridge, "--output-dir", str(out))
        argv = shlex.split((out / "dnsmasq.cmdline").read_text())
        proc = lan.spawn(lan.server_ns, *argv, "-k", "-u", "root", f"--log-facility={out}/dnsmasq.log")
        wait_udp_listen(lan.server_ns, 67, proc)
        got["dnsmasq"] = _lease_of(lan)
        proc.terminate()
        proc.wait(timeout=10)

        proc = lan.spawn(lan.server_ns, "kea-dhcp4", "-c", str(out / "kea-dhcp4.json"), log=out / "kea.out",
                         env={"KEA_PIDFILE_DIR": str(out), "KEA_LOCKFILE_DIR": str(out)})
        wait_udp_listen(lan.server_ns, 67, proc)
        got["kea"] = _lease_of(lan)
        proc.terminate()
        proc.wait(timeout=10)

        sh(PROVNET, "--db", db, "--state-path", str(tmp_path / "state"), "dhcp-config", "--format", "isc",
           "--network", "phy_net", "--output-dir", str(out))
        (out / "dhcpd.leases").touch()
        proc = lan.spawn(lan.server_ns, "dhcpd", "-4", "-f", "-cf", str(out / "dhcpd.conf"), "-lf",
                         str(out / "dhcpd.leases"), "-pf", str(out / "dhcpd.pid"), lan.bridge, log=out / "dhcpd.out")
        wait_udp_listen(lan.server_ns, 67, proc)
        got["dhcpd"] = _lease_of(lan, ask_routes=False)  # the exported config pushes 121/249 unasked
        proc.terminate()
        proc.wait(timeout=10)
    finally:
        lan.teardown()
    assert got["provnet"] == {"addresses": ["172.16.1.103/24"], "routes": SEED_TABLE}
    assert got["dnsmasq"] == got["provnet"]
    assert got["kea"] == got["provnet"]
    assert got["dhcpd"] == got["provnet"]


def _lease_of(lan, ask_routes: bool = True) -> dict:
    c = lan.add_client(MAC1)
    res = lan.udhcpc(c, timeout=30, ask_routes=ask_routes)
    assert res.returncode == 0, res.stderr
    return {"addresses": addresses(c), "routes": routes(c)}


def test_dhcp_config_cli_prints_and_writes(tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    base = [PROVNET, "--db", db, "--state-path", str(tmp_path / "state"), "dhcp-config"]
    out = sh(*base, "--format", "kea", "--network", "phy_net").stdout
    assert json.loads(out)["Dhcp4"]["interfaces-config"]["interfaces"] == ["*"]
    out = sh(*base, "--format", "dnsmasq", "--network", "phy_net", "--interface", "br-phy").stdout
    assert "# ==> dnsmasq.opts <==" in out and f"tag:tag0,249,{SEED_ROUTES}" in out
    written = sh(*base, "--format", "isc", "--network", "phy_net", "--output-dir", str(tmp_path / "isc")).stdout
    assert written.strip() == str(tmp_path / "isc" / "dhcpd.conf")


@pytest.mark.parametrize("args, message", [
    (["--format", "kea", "--network", "nope"], "no network with name or id 'nope'"),
    (["--format", "bind", "--network", "phy_net"], "Invalid value for '-f' / '--format'"),
    (["--network", "phy_net"], "Missing option '-f' / '--format'"),
])
def test_dhcp_config_cli_bad_input(tmp_path, args, message):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    res = subprocess.run([PROVNET, "--db", db, "--state-path", str(tmp_path / "s"), "dhcp-config", *args],
                         capture_output=True, text=True)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
