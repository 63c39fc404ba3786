"""Serve a Bot's real Starlette app under uvicorn on 127.0.0.1 for a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from bot.app import Bot
from bot.web.app import _Server, build_app


@contextlib.asynccontextmanager
async def serving(bot: Bot, *, start_bot: bool = True) -> AsyncIterator[str]:
    """Yield the base URL of the bot's app, served on a free port; stop it afterwards."""
    app = await build_app(bot)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = _Server(config)
    if start_bot:
        await bot.start()
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=5)
