"""Attach every command group to the root ``panelbot`` group."""

from __future__ import annotations

import importlib

import click

# Each module defines `register(cli: click.Group) -> None`. Modules not yet written are skipped
# only while the project is being built; the list is the single place that names them.
_MODULES = (
    "bot.cli.config_cmd",
    "bot.cli.plugins_cmd",
    "bot.cli.survey_cmd",
    "bot.cli.panel_cmd",
    "bot.cli.db_cmd",
    "bot.cli.serve_cmd",
    "bot.cli.demo_cmd",
    "bot.cli.staff_cmd",
)


def register(cli: click.Group) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(cli)
