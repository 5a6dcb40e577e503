# Verbs of this area are registered here (filled in by the issue that owns them).
from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Add this module's verbs to the `provnet` group."""
