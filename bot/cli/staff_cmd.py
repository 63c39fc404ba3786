"""``panelbot staff ...``: accounts for the staff dashboard (``/admin``).

The work is done by ``bot.staff``; this module reads the password (prompted twice, or one
line from stdin) and prints.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from bot.cli import CliContext, UserError, pass_cli, with_bot

if TYPE_CHECKING:
    from bot.app import Bot


@click.group("staff")
def staff_group() -> None:
    """Accounts for the staff dashboard (/admin): add, list, remove."""


def _read_password(from_stdin: bool) -> str:
    from bot.staff import StaffError, check_password

    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise UserError("--password-stdin: no password on standard input")
    else:
        if not sys.stdin.isatty():
            raise UserError("no terminal to ask for the password; use --password-stdin")
        password = click.prompt(
            "Password (at least 12 characters)", hide_input=True, confirmation_prompt=True
        )
    try:
        check_password(password)
    except StaffError as exc:
        raise UserError(str(exc)) from None
    return password


@staff_group.command("add")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice(["admin", "viewer"]),
    required=True,
    help="admin: sees and changes everything; viewer: sees everything, changes nothing.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from one line of standard input."
)
@click.option(
    "--reset-password",
    is_flag=True,
    help="The account exists: give it this password and role, unlock it, end its sessions.",
)
@pass_cli
def add_cmd(
    cli_ctx: CliContext, email: str, role: str, password_stdin: bool, reset_password: bool
) -> None:
    """Add a dashboard account for EMAIL (or, with --reset-password, change one).

    Without --password-stdin the password is asked for twice on the terminal. It must be
    at least 12 characters; it is stored only as an argon2 hash. Adding an email that
    already has an account is an error unless --reset-password is given. The change goes
    to the audit log.
    """
    from bot.staff import StaffError, check_email

    try:
        email = check_email(email)
    except StaffError as exc:
        raise UserError(str(exc)) from None
    password = _read_password(password_stdin)

    async def work(bot: Bot) -> tuple[int, bool]:
        from bot import staff

        try:
            return await staff.add(bot.db, email, role, password, reset=reset_password)
        except StaffError as exc:
            raise UserError(str(exc)) from None

    staff_id, created = with_bot(cli_ctx, work)
    verb = "added" if created else "updated (new password; sessions ended)"
    click.echo(f"staff {staff_id} {email} ({role}) {verb}")


@staff_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@pass_cli
def list_cmd(cli_ctx: CliContext, fmt: str) -> None:
    """Every dashboard account: id, email, role, last sign-in, locked or not."""

    async def work(bot: Bot) -> list[Any]:
        from bot.storage import staff as store

        return await store.all_staff(bot.db.conn)

    rows = with_bot(cli_ctx, work)
    items = [
        {
            "id": r.id,
            "email": r.email,
            "role": r.role,
            "created_at": r.created_at,
            "last_login_at": r.last_login_at,
            "locked_until": r.locked_until,
        }
        for r in rows
    ]
    if fmt == "json":
        click.echo(json.dumps(items, indent=2))
        return
    if not items:
        click.echo("no staff accounts yet: panelbot staff add EMAIL --role admin")
        return
    click.echo(f"{'ID':>4}  {'ROLE':<6}  {'LAST SIGN-IN':<20}  EMAIL")
    for item in items:
        last = (item["last_login_at"] or "never")[:19]
        click.echo(f"{item['id']:>4}  {item['role']:<6}  {last:<20}  {item['email']}")


@staff_group.command("remove")
@click.argument("email")
@pass_cli
def remove_cmd(cli_ctx: CliContext, email: str) -> None:
    """Delete the dashboard account for EMAIL and sign it out everywhere."""

    async def work(bot: Bot) -> int:
        from bot import staff
        from bot.staff import StaffError

        try:
            return await staff.remove(bot.db, email)
        except StaffError as exc:
            raise UserError(str(exc)) from None

    staff_id = with_bot(cli_ctx, work)
    click.echo(f"staff {staff_id} removed")


def register(cli: click.Group) -> None:
    cli.add_command(staff_group)
