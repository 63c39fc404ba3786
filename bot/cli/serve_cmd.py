"""``panelbot serve``: the whole bot in one process."""

from __future__ import annotations

import logging
from typing import Any

import click

from bot.cli import CliContext, UserError, pass_cli, run


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Third-party chatter (HTTP clients log full URLs, which can hold phone numbers).
    for noisy in ("httpx", "httpcore", "apscheduler", "aiosqlite", "twilio", "telegram"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def run_bot(settings: Any, *, host: str, port: int, banner: Any = None) -> None:
    from bot.app import Bot, StartupError
    from bot.storage import DatabaseError
    from bot.web.app import serve

    try:
        bot = await Bot.create(settings)
    except DatabaseError as exc:
        raise UserError(str(exc)) from None
    try:
        await serve(bot, host, port, on_ready=banner)
    except StartupError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def register(cli: click.Group) -> None:
    @cli.command("serve")
    @click.option("--host", help="Listen address (default: web.host).")
    @click.option("--port", type=int, help="Listen port (default: web.port).")
    @click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
    @pass_cli
    def serve_command(obj: CliContext, host: str | None, port: int | None, verbose: bool) -> None:
        """Run the bot: web server and webhooks, outbox dispatcher and scheduler.

        SIGINT or SIGTERM stops it cleanly: messages in flight finish or stay queued.
        """
        setup_logging(verbose)
        settings = obj.settings
        host = host or settings.web.host
        port = port or settings.web.port

        def banner(server: Any) -> None:
            click.echo(f"panelbot serving on http://{host}:{port}", err=True)

        run(run_bot(settings, host=host, port=port, banner=banner))
