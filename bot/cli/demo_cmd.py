"""``panelbot demo`` and ``panelbot chat``: try the panel with no accounts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import select
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import click

from bot.cli import CliContext, UserError, pass_cli, run


def register(cli: click.Group) -> None:
    @cli.command("demo")
    @click.option("--port", type=int, default=8080, show_default=True, help="Web port.")
    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default="demo-data",
        show_default=True,
        help="Where the demo keeps its config and database.",
    )
    @click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
    def demo(port: int, data_dir: str, verbose: bool) -> None:
        """Run the whole bot on the simulator with an example panel and surveys.

        Writes DATA_DIR/panelbot.toml, so every other command works on the demo with
        `panelbot -c DATA_DIR/panelbot.toml ...`. Running it again reuses the folder.
        """
        from bot.app import Bot, StartupError
        from bot.cli.serve_cmd import bind_port, setup_logging
        from bot.config import ConfigError, load_settings
        from bot.demo import demo_admin, load_examples, settings_for
        from bot.panel import PanelFileError
        from bot.storage import DatabaseError
        from bot.web.app import serve

        setup_logging(verbose)
        folder = Path(data_dir)
        # The port first: when it is taken, say so and stop before anything is written,
        # loaded or opened.
        host = "127.0.0.1"
        try:
            if (folder / "panelbot.toml").is_file():
                host = load_settings(folder / "panelbot.toml").web.host
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        other = 8090 if port != 8090 else 8091
        sock = bind_port(
            host,
            port,
            hint=f"choose another: make demo PORT={other} (or panelbot demo --port {other})",
        )
        try:
            config, settings = settings_for(folder, port)
        except ConfigError as exc:
            sock.close()
            raise UserError(str(exc)) from None
        if settings.web.port != port:
            settings = dataclasses.replace(
                settings, web=dataclasses.replace(settings.web, port=port)
            )
        host = settings.web.host

        async def go() -> None:
            try:
                bot = await Bot.create(settings)
            except (DatabaseError, StartupError) as exc:
                raise UserError(str(exc)) from None
            try:
                loaded = await load_examples(bot, settings)
                admin_email, admin_password = await demo_admin(bot, folder)
            except (PanelFileError, OSError) as exc:
                await bot.stop()
                raise UserError(f"demo data: {exc}") from None

            def banner(server: Any) -> None:
                base = f"http://{host}:{port}"
                click.echo("")
                click.echo(f"panelbot demo: {settings.bot.name}")
                click.echo(f"  panel:      {loaded['panel']}")
                if loaded["surveys"]:
                    click.echo(f"  surveys:    added {', '.join(loaded['surveys'])}")
                if loaded["wave"]:
                    click.echo(f"  wave:       {loaded['wave']} opened (new joiners invited)")
                click.echo(f"  simulator:  {base}/simulator")
                click.echo(f"  dashboard:  {base}/admin")
                click.echo(f"    sign in:  {admin_email}  password: {admin_password}  (demo only)")
                click.echo(f"  config:     {config}  (panelbot -c {config} ...)")
                click.echo("  stop with Ctrl+C")
                sys.stdout.flush()

            try:
                await serve(bot, host, port, on_ready=banner, sock=sock)
            except OSError as exc:
                raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

        run(go())

    @cli.command("chat")
    @click.option(
        "--as", "address", required=True, metavar="sim:NAME", help="Who you are, e.g. sim:alice."
    )
    @pass_cli
    def chat(obj: CliContext, address: str) -> None:
        """Talk to the bot as a panellist in the terminal (the simulator channel).

        Type a message and press Enter; broadcasts that arrive meanwhile are shown too.
        Ctrl+D or Ctrl+C ends the chat. Outside a demo panel it refuses an address that
        speaks for an imported panellist or one also reached by SMS, WhatsApp or Telegram.
        """
        from bot.models import Address

        try:
            who = Address.parse(address)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if who.channel != "sim":
            raise UserError("--as must be a simulator address such as sim:alice")
        run(_chat(obj.settings, who))


async def _chat(settings: Any, who: Any) -> None:
    from bot.app import Bot, StartupError
    from bot.models import InboundMessage
    from bot.storage import DatabaseError
    from bot.storage import outbox as outbox_store

    if not settings.channels.simulator.enabled:
        raise UserError("the simulator channel is off in this config ([channels.simulator])")
    try:
        bot = await Bot.create(settings)
    except (DatabaseError, StartupError) as exc:
        raise UserError(str(exc)) from None
    # The web simulator's rule: acting for an imported or SMS/WhatsApp/Telegram panellist
    # only on a demo panel.
    from bot.storage import simulator as sim_store
    from bot.web.simulator import may_speak_as_panellists

    if not may_speak_as_panellists(bot) and await sim_store.speaks_for_real_panellist(
        bot.db.conn, who
    ):
        await bot.stop()
        raise UserError(
            f"{who} speaks for a panellist who is also reached by SMS, WhatsApp or Telegram, "
            "or was imported; chat may do that only on a demo panel "
            "([channels.simulator] demo and allow_panellists)"
        )
    # Our own dispatcher delivers to the simulator; the scheduler stays with `panelbot serve`.
    await bot.start(scheduler=False)
    seen = {
        m["id"]
        for m in await outbox_store.conversation(bot.db.conn, who)
        if m["direction"] == "out"
    }

    async def show_new(wait: float) -> None:
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            history = await outbox_store.conversation(bot.db.conn, who)
            fresh = [m for m in history if m["direction"] == "out" and m["id"] not in seen]
            for m in fresh:
                seen.add(m["id"])
                click.echo(click.style("bot> ", fg="blue") + m["text"].replace("\n", "\n     "))
            if fresh or asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.1)

    lines = _StdinLines(asyncio.get_running_loop())
    try:
        _say(f"chatting as {who} with {settings.bot.name}; Ctrl+D to end")
        await show_new(0)
        while True:
            _say("you> ", nl=False)
            line = await lines.next_line()
            if line is None:
                break
            result = await bot.handle(InboundMessage(who, line, f"chat-{uuid.uuid4().hex}"))
            await show_new(3.0 if result.outbox_ids else 0.2)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        _silence_stdout()  # `panelbot chat ... | head`: the reader has gone; end quietly
    finally:
        with contextlib.suppress(BrokenPipeError):
            _say("")
        await bot.stop()


def _say(text: str, nl: bool = True) -> None:
    """Print and flush at once (a pipe would otherwise hold the prompt back)."""
    click.echo(text, nl=nl)
    sys.stdout.flush()


def _stdout_gone() -> bool:
    """True once standard output is a pipe whose reader has closed it."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLERR)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so the flush at exit does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class _StdinLines:
    """Lines typed on standard input, read by a daemon thread.

    A blocking ``input()`` would keep ``chat`` alive after the reader of its output has
    gone (``panelbot chat --as sim:x | head -2``); this way the chat can notice that while
    it waits for the next line, and the thread does not hold up the exit.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=self._read, daemon=True, name="panelbot-chat-stdin").start()

    def _put(self, line: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._queue.put_nowait, line)

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(sys.stdin.fileno(), 65536)
            except (OSError, ValueError, AttributeError):
                chunk = b""
            if not chunk:
                if pending:
                    self._put(pending.decode("utf-8", "replace").rstrip("\r"))
                self._put(None)
                return
            pending += chunk
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                self._put(line.decode("utf-8", "replace").rstrip("\r"))

    async def next_line(self) -> str | None:
        """The next line; None at the end of input. BrokenPipeError once stdout is gone."""
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(self._queue.get(), 0.2)
            if _stdout_gone():
                raise BrokenPipeError("standard output was closed")
