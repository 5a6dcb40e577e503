# `provnet dhcp` refuses bad input with one readable line (no traceback) before binding anything; --help teaches.
from __future__ import annotations

import subprocess

import pytest
from test_dhcp_clients import PROVNET, seed_registry


@pytest.mark.parametrize("args, message", [
    ([], "no interface: give --interface IF or set [dhcp] interface"),
    (["--interface", "pnnosuchif0"], "no interface named 'pnnosuchif0'"),
    (["--interface", "lo", "--network", "nope"], "no network with name or id 'nope'"),
    (["--interface", "lo"], "no network has a subnet containing the interface's addresses (127.0.0.1/8)"),
    (["--interface", "lo", "--metrics-port", "x"], "Invalid value for '--metrics-port'"),
])
def test_dhcp_bad_input(tmp_path, args, message):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    res = subprocess.run([PROVNET, "--db", db, "--state-path", str(tmp_path / "s"), "dhcp", *args],
                         capture_output=True, text=True, timeout=60)
    # a bad option on the command line is a usage error (2); a setting that cannot work is an error (1)
    assert res.returncode == (2 if "--metrics-port" in args else 1), res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_unusable_state_path_is_one_readable_line(tmp_path):
    db = f"sqlite:///{tmp_path}/p.sqlite"
    seed_registry(db)[0].close()
    (tmp_path / "afile").write_text("")
    res = subprocess.run([PROVNET, "--db", db, "--state-path", str(tmp_path / "afile" / "s"), "dhcp",
                          "--interface", "lo"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"cannot create the state directory {tmp_path / 'afile' / 's'}" in res.stderr


def test_bad_dhcp_config_values_are_refused(tmp_path):
    conf = tmp_path / "provnet.conf"
    for body, message in (("[dhcp]\nlease_time = -5\n", "[dhcp] lease_time"),
                          ("[dhcp]\nlease_time = 0\n", "must be an integer 120..4294967294 (seconds), got '0'"),
                          ("[dhcp]\nlease_time = 119\n", "must be an integer 120..4294967294 (seconds), got '119'"),
                          ("[dhcp]\nlease_time = 4294967295\n", "[dhcp] lease_time"),
                          ("[dhcp]\nlease_time = 1d\n", "[dhcp] lease_time"),
                          ("[dhcp]\nforce_routes = maybe\n", "[dhcp] force_routes"),
                          ("[dhcp]\nleasetime = 5\n", "[dhcp] leasetime in")):
        conf.write_text(body)
        res = subprocess.run([PROVNET, "--config-file", str(conf), "dhcp", "--interface", "lo"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr  # config error


@pytest.mark.parametrize("verb, words", [
    ("dhcp", ["--interface", "--network", "121", "249", "dhcp-leases", "giaddr"]),
    ("dhcp-leases", ["--all", "journal"]),
    ("dhcp-config", ["dnsmasq", "kea", "isc", "--output-dir", "classless-static-route"]),
])
def test_help_teaches(verb, words):
    out = subprocess.run([PROVNET, verb, "--help"], capture_output=True, text=True, check=True).stdout
    for word in words:
        assert word in out
