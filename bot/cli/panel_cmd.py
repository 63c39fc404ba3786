"""``panelbot panel ...``: import, export, show (subject access) and erase panellists.

The work is done by ``bot.panel``; this module only parses options, opens the bot's
database and prints. Plugins may add commands to this group (e.g. ``panel select``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bot.cli import CliContext, UserError, format_option, pass_cli, run

if TYPE_CHECKING:
    from bot.app import Bot


@asynccontextmanager
async def _opened(cli_ctx: CliContext) -> AsyncIterator[Bot]:
    """The bot's database and hash key, without starting channels or the scheduler."""
    # Imported here so that `panelbot --help` stays quick.
    from bot.app import Bot, StartupError
    from bot.storage import DatabaseError

    try:
        bot = await Bot.create(cli_ctx.settings)
    except (DatabaseError, StartupError) as exc:
        raise UserError(str(exc)) from None
    try:
        yield bot
    finally:
        await bot.stop()


@click.group("panel")
def panel_group() -> None:
    """Import, export, show and erase panellists."""


@panel_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check every row and report the problems; store nothing (the database is not read).",
)
@pass_cli
def import_cmd(cli_ctx: CliContext, file: Path, dry_run: bool) -> None:
    """Add or update panellists from a CSV file.

    Header row: phone and/or telegram_chat_id, then optional locale and consent_at (an ISO
    date or date-time; blank means no consent yet), then one column per panel field in the
    config. People are matched on their phone number or Telegram chat id, so importing
    again updates them. People with a consent date become active; the others wait at the
    consent question and are not invited to surveys. Numbers on the suppression list
    (erased or opted out) need a consent_at later than their removal.

    A phone must be a mobile (SMS and WhatsApp): landlines, freephone and other
    non-geographic numbers, VoIP, personal numbers and pagers are refused, and so are
    numbers with letters or an extension. A row with only a telegram_chat_id needs none.

    Each bad row is reported on stderr with its line number and skipped (the first 20 in
    full, the rest counted by reason); the good rows are stored. When more than half of
    the first 1,000 rows are bad (in a file of 100 rows or more), nothing is stored. The
    file is read row by row, so its size does not matter.

    A file from `panel export` can be imported again: its id, created_at and
    other_addresses columns are read past, and its opted-out and erased rows are refused.
    Exit code 1 if the file is unusable or no row could be imported.
    """
    from itertools import chain, islice

    from bot.panel import PanelFileError, PanelRow, Problem, import_rows
    from bot.panel_csv import MIN_SAMPLE, SAMPLE_ROWS, ProblemLog, open_panel_file

    settings = cli_ctx.settings
    log = ProblemLog()

    def show(problems: list[Problem]) -> None:
        for problem in sorted(problems, key=lambda p: p.line):
            line = log.add(problem)
            if line is not None:
                click.echo(line, err=True)

    async def store(items: Any) -> tuple[int, int]:
        added = updated = 0
        batch: list[PanelRow] = []
        problems: list[Problem] = []
        async with _opened(cli_ctx) as bot:

            async def flush() -> None:
                nonlocal added, updated
                if batch:
                    report = await import_rows(bot.db, bot.hash_key, settings, batch)
                    added, updated = added + report.added, updated + report.updated
                    problems.extend(report.problems)
                show(problems)
                batch.clear()
                problems.clear()

            for item in items:
                (batch if isinstance(item, PanelRow) else problems).append(item)
                if len(batch) + len(problems) >= IMPORT_BATCH:
                    await flush()
            await flush()
        return added, updated

    try:
        # A first, quick pass: a file that is not CSV to its end is refused before a row
        # is stored.
        with open_panel_file(file, settings) as stream:
            stream.check_csv()
        with open_panel_file(file, settings) as stream:
            for warning in stream.warnings:
                click.echo(warning, err=True)
            rows = iter(stream)
            first = list(islice(rows, SAMPLE_ROWS))
            if not first:
                raise UserError(f"{file}: no data rows below the header")
            bad = [row for row in first if isinstance(row, Problem)]
            if len(first) >= MIN_SAMPLE and 2 * len(bad) > len(first):
                raise UserError(
                    f"{file}: {len(bad):,} of the first {len(first):,} rows are bad "
                    f"({bad[0]}); nothing imported: is this the panel file?"
                )
            if dry_run:
                good = 0
                for item in chain(first, rows):
                    if isinstance(item, PanelRow):
                        good += 1
                    else:
                        show([item])
                if tail := log.tail():
                    click.echo(tail, err=True)
                click.echo(
                    f"dry run: {good} row{'s' if good != 1 else ''} to import, "
                    f"{log.total} rejected; nothing stored"
                )
                return
            added, updated = run(store(chain(first, rows)))
    except PanelFileError as exc:
        raise UserError(f"{file}: {exc}") from None
    if tail := log.tail():
        click.echo(tail, err=True)
    click.echo(f"{added} added, {updated} updated, {log.total} rejected")
    if added + updated == 0:
        raise UserError(f"{file}: no rows imported")


# Rows (good or bad) handled at a time: a batch is one transaction, and memory stays small.
IMPORT_BATCH = 500


@panel_group.command("export")
@format_option(
    "csv", "json", help="csv can be imported again; json nests demographics and addresses."
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (readable by its owner only) instead of standard output.",
)
@pass_cli
def export_cmd(cli_ctx: CliContext, fmt: str, output: Path | None) -> None:
    """Export the whole panel: ids, status, addresses, locale, consent and demographics.

    Erased people appear with their id and status only.
    """
    from bot.panel import export_rows

    settings = cli_ctx.settings

    async def work() -> list[dict[str, Any]]:
        async with _opened(cli_ctx) as bot:
            return await export_rows(bot.db.conn, settings)

    rows = run(work())
    if output is None:
        _write(rows, fmt, settings, sys.stdout)
        return
    try:
        # The file holds personal data: create it for its owner only.
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8", newline="") as out:
            _write(rows, fmt, settings, out)
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"{len(rows)} panellists written to {output}", err=True)


def _write(rows: list[dict[str, Any]], fmt: str, settings: Any, out: Any) -> None:
    from bot.panel import write_csv, write_json

    if fmt == "csv":
        write_csv(rows, settings, out)
    else:
        write_json(rows, settings, out)


@panel_group.command("show")
@click.argument("who", metavar="ID_OR_PHONE")
@pass_cli
def show_cmd(cli_ctx: CliContext, who: str) -> None:
    """Print everything held about one person as JSON (a subject access request).

    Their record, addresses (and whether each is suppressed), demographics, consent,
    invitations, survey sessions with answers, every message in and out with the
    providers' message ids, statuses and errors, webhook payloads of theirs still waiting
    in the inbox, and the audit log entries about them.

    ID_OR_PHONE is a panellist id, a phone number in any format, or channel:id
    (e.g. sim:alice, telegram:123456).
    """
    import json

    from bot.panel import subject_access
    from bot.panel_csv import consent_cell

    async def work() -> dict[str, Any] | None:
        async with _opened(cli_ctx) as bot:
            pid = await _resolve(bot, who)
            return await subject_access(bot.db.conn, bot.hash_key, pid, database=bot.db.path)

    data = run(work())
    # A consent date given as a date is shown as that date, as `panel export` writes it.
    for part in (data or {}).get("panellist"), (data or {}).get("consent"):
        if isinstance(part, dict) and part.get("consent_at"):
            part["consent_at"] = consent_cell(part["consent_at"], cli_ctx.settings)
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


async def _resolve(bot: Bot, who: str) -> int:
    from bot.panel import SuppressedOnly, resolve_panellist

    try:
        pid = await resolve_panellist(bot.db.conn, bot.hash_key, who)
    except SuppressedOnly as exc:
        raise UserError(str(exc)) from None
    if pid is None:
        raise UserError(f"no panellist matches {who!r}")
    return pid


@panel_group.command("erase")
@click.argument("who", metavar="ID_OR_PHONE")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def erase_cmd(cli_ctx: CliContext, who: str, yes: bool) -> None:
    """Erase one person's personal data, keeping a suppression entry.

    In one transaction: their addresses are deleted; demographics, locale, consent and
    the texts of their messages are cleared, with the providers' message ids for them;
    queued messages are cancelled; times that could tie their answers back to a message
    are kept to the day; the record stays as an id with status "erased". Their webhook
    payloads still waiting in the inbox are deleted; then the database is rewritten and
    its and the inbox's write-ahead logs emptied, so no old copy is left in the files.
    Backups made before the erasure still hold them (see docs/PRIVACY.md). Survey
    answers are kept for results, detached from the person, and that includes free-text
    answers. Each address they had goes on
    the suppression list as a keyed hash, so it is never messaged again and an import
    needs a consent_at later than the erasure to bring it back.

    ID_OR_PHONE is a panellist id, a phone number in any format, or channel:id.
    Asks for confirmation unless --yes is given or standard input is not a terminal.
    """
    from bot.panel import erase_panellist

    async def work() -> Any:
        async with _opened(cli_ctx) as bot:
            pid = await _resolve(bot, who)
            if not yes and sys.stdin.isatty():
                click.confirm(f"Erase panellist {pid}? This cannot be undone", abort=True)
            return await erase_panellist(bot.db, bot.hash_key, pid)

    report = run(work())
    click.echo(report.summary())
    busy = [
        name
        for name, done in (("database", report.scrubbed), ("inbox", report.inbox_scrubbed))
        if done is False
    ]
    if busy:
        click.echo(
            f"panelbot: note: the running bot kept the {' and '.join(busy)} from being "
            "fully scrubbed now; old copies left in its write-ahead log are removed at its "
            "next checkpoint (within a minute while `panelbot serve` runs)",
            err=True,
        )


def register(cli: click.Group) -> None:
    """Attach the ``panel`` group to the root command."""
    cli.add_command(panel_group)
