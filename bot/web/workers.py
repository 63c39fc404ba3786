"""``panelbot serve`` with ``[web] workers = N``: N web processes in front of the bot.

The main process opens the listening socket, starts the bot (channels, engine, outbox
dispatcher, scheduler) and the inbox reader, then starts N copies of itself as web
processes (``panelbot serve --web-child``) that share the socket. A web process checks each
request (Twilio's signature, Telegram's secret, the simulator's JSON), stores what it
verified in the inbox and answers at once; one byte on a pipe wakes the main process, which
hands the payload to the engine. HTTP parsing and signature checks then run on other cores
than the engine, which is what lets webhook bursts be answered quickly (bench/webhook.py).

Once the web processes run, the main process lowers its own CPU priority by
``[web] main_process_nice`` (default 5): when a burst of webhooks leaves too little CPU for
everything, answering the providers comes first and the engine catches up as the burst
eases (bench/webhook.py prints by how much it was behind).

A web process that dies is started again; one whose main process has gone stops itself.
SIGINT or SIGTERM stops the web processes first (they finish the requests in hand), then
the main process handles what they stored and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from bot.inbox import InboxReader, InboxWriter, open_inbox
from bot.web.app import build_app, listen, stop_on_signals, wait_started
from bot.web.limits import server_config

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.config import Settings

logger = logging.getLogger(__name__)

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 8.0
# More restarts than this within RESTART_WINDOW seconds and serve gives up.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def lower_priority(nice: int) -> None:
    """Let the web processes go first when the CPU is short (a burst of webhooks).

    Only this thread (the event loop: engine, dispatcher, scheduler) is lowered; on Linux
    a nice value belongs to a thread. The engine then catches up as soon as the burst
    eases, while the provider's requests keep being answered at once.
    """
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
    except OSError as exc:  # a container may refuse it: run on at the same priority
        logger.warning("could not lower the main process's priority: %s", exc)


class WebProcessError(RuntimeError):
    """The web processes could not be started, or keep exiting."""


class WebProcessDied(WebProcessError):
    """A web process exited before it reported ready."""

    def __init__(self, returncode: int) -> None:
        super().__init__(f"a web process exited while starting (exit code {returncode})")
        self.returncode = returncode


class WebPool:
    """Starts, watches and stops the web processes."""

    def __init__(
        self, count: int, sock: socket.socket, wake_fd: int, config_path: Path | None
    ) -> None:
        self.count = count
        self.sock = sock
        self.wake_fd = wake_fd
        self.config_path = config_path
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.restarts: list[float] = []
        self.stopping = False
        # Web processes are started from this thread, made before the main process lowers
        # its priority: a child inherits the priority of the thread that starts it.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="panelbot-spawn")
        self._spawner.submit(lambda: None).result()

    def _spawn(self) -> tuple[subprocess.Popen[bytes], int]:
        ready_r, ready_w = os.pipe()
        fds = f"{self.sock.fileno()},{self.wake_fd},{ready_w}"
        config = ["-c", str(self.config_path)] if self.config_path else []
        cmd = [sys.executable, "-m", "bot", *config, "serve", "--web-child", fds]
        try:
            proc = subprocess.Popen(cmd, pass_fds=(self.sock.fileno(), self.wake_fd, ready_w))
        finally:
            os.close(ready_w)
        return proc, ready_r

    async def _wait_ready(self, proc: subprocess.Popen[bytes], ready_r: int) -> None:
        os.set_blocking(ready_r, False)
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while True:
                with contextlib.suppress(BlockingIOError):
                    if os.read(ready_r, 1):
                        return
                if proc.poll() is not None:
                    raise WebProcessDied(proc.returncode)
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise WebProcessError(f"a web process did not start in {READY_TIMEOUT:.0f} s")
                await asyncio.sleep(0.02)
        finally:
            os.close(ready_r)

    async def _spawn_async(self) -> tuple[subprocess.Popen[bytes], int]:
        return await asyncio.get_running_loop().run_in_executor(self._spawner, self._spawn)

    def _count_restart(self) -> None:
        """One more restart; WebProcessError when there were too many in RESTART_WINDOW."""
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
        if len(self.restarts) > MAX_RESTARTS:
            raise WebProcessError(
                f"web processes exited {len(self.restarts)} times in "
                f"{RESTART_WINDOW:.0f} s; stopping"
            )

    async def _start_slot(
        self, i: int, first: tuple[subprocess.Popen[bytes], int] | None = None
    ) -> None:
        """Start web process ``i`` (``first``: one already spawned, at serve's start) and
        wait until it is ready, starting another each time one dies on the way.

        Each death counts against the restart budget (MAX_RESTARTS in RESTART_WINDOW). At
        serve's start, a web process that fails by itself (a non-zero exit: bad settings,
        a database it cannot open) ends serve at once: another would fail the same way.
        One killed by a signal (the OOM killer, an operator) is started again.
        """
        spawned = first
        while True:
            if spawned is None:
                spawned = await self._spawn_async()
            proc, ready_r = spawned
            spawned = None
            self.procs[i] = proc
            try:
                await self._wait_ready(proc, ready_r)
                return
            except WebProcessDied as exc:
                if first is not None and exc.returncode > 0:
                    raise
                if self.stopping:
                    return
                self._count_restart()
                logger.error(
                    "web process %d exited while starting (code %s); starting another",
                    proc.pid,
                    exc.returncode,
                )
            except WebProcessError:
                if first is not None or self.stopping:
                    raise
                self._count_restart()
                logger.error(
                    "web process %d did not start in %.0f s; starting another",
                    proc.pid,
                    READY_TIMEOUT,
                )

    async def start(self) -> None:
        started = [await self._spawn_async() for _ in range(self.count)]
        for i, (proc, _) in enumerate(started):
            self.procs[i] = proc
        await asyncio.gather(*(self._start_slot(i, pair) for i, pair in enumerate(started)))

    async def watch(self, stop: asyncio.Event) -> None:
        """Start a web process again when one exits, until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
            if stop.is_set() or self.stopping:
                return
            for i, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None:
                    continue
                self._count_restart()
                logger.error(
                    "web process %d exited (code %s); starting another", proc.pid, proc.returncode
                )
                await self._start_slot(i)

    async def stop(self) -> None:
        """SIGTERM each web process (they finish requests in hand), then wait; kill stragglers."""
        self.stopping = True
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:  # noqa: ASYNC110 - polling child processes
            await asyncio.sleep(0.05)
        for proc in live:
            if proc.poll() is None:
                logger.warning("web process %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
        self._spawner.shutdown(wait=False)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None]


async def serve_with_workers(
    bot: Bot,
    host: str,
    port: int,
    workers: int,
    *,
    on_ready: Callable[[Any], None] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """The main process of ``serve`` with web processes; returns after SIGINT/SIGTERM.

    ``sock``: the listening socket from :func:`bot.web.app.listen` (``serve`` binds it
    before opening the database, so a busy port stops it at once); bound here if None.
    """
    if sock is None:
        sock = listen(host, port)
    sock.set_inheritable(True)  # the web processes share it
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    reader: InboxReader | None = None
    pool = WebPool(workers, sock, wake_w, bot.settings.source)
    with stop_on_signals() as stop:
        try:
            await bot.start()
            reader = await InboxReader.open(bot, wake_fd=wake_r)
            await pool.start()
            lower_priority(bot.settings.web.main_process_nice)
            if on_ready:
                on_ready(pool)
            await pool.watch(stop)
        finally:
            await pool.stop()
            sock.close()
            if reader is not None:
                await reader.close()
            await bot.stop()
            for fd in (wake_r, wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)


async def run_web_child(settings: Settings, fds: str) -> None:
    """One web process: the routes, a database connection and the inbox writer."""
    from bot.app import Bot

    sock_fd, wake_fd, ready_fd = (int(part) for part in fds.split(","))
    parent = os.getppid()
    bot = await Bot.create(settings, migrate=False)
    inbox_db = await open_inbox(bot.db.path, writer=True)
    writer = InboxWriter(inbox_db, notify_fd=wake_fd)
    await bot.start_web(writer)
    app = await build_app(bot)
    config = server_config(app)  # the same limits and timeouts as one-process serve
    server = uvicorn.Server(config)  # its own SIGINT/SIGTERM handling: a graceful stop
    sock = socket.socket(fileno=sock_fd)
    web = asyncio.create_task(server.serve(sockets=[sock]), name="panelbot-web")
    try:
        await wait_started(server, web)
        os.write(ready_fd, b"R")
        os.close(ready_fd)
        gc.collect()
        gc.freeze()
        while not web.done():
            await asyncio.wait([web], timeout=1.0)
            if os.getppid() != parent:  # the main process is gone: nobody reads the inbox
                logger.error("web process %d: the main process has gone; stopping", os.getpid())
                server.should_exit = True
        web.result()
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(web, timeout=5)
        await writer.close()
        await inbox_db.close()
        await bot.db.close()
