"""The Bot: wires settings, storage, plugins, messages, channels, engine, dispatcher, scheduler."""

from __future__ import annotations

import gc
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.channels import build_channels
from bot.channels.base import ChannelServices
from bot.dispatcher import Dispatcher
from bot.engine import waves
from bot.engine.conversation import Engine, HandleResult
from bot.ingress import Ingress
from bot.messages import MessageCatalog
from bot.models import (
    Address,
    DeliveryReport,
    InboundMessage,
    OutboundMessage,
    SendError,
    SendResult,
)
from bot.plugins import PanelPlugins, plugins_for
from bot.resources import messages_dir
from bot.scheduler import Scheduler
from bot.storage import Database
from bot.storage import panellists as panellist_store

if TYPE_CHECKING:
    from bot.channels.base import Channel
    from bot.config import Settings
    from bot.inbox import InboxWriter

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The bot cannot start as configured (a channel refused its credentials...)."""


def resolve_locales(settings: Settings, plugins: PanelPlugins) -> list[str]:
    """The languages the panel speaks: what a plugin (translations) allows, else the default.

    Without a translations plugin the core speaks only the default locale, whatever
    ``bot.locales`` lists.
    """
    default = settings.bot.default_locale
    for name, found in plugins.call_each_sync("panelbot_locales", bot=None, settings=settings):
        locales = [loc for loc in found if loc in settings.bot.locales]
        if locales:
            logger.debug("locales from plugin %s: %s", name, locales)
            return [default, *[loc for loc in locales if loc != default]]
    if len(settings.bot.locales) > 1:
        logger.warning(
            "bot.locales lists %s but no plugin provides translations; speaking %s only",
            ", ".join(settings.bot.locales),
            default,
        )
    return [default]


class Bot:
    """One running panel. Create with :meth:`create`; :meth:`start` runs the background parts."""

    settings: Settings
    db: Database
    plugins: PanelPlugins
    messages: MessageCatalog
    channels: dict[str, Channel]
    engine: Engine
    dispatcher: Dispatcher
    scheduler: Scheduler
    hash_key: bytes
    locales: list[str]

    def __init__(self) -> None:
        self.started = False
        self.state: dict[str, Any] = {}  # plugins keep their runtime state here, by name
        # Where channels hand what they receive: the engine, or (a web process) the inbox.
        self.ingress = Ingress(self.handle, self.apply_delivery_report)

    @property
    def inbox(self) -> InboxWriter | None:
        """In a web process ([web] workers >= 1): the inbox what channels receive is stored
        in for the main process; None where it goes to the engine at once."""
        return self.ingress.inbox

    @classmethod
    async def create(
        cls, settings: Settings, *, plugins: PanelPlugins | None = None, migrate: bool = True
    ) -> Bot:
        bot = cls()
        bot.settings = settings
        bot.plugins = plugins or plugins_for(settings)
        # A plugin's config problem stops the bot as a core one does (``config check``).
        problems = bot.plugins.config_problems(settings)
        if problems:
            where = settings.source or "config"
            raise StartupError("\n".join(f"{where}: {problem}" for problem in problems))
        bot.db = await Database.open(
            settings.bot.database, migrate=migrate, plugins=bot.plugins.migration_folders()
        )
        extra_dirs: list[Path] = []
        for _, dirs in bot.plugins.call_each_sync("panelbot_message_dirs", bot=bot):
            extra_dirs.extend(Path(d) for d in dirs)
        bot.locales = resolve_locales(settings, bot.plugins)
        bot.messages = MessageCatalog(
            [*extra_dirs, messages_dir()], settings.bot.default_locale, settings.bot.timezone
        )
        if settings.bot.secret_key:
            bot.hash_key = settings.bot.secret_key.encode()
        else:
            async with bot.db.transaction() as conn:
                bot.hash_key = await panellist_store.hash_key(conn)
        bot.channels = build_channels(settings, bot.ingress)
        for channel in set(bot.channels.values()):
            bot.ingress.attach(channel)
        bot.engine = Engine(bot)
        bot.dispatcher = bot.build_dispatcher()
        bot.scheduler = Scheduler(bot.db, settings, bot.run_wave_step)
        return bot

    def build_dispatcher(self) -> Dispatcher:
        """A dispatcher for the current channels, with the plugins' send hooks."""

        async def before_send(message: OutboundMessage) -> OutboundMessage | None:
            return await self.plugins.call_chain(
                "panelbot_before_send", "message", bot=self, message=message
            )

        async def after_send(message: OutboundMessage, report: SendResult | SendError) -> None:
            await self.plugins.call_each(
                "panelbot_after_send", bot=self, message=message, report=report
            )

        return Dispatcher(
            self.db, self.settings, self.channels, before_send=before_send, after_send=after_send
        )

    async def run_wave_step(self, step: str, wave_id: int) -> None:
        """A wave's scheduled step (open, remind, close): what the scheduler runs."""
        if step == "open":
            await waves.open_wave(self, wave_id)
        elif step == "remind":
            await waves.send_reminders(self, wave_id)
        elif step == "close":
            await waves.close_wave(self, wave_id)
        else:
            raise ValueError(f"unknown wave step {step!r}")

    async def start(self, *, dispatcher: bool = True, scheduler: bool = True) -> None:
        # Channels get what they use of the bot, not the bot.
        services = ChannelServices(self.db, self.last_inbound_at)
        for channel in set(self.channels.values()):
            try:
                await channel.start(services)
            except Exception as exc:
                # e.g. a refused Telegram token: a one-line reason for the operator.
                raise StartupError(f"channel {'/'.join(channel.names)}: {exc}") from exc
        if dispatcher:
            await self.dispatcher.start()
        if scheduler:
            await self.scheduler.start()
            await self.plugins.call_each("panelbot_register_jobs", bot=self)
        await self.plugins.call_each("panelbot_startup", bot=self)
        self.started = True
        # Everything built at start lives as long as the process: keep the collector from
        # walking it again and again (full collections paused sends for 40-80 ms).
        gc.collect()
        gc.freeze()

    async def stop(self) -> None:
        """Finish or leave queued what is in flight, stop the scheduler, close the database."""
        if self.started:
            await self.plugins.call_each("panelbot_shutdown", bot=self)
            await self.scheduler.stop()
            await self.dispatcher.stop()
            for channel in set(self.channels.values()):
                try:
                    await channel.stop()
                except Exception:
                    logger.exception("channel %s failed to stop", channel.names)
        self.started = False
        await self.engine.drain()
        await self.db.close()

    async def start_web(self, inbox: InboxWriter) -> None:
        """Make this a web process: what channels receive is stored in ``inbox`` for the
        main process (no provider client is started, nor the dispatcher or scheduler)."""
        self.ingress.store_in(inbox)

    def wake_dispatcher(self) -> None:
        if self.started:
            self.dispatcher.wake()

    async def handle(self, message: InboundMessage) -> HandleResult:
        """An inbound message from any channel, through the engine."""
        return await self.engine.handle(message)

    async def apply_delivery_report(self, report: DeliveryReport) -> int | None:
        """A provider's status report (e.g. a Twilio status callback), never moving backwards.

        A final failure classified as opted-out or unreachable marks the panellist too.
        Returns the outbox row id, or None for an unknown provider message id.
        """
        return await self.dispatcher.apply_report(report)

    async def last_inbound_at(self, address: Address) -> datetime | None:
        """When this address last wrote to us (WhatsApp's 24-hour window is counted from it)."""
        return await panellist_store.last_inbound_at(self.db.conn, address)
