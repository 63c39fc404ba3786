"""The ``panelbot`` command line: one sub-command group per area.

Exit codes: 0 success, 1 user error (one line on stderr, no traceback), 2 usage error.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Collection, Coroutine, Iterable, Sequence
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


# Commands that only read or look up: on a database that does not exist they say where they
# looked instead of creating an empty one (and answering "no surveys yet").
NEEDS_DATABASE = frozenset(
    {
        ("survey", "list"),
        ("survey", "results"),
        ("survey", "launch"),
        ("survey", "share"),
        ("panel", "export"),
        ("panel", "show"),
        ("panel", "erase"),
        ("db", "backup"),
        ("db", "inbox"),
        ("db", "held"),
        ("db", "prune"),
        ("staff", "list"),
        ("staff", "remove"),
        # The impact_updates plugin's commands that only read or change what exists.
        ("decision", "list"),
        ("decision", "update"),
        ("impact", "preview"),
        ("impact", "list"),
        ("impact", "cancel"),
        ("impact", "release"),
    }
)


@dataclass
class CliContext:
    """Shared by every sub-command: where the config is, and the loaded settings."""

    config_option: str | None
    _settings: Any = field(default=None, repr=False)
    # The command reads an existing database (NEEDS_DATABASE): a missing one is an error.
    needs_database: bool = False

    def config_source(self) -> str:
        """Where the config came from, for messages."""
        if self.config_option:
            return str(self.config_option)
        if os.environ.get("PANELBOT_CONFIG"):
            return f"$PANELBOT_CONFIG ({os.environ['PANELBOT_CONFIG']})"
        return "./panelbot.toml" if Path("panelbot.toml").is_file() else "the built-in default"

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
                settings = load_settings(self.config_path())
            except ConfigError as exc:
                raise UserError(str(exc)) from None
            database = Path(settings.bot.database)
            if self.needs_database and str(database) != ":memory:" and not database.exists():
                raise UserError(
                    f"no database at {database} (config: {self.config_source()}); "
                    "point at the panel's config, e.g. "
                    "panelbot -c demo-data/panelbot.toml ..."
                )
            self._settings = settings
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


def format_option(*choices: str, dest: str = "fmt", help: str | None = None) -> Any:
    """The ``--format`` option of a command: one of ``choices`` (the first is the default,
    shown in --help), passed to the command as ``dest``."""
    return click.option(
        "--format",
        dest,
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help=help,
    )


def table_lines(
    headers: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    right: Collection[int] = (),
    indent: str = "",
    header_right: bool = True,
) -> list[str]:
    """A plain-text table: the headers, then one line per row, columns two spaces apart and
    each as wide as its widest cell. ``None`` is an empty cell; columns numbered in ``right``
    are right-aligned (their header too, unless ``header_right`` is false); each line starts
    with ``indent`` and has no trailing spaces."""
    table = [
        [str(h) for h in headers],
        *[["" if v is None else str(v) for v in row] for row in rows],
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = []
    for n, line in enumerate(table):
        cells = [
            cell.rjust(width) if i in right and (n or header_right) else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def print_table(headers: Sequence[Any], rows: Iterable[Sequence[Any]], **layout: Any) -> None:
    """Echo :func:`table_lines` (``layout``: its keyword arguments) to standard output."""
    for line in table_lines(headers, rows, **layout):
        click.echo(line)


_CONFIG_FLAGS = ("-c", "--config")
_HELP_FLAGS = ("-h", "--help")


def hoist_config(args: list[str]) -> list[str]:
    """``-c PATH``/``--config PATH`` moved before the sub-command, wherever it was given.

    ``panelbot survey list -c FILE`` then means ``panelbot -c FILE survey list``. Nothing
    after ``--`` is touched; a later -c wins over an earlier one, as click does.
    """
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in _CONFIG_FLAGS and i + 1 < len(args):
            front.extend((arg, args[i + 1]))
            i += 2
            continue
        if arg.startswith("--config=") or (arg.startswith("-c") and len(arg) > 2):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _command_path(args: list[str]) -> tuple[str, ...]:
    """The first two words of a hoisted command line (``("survey", "list")``)."""
    words: list[str] = []
    i = 0
    while i < len(args) and len(words) < 2:
        arg = args[i]
        if arg in _CONFIG_FLAGS:
            i += 2
            continue
        if arg == "--" or (arg.startswith("-") and words):
            break
        if not arg.startswith("-"):
            words.append(arg)
        i += 1
    return tuple(words)


class _Root(click.Group):
    """The root group: -c/--config is accepted after the sub-command too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = hoist_config(list(args))
        ctx.meta["panelbot.needs_database"] = _command_path(args) in NEEDS_DATABASE and not any(
            a in _HELP_FLAGS for a in args
        )
        return super().parse_args(ctx, args)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file (else $PANELBOT_CONFIG, else ./panelbot.toml, else the built-in "
    "default). Accepted before or after the sub-command.",
)
@click.version_option(__version__, prog_name="panelbot")
@click.pass_context
def cli(ctx: click.Context, config_option: str | None) -> None:
    """panelbot runs an NHS citizens' panel over SMS, WhatsApp, Telegram and a web simulator."""
    ctx.obj = CliContext(
        config_option, needs_database=ctx.meta.get("panelbot.needs_database", False)
    )


def _config_from_argv(argv: list[str]) -> str | None:
    """The -c/--config value, read before click parses, so plugin commands honour it."""
    found = None
    args = hoist_config(argv)
    for i, arg in enumerate(args):
        if arg in _CONFIG_FLAGS and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--config="):
            found = arg.partition("=")[2]
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--"):
            found = arg[2:]
        elif not arg.startswith("-"):
            break  # the sub-command: hoisted options come before it
    return found


def _register_commands(argv: list[str]) -> None:
    # Imported here so that `panelbot --help` stays quick and each area stays in its module.
    from bot.cli import commands
    from bot.cli.plugins_cmd import register_plugin_commands
    from bot.plugins import PluginLoadError, load_plugins, plugins_for

    commands.register(cli)
    try:
        settings = CliContext(_config_from_argv(argv)).settings
    except click.ClickException:
        settings = None  # the command itself reports a broken config, once
    try:
        plugins = load_plugins() if settings is None else plugins_for(settings)
    except PluginLoadError as exc:
        click.echo(f"panelbot: {exc}", err=True)
        sys.exit(1)
    register_plugin_commands(cli, plugins)


def main() -> None:
    # Every file the bot creates (database, inbox, logs, exports, backups) is its owner's.
    os.umask(0o077)
    _register_commands(sys.argv[1:])
    try:
        cli.main(prog_name="panelbot", standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


def with_bot(obj: CliContext, work: Any) -> Any:
    """Open the bot on the configured database (no background tasks), run ``work(bot)``.

    Database problems (a newer schema, a missing folder) become one-line user errors.
    """
    from bot.app import Bot, StartupError
    from bot.storage import DatabaseError

    settings = obj.settings

    async def go() -> Any:
        try:
            bot = await Bot.create(settings)
        except (DatabaseError, StartupError) as exc:
            raise UserError(str(exc)) from None
        try:
            return await work(bot)
        finally:
            await bot.stop()

    return run(go())
