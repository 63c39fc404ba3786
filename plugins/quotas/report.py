"""``panelbot quotas report``: the panel against its population targets."""

from __future__ import annotations

import click


@click.group("quotas")
def quotas_group() -> None:
    """Population targets and how the panel compares."""
