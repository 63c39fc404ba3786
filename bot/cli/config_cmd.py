"""``panelbot config check`` and ``panelbot config show``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from bot.cli import CliContext, pass_cli

if TYPE_CHECKING:
    from bot.config import Settings


@click.group("config")
def config_group() -> None:
    """Check or show the config (-c, else $PANELBOT_CONFIG, else ./panelbot.toml)."""


def summary(settings: Settings) -> str:
    """One line on what the settings switch on: locales, channels, panel fields."""
    channels = [
        name
        for name in ("simulator", "twilio", "telegram")
        if getattr(settings.channels, name).enabled
    ]
    return (
        f"locales: {', '.join(settings.bot.locales)}; "
        f"channels: {', '.join(channels) or 'none'}; "
        f"panel fields: {len(settings.panel.fields)}"
    )


@config_group.command("check")
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 on warnings too (a secret written in the file as plain text).",
)
@pass_cli
def check(cli_ctx: CliContext, strict: bool) -> None:
    """Report every problem in the config, one per line; exit 1 if any.

    A secret written in the file as plain text (auth_token = "...") rather than as
    { env = "NAME" } is a warning: one line naming the key, exit 0 (1 with --strict).
    """
    # Loaded here rather than through cli_ctx.settings, whose UserError gives one message:
    # check lists each problem on its own line. Imported here to keep `panelbot --help` quick.
    from bot.config import ConfigError, load_settings

    path = cli_ctx.config_path()
    warnings: list[str] = []
    try:
        settings = load_settings(path, warnings=warnings)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            click.echo(line, err=True)
        click.get_current_context().exit(1)
    where = path or "config"
    from bot.plugins import plugins_for

    problems = plugins_for(settings).config_problems(settings)
    for problem in problems:
        click.echo(f"{where}: {problem}", err=True)
    if problems:
        click.get_current_context().exit(1)
    for warning in warnings:
        click.echo(f"{where}: warning: {warning}", err=True)
    if strict and warnings:
        count = len(warnings)
        click.echo(f"{where}: {count} warning{'s' if count != 1 else ''} (--strict)", err=True)
        click.get_current_context().exit(1)
    click.echo(f"OK: {settings.source or 'built-in default'}")
    click.echo(summary(settings))


@config_group.command("show")
@pass_cli
def show(cli_ctx: CliContext) -> None:
    """Print the effective settings as JSON, with secrets masked as "***" (and the user and
    password of any URL: https://***@host)."""
    from bot.config import settings_as_dict

    click.echo(json.dumps(settings_as_dict(cli_ctx.settings), indent=2, ensure_ascii=False))


def register(cli: click.Group) -> None:
    """Attach the ``config`` group to the root command."""
    cli.add_command(config_group)
