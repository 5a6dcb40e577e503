# The old neutron CLI's argument forms as pure functions: `--key value` pass-through extras, key=value specs.
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


class ArgError(ValueError):
    """An argument the user must fix; the CLI turns it into a usage error."""


# Attributes that are booleans in Neutron's API: given bare (`--router:external`) they mean True, and they
# take a value only when the next token is a boolean literal, so `--shared phy_net` keeps phy_net positional.
BOOLEAN_KEYS = frozenset({
    "router:external", "shared", "admin_state_up", "enable_dhcp", "port_security_enabled",
})
_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False,
               "on": True, "off": False}
_TYPES = ("str", "int", "bool", "dict")


def to_bool(text: str) -> bool:
    try:
        return _BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise ArgError(f"expected True or False, got {text!r}") from None


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def option_key(token: str) -> str:
    """`--dns-nameservers` -> `dns_nameservers`, `--router:external` -> `router:external` (argparse's dest rule)."""
    key = token[2:].replace("-", "_")
    if not key or key.startswith("_") or "=" in key:
        raise ArgError(f"bad option name {token!r}")
    return key


def parse_kv(text: str, allowed: Sequence[str] | None = None, required: Sequence[str] = (),
             what: str = "value") -> dict[str, str]:
    """`start=1.2.3.4,end=1.2.3.9` -> {"start": ..., "end": ...}, checking keys against `allowed`/`required`."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ArgError(f"{what} {text!r}: expected key=value[,key=value...], got {item!r}")
        if key in out:
            raise ArgError(f"{what} {text!r}: key {key!r} given twice")
        if allowed is not None and key not in allowed:
            raise ArgError(f"{what} {text!r}: unknown key {key!r} (expected {', '.join(allowed)})")
        out[key] = value.strip()
    missing = [k for k in required if not out.get(k)]
    if missing:
        raise ArgError(f"{what} {text!r}: missing {', '.join(missing)}")
    return out


def parse_allocation_pool(text: str) -> dict[str, str]:
    return parse_kv(text, ("start", "end"), ("start", "end"), what="--allocation-pool")


def parse_host_route(text: str) -> dict[str, str]:
    return parse_kv(text, ("destination", "nexthop"), ("destination", "nexthop"), what="--host-route")


def parse_fixed_ip(text: str) -> dict[str, str]:
    """`ip_address=IP[,subnet_id=S]` (also `subnet_id=S` alone); subnet_id may still be a name."""
    spec = parse_kv(text, ("ip_address", "subnet_id", "subnet"), what="--fixed-ip")
    if "subnet" in spec:
        if "subnet_id" in spec:
            raise ArgError(f"--fixed-ip {text!r}: give subnet or subnet_id, not both")
        spec["subnet_id"] = spec.pop("subnet")
    if not spec.get("ip_address") and not spec.get("subnet_id"):
        raise ArgError(f"--fixed-ip {text!r}: needs ip_address=IP and/or subnet_id=SUBNET")
    return spec


def parse_address_pair(text: str) -> dict[str, str]:
    return parse_kv(text, ("ip_address", "mac_address"), ("ip_address",), what="--allowed-address-pair")


def parse_property(text: str) -> tuple[str, str]:
    """`--property k=v`: the value may itself contain `=` or `,`."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ArgError(f"--property {text!r}: expected KEY=VALUE")
    return key.strip(), value


def parse_interface(text: str) -> tuple[str, str]:
    """router-interface-add's INTERFACE: `SUBNET`, `subnet=SUBNET` or `port=PORT` -> (kind, name_or_id)."""
    kind, sep, value = text.partition("=")
    if not sep:
        return "subnet", text
    if kind not in ("subnet", "port") or not value:
        raise ArgError(f"interface {text!r}: expected SUBNET, subnet=SUBNET or port=PORT")
    return kind, value


def _convert(value: str, type_name: str | None) -> Any:
    if type_name in (None, "str"):
        return value
    if type_name == "int":
        try:
            return int(value)
        except ValueError:
            raise ArgError(f"expected an integer, got {value!r}") from None
    if type_name == "bool":
        return to_bool(value)
    if value.startswith(("{", "[")):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            raise ArgError(f"bad JSON object {value!r}: {exc}") from None
        if not isinstance(parsed, dict):
            raise ArgError(f"expected a JSON object, got {value!r}")
        return parsed
    return parse_kv(value, what="type=dict value")


def split_args(tokens: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Split what click left over into positionals and pass-through attributes, as the neutron CLI did.

    `--key value` and `--key=value` give the string "value" (the API converts "True"/"False", "100");
    `--key` alone (or a boolean attribute followed by a non-boolean word) gives True;
    `--key type=int 5` / `type=bool` / `type=dict a=1,b=2` convert here;
    `--key list=true a b c` gives a list (with type= applying to each item); `--key action=clear` gives None
    ([] with list=true). Keys take argparse's dest form (dashes become underscores). Every other token is a
    positional argument, in order.
    """
    positionals: list[str] = []
    extras: dict[str, Any] = {}
    i = 0
    n = len(tokens)

    def is_value(tok: str) -> bool:
        return tok != "--" and not (tok.startswith("-") and not is_number(tok))

    while i < n:
        tok = tokens[i]
        i += 1
        if tok == "--":
            continue
        if not tok.startswith("--"):
            if tok.startswith("-") and not is_number(tok):
                raise ArgError(f"no such option: {tok}")
            positionals.append(tok)
            continue
        name, eq, inline = tok.partition("=")
        key = option_key(name)
        if key in extras:
            raise ArgError(f"option {name} given twice")
        if eq:
            extras[key] = inline
            continue
        type_name: str | None = None
        as_list = clear = False
        while i < n and tokens[i].startswith(("type=", "list=", "action=")):
            meta, _, arg = tokens[i].partition("=")
            if meta == "type":
                if arg not in _TYPES:
                    raise ArgError(f"{name}: unknown {tokens[i]!r} (types: {', '.join(_TYPES)})")
                type_name = arg
            elif meta == "list":
                as_list = to_bool(arg)
            elif arg == "clear":
                clear = True
            else:
                raise ArgError(f"{name}: unknown {tokens[i]!r} (only action=clear)")
            i += 1
        if clear:
            extras[key] = [] if as_list else None
            continue
        if as_list:
            values = []
            while i < n and is_value(tokens[i]):
                values.append(_convert(tokens[i], type_name))
                i += 1
            extras[key] = values
            continue
        has_value = i < n and is_value(tokens[i])
        if has_value and key in BOOLEAN_KEYS and type_name is None and tokens[i].lower() not in _BOOL_WORDS:
            has_value = False
        if has_value:
            extras[key] = _convert(tokens[i], type_name)
            i += 1
        elif type_name not in (None, "bool"):
            raise ArgError(f"{name} type={type_name}: missing value")
        else:
            extras[key] = True
    return positionals, extras


def take_positionals(positionals: Sequence[str], names: Sequence[str]) -> list[str]:
    """Exactly len(names) positionals, else an ArgError naming what is missing or extra."""
    if len(positionals) < len(names):
        missing = " ".join(names[len(positionals):])
        raise ArgError(f"missing argument {missing}")
    if len(positionals) > len(names):
        raise ArgError(f"unexpected extra argument(s): {' '.join(positionals[len(names):])}")
    return list(positionals)


def merge_body(body: Mapping[str, Any], extras: Mapping[str, Any]) -> dict[str, Any]:
    """Pass-through extras join the body; the same attribute from an option and an extra is an error."""
    both = sorted(set(body) & set(extras))
    if both:
        raise ArgError(f"attribute(s) given twice: {', '.join(both)}")
    return {**body, **extras}
