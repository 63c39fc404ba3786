"""A third-party panelbot plugin, as someone outside the project would write it.

The tests install it only through its entry point (group ``panelbot.plugins``, name
``sample``) by writing a ``.dist-info`` folder beside a copy of this package.
"""

from __future__ import annotations

from typing import Any

import click

from bot.plugin_api import hookimpl

# Bots this plugin has seen start; lets a test prove the async hook was awaited.
STARTED: list[Any] = []


@hookimpl
async def panelbot_startup(bot: Any) -> None:
    STARTED.append(bot)


@hookimpl
def panelbot_register_commands(cli: click.Group) -> None:
    @cli.group("sample")
    def sample() -> None:
        """Commands added by the sample plugin."""

    @sample.command("hello")
    @click.argument("name", default="panel")
    def hello(name: str) -> None:
        """Say hello from the sample plugin."""
        click.echo(f"Hello, {name}, from the sample plugin")
