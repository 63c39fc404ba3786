"""The ``panelbot`` command line: one sub-command group per area.

Exit codes: 0 success, 1 user error (one line on stderr, no traceback), 2 usage error.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from bot import __version__

T = TypeVar("T")


class UserError(click.ClickException):
    """A problem the user can fix: printed as one line, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"panelbot: {self.format_message()}", err=True)


@dataclass
class CliContext:
    """Shared by every sub-command: where the config is, and the loaded settings."""

    config_option: str | None
    _settings: Any = field(default=None, repr=False)

    def config_path(self) -> Path | None:
        """-c, then $PANELBOT_CONFIG, then ./panelbot.toml, else None (embedded default)."""
        if self.config_option:
            return Path(self.config_option)
        env = os.environ.get("PANELBOT_CONFIG")
        if env:
            return Path(env)
        local = Path("panelbot.toml")
        return local if local.is_file() else None

    @property
    def settings(self) -> Any:
        if self._settings is None:
            from bot.config import ConfigError, load_settings

            try:
                self._settings = load_settings(self.config_path())
            except ConfigError as exc:
                raise UserError(str(exc)) from None
        return self._settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion for a command, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional in spirit
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


pass_cli = click.make_pass_decorator(CliContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file (else $PANELBOT_CONFIG, else ./panelbot.toml, else the built-in default).",
)
@click.version_option(__version__, prog_name="panelbot")
@click.pass_context
def cli(ctx: click.Context, config_option: str | None) -> None:
    """panelbot runs an NHS citizens' panel over SMS, WhatsApp, Telegram and a web simulator."""
    ctx.obj = CliContext(config_option)


def _config_from_argv(argv: list[str]) -> str | None:
    """The -c/--config value, read before click parses, so plugin commands honour it."""
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.partition("=")[2]
        if not arg.startswith("-"):
            break  # the sub-command: global options come before it
    return None


def _register_commands(argv: list[str]) -> None:
    # Imported here so that `panelbot --help` stays quick and each area stays in its module.
    from bot.cli import commands
    from bot.cli.plugins_cmd import register_plugin_commands
    from bot.plugins import PluginLoadError, load_plugins

    commands.register(cli)
    try:
        disabled = CliContext(_config_from_argv(argv)).settings.plugins.disabled
    except click.ClickException:
        disabled = []  # the command itself reports a broken config, once
    try:
        plugins = load_plugins(disabled)
    except PluginLoadError as exc:
        click.echo(f"panelbot: {exc}", err=True)
        sys.exit(1)
    register_plugin_commands(cli, plugins)


def main() -> None:
    _register_commands(sys.argv[1:])
    try:
        cli.main(prog_name="panelbot", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


def with_bot(obj: CliContext, work: Any) -> Any:
    """Open the bot on the configured database (no background tasks), run ``work(bot)``.

    Database problems (a newer schema, a missing folder) become one-line user errors.
    """
    from bot.app import Bot
    from bot.storage import DatabaseError

    settings = obj.settings

    async def go() -> Any:
        try:
            bot = await Bot.create(settings)
        except DatabaseError as exc:
            raise UserError(str(exc)) from None
        try:
            return await work(bot)
        finally:
            await bot.stop()

    return run(go())
