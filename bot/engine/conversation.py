"""The conversation engine: one inbound message in, state changes and replies out.

Everything one inbound message causes (the inbound row, answers, new state, the replies in
the outbox) is written in one transaction, so a crash between two messages loses nothing
and a provider's retry of the same message is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.engine import render, signup, survey_runner
from bot.engine.keywords import Keyword, KeywordRouter
from bot.engine.sender_limit import SenderLimit
from bot.engine.survey_cache import SurveyCache
from bot.models import (
    Address,
    InboundMessage,
    MessageKind,
    Panellist,
    PanellistStatus,
    utcnow,
)
from bot.storage import audit as audit_store
from bot.storage import inbound as inbound_store
from bot.storage import outbox as outbox_store
from bot.storage import panellists as panellist_store
from bot.storage import surveys as survey_store
from bot.storage.conn import Conn, ReadConn
from bot.storage.tx import Tx

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.surveys.model import Survey

logger = logging.getLogger(__name__)

# Longest inbound text kept. Longer messages (pasted essays, runaway concatenation) are cut
# here rather than rejected: the person still gets an answer.
MAX_INBOUND_CHARS = 2000
TOUCH_EVERY = timedelta(minutes=1)


@dataclass
class Reply:
    text: str
    kind: MessageKind = MessageKind.REPLY
    template: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Who receives it: the sender unless a survey hand-off addresses someone else.
    address: Address | None = None


@dataclass
class Turn:
    """The working state of one inbound message inside its transaction."""

    conn: Tx
    message: InboundMessage
    text: str
    panellist: Panellist | None
    inbound_id: int
    replies: list[Reply] = field(default_factory=list)
    completed: list[tuple[Panellist, Survey, dict[str, Any]]] = field(default_factory=list)
    # The open survey session read with the panellist, valid until this turn changes it.
    session: Any = None
    # Panellists this turn opted out (True) or back in (False), for the dispatcher.
    blocking: dict[int, bool] = field(default_factory=dict)

    def reply(
        self,
        text: str,
        *,
        kind: MessageKind = MessageKind.REPLY,
        template: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.replies.append(Reply(text, kind, template, extra or {}))

    @property
    def locale(self) -> str:
        return self.panellist.locale if self.panellist and self.panellist.locale else ""


# Most inbound messages written in one transaction (group commit).
MAX_BATCH = 64


class _Pending:
    """An inbound message waiting for the engine's writer, and where its result goes."""

    __slots__ = ("future", "message", "text")

    def __init__(self, message: InboundMessage, text: str, loop: asyncio.AbstractEventLoop):
        self.message = message
        self.text = text
        self.future: asyncio.Future[HandleResult] = loop.create_future()


@dataclass
class HandleResult:
    duplicate: bool = False
    outbox_ids: list[int] = field(default_factory=list)
    panellist_id: int | None = None


def clean_text(text: str) -> str:
    """Trim, drop control characters (keeping newlines), and cap the length."""
    text = text if isinstance(text, str) else ""
    text = "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    )
    return text.strip()[:MAX_INBOUND_CHARS]


class Engine:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.settings = bot.settings
        self.catalog = bot.messages
        # Keywords of every shipped catalog work, whatever language a panellist chose.
        self.keywords = KeywordRouter(self.catalog, [*self.bot.locales, *self.catalog.locales()])
        # Collaborators sign-up, the survey runner and the waves are given.
        self.renderer = render.Renderer(self.catalog, self.settings)
        self.surveys = SurveyCache()
        self._inbox: deque[_Pending] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # transactions written for inbound messages (see bench/inbound.py)
        self.sender_limit = SenderLimit(self.settings.bot.max_inbound_per_minute)

    @property
    def default_locale(self) -> str:
        return self.settings.bot.default_locale

    def words(self, locale: str) -> dict[str, Any]:
        return self.renderer.words(locale)

    def render(self, name: str, locale: str, **context: Any) -> str:
        return self.renderer.render(name, locale, **context)

    async def survey(self, conn: ReadConn, row_id: int) -> Survey:
        """A survey version's definition (the engine's :class:`SurveyCache`)."""
        return await self.surveys.get(conn, row_id)

    async def handle(self, message: InboundMessage) -> HandleResult:
        """Process one inbound message; a repeat of a provider message id does nothing.

        Messages that arrive while others are being written are handled together, in one
        transaction (group commit): each still gets its own replies and its result, and a
        failure in one sends the batch back to be handled message by message, so one bad
        message never loses another. Messages from one address never share a batch, so
        each sees what the previous one wrote.
        """
        pending = _Pending(message, clean_text(message.text), asyncio.get_running_loop())
        self._inbox.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="panelbot-engine")
        # Shielded: a caller that gives up (a dropped webhook) must not cancel shared work.
        return await asyncio.shield(pending.future)

    async def drain(self, timeout: float = 5.0) -> None:
        """Let messages already handed to the engine be written (before the database closes)."""
        if self._writer is not None and not self._writer.done():
            done, _ = await asyncio.wait([self._writer], timeout=timeout)
            if not done:
                self._writer.cancel()

    def _next_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        seen: set[Address] = set()
        later: list[_Pending] = []
        while self._inbox and len(batch) < MAX_BATCH:
            item = self._inbox.popleft()
            linking = bool(item.message.extra.get("link_code"))
            if item.message.address in seen or (linking and batch):
                later.append(item)
                if linking:
                    break  # a join code changes who an address belongs to: alone, in order
                continue
            batch.append(item)
            seen.add(item.message.address)
            if linking:
                break
        self._inbox.extendleft(reversed(later))
        return batch

    async def _write_loop(self) -> None:
        try:
            while self._inbox:
                await self._handle_batch(self._next_batch())
        except BaseException as exc:  # cancelled at shutdown: nobody may wait for ever
            while self._inbox:
                item = self._inbox.popleft()
                if not item.future.done():
                    item.future.set_exception(RuntimeError(f"engine stopped: {exc!r}"))
            raise

    async def _handle_batch(self, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._write_batch(batch)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            logger.warning("a batch of %d messages failed; handling them one by one", len(batch))
            for item in batch:
                await self._handle_batch([item])
            return
        for item, (result, turn) in zip(batch, outcomes, strict=True):
            if turn is not None:
                await self._after_commit(turn)
            if not item.future.done():
                item.future.set_result(result)

    async def _write_batch(self, batch: list[_Pending]) -> list[tuple[HandleResult, Turn | None]]:
        """Every message of the batch in one transaction: two round trips to SQLite."""
        self.batches += 1
        async with self.bot.db.transaction() as tx:
            opened = await inbound_store.open_turns(
                tx,
                [
                    (
                        i.message.address,
                        i.message.provider_message_id,
                        i.text,
                        i.message.received_at,
                    )
                    for i in batch
                ],
            )
            work: list[tuple[HandleResult, Turn | None, int, int]] = []
            for item, (row, inbound_id) in zip(batch, opened, strict=True):
                message = item.message
                panellist, session, last_inbound = survey_store.turn_from_row(row, message.address)
                if inbound_id is None:
                    duplicate = HandleResult(True, [], panellist.id if panellist else None)
                    work.append((duplicate, None, 0, 0))
                    continue
                turn = Turn(tx, message, item.text, panellist, inbound_id, session=session)
                if panellist is not None and (
                    last_inbound is None or message.received_at - last_inbound > TOUCH_EVERY
                ):
                    # Kept to the minute: it only has to show WhatsApp's 24-hour window, so
                    # most messages skip this write.
                    await panellist_store.touch_address(tx, message.address)
                # Over the per-sender limit: stored, not answered (STOP still works).
                if self.sender_limit.allow(
                    message.address, message.received_at, message.provider_message_id
                ) or (self.keywords.classify(turn.text) == Keyword.STOP):
                    await self._route(turn)
                if turn.panellist and (panellist is None or panellist.id != turn.panellist.id):
                    await inbound_store.set_inbound_panellist(tx, inbound_id, turn.panellist.id)
                first = tx.capture_requests
                await self._queue_replies(turn)
                result = HandleResult(False, [], turn.panellist.id if turn.panellist else None)
                work.append((result, turn, first, tx.capture_requests))
            await tx.commit()
        outcomes = []
        for result, turn, first, last in work:
            result.outbox_ids = [i for i in tx.captured[first:last] if i is not None]
            outcomes.append((result, turn))
        return outcomes

    async def _after_commit(self, turn: Turn) -> None:
        for panellist_id, blocked in turn.blocking.items():
            if blocked:
                self.bot.dispatcher.block(panellist_id)
            else:
                self.bot.dispatcher.unblock(panellist_id)
        self.bot.wake_dispatcher()
        for who, survey, answers in turn.completed:
            await self.bot.plugins.call_each(
                "panelbot_survey_completed",
                bot=self.bot,
                panellist=who,
                survey=survey,
                answers=answers,
            )

    async def _queue_replies(self, turn: Turn) -> None:
        """Queue the replies; their ids are captured when the transaction commits."""
        for n, reply in enumerate(turn.replies):
            address = reply.address or turn.message.address
            key = f"in:{turn.message.address.channel}:{turn.inbound_id}:{n}"
            await outbox_store.queue(
                turn.conn,
                later=True,
                key=key,
                panellist_id=turn.panellist.id if turn.panellist else None,
                address=address,
                text=reply.text,
                kind=reply.kind,
                template=reply.template,
                extra={**reply.extra, "locale": turn.locale or self.default_locale},
            )

    async def _link(self, turn: Turn, code: str) -> bool:
        """Join this address (e.g. a new Telegram chat) to the record a join code names."""
        owner = await panellist_store.find_by_link_code(turn.conn, code)
        if owner is None:
            return False
        current = turn.panellist
        if current is not None and current.id != owner.id:
            if current.consent_at is not None:
                return False  # the chat already belongs to a consented panellist: never merge
            await panellist_store.delete_unconsented(turn.conn, current.id)
        await panellist_store.add_address(turn.conn, owner.id, turn.message.address, inbound=True)
        turn.panellist = owner
        await self.audit(
            turn.conn, "address_linked", owner.id, {"channel": turn.message.address.channel}
        )
        turn.reply(self.render("linked", owner.locale), template="linked")
        if owner.status == PanellistStatus.PENDING:
            await signup.resend_stage(self, turn)
        elif owner.status == PanellistStatus.ACTIVE:
            await survey_runner.resend_current(self, turn, quiet=True)
        return True

    async def _route(self, turn: Turn) -> None:
        code = turn.message.extra.get("link_code")
        if code and await self._link(turn, str(code)):
            return
        keyword = self.keywords.classify(turn.text)
        p = turn.panellist
        if p is None:
            await signup.first_contact(self, turn, keyword)
            return
        if keyword == Keyword.STOP:
            await self.opt_out(turn)
            return
        if keyword == Keyword.HELP and p.status == PanellistStatus.OPTED_OUT:
            # HELP is answered in every state, even after a STOP (carriers expect it). Like
            # the STOP confirmation it is one of the few messages an opted-out person is
            # sent, so it goes with that kind, which the dispatcher lets through.
            turn.reply(
                self.render(
                    "help",
                    p.locale,
                    languages=len(self.bot.locales) > 1,
                    in_survey=False,
                    joined=p.consent_at is not None,
                ),
                kind=MessageKind.STOP_CONFIRMATION,
                template="help",
            )
            return
        if p.status == PanellistStatus.OPTED_OUT:
            yes = turn.text and self.renderer.is_yes(turn.text, p.locale)
            if keyword == Keyword.START or yes:
                await self.opt_in(turn)
            # Otherwise silence: they asked us to stop.
            return
        if p.status == PanellistStatus.UNREACHABLE:
            # They just wrote to us, so they are reachable again.
            new = PanellistStatus.ACTIVE if p.consent_at else PanellistStatus.PENDING
            await panellist_store.update(turn.conn, p.id, status=new)
            p.status = new
        if keyword == Keyword.HELP:
            session = await survey_store.active_session(turn.conn, p.id)
            turn.reply(
                self.render(
                    "help",
                    p.locale,
                    languages=len(self.bot.locales) > 1,
                    in_survey=session is not None or p.status == PanellistStatus.PENDING,
                    joined=p.consent_at is not None,  # before the yes: how to join
                ),
                template="help",
            )
            return
        if keyword == Keyword.LANGUAGE and len(self.bot.locales) > 1:
            await signup.offer_language_change(self, turn)
            return
        if await self._stale_button(turn):
            return
        if p.status == PanellistStatus.PENDING:
            if keyword == Keyword.START:  # e.g. Telegram's /start again: carry on, not "no"
                await signup.resend_stage(self, turn)
                return
            await signup.continue_signup(self, turn)
            return
        if keyword == Keyword.START:
            turn.reply(self.render("opted_in", p.locale, already=True), template="opted_in")
            return
        if p.stage and p.stage.startswith("language"):
            await signup.continue_signup(self, turn)
            return
        if turn.session is None and keyword is None and turn.text:
            if await self._plugin_reply(turn):
                return
        await survey_runner.handle_answer(self, turn)

    async def _plugin_reply(self, turn: Turn) -> bool:
        """``panelbot_handle_reply``: a plugin may answer a text sent outside any survey."""
        p = turn.panellist
        if p is None or p.status != PanellistStatus.ACTIVE:
            return False
        answer = await self.bot.plugins.call_first_in(
            turn.conn, "panelbot_handle_reply", bot=self.bot, panellist=p, text=turn.text
        )
        if answer is None:
            return False
        turn.reply(str(answer), template="plugin_reply")
        return True

    async def _stale_button(self, turn: Turn) -> bool:
        """A tap on a button of an earlier question is not an answer to the current one.

        Channels with buttons (Telegram) say which message the tapped button belonged to;
        when it is not the latest message with buttons, the current question is asked again.
        """
        tapped = turn.message.extra.get("button_message_id")
        if tapped is None:
            return False
        latest = await outbox_store.latest_with_options(turn.conn, turn.message.address)
        if latest is None or latest == str(tapped):
            return False
        p = turn.panellist
        assert p is not None
        if p.status == PanellistStatus.PENDING:
            await signup.resend_stage(self, turn)
        else:
            await survey_runner.resend_current(self, turn, quiet=True)
        return True

    async def opt_out(self, turn: Turn) -> None:
        p = turn.panellist
        assert p is not None
        if p.status == PanellistStatus.OPTED_OUT:
            return  # one confirmation, then silence
        conn = turn.conn
        if p.status == PanellistStatus.PENDING and p.consent_at is None:
            # Never consented: keep nothing but the hashed address that stops us asking again.
            turn.reply(
                self.render("opted_out", p.locale),
                kind=MessageKind.STOP_CONFIRMATION,
                template="opted_out",
            )
            await panellist_store.suppress(
                conn, self.bot.hash_key, turn.message.address, "opted_out"
            )
            await panellist_store.delete_unconsented(conn, p.id)
            turn.panellist = None
            return
        now = utcnow()
        await panellist_store.update(conn, p.id, status=PanellistStatus.OPTED_OUT, opted_out_at=now)
        p.status = PanellistStatus.OPTED_OUT
        turn.blocking[p.id] = True
        session = await survey_store.active_session(conn, p.id)
        if session:
            await survey_store.finish_session(conn, session.id, "stopped")
        await survey_store.expire_waiting(conn, panellist_id=p.id)
        await outbox_store.cancel_for_panellist(conn, p.id)
        await self.audit(conn, "opted_out", p.id, {"channel": turn.message.address.channel})
        turn.reply(
            self.render("opted_out", p.locale),
            kind=MessageKind.STOP_CONFIRMATION,
            template="opted_out",
        )

    async def opt_in(self, turn: Turn) -> None:
        p = turn.panellist
        assert p is not None
        # Active only once sign-up was finished; otherwise carry on where they stopped.
        stage = p.stage or ""
        finished = p.consent_at is not None and (not stage or stage == "language:")
        new = PanellistStatus.ACTIVE if finished else PanellistStatus.PENDING
        await panellist_store.update(turn.conn, p.id, status=new, opted_out_at=None)
        turn.blocking[p.id] = False
        p.status = new
        await self.audit(turn.conn, "opted_in", p.id, {"channel": turn.message.address.channel})
        turn.reply(self.render("opted_in", p.locale, already=False), template="opted_in")
        if new == PanellistStatus.PENDING:
            await signup.resend_stage(self, turn)

    async def audit(
        self,
        conn: Conn,
        action: str,
        panellist_id: int | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await audit_store.record(conn, action, panellist_id, detail)
