"""``panelbot decision ...`` and ``panelbot impact ...``."""

from __future__ import annotations

import click


@click.group("decision")
def decision_group() -> None:
    """The decision register: what the panel said and what was done."""


@click.group("impact")
def impact_group() -> None:
    """Impact updates: "you said, we did" messages after decisions."""
