# Test helper: build the registry the seed's commands create (tests/fixtures/seed/*/registry.json) on any Registry.
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SEED = Path(__file__).parent / "fixtures" / "seed"


def _subst(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return refs[value[1:]]
    if isinstance(value, list):
        return [_subst(v, refs) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, refs) for k, v in value.items()}
    return value


def apply_registry_ops(registry, path: Path) -> dict[str, str]:
    """Apply the operations in `path` through the Registry interface; return the ids by their refs."""
    refs: dict[str, str] = {}
    for op in json.loads(path.read_text()):
        kind = op["op"]
        if kind == "report_agent_state":
            registry.report_agent_state(op["host"], op["agent_type"], op["binary"], op["configurations"])
        elif kind == "add_router_interface":
            registry.add_router_interface(_subst(op["router"], refs), subnet_id=_subst(op["subnet"], refs))
        else:
            obj = getattr(registry, kind)(_subst(op["attrs"], refs))
            if "ref" in op:
                refs[op["ref"]] = obj.id
    return refs
