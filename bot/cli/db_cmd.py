"""``panelbot db``: migrations, online backups and the webhook inbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bot.cli import CliContext, UserError, pass_cli, run
from bot.privacy import masked_address, scrub


def register(cli: click.Group) -> None:
    @cli.group("db")
    def db_group() -> None:
        """The SQLite database: schema upgrades, backups, the webhook inbox."""

    @db_group.command("upgrade")
    @pass_cli
    def upgrade(obj: CliContext) -> None:
        """Apply pending schema migrations, the core's then each plugin's (the bot also
        does this when it starts)."""
        from bot.cli.plugins_cmd import load_for_cli
        from bot.storage import Database, DatabaseError

        folders = load_for_cli(obj).migration_folders()

        async def go() -> tuple[list[str], int]:
            try:
                db = await Database.open(obj.settings.bot.database, migrate=False, plugins=folders)
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
        from bot.inbox import MAX_ATTEMPTS, inbox_status, settle_failed

        if retry and discard:
            raise click.UsageError("choose --retry or --discard, not both")
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

    @db_group.command("held")
    @click.argument("ids", nargs=-1, type=int)
    @click.option("--release", is_flag=True, help="Queue the held messages IDS again.")
    @click.option("--release-all", is_flag=True, help="Queue every held message again.")
    @pass_cli
    def held(obj: CliContext, ids: tuple[int, ...], release: bool, release_all: bool) -> None:
        """Outbound messages held for a person to decide, and releasing them.

        Lists each held message: its id, channel, masked address, kind, why it was held
        and since when (never its text or the full address). A message is held when the
        bot cannot tell whether the provider already has it (a WhatsApp template sent
        before a crash) or when it may not be sent as it is (no approved WhatsApp template
        outside the 24-hour window).

        With --release ID [ID...] (or --release-all) they go back to the queue and the
        running bot sends them within a poll interval. A template a crash left unconfirmed
        may have reached the person already (its text cannot be matched at Twilio): look
        the number up in Twilio's console before releasing it.
        """
        from bot.storage import Database, DatabaseError
        from bot.storage import outbox as outbox_store

        if release and release_all:
            raise click.UsageError("choose --release ID... or --release-all, not both")
        if release and not ids:
            raise click.UsageError("--release needs the ids of the messages to release")
        if ids and not release:
            raise click.UsageError("ids are for --release: panelbot db held --release ID...")
        if release_all and ids:
            raise click.UsageError("--release-all takes no ids")

        async def go() -> Any:
            try:
                db = await Database.open(obj.settings.bot.database)
            except DatabaseError as exc:
                raise UserError(str(exc)) from None
            try:
                if not (release or release_all):
                    return await outbox_store.held(db.conn)
                async with db.transaction() as conn:
                    if release:
                        found = await outbox_store.statuses_of(conn, list(ids))
                        wrong = [
                            f"#{i} is {found[i]}" if i in found else f"#{i} does not exist"
                            for i in dict.fromkeys(ids)
                            if found.get(i) != "held"
                        ]
                        if wrong:
                            raise UserError(
                                f"nothing released: {', '.join(wrong)} (only held messages "
                                "can be released)"
                            )
                    return await outbox_store.release_held(
                        conn, list(dict.fromkeys(ids)) if release else None
                    )
            finally:
                await db.close()

        result = run(go())
        if release or release_all:
            count = len(result)
            click.echo(
                f"released {count} message{'s' if count != 1 else ''}"
                + (f" ({', '.join(f'#{i}' for i in result)})" if result else "")
                + ("; the running bot sends them" if result else "")
            )
            return
        if not result:
            click.echo("no held messages")
            return
        click.echo(f"{len(result)} held message{'s' if len(result) != 1 else ''}:")
        for row in result:
            click.echo(
                f"  #{row['id']} {row['channel']} {masked_address(row['channel'], row['address'])} "
                f"{row['kind']}, held since {row['updated_at']}: {_why(row['last_error'])}"
            )
        click.echo("panelbot db held --release ID... queues them again; --release-all, all")


def _why(error: str | None) -> str:
    return scrub(error or "no reason recorded")
