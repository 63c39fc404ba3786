"""``panelbot db``: migrations, online backups and the webhook inbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bot.cli import CliContext, UserError, pass_cli, run


def register(cli: click.Group) -> None:
    @cli.group("db")
    def db_group() -> None:
        """The SQLite database: schema upgrades, backups, the webhook inbox."""

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
        """Copy the database to PATH, consistent even while the bot is running.

        When the bot has run with web processes ([web] workers), the webhook payloads
        waiting for it are in the inbox file beside the database; that is copied to
        PATH-inbox (the name the bot looks for beside a database at PATH, so the two
        restore together). Both copies hold personal data and are created readable by
        their owner only (0600). Neither PATH nor PATH-inbox may exist already.
        """
        from bot.inbox import existing_inbox, inbox_path
        from bot.storage import Database, DatabaseError
        from bot.storage.db import backup_connection

        target = Path(path)
        target_inbox = inbox_path(target)
        if target_inbox.exists():
            raise UserError(f"{target_inbox} already exists; choose a new file")

        async def go() -> bool:
            try:
                db = await Database.open(obj.settings.bot.database)
                try:
                    await db.backup(target)
                finally:
                    await db.close()
                async with existing_inbox(Path(obj.settings.bot.database)) as inbox:
                    if inbox is None:
                        return False
                    await backup_connection(inbox.conn, target_inbox)
                    return True
            except DatabaseError as exc:
                raise UserError(str(exc)) from None

        with_inbox = run(go())
        click.echo(f"backed up to {path}" + (f" and {target_inbox}" if with_inbox else ""))

    @db_group.command("prune")
    @pass_cli
    def prune(obj: CliContext) -> None:
        """Delete message texts older than [privacy] keep_messages_for, now.

        `panelbot serve` does this once a day. The texts of messages in and out, the
        providers' message ids for them and webhook payloads older than the limit are
        deleted; survey answers are kept. Safe while the bot is running.
        """
        from bot.panel import prune_messages
        from bot.storage import Database, DatabaseError

        async def go() -> Any:
            try:
                db = await Database.open(obj.settings.bot.database)
            except DatabaseError as exc:
                raise UserError(str(exc)) from None
            try:
                report = await prune_messages(db, obj.settings.privacy.keep_messages_for)
                await db.truncate_log()
                return report
            finally:
                await db.close()

        click.echo(run(go()).summary())

    @db_group.command("inbox")
    @click.option("--retry", is_flag=True, help="Send the payloads given up on back to the bot.")
    @click.option("--discard", is_flag=True, help="Delete the payloads given up on.")
    @pass_cli
    def inbox(obj: CliContext, retry: bool, discard: bool) -> None:
        """Webhook payloads web processes stored for the bot ([web] workers).

        Shows how many wait and, for each payload the bot gave up on after repeated
        failures, its source, attempts and last error (never its contents).
        """
        from bot.channels.twilio import scrub
        from bot.inbox import MAX_ATTEMPTS, inbox_status, settle_failed

        if retry and discard:
            raise UserError("choose --retry or --discard, not both")
        database = Path(obj.settings.bot.database)
        if retry or discard:
            changed = run(settle_failed(database, retry=retry))
            verb = "sent back to the bot" if retry else "deleted"
            click.echo(f"{changed} payload{'s' if changed != 1 else ''} {verb}")
            return
        status = run(inbox_status(database))
        if status is None:
            click.echo("no inbox: the bot has not run with [web] workers here")
            return
        waiting, oldest, failed = status
        click.echo(f"waiting {waiting} (oldest {oldest:.1f} s); given up on {len(failed)}")
        for row in failed:
            error = scrub(row["last_error"] or "")
            click.echo(
                f"  #{row['id']} {row['source']} received {row['received_at']}, "
                f"{row['attempts']} attempts (limit {MAX_ATTEMPTS}): {error}"
            )
        if failed:
            click.echo("panelbot db inbox --retry sends them back; --discard deletes them")
