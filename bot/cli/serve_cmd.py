"""``panelbot serve``: the bot, its web server and webhooks."""

from __future__ import annotations

import errno
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


def bind_port(host: str, port: int, hint: str = "choose another with --port N") -> Any:
    """The listening socket, bound before anything else starts: a busy port is one line."""
    from bot.web.app import listen

    try:
        return listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {port} on {host} is already in use (another panelbot, or another "
                f"program): stop it, or {hint}"
            ) from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def run_bot(
    settings: Any,
    *,
    host: str,
    port: int,
    banner: Any = None,
    workers: int = 0,
    sock: Any = None,
) -> None:
    from bot.app import Bot, StartupError
    from bot.storage import DatabaseError
    from bot.web.app import serve
    from bot.web.workers import WebProcessError, serve_with_workers

    # The port first: a busy one stops serve at once, before the database is opened.
    sock = sock if sock is not None else bind_port(host, port)
    try:
        bot = await Bot.create(settings)
    except (DatabaseError, StartupError) as exc:
        sock.close()
        raise UserError(str(exc)) from None
    try:
        if workers:
            await serve_with_workers(bot, host, port, workers, on_ready=banner, sock=sock)
        else:
            await serve(bot, host, port, on_ready=banner, sock=sock)
    except (StartupError, WebProcessError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def register(cli: click.Group) -> None:
    @cli.command("serve")
    @click.option("--host", help="Listen address (default: web.host).")
    @click.option("--port", type=int, help="Listen port (default: web.port).")
    @click.option(
        "--workers",
        type=click.IntRange(0, 32),
        help="Web processes in front of the bot (default: web.workers; 0 = one process).",
    )
    @click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
    @click.option("--web-child", hidden=True, help="Internal: run as one of serve's web processes.")
    @pass_cli
    def serve_command(
        obj: CliContext,
        host: str | None,
        port: int | None,
        workers: int | None,
        verbose: bool,
        web_child: str | None,
    ) -> None:
        """Run the bot: web server and webhooks, outbox dispatcher and scheduler.

        N web processes ([web] workers, default 1; --workers N overrides it) take the HTTP
        requests and the main process runs the engine, the outbox and the scheduler; with 0,
        one process does everything.

        SIGINT or SIGTERM stops it cleanly: messages in flight finish or stay queued.
        """
        setup_logging(verbose)
        settings = obj.settings
        if web_child:
            from bot.web.workers import run_web_child

            run(run_web_child(settings, web_child))
            return
        host = host or settings.web.host
        port = port or settings.web.port
        workers = settings.web.workers if workers is None else workers

        def banner(server: Any) -> None:
            extra = f" ({workers} web process{'es' if workers > 1 else ''})" if workers else ""
            click.echo(f"panelbot serving on http://{host}:{port}{extra}", err=True)
            click.echo(
                f"staff dashboard: http://{host}:{port}/admin (accounts: panelbot staff add)",
                err=True,
            )

        run(run_bot(settings, host=host, port=port, banner=banner, workers=workers))
