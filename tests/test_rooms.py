"""Issue 11, parts 6 and 7: masking lives in bot.privacy (no channel SDK needed), the
dispatcher is bot.dispatcher, and duplicated logic is one function."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bot.app import Bot
from bot.dispatcher import Dispatcher
from bot.engine.waves import launch
from bot.models import (
    Address,
    DeliveryReport,
    ErrorClass,
    MessageKind,
    OutboundMessage,
    OutboxStatus,
    SendError,
    SendResult,
    utcnow,
)
from bot.privacy import address_hash, mask, masked_address, scrub
from bot.scheduler import Scheduler
from bot.storage import Database
from bot.storage import outbox as outbox_store
from tests.conftest import REPO, add_survey, make_settings
from tests.scripted_channel import ScriptedChannel
from tests.test_outbox import (  # noqa: F401  (make_bot is a fixture)
    BotFactory,
    add_panellist,
    make_bot,
    panellist_status,
    queue,
    row,
    wait_rows,
)


def test_mask_keeps_numbers_apart_but_uncallable() -> None:
    assert mask("+447400100101") == "+44740****101"
    assert mask("whatsapp:+447400100101") == "whatsapp:+44740****101"
    assert mask("123") == "***"
    assert mask("1234567") == "*******"
    assert mask(None) == mask("") == ""
    for value in ("12345678", "123456789", "+4474001001011234"):
        masked = mask(value)
        assert masked.count("*") >= 4 and value not in masked


def test_scrub_and_masked_address() -> None:
    text = scrub("To number +447400100101 is not a mobile; 12345 is fine")
    assert "+447400100101" not in text and "+44740****101" in text and "12345 " in text
    assert masked_address("sms", "+447400100101") == "+44740****101"
    assert masked_address("telegram", "123456789") == "12****89"
    assert masked_address("telegram", None) == "(erased)"


def test_address_hash_is_keyed_and_one_for_a_phone_on_both_channels() -> None:
    sms, wa = Address("sms", "+447400100101"), Address("whatsapp", "+447400100101")
    assert address_hash(b"k", sms) == address_hash(b"k", wa)
    assert address_hash(b"k", sms) != address_hash(b"other", sms)
    assert "+447400100101" not in address_hash(b"k", sms)


def test_privacy_and_the_cli_load_without_any_channel_sdk() -> None:
    code = (
        "import sys, bot.privacy, bot.cli.db_cmd, bot.panel; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('twilio', 'telegram')); "
        "assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# -- the dispatcher and the scheduler are given what they use, not the Bot ---------------


async def test_a_dispatcher_built_from_its_collaborators_alone_sends(tmp_path: Path) -> None:
    """No Bot at all: a database, the settings and a channel are enough to send."""
    settings = make_settings(tmp_path, outbox={"poll_interval": 0.05})
    db = await Database.open(settings.bot.database)
    channel = ScriptedChannel(names=("sim",))
    seen: list[str] = []

    async def before(message: OutboundMessage) -> OutboundMessage:
        return replace(message, text=message.text.upper())

    async def after(message: OutboundMessage, report: SendResult | SendError) -> None:
        seen.append(message.text)

    dispatcher = Dispatcher(db, settings, {"sim": channel}, before_send=before, after_send=after)
    try:
        async with db.transaction() as conn:
            row_id = await outbox_store.queue(
                conn,
                key="rooms:1",
                panellist_id=None,
                address=Address("sim", "ann"),
                text="hello",
                kind=MessageKind.REPLY,
            )
        await dispatcher.start()
        calls = await channel.wait_for_calls(1)
        assert calls[0].message.id == row_id and calls[0].message.text == "HELLO"
        for _ in range(100):
            found = await db.fetchone("SELECT status FROM outbox WHERE id = ?", (row_id,))
            if found["status"] == "sent" and seen:
                break
            await asyncio.sleep(0.02)
        assert found["status"] == "sent" and seen == ["HELLO"]
    finally:
        await dispatcher.stop()
        await db.close()


@pytest.mark.parametrize(
    ("error_class", "new_status"),
    [(ErrorClass.OPTED_OUT, "opted_out"), (ErrorClass.UNREACHABLE, "unreachable")],
)
async def test_a_delivery_report_marks_the_panellist_as_a_send_failure_does(
    make_bot: BotFactory,  # noqa: F811  (the fixture imported above)
    error_class: ErrorClass,
    new_status: str,
) -> None:
    """A status callback saying opted-out/unreachable goes through the same function as a
    send failing so: the panellist is marked, what is queued for them is cancelled, and the
    dispatcher blocks them at once."""
    channel = ScriptedChannel()
    bot = await make_bot(channel)
    alice = await add_panellist(bot, "alice")
    first = await queue(bot, "alice", kind=MessageKind.INVITATION, panellist_id=alice)
    later = await queue(
        bot,
        "alice",
        kind=MessageKind.REMINDER,
        panellist_id=alice,
        not_before=utcnow() + timedelta(hours=1),
    )
    await bot.start(scheduler=False)
    (sent,) = await wait_rows(bot, [first])
    assert sent["status"] == "sent"

    report = DeliveryReport(
        "sim", sent["provider_message_id"], OutboxStatus.FAILED, "21610", error_class
    )
    assert await bot.apply_delivery_report(report) == first
    assert (await row(bot, first))["status"] == "failed"
    assert await panellist_status(bot, alice) == new_status
    assert (await row(bot, later))["status"] == "cancelled"
    assert alice in bot.dispatcher._blocked
    unknown = DeliveryReport("sim", "no-such-id", OutboxStatus.FAILED, "21610", error_class)
    assert await bot.apply_delivery_report(unknown) is None


async def test_the_scheduler_runs_wave_steps_through_what_it_is_given(bot: Bot) -> None:
    """The scheduler knows the database and the settings, and hands each due wave step to
    the runner it was given (the Bot's run_wave_step in a running bot)."""
    await add_survey(bot, REPO / "tests" / "data" / "every-type.toml")
    wave_id = await launch(bot, "every-type", at=utcnow() + timedelta(seconds=0.3))
    ran: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def step(name: str, wave: int) -> None:
        ran.append((name, wave))
        await bot.run_wave_step(name, wave)
        done.set()

    scheduler = Scheduler(bot.db, bot.settings, step)
    await scheduler.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        await scheduler.stop()
    assert ran == [("open", wave_id)]
    found = await bot.db.fetchone("SELECT status FROM waves WHERE id = ?", (wave_id,))
    assert found["status"] == "open"
    with pytest.raises(ValueError, match="unknown wave step"):
        await bot.run_wave_step("reopen", wave_id)


def test_no_part_of_bot_reaches_into_the_engine_s_privates() -> None:
    """Sign-up, the survey runner, the waves and everything else use the engine's public
    collaborators (renderer, surveys), never ``engine._something``."""
    import ast

    offences = []
    for path in sorted((REPO / "bot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and (
                    (isinstance(node.value, ast.Name) and node.value.id == "engine")
                    or (isinstance(node.value, ast.Attribute) and node.value.attr == "engine")
                )
            ):
                offences.append(f"{path.relative_to(REPO)}:{node.lineno}: engine.{node.attr}")
    assert offences == []


def test_channels_the_dispatcher_and_the_scheduler_never_name_the_bot() -> None:
    """They are given the narrow collaborators they use (an ingress, ChannelServices, the
    database, a delivery-report handler, a wave-step runner), not the whole Bot: not even
    an annotation imports ``bot.app``."""
    import ast

    places = [
        *sorted((REPO / "bot" / "channels").rglob("*.py")),
        REPO / "bot" / "dispatcher.py",
        REPO / "bot" / "scheduler.py",
    ]
    offences = []
    for path in places:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "bot.app":
                offences.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offences == []
