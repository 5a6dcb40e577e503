# Each resource's API form, derived from its declared attributes (validation.SPECS): to_api, from_api, CLI columns.
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from operator import attrgetter
from typing import Any, ClassVar, Protocol, TypeVar

from provnet.model.validation import SPECS, Attr


class _Dataclass(Protocol):
    """Any dataclass (what dataclasses.fields takes)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


T = TypeVar("T", bound=_Dataclass)


class Form:
    """One kind's attributes compiled for speed: dumping a port is one C-level attrgetter plus a few dumps."""

    def __init__(self, kind: str) -> None:
        spec = SPECS[kind]
        self.kind = kind
        self.spec = spec
        self.columns = tuple(name for name, attr in spec.items() if attr.listed)
        stored = [(name, attr, field) for name, attr in spec.items() if (field := attr.field)]
        self._names = tuple(name for name, _, _ in stored)
        self._get = attrgetter(*[field for _, _, field in stored])
        self._dumps = tuple((name, attr.dump) for name, attr, _ in stored if attr.dump is not None)
        self._derived = tuple((name, attr.derive) for name, attr in spec.items()
                              if attr.field is None and attr.derive is not None)
        self._classes: dict[type, tuple[frozenset[str], frozenset[str]]] = {}

    def dump(self, obj: Any) -> dict[str, Any]:
        out = dict(zip(self._names, self._get(obj), strict=True))
        for name, fn in self._dumps:
            out[name] = fn(out[name])
        for name, derive in self._derived:
            out[name] = derive(obj)
        return out

    def load(self, cls: type[T], data: Mapping[str, Any]) -> T:
        """The resource an API form describes (a remote registry's answer). An absent attribute, or a null one
        whose field has a default other than null, keeps the default; of two names for one field (tenant_id,
        project_id) the first with a value wins."""
        known = self._classes.get(cls)
        if known is None:
            fields = dataclasses.fields(cls)
            known = self._classes[cls] = (frozenset(f.name for f in fields if f.init),
                                          frozenset(f.name for f in fields if f.default is not None
                                                    and f.default is not dataclasses.MISSING
                                                    or f.default_factory is not dataclasses.MISSING))
        init, has_default = known
        kwargs: dict[str, Any] = {}
        for name, attr in self.spec.items():
            field = attr.field
            if not field or field not in init or name not in data:
                continue
            value = data[name]
            if value is None:
                if field in has_default:
                    continue
            elif attr.load is not None:
                value = attr.load(value)
            if not kwargs.get(field):
                kwargs[field] = value
        return cls(**kwargs)

    def apply(self, obj: Any, changes: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
        """Set the fields of `obj` that the converted attributes `changes` name (an update's body)."""
        for name, value in changes.items():
            attr = self.spec[name]
            if name in skip or not attr.field:
                continue
            setattr(obj, attr.field, attr.load(value) if attr.load is not None and value is not None else value)


FORMS: dict[str, Form] = {kind: Form(kind) for kind in SPECS}


def list_columns(kind: str) -> tuple[str, ...]:
    """The attributes a list shows by default (the CLI's table columns), in declaration order."""
    return FORMS[kind].columns


def stored_attrs(kind: str) -> list[tuple[str, Attr]]:
    """(API name, attribute) of every attribute a resource keeps in a field, one per field (the first name)."""
    seen: set[str] = set()
    out: list[tuple[str, Attr]] = []
    for name, attr in SPECS[kind].items():
        if attr.field and attr.field not in seen:
            seen.add(attr.field)
            out.append((name, attr))
    return out

