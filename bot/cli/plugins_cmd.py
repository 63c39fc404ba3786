"""``panelbot plugins ...``: which plugins are loaded and which hooks they implement.

Also ``register_plugin_commands``, through which plugins add their own command groups.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from bot.cli import CliContext, UserError, format_option, table_lines

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.plugins import PanelPlugins, PluginInfo

logger = logging.getLogger(__name__)


def loaded_settings(ctx: CliContext) -> Settings | None:
    """The settings, or None when the config cannot be loaded.

    Listing plugins must work even with a broken config, so that a user can see what is
    installed while fixing it; a config that fails to load is reported as a warning.
    """
    try:
        return ctx.settings
    except ImportError:
        return None  # bot.config not available (a partial source tree)
    except Exception as exc:  # whatever went wrong, listing plugins should still work
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(
            f"panelbot: warning: config not loaded ({message}); no plugin treated as disabled "
            "and no local plugin directory read",
            err=True,
        )
        return None


def load_for_cli(ctx: CliContext) -> PanelPlugins:
    """Load plugins as the bot would: the config's disabled list and local directories."""
    from bot.plugins import PluginLoadError, load_plugins, plugins_for

    settings = loaded_settings(ctx)
    try:
        return load_plugins() if settings is None else plugins_for(settings)
    except PluginLoadError as exc:
        raise UserError(str(exc)) from None


def register_plugin_commands(cli: click.Group, plugins: PanelPlugins) -> None:
    """Let each plugin add its commands through ``panelbot_register_commands``.

    A plugin may extend a core group (``cli.commands["survey"]``) but not replace a core
    command: a replaced one is put back, so a plugin cannot hijack e.g. ``panel erase``.
    """
    core = dict(cli.commands)
    plugins.call_each_sync("panelbot_register_commands", cli=cli)
    for name, command in core.items():
        if cli.commands.get(name) is not command:
            logger.warning("a plugin tried to replace the core command %r; kept the core one", name)
            cli.commands[name] = command


def _as_json(info: PluginInfo) -> dict[str, Any]:
    data = asdict(info)
    data["status"] = "enabled" if data.pop("enabled") else "disabled"
    return data


def _as_table(infos: list[PluginInfo]) -> str:
    rows = []
    for info in infos:
        status = "enabled" if info.enabled else "disabled"
        hooks = ", ".join(hook.removeprefix("panelbot_") for hook in info.hooks) or "-"
        rows.append((info.name, status, info.source, hooks))
    return "\n".join(table_lines(("NAME", "STATUS", "SOURCE", "HOOKS"), rows))


def register(cli: click.Group) -> None:
    @cli.group("plugins")
    def plugins_group() -> None:
        """Plugins: built-in, installed and local ones, and the hooks they implement."""

    @plugins_group.command("list")
    @format_option(
        "table", "json", dest="output_format", help="table for people, json for scripts."
    )
    @click.pass_obj
    def list_plugins(obj: CliContext, output_format: str) -> None:
        """List plugins: name, status, where each comes from and the hooks it implements.

        SOURCE is "built-in", the installed distribution of an entry point, or "local file
        PATH" for a .py file in a [plugins] directories folder. Plugins disabled with
        [plugins] disabled = [...] are shown as "disabled".
        """
        infos = load_for_cli(obj).describe(include_disabled=True)
        if output_format == "json":
            click.echo(json.dumps([_as_json(info) for info in infos], indent=2))
        else:
            click.echo(_as_table(infos))
