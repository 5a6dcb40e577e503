# Doctor's readers (pure): oslo INI, devstack local.conf, dnsmasq files and command lines, iptables-save, bad input.
from __future__ import annotations

import ipaddress

from provnet.doctor import dnsmasq as dm
from provnet.doctor.ini import Location, parse_bool, parse_ini, read_ini, split_list
from provnet.doctor.iptables import evaluate, ingress_chains, parse_iptables_save
from provnet.doctor.localconf import parse_local_conf, read_local_conf

# ---- oslo INI ------------------------------------------------------------------------------------------------


def test_ini_lines_sections_comments_and_separators():
    ini = parse_ini("# head\n[DEFAULT]\na = 1\n; other comment\n[OVS]\nbridge_mappings: physnet1:br-phy\n", "f.ini")
    assert [(e.section, e.key, e.value, e.where.line) for e in ini.entries] == [
        ("DEFAULT", "a", "1", 3), ("ovs", "bridge_mappings", "physnet1:br-phy", 6)]
    assert ini.sections == {"DEFAULT": Location("f.ini", 2), "ovs": Location("f.ini", 5)}


def test_ini_equal_before_colon_splits_on_equal():
    ini = parse_ini("[x]\nurl = http://h:1\n", "f")
    assert ini.get("x", "url").value == "http://h:1"


def test_ini_repeated_key_last_wins_and_is_reported():
    ini = parse_ini("[DEFAULT]\nagent_down_time = 75\nx = 1\nagent_down_time = 10\n", "n.conf")
    assert ini.get("DEFAULT", "agent_down_time").value == "10"
    assert ini.get("DEFAULT", "agent_down_time").where.line == 4
    [group] = ini.repeated()
    assert [e.where.line for e in group] == [2, 4]


def test_ini_inline_comment_stays_in_value_as_oslo_reads_it():
    ini = parse_ini("[DEFAULT]\nenable_isolated_metadata = True # on\n", "d.ini")
    assert ini.get("DEFAULT", "enable_isolated_metadata").value == "True # on"
    assert parse_bool("True # on") is None


def test_ini_quotes_and_continuation_lines():
    ini = parse_ini("[a]\nk = \"quoted\"\nm = one\n  two\n\n", "f")
    assert ini.get("a", "k").value == "quoted"
    assert ini.get("a", "m").value == "one\ntwo"
    assert split_list(ini.get("a", "m").value) == ["one", "two"]


def test_ini_bad_lines_become_problems_not_exceptions():
    ini = parse_ini("orphan = 1\n[ok\n  stray\n[s]\nnovalue\n= x\n", "bad.ini")
    messages = [(where.line, msg) for where, msg in ini.problems]
    assert messages[0] == (1, "'orphan' is set before any [section] header")
    assert any(line == 2 and "invalid section header" in msg for line, msg in messages)
    assert any(line == 3 and "continues nothing" in msg for line, msg in messages)
    assert any(line == 5 and "no '=' or ':'" in msg for line, msg in messages)
    assert any(line == 6 and "empty key" in msg for line, msg in messages)


def test_read_missing_file_is_a_problem(tmp_path):
    ini = read_ini(tmp_path / "nope.ini")
    assert ini.entries == [] and "cannot read" in ini.problems[0][1]


# ---- devstack local.conf ----------------------------------------------------------------------------------------

LOCAL_CONF = """\
[[local|localrc]]
ADMIN_PASSWORD=secret
Q_ML2_TENANT_NETWORK_TYPE=flat,vlan
export OVS_BRIDGE_MAPPINGS="physnet1:br-phy"  # quoted, commented
[[post-config|$NEUTRON_CONF]]
[DEFAULT]
agent_down_time = 20
[[post-config|/$Q_PLUGIN_CONF_FILE]]
[ml2_type_flat]
flat_networks = physnet1
[[post-config|$UNKNOWN_CONF]]
[x]
y = 1
"""


def test_local_conf_variables_and_post_config_with_lines():
    conf = parse_local_conf(LOCAL_CONF, "local.conf")
    assert conf.variables["OVS_BRIDGE_MAPPINGS"] == ("physnet1:br-phy", Location("local.conf", 4))
    opts = conf.option_entries()
    assert [(e.key, e.value, e.where.line) for e in opts["ml2_conf.ini"]] == [
        ("tenant_network_types", "flat,vlan", 3), ("flat_networks", "physnet1", 10)]
    assert [(e.key, e.value, e.where.line) for e in opts["neutron.conf"]] == [("agent_down_time", "20", 7)]
    assert opts["openvswitch_agent.ini"][0].value == "physnet1:br-phy"
    assert set(opts) == {"ml2_conf.ini", "neutron.conf", "openvswitch_agent.ini"}


def test_local_conf_text_outside_meta_sections_is_a_problem(tmp_path):
    conf = parse_local_conf("FOO=1\n[[local|localrc]]\nBAR=2\n", "l")
    assert conf.problems[0][0].line == 1
    assert "cannot read" in read_local_conf(tmp_path / "missing").problems[0][1]


# ---- dnsmasq -----------------------------------------------------------------------------------------------------

SEED_OPTS = """\
tag:tag0,option:classless-static-route,169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1
tag:tag0,249,169.254.169.254/32,172.16.1.2,0.0.0.0/0,172.16.1.1
tag:tag0,option:router,172.16.1.1
"""


def test_opts_file_tags_codes_and_lines():
    cfg = dm.parse_opts_file(SEED_OPTS, "opts")
    assert [(o.code, o.tags, o.where.line) for o in cfg.options] == [
        (121, ("tag0",), 1), (249, ("tag0",), 2), (3, ("tag0",), 3)]
    routes = dm.parse_routes(cfg.options[0])
    assert routes == [(ipaddress.IPv4Network("169.254.169.254/32"), ipaddress.IPv4Address("172.16.1.2")),
                      (ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv4Address("172.16.1.1"))]


def test_seed_cmdline_range_interface_and_reference():
    cmd = ("sudo dnsmasq --strict-order --bind-interfaces -i qbr59bbcb56-86 "
           "--dhcp-range=set:tag0,172.16.1.100,172.16.1.109,2h --dhcp-optsfile=/home/demo/opts -d")
    cfg = dm.parse_cmdline(cmd, Location("cmd", 1))
    [r] = cfg.ranges
    assert (str(r.start), str(r.end), r.set_tags, r.lease, r.dynamic) == (
        "172.16.1.100", "172.16.1.109", ("tag0",), "2h", True)
    assert cfg.interfaces == ["qbr59bbcb56-86"]
    assert cfg.referenced == [("dhcp-optsfile", "/home/demo/opts", Location("cmd", 1))]


def test_neutron_style_static_range_hosts_and_short_options():
    cfg = dm.parse_cmdline("dnsmasq -F set:s0,172.16.1.0,static,255.255.255.0,86400s "
                           "-G fa:16:3e:79:1e:2c,host-1,172.16.1.103 --dhcp-host fa:16:3e:00:00:01,set:x,ignore "
                           "-O tag:s0,option:router,172.16.1.1", Location("c"))
    [r] = cfg.ranges
    assert (r.mode, r.dynamic, str(r.network())) == ("static", False, "172.16.1.0/24")
    assert [(h.macs, h.ip, h.hostname, h.ignore) for h in cfg.hosts] == [
        (("fa:16:3e:79:1e:2c",), "172.16.1.103", "host-1", False), (("fa:16:3e:00:00:01",), None, None, True)]
    assert cfg.options[0].code == 3


def test_conf_file_and_hosts_file_are_told_apart():
    conf = dm.parse_any_file("# c\ndhcp-range=10.0.0.10,10.0.0.20,1h\ndhcp-option=3,10.0.0.1\n", "dnsmasq.conf")
    assert len(conf.ranges) == 1 and conf.options[0].code == 3 and conf.ranges[0].where.line == 2
    hosts = dm.parse_any_file("fa:16:3e:79:1e:2c,172.16.1.103\nfa:16:3e:79:1e:2d,172.16.1.104\n", "hosts")
    assert [h.ip for h in hosts.hosts] == ["172.16.1.103", "172.16.1.104"] and not hosts.options


def test_cmdline_file_joins_backslash_lines_and_keeps_line(tmp_path):
    path = tmp_path / "run.sh"
    path.write_text("#!/bin/sh\necho hi\ndnsmasq -d \\\n  --dhcp-range=10.0.0.5,10.0.0.9\n")
    cfg = dm.read_cmdline_file(path)
    assert cfg.ranges[0].where == Location(str(path), 3)


def test_dnsmasq_bad_input_is_reported():
    cfg = dm.parse_cmdline("dnsmasq --dhcp-range=bogus --dhcp-range=10.0.0.9,10.0.0.1 --dhcp-option=router,1.2.3.4 "
                           "'unclosed", Location("c"))
    assert any("cannot split" in m for _, m in cfg.problems)
    cfg = dm.parse_cmdline("dnsmasq --dhcp-range=bogus --dhcp-range=10.0.0.9,10.0.0.1 --dhcp-option=router,1.2.3.4",
                           Location("c"))
    messages = [m for _, m in cfg.problems]
    assert any("no IPv4 start address" in m for m in messages)
    assert any("before its start" in m for m in messages)
    assert any("neither a number nor option:<name>" in m for m in messages)
    odd = dm.parse_option("121,10.0.0.0/8", Location("x"))
    assert "odd number" in dm.parse_routes(odd)


def test_options_for_prefers_tagged_and_honours_negation():
    cfg = dm.parse_opts_file("option:router,10.0.0.1\ntag:a,option:router,10.0.0.2\ntag:!a,3,10.0.0.3\n", "o")
    assert dm.options_for(cfg, ["a"])[3].values == ("10.0.0.2",)
    assert dm.options_for(cfg, ["b"])[3].values == ("10.0.0.3",)


def test_unreadable_reference_is_noted_not_fatal(tmp_path):
    cfg = dm.parse_cmdline(f"dnsmasq --dhcp-optsfile={tmp_path}/none", Location("c"))
    out = dm.resolve_references(cfg, [])
    assert out.unread and not out.problems
    (tmp_path / "opts").write_text("3,10.0.0.1\n")
    cfg = dm.parse_cmdline(f"dnsmasq --dhcp-optsfile={tmp_path}/opts", Location("c"))
    assert dm.resolve_references(cfg, []).options[0].code == 3
    assert dm.resolve_references(cfg, ["/elsewhere/opts"]).options == []  # given already by name


# ---- iptables ----------------------------------------------------------------------------------------------------

RULES = """\
*nat
-A PREROUTING -d 169.254.169.254/32 -j REDIRECT --to-ports 9697
COMMIT
*filter
:neutron-openvswi-iabc-1 - [0:0]
:neutron-openvswi-sg-fallback - [0:0]
-A neutron-openvswi-iabc-1 -s 172.16.1.0/24 -p udp -m udp --sport 67 --dport 68 -j RETURN
-A neutron-openvswi-iabc-1 -m state --state RELATED,ESTABLISHED -j RETURN
-A neutron-openvswi-iabc-1 -j neutron-openvswi-sg-fallback
-A neutron-openvswi-sg-fallback -j DROP
COMMIT
"""


def test_iptables_evaluation_follows_chains():
    tables = parse_iptables_save(RULES, "r")
    assert ingress_chains(tables) == {"neutron-openvswi-iabc-1": "abc-1"}
    ok = evaluate(tables, "neutron-openvswi-iabc-1", "172.16.1.99", "172.16.1.103")
    assert ok.allowed and ok.rule.where.line == 7
    dropped = evaluate(tables, "neutron-openvswi-iabc-1", "10.9.9.9", "172.16.1.103")
    assert not dropped.allowed and dropped.rule.where.line == 10
    assert "PREROUTING" not in tables.rules  # nat table ignored


def test_iptables_negation_and_port_ranges():
    tables = parse_iptables_save("*filter\n-A c ! -s 10.0.0.0/8 -p udp --sport 60:70 -j DROP\n-A c -j ACCEPT\n", "r")
    assert not evaluate(tables, "c", "192.168.0.1", "1.1.1.1").allowed
    assert evaluate(tables, "c", "10.0.0.1", "1.1.1.1").allowed
    assert evaluate(tables, "c", "192.168.0.1", "1.1.1.1", sport=80).allowed
