"""``panelbot db``: migrations and online backups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bot.cli import CliContext, UserError, pass_cli, run


def register(cli: click.Group) -> None:
    @cli.group("db")
    def db_group() -> None:
        """The SQLite database: schema upgrades and backups."""

    @db_group.command("upgrade")
    @pass_cli
    def upgrade(obj: CliContext) -> None:
        """Apply pending schema migrations (the bot also does this when it starts)."""
        from bot.storage import Database, DatabaseError

        async def go() -> tuple[list[str], int]:
            try:
                db = await Database.open(obj.settings.bot.database, migrate=False)
            except DatabaseError as exc:
                raise UserError(str(exc)) from None
            try:
                applied = await db.upgrade()
                return applied, await db.schema_version()
            except DatabaseError as exc:
                raise UserError(str(exc)) from None
            finally:
                await db.close()

        applied, version = run(go())
        for name in applied:
            click.echo(f"applied {name}")
        click.echo(f"database at schema version {version}")

    @db_group.command("backup")
    @click.argument("path", type=click.Path(dir_okay=False))
    @pass_cli
    def backup(obj: CliContext, path: str) -> None:
        """Copy the database to PATH, consistent even while the bot is running."""
        from bot.storage import Database, DatabaseError

        async def go() -> Any:
            try:
                db = await Database.open(obj.settings.bot.database)
                try:
                    await db.backup(Path(path))
                finally:
                    await db.close()
            except DatabaseError as exc:
                raise UserError(str(exc)) from None

        run(go())
        click.echo(f"backed up to {path}")
