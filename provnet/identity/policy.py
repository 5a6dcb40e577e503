# oslo.policy's rule language (the policy.yaml format), compiled to Python closures: parse, evaluate, load a file.
"""Why not oslo.policy itself: it needs oslo.config's global option object and a dozen oslo packages, imports in
~210 ms, and enforces a Neutron-style check tree (an AND of the action and its attribute rules) in ~53 us
(benchmarks/policy_engine.py); a list of 1,000 ports takes ~5,000 checks. The same language compiled to closures
evaluates in 1-3 us and reads the same files. What is read: `rule:`, `role:`, `field:` (Neutron's
`field:networks:shared=True`, `~regex`), `project_id:`/`tenant_id:` and any generic `key:%(target)s` or
`'literal':%(target)s` check, `@`, `!`, `and`, `or`, `not`, parentheses; an empty rule allows everyone. Unlike
oslo.policy, a rule that does not parse is an error at load time (with the file and the rule), not a silent deny.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

Check = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]
MAX_CALLERS = 4096  # callers whose caller-only answers are remembered (the entries hold their credentials)


class PolicyError(ValueError):
    """A policy file or rule that cannot be used; the message names the file and the rule."""


_KEYWORDS = ("and", "or", "not")


def _tokens(text: str) -> list[str]:
    """Whitespace-separated tokens with parentheses split off (oslo's tokenizer)."""
    out: list[str] = []
    for raw in text.split():
        lead = len(raw) - len(raw.lstrip("("))
        trail = len(raw) - len(raw.rstrip(")"))
        core = raw[lead:len(raw) - trail] if trail else raw[lead:]
        out.extend("(" * lead)
        if core:
            out.append(core.lower() if core.lower() in _KEYWORDS else core)
        out.extend(")" * trail)
    return out


class _Parser:
    """Recursive descent: `or` binds loosest, then `and`, then `not`; atoms are checks or parenthesised rules."""

    def __init__(self, text: str, compile_check: Callable[[str], Check]) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.compile_check = compile_check

    def parse(self) -> Check:
        if not self.tokens:
            return _always
        check = self._or()
        if self.pos != len(self.tokens):
            raise PolicyError(f"unexpected {self.tokens[self.pos]!r}")
        return check

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self) -> Check:
        parts = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _any_of(parts)

    def _and(self) -> Check:
        parts = [self._not()]
        while self._peek() == "and":
            self.pos += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else _all_of(parts)

    def _not(self) -> Check:
        if self._peek() == "not":
            self.pos += 1
            inner = self._not()
            return lambda target, creds: not inner(target, creds)
        return self._atom()

    def _atom(self) -> Check:
        token = self._peek()
        if token is None:
            raise PolicyError("the rule ends where a check was expected")
        self.pos += 1
        if token == "(":
            check = self._or()
            if self._peek() != ")":
                raise PolicyError("a '(' is not closed")
            self.pos += 1
            return check
        if token in (")", "and", "or"):
            raise PolicyError(f"unexpected {token!r}")
        return self.compile_check(token)


def _always(target: Mapping[str, Any], creds: Mapping[str, Any]) -> bool:
    return True


def _never(target: Mapping[str, Any], creds: Mapping[str, Any]) -> bool:
    return False


def _any_of(parts: list[Check]) -> Check:
    return lambda target, creds: any(p(target, creds) for p in parts)


def _all_of(parts: list[Check]) -> Check:
    return lambda target, creds: all(p(target, creds) for p in parts)


def _substitute(match: str, target: Mapping[str, Any]) -> str | None:
    """`%(network:project_id)s` -> the target's value (None when the target has no such key)."""
    if "%(" not in match:
        return match
    try:
        return match % target
    except (KeyError, TypeError, ValueError):
        return None


def _to_value(text: str) -> Any:
    """A field check's literal as Neutron converts it: True/False as booleans, digits as ints, else text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


class Policy:
    """A set of named rules (defaults, then a file's overrides) and their evaluation.

    `creds` is a mapping with at least `roles` (lower-case names), `project_id`, `user_id`; `target` is the
    resource the action is on (any Mapping, so parent attributes such as `network:project_id` may be resolved
    lazily). A rule name that is not defined evaluates the `default` rule, as oslo.policy's Rules do.
    """

    def __init__(self, rules: Mapping[str, str], source: str = "defaults") -> None:
        self.texts: dict[str, str] = dict(rules)
        self.sources: dict[str, str] = dict.fromkeys(rules, source)
        self._compiled: dict[str, Check] = {}
        self._compile_all()

    # loading
    def override(self, rules: Mapping[str, str], source: str) -> Policy:
        """A new Policy with `rules` replacing (or adding to) these."""
        merged = Policy.__new__(Policy)
        merged.texts = {**self.texts, **rules}
        merged.sources = {**self.sources, **dict.fromkeys(rules, source)}
        merged._compiled = {}
        merged._compile_all()
        return merged

    def _compile_all(self) -> None:
        for name, text in self.texts.items():
            if not isinstance(text, str):
                raise PolicyError(f"{self.sources[name]}: rule {name!r} must be a string, got {text!r}")
            try:
                self._compiled[name] = _Parser(text, self._check).parse()
            except PolicyError as exc:
                raise PolicyError(f"{self.sources[name]}: rule {name!r} = {text!r}: {exc}") from None
        self._caller_only = self._rules_without_target()
        self._memo: dict[int, tuple[Mapping[str, Any], dict[str, bool]]] = {}

    def _rules_without_target(self) -> frozenset[str]:
        """The rules whose outcome depends on the caller alone (no `%(...)s`, no field check, no such rule
        referenced): `get_port:binding:host_id` is `(rule:admin_only) or (rule:service_api)`. Their answers are
        remembered per caller (the credentials of one cached token), not computed for every request."""
        refs = {name: set(re.findall(r"rule:(\S+?)(?=[\s)]|$)", text)) for name, text in self.texts.items()}
        dependent = {name for name, text in self.texts.items() if "%(" in text or "field:" in text}
        changed = True
        while changed:
            changed = False
            for name, names in refs.items():
                if name not in dependent and any(r in dependent or r not in self.texts for r in names):
                    dependent.add(name)
                    changed = True
        return frozenset(self.texts) - dependent

    # evaluation
    def check(self, name: str, target: Mapping[str, Any], creds: Mapping[str, Any]) -> bool:
        if name not in self._caller_only:
            return self._rule(name)(target, creds)
        entry = self._memo.get(id(creds))
        if entry is None or entry[0] is not creds:
            if len(self._memo) >= MAX_CALLERS:
                self._memo.clear()
            entry = self._memo[id(creds)] = (creds, {})
        answers = entry[1]
        answer = answers.get(name)
        if answer is None:
            answer = answers[name] = self._rule(name)(target, creds)
        return answer

    def has(self, name: str) -> bool:
        return name in self._compiled

    def _rule(self, name: str) -> Check:
        check = self._compiled.get(name)
        if check is None:
            check = self._compiled.get("default", _never) if name != "default" else _never
        return check

    def _check(self, token: str) -> Check:
        if token == "@":
            return _always
        if token == "!":
            return _never
        kind, sep, match = token.partition(":")
        if not sep:
            raise PolicyError(f"{token!r} is not a check (kind:match, @ or !)")
        if kind == "rule":
            return lambda target, creds: self._rule(match)(target, creds)
        if kind == "role":
            return _role_check(match)
        if kind == "field":
            return _field_check(match)
        if kind in ("http", "https"):
            raise PolicyError(f"{kind}: checks (remote policy servers) are not supported")
        return _generic_check(kind, match)


def _role_check(match: str) -> Check:
    wanted = match.lower()
    if "%(" not in match:
        return lambda target, creds: wanted in creds.get("roles", ())

    def check(target: Mapping[str, Any], creds: Mapping[str, Any]) -> bool:
        value = _substitute(match, target)
        return value is not None and value.lower() in creds.get("roles", ())

    return check


def _field_check(match: str) -> Check:
    """Neutron's `field:RESOURCE:FIELD=VALUE` (`~regex` for a regular expression): the target's FIELD."""
    try:
        _resource, field_value = match.split(":", 1)
        field, value = field_value.split("=", 1)
    except ValueError:
        raise PolicyError(f"field:{match}: expected field:RESOURCE:FIELD=VALUE") from None
    if value.startswith("~"):
        try:
            regex = re.compile(value[1:])
        except re.error as exc:
            raise PolicyError(f"field:{match}: bad regular expression: {exc}") from None
        return lambda target, creds: isinstance(target.get(field), str) and bool(regex.match(target[field]))
    wanted = _to_value(value)

    def check(target: Mapping[str, Any], creds: Mapping[str, Any]) -> bool:
        actual = target.get(field)
        if actual is None:
            return False
        if isinstance(wanted, bool) and isinstance(actual, str):
            actual = actual.strip().lower() == "true"
        return actual == wanted

    return check


def _generic_check(kind: str, match: str) -> Check:
    """`key:match` compares the credential `key` (dotted path) with match (target-substituted); `'literal':match`
    compares the literal instead; `tenant_id` reads the project id, as Neutron's owner check does."""
    literal: str | None = None
    if len(kind) >= 2 and kind[0] == kind[-1] and kind[0] in "'\"":
        try:
            literal = str(ast.literal_eval(kind))
        except (ValueError, SyntaxError):
            raise PolicyError(f"{kind}:{match}: bad literal") from None
    path = ["project_id"] if kind == "tenant_id" else kind.split(".")

    def check(target: Mapping[str, Any], creds: Mapping[str, Any]) -> bool:
        value = _substitute(match, target)
        if value is None:
            return False
        if literal is not None:
            return value == literal
        current: Any = creds
        for segment in path:
            if not isinstance(current, Mapping) or segment not in current:
                return False
            current = current[segment]
        if current is None:
            return False
        if isinstance(current, list | tuple | set | frozenset):
            return value in {str(v) for v in current}
        return value == str(current)

    return check


def read_policy_file(path: str | Path) -> dict[str, str]:
    """A policy file in oslo.policy's format: YAML (or JSON) mapping rule names to check strings."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read the policy file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"the policy file {path} is not UTF-8 text") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise PolicyError(f"the policy file {path} is not valid JSON: {exc}") from None
    else:
        try:
            data = yaml.safe_load(text) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise PolicyError(f"the policy file {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"the policy file {path} must map rule names to rules, got {type(data).__name__}")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise PolicyError(f"the policy file {path}: rule {bad[0]!r} must be a string (a check like "
                          f"\"role:admin or project_id:%(project_id)s\")")
    return data
