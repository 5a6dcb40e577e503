# The pure cores of identity: the policy language, Neutron's match rules, the token cache, Keystone's token document,
# the noauth bind check and the identity options; hostile and malformed input included.
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provnet.api.auth import Auth, check_noauth_bind, is_loopback, route_policy
from provnet.config import ConfigError, load_config, render
from provnet.identity.neutron_policy import DEFAULT_RULES, match_rule
from provnet.identity.policy import Policy, PolicyError, read_policy_file
from provnet.identity.tokens import (
    Identity,
    InvalidToken,
    KeystoneSettings,
    KeystoneUnavailable,
    KeystoneValidator,
    TokenCache,
    token_key,
)

DEFAULTS = Policy(DEFAULT_RULES)


def creds(*roles: str, project: str = "p1") -> dict:
    return {"roles": frozenset(roles), "project_id": project, "tenant_id": project, "user_id": "u1"}


# --- the rule language -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, roles, expected", [
    ("", (), True),
    ("@", (), True),
    ("!", ("admin",), False),
    ("role:admin", ("admin",), True),
    ("role:ADMIN", ("admin",), True),
    ("role:admin", ("member",), False),
    ("role:admin or role:member", ("member",), True),
    ("role:admin and role:member", ("member",), False),
    ("not role:admin", ("member",), True),
    ("role:reader and not (role:admin or role:service)", ("reader",), True),
    ("role:reader and not (role:admin or role:service)", ("reader", "service"), False),
    ("(role:a or role:b) and (role:c or role:d)", ("b", "c"), True),
    ("role:a or role:b and role:c", ("a",), True),  # `and` binds tighter than `or`
    ("(role:a or role:b) and role:c", ("a",), False),
    ("project_id:%(project_id)s", (), True),
    ("tenant_id:%(project_id)s", (), True),
    ("project_id:%(network:project_id)s", (), False),  # not in the target: False, not an error
    ("'p1':%(project_id)s", (), True),
    ("user_id:u1", (), True),
    ("field:networks:shared=True", (), True),
    ("field:networks:shared=False", (), False),
    ("field:port:device_owner=~^network:", (), True),
    ("field:port:device_owner=~^compute:", (), False),
])
def test_rules_evaluate_as_oslo_policy_does(rule: str, roles: tuple[str, ...], expected: bool) -> None:
    policy = Policy({"r": rule})
    target = {"project_id": "p1", "shared": "True", "device_owner": "network:router_interface"}
    assert policy.check("r", target, creds(*roles)) is expected


def test_rule_references_and_the_default_rule() -> None:
    policy = Policy({"default": "role:admin", "a": "rule:b", "b": "role:member", "c": "rule:missing"})
    assert policy.check("a", {}, creds("member"))
    assert not policy.check("c", {}, creds("member"))  # a missing rule is `default`
    assert policy.check("c", {}, creds("admin"))
    assert not policy.check("nothing-at-all", {}, creds("member"))
    assert not Policy({}).check("anything", {}, creds("admin"))  # no default at all: deny


@pytest.mark.parametrize("rule, message", [
    ("role:admin and", "ends where a check was expected"),
    ("(role:admin", "is not closed"),
    ("role:admin)", "unexpected ')'"),
    ("or role:admin", "unexpected 'or'"),
    ("admin", "is not a check"),
    ("http://policy.example.com", "remote policy servers"),
    ("field:networks:shared", "field:RESOURCE:FIELD=VALUE"),
    ("field:port:device_owner=~[", "bad regular expression"),
])
def test_a_rule_that_does_not_parse_is_an_error_naming_it(rule: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        Policy({"broken": rule}, "policy.yaml")
    assert "policy.yaml" in str(info.value) and "'broken'" in str(info.value) and message in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("()ro:le andnt!@'%s_{}x ")), max_size=40))
def test_any_text_parses_or_is_a_policy_error(text: str) -> None:
    try:
        policy = Policy({"r": text})
    except PolicyError:
        return
    assert policy.check("r", {"project_id": "p1"}, creds("reader")) in (True, False)


def test_policy_files_in_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text('# comments are fine\n"create_network": "role:reader"\n')
    assert read_policy_file(tmp_path / "p.yaml") == {"create_network": "role:reader"}
    (tmp_path / "p.json").write_text('{"get_port": ""}')
    assert read_policy_file(tmp_path / "p.json") == {"get_port": ""}
    (tmp_path / "empty.yaml").write_text("")
    assert read_policy_file(tmp_path / "empty.yaml") == {}
    for name, text, message in (("list.yaml", "- a\n- b\n", "must map rule names"),
                                ("num.yaml", "create_network: 5\n", "must be a string"),
                                ("bad.yaml", "a: [\n", "not valid YAML"),
                                ("bad.json", "{", "not valid JSON")):
        (tmp_path / name).write_text(text)
        with pytest.raises(PolicyError, match=message):
            read_policy_file(tmp_path / name)
    with pytest.raises(PolicyError, match="cannot read"):
        read_policy_file(tmp_path / "missing.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError, match="not UTF-8"):
        read_policy_file(tmp_path / "bin.yaml")


def test_a_bad_policy_file_stops_the_api_with_the_option_named(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text('"get_network": "role:admin or"\n')
    (tmp_path / "provnet.conf").write_text(f"[oslo_policy]\npolicy_file = {tmp_path / 'policy.yaml'}\n")
    config = load_config([tmp_path / "provnet.conf"], env={})
    with pytest.raises(ConfigError, match=r"\[oslo_policy\] policy_file: .*policy.yaml: rule 'get_network'"):
        Auth.from_config(config)


# --- Neutron's defaults and how a check is composed --------------------------------------------------------------

def test_match_rules_are_composed_and_rendered_as_neutron_does() -> None:
    rule = match_rule("create_port", "port", {"network_id": "n", "binding:host_id": "h", "device_id": ""})
    assert rule.rules == ("create_port", "create_port:binding:host_id")  # device_id "" is its default
    assert rule.text == "(rule:create_port and rule:create_port:binding:host_id)"
    rule = match_rule("create_port", "port", {"fixed_ips": [{"subnet_id": "s", "ip_address": "1.2.3.4"}]})
    assert rule.rules == ("create_port", "create_port:fixed_ips", "create_port:fixed_ips:subnet_id",
                          "create_port:fixed_ips:ip_address")
    assert rule.text == ("(rule:create_port and (rule:create_port:fixed_ips and (rule:create_port:fixed_ips:subnet_id "
                         "and rule:create_port:fixed_ips:ip_address)))")
    assert match_rule("create_network", "network", {"shared": "False"}).rules == ("create_network",)
    assert match_rule("update_network", "network", {"shared": False}, updating=True).rules == (
        "update_network", "update_network:shared")  # on update every attribute given counts
    assert match_rule("get_network", "network", {}).text == "rule:get_network"


@pytest.mark.parametrize("action, target, who, allowed", [
    ("get_network", {"project_id": "p1"}, creds("reader"), True),
    ("get_network", {"project_id": "p2"}, creds("reader"), False),
    ("get_network", {"project_id": "p2", "shared": True}, creds("reader"), True),
    ("get_network", {"project_id": "p2", "router:external": True}, creds("reader"), True),
    ("get_network", {"project_id": "p2"}, creds("service"), True),
    ("get_network:provider:physical_network", {"project_id": "p2"}, creds("service"), True),  # agents read it
    ("get_network:provider:physical_network", {"project_id": "p2", "router:external": True}, creds("member"), False),
    ("get_network", {"project_id": "p2"}, creds("admin", "member", "reader"), True),
    ("create_network", {"project_id": "p1"}, creds("reader"), False),
    ("create_network", {"project_id": "p1"}, creds("member", "reader"), True),
    ("create_network:provider:network_type", {"project_id": "p1"}, creds("member", "reader"), False),
    ("create_port:binding:host_id", {"project_id": "p1"}, creds("service"), True),
    ("create_port:binding:host_id", {"project_id": "p1"}, creds("member"), False),
    ("get_port", {"project_id": "p2", "network:project_id": "p1"}, creds("reader"), True),  # on my network
    ("get_port:binding:vif_details", {"project_id": "p1"}, creds("member", "reader"), False),
    ("get_router", {"project_id": "p1"}, creds("reader"), True),
    ("get_agent", {}, creds("member"), False),
    ("provnet:instances", {}, creds("member", "reader"), False),
    ("provnet:instances", {}, creds("service"), True),
    ("provnet:report_agent_state", {}, creds("admin"), False),
    ("provnet:report_agent_state", {}, creds("service"), True),
    ("provnet:update_port_status", {}, creds("member"), False),
    ("provnet:update_port_status", {}, creds("service"), True),
])
def test_neutrons_default_rules(action: str, target: dict, who: dict, allowed: bool) -> None:
    assert DEFAULTS.check(action, target, who) is allowed


def test_routes_map_to_their_policy_decisions() -> None:
    assert route_policy("GET", "/provnet/v1/instances/{id}/password") == "provnet:instances"
    assert route_policy("POST", "/provnet/v1/agents/report") == "provnet:report_agent_state"
    assert route_policy("POST", "/provnet/v1/ports/{id}/status") == "provnet:update_port_status"
    assert route_policy("GET", "/provnet/v1/revision") == "provnet:agent_lookups"
    assert route_policy("GET", "/provnet/v1/metadata/explain") == "provnet:metadata_explain"
    assert route_policy("HEAD", "/healthz") == route_policy("GET", "/healthz") == "public"
    assert route_policy("GET", "/v2.0/ports") == "resource"
    assert route_policy("POST", "/v2.0/agents") is None  # agents come from their reports only
    assert route_policy("PATCH", "/v2.0/ports/{id}") is None


# --- tokens -------------------------------------------------------------------------------------------------------

def identity(expires: float = 10_000.0, project: str = "p1") -> Identity:
    return Identity("u", "user", project, "proj", frozenset({"member"}), expires)


def test_the_cache_keeps_a_token_until_its_expiry_and_at_most_the_ttl() -> None:
    cache = TokenCache(ttl=300, negative_ttl=10)
    key = token_key("t")
    cache.remember(key, identity(expires=1_000.0), now=50.0, wall=900.0)  # expires in 100 s: TTL capped there
    assert cache.lookup(key, 149.9) == identity(expires=1_000.0)
    assert cache.lookup(key, 150.0) is None
    cache.remember(key, identity(expires=100_000.0), now=0.0, wall=0.0)
    assert cache.lookup(key, 299.0) is not None and cache.lookup(key, 300.0) is None
    cache.remember(key, identity(expires=10.0), now=0.0, wall=20.0)  # already expired: not kept
    assert cache.lookup(key, 0.0) is None
    cache.reject(key, now=0.0)
    assert cache.lookup(key, 9.0) is False and cache.lookup(key, 10.0) is None
    assert token_key("t") != token_key("u") and len(token_key("t")) == 32


def test_the_cache_is_bounded() -> None:
    cache = TokenCache(ttl=300, negative_ttl=10, max_entries=100)
    for i in range(1_000):
        cache.reject(token_key(str(i)), 0.0)
    assert len(cache) == 100 and cache.lookup(token_key("999"), 1.0) is False
    assert cache.lookup(token_key("0"), 1.0) is None


def test_keystones_token_document() -> None:
    body = {"token": {"user": {"id": "u1", "name": "alice"}, "project": {"id": "p1", "name": "demo"},
                      "roles": [{"id": "r", "name": "Member"}, {"id": "s", "name": "reader"}],
                      "expires_at": "2030-01-01T00:00:00.000000Z"}}
    got = Identity.from_keystone(body)
    assert (got.user_id, got.project_id, got.roles) == ("u1", "p1", frozenset({"member", "reader"}))
    assert got.expires_at == 1893456000.0 and got.creds["tenant_id"] == "p1"
    unscoped = Identity.from_keystone({"token": {"user": {"id": "u"}, "expires_at": "2030-01-01T00:00:00Z"}})
    assert unscoped.project_id == "" and unscoped.roles == frozenset()
    for bad in ({}, {"token": None}, {"token": {"user": {}}}, {"token": {"user": {"id": "u"}, "expires_at": "x"}}):
        with pytest.raises(ValueError):
            Identity.from_keystone(bad)  # type: ignore[arg-type]


class FakeResponse:
    def __init__(self, status: int, body: dict | None = None) -> None:
        self.status_code, self._body = status, body

    def json(self) -> dict:
        return self._body or {}


class ScriptedSession:
    """Stands in for keystoneauth's session only in these unit tests (the real Keystone is in test_identity_api):
    it answers with the statuses listed and counts the calls."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.invalidated = 0

    def get(self, url: str, **kwargs) -> FakeResponse:
        self.calls += 1
        status = self.answers.pop(0)
        body = {"token": {"user": {"id": "u"}, "project": {"id": "p"}, "roles": [{"name": "member"}],
                          "expires_at": "2099-01-01T00:00:00Z"}}
        return FakeResponse(status, body if status == 200 else None)

    def invalidate(self) -> None:
        self.invalidated += 1


def validator(session: ScriptedSession, clock=None) -> KeystoneValidator:
    settings_ = KeystoneSettings(auth_url="http://127.0.0.1:1/v3", username="u", password="p", project_name="s")
    return KeystoneValidator(settings_, session=session, **({"clock": clock} if clock else {}))


def test_one_keystone_call_for_many_concurrent_requests_with_one_token() -> None:
    session = ScriptedSession(200)
    v = validator(session)

    async def burst():
        return await asyncio.gather(*(v.identify("tok") for _ in range(50)))

    results = asyncio.run(burst())
    assert session.calls == 1 and {r.user_id for r in results} == {"u"}
    v.close()


def test_keystones_answers_map_to_pass_reject_or_unavailable() -> None:
    now = [0.0]
    session = ScriptedSession(404, 401, 200, 403, 500)
    v = validator(session, clock=lambda: now[0])
    with pytest.raises(InvalidToken):
        asyncio.run(v.identify("revoked"))
    with pytest.raises(InvalidToken):  # remembered: Keystone is not asked again
        asyncio.run(v.identify("revoked"))
    assert session.calls == 1
    assert asyncio.run(v.identify("after-our-own-token-expired")).user_id == "u"  # 401: new service token, retry
    assert session.invalidated == 1
    with pytest.raises(KeystoneUnavailable, match="service or admin role"):
        asyncio.run(v.identify("t3"))
    with pytest.raises(KeystoneUnavailable, match="service or admin role"):
        asyncio.run(v.identify("t4"))  # within the back-off: failed at once, Keystone not asked
    assert session.calls == 4
    now[0] += 1.5
    with pytest.raises(KeystoneUnavailable, match="HTTP 500"):
        asyncio.run(v.identify("t4"))
    for hostile in ("", "x" * 9000, "a\nb", "\x00"):
        with pytest.raises(InvalidToken):
            asyncio.run(v.identify(hostile))
    assert session.calls == 5  # hostile tokens never reach Keystone
    v.close()


# --- noauth and the identity options ------------------------------------------------------------------------------

def test_noauth_refuses_a_public_bind_unless_the_file_says_so(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("controller")
    check_noauth_bind(load_config(files=[], env={}))
    public = load_config(files=[], env={}, overrides={"bind_host": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"set \[DEFAULT\] noauth_allow_remote = true"):
        check_noauth_bind(public)
    (tmp_path / "c.conf").write_text("[DEFAULT]\nbind_host = 10.0.0.5\nnoauth_allow_remote = true\n")
    check_noauth_bind(load_config([tmp_path / "c.conf"], env={}))


def test_keystone_needs_its_settings_and_config_show_masks_the_password(tmp_path: Path) -> None:
    (tmp_path / "c.conf").write_text("[DEFAULT]\nauth_strategy = keystone\n[keystone_authtoken]\n"
                                     "auth_url = http://k:5000/v3\npassword = hunter2-secret\n")
    config = load_config([tmp_path / "c.conf"], env={})
    with pytest.raises(ConfigError, match=r"\[keystone_authtoken\] username"):
        Auth.from_config(config)
    assert "hunter2-secret" not in render(config)
    for bad, message in (("auth_strategy = ldap", "must be noauth or keystone"),
                         ("[keystone_authtoken]\nauth_type = token", "auth_type in .* must be password")):
        (tmp_path / "b.conf").write_text(bad if bad.startswith("[") else f"[DEFAULT]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_config([tmp_path / "b.conf"], env={})


def test_memcached_servers_is_ignored_with_a_log_line(tmp_path: Path, caplog) -> None:
    """Neutron's configuration files name memcached_servers: accepted, and the log says provnet caches in memory."""
    import logging

    from provnet.api.auth import keystone_settings

    (tmp_path / "c.conf").write_text("[DEFAULT]\nauth_strategy = keystone\n[keystone_authtoken]\n"
                                     "auth_url = http://k:5000/v3\nusername = neutron\npassword = pw-secret\n"
                                     "memcached_servers = 10.0.0.9:11211\n")
    with caplog.at_level(logging.INFO, logger="provnet.api.auth"):
        settings = keystone_settings(load_config([tmp_path / "c.conf"], env={}))
    assert settings.auth_url == "http://k:5000/v3" and settings.username == "neutron"
    assert any("memcached_servers is ignored" in r.getMessage() for r in caplog.records)
    assert "pw-secret" not in caplog.text


def test_provnet_api_refuses_noauth_on_a_public_address_and_says_which_option(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "provnet.cli", "--state-path", str(tmp_path), "api",
                           "--bind-host", "0.0.0.0", "--bind-port", "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "noauth_allow_remote = true" in proc.stderr and "auth_strategy = keystone" in proc.stderr


@pytest.mark.parametrize("cls_path", ["provnet.registry.neutron:NeutronRegistry",
                                      "provnet.registry.remote:RemoteRegistry", "provnet.registry.sql:SqlRegistry"])
def test_every_registry_implements_every_method_of_the_interface(cls_path: str) -> None:
    """Companion mode's NeutronRegistry (and the other two) answer every method of the Registry interface with the
    same parameters: a method main adds to the interface and a registry lacks fails here, not in an agent."""
    import importlib
    import inspect

    from provnet.registry.base import Registry

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    wanted = [m for m in vars(Registry) if not m.startswith("_") and callable(getattr(Registry, m))]
    assert "reservation_rows" in wanted and "wait_changes" in wanted and "list_routers_on_l3_agent" in wanted
    for method in wanted:
        assert callable(getattr(cls, method, None)), f"{name} lacks {method}"
        want = list(inspect.signature(getattr(Registry, method)).parameters)
        have = list(inspect.signature(getattr(cls, method)).parameters)
        assert have == want, f"{name}.{method}{have} differs from Registry.{method}{want}"
