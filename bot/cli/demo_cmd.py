"""``panelbot demo`` and ``panelbot chat``: try the panel with no accounts."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
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
        from bot.app import Bot
        from bot.cli.serve_cmd import setup_logging
        from bot.config import ConfigError
        from bot.demo import load_examples, settings_for
        from bot.panel import PanelFileError
        from bot.storage import DatabaseError
        from bot.web.app import serve

        setup_logging(verbose)
        folder = Path(data_dir)
        try:
            config, settings = settings_for(folder, port)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        if settings.web.port != port:
            settings = dataclasses.replace(
                settings, web=dataclasses.replace(settings.web, port=port)
            )
        host = settings.web.host

        async def go() -> None:
            try:
                bot = await Bot.create(settings)
            except DatabaseError as exc:
                raise UserError(str(exc)) from None
            try:
                loaded = await load_examples(bot, settings)
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
                click.echo(f"  config:     {config}  (panelbot -c {config} ...)")
                click.echo("  stop with Ctrl+C")
                sys.stdout.flush()

            try:
                await serve(bot, host, port, on_ready=banner)
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
        Ctrl+D or Ctrl+C ends the chat.
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
    from bot.app import Bot
    from bot.models import InboundMessage
    from bot.storage import DatabaseError
    from bot.storage import outbox as outbox_store

    if not settings.channels.simulator.enabled:
        raise UserError("the simulator channel is off in this config ([channels.simulator])")
    try:
        bot = await Bot.create(settings)
    except DatabaseError as exc:
        raise UserError(str(exc)) from None
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

    click.echo(f"chatting as {who} with {settings.bot.name}; Ctrl+D to end")
    try:
        await show_new(0)
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                break
            result = await bot.handle(InboundMessage(who, line, f"chat-{uuid.uuid4().hex}"))
            await show_new(3.0 if result.outbox_ids else 0.2)
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("")
        await bot.stop()
