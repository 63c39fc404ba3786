"""Build the one Starlette app the bot serves, and run it under uvicorn in the bot's loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.inbox import InboxReader
from bot.privacy import loggable_path
from bot.web import admin, metrics, review, simulator
from bot.web.admin import auth as admin_auth
from bot.web.admin.templating import admin_error_page
from bot.web.limits import Guard, server_config

if TYPE_CHECKING:
    from bot.app import Bot

logger = logging.getLogger(__name__)

# A web process reports unhealthy when a payload has waited this long for the main process.
INBOX_STALE_AFTER = 60.0


async def healthz(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    try:
        await bot.db.ping()
    except Exception:
        logger.exception("health check: database unreachable")
        return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
    if bot.inbox is None:
        return JSONResponse({"status": "ok"})
    # A web process: say how far behind the main process is with what it was handed.
    try:
        waiting, oldest, stuck = await bot.inbox.backlog()
    except Exception:
        logger.exception("health check: inbox unreachable")
        return JSONResponse({"status": "error", "inbox": "unreachable"}, status_code=503)
    body = {
        "status": "ok",
        "inbox": {"waiting": waiting, "oldest_seconds": oldest, "failed": stuck},
    }
    if oldest > INBOX_STALE_AFTER:
        body["status"] = "error"
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _wants_page(request):
        return admin_error_page(request, exc.status_code, str(exc.detail), exc.headers)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def _wants_page(request: Request) -> bool:
    """A browser on a dashboard page (or a plugin's page) gets an HTML error page."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept and (
        request.url.path.startswith("/admin") or hasattr(request.state, "staff")
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    # Whatever a client sent, they get an answer; the details go to the log only.
    logger.exception("unhandled error on %s %s", request.method, loggable_path(request.url.path))
    return JSONResponse({"error": "internal error"}, status_code=500)


async def build_app(bot: Bot) -> Starlette:
    routes: list[BaseRoute] = [Route("/healthz", healthz, methods=["GET"])]
    for channel in set(bot.channels.values()):
        routes.extend(channel.routes())
    if "sim" in bot.channels:
        routes.extend(simulator.routes())
    routes.extend(metrics.routes())
    # Survey review links: public, but every route needs a valid token.
    routes.extend(review.routes())
    routes.extend(admin.routes())
    nav = admin.nav()
    for _, extra in await bot.plugins.call_each("panelbot_register_routes", bot=bot):
        for route in extra:
            # Behind the staff login unless the plugin marked it public (plugin_api).
            try:
                routes.append(admin_auth.protect(route))
            except TypeError as exc:
                logger.error("a plugin's route is left out: %s", exc)
                continue
            label = getattr(route, "panelbot_nav", None)
            path = getattr(route, "path", None)
            if label and path:
                admin_only = bool(getattr(route, "panelbot_admin_only", False))
                nav.append({"label": str(label), "path": path, "admin_only": admin_only})
    app = Starlette(
        routes=routes,
        # Body caps and security headers in front of every route, plugins' too.
        middleware=[Middleware(Guard)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.bot = bot
    app.state.admin_nav = nav
    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the bot owns SIGINT/SIGTERM and shuts down
    the dispatcher, scheduler and database after the web server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts; OSError if the port is busy.

    ``serve`` and ``demo`` bind it first, so a busy port stops them at once, with nothing
    loaded or opened; with web processes it is the socket they all share.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    bot: Bot, host: str, port: int, *, on_ready=None, sock: socket.socket | None = None
) -> None:
    """Run the web app, dispatcher and scheduler until SIGINT/SIGTERM, then stop cleanly.

    ``sock``: a socket from :func:`listen`; without one it is bound here, before the bot
    starts, so a busy port raises OSError with nothing started.
    """
    if sock is None:
        sock = listen(host, port)
    app = await build_app(bot)
    config = server_config(app, host=host, port=port)
    server = _Server(config)
    with stop_on_signals() as stop:
        await bot.start()
        # Payloads web processes stored before a stop (when [web] workers was >= 1) are
        # still handled when the bot runs as one process.
        leftover = await InboxReader.for_leftovers(bot)
        web = asyncio.create_task(server.serve(sockets=[sock]), name="panelbot-web")
        try:
            await wait_started(server, web)
            if on_ready:
                on_ready(server)
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([web, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(web, timeout=5)
            if leftover is not None:
                await leftover.close()
            await bot.stop()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[asyncio.Event]:
    """An event that SIGINT or SIGTERM sets while the block runs (the bot, not uvicorn,
    owns them, so it can stop its parts in order)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def wait_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Until uvicorn listens; raises what stopped it from starting (a port in use, say)."""
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn sets a flag
        await asyncio.sleep(0.02)
    if task.done():
        task.result()
