"""One way in: channels hand parsed messages to the ingress, which handles them now or
stores them for the main process; payloads the previous version stored raw still work.

Real parts only: Bots on SQLite files in tmp_path, the inbox file beside them, the app over
HTTP, and the fake Telegram server for the Bot API.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from bot.app import Bot
from bot.inbox import (
    InboxReader,
    InboxWriter,
    erase_payloads,
    open_inbox,
    payload_addresses,
    payloads_of,
)
from bot.ingress import Action, decode, encode
from bot.models import Address, DeliveryReport, ErrorClass, InboundMessage, OutboxStatus
from tests.conftest import make_settings
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN
from tests.webserver import serving

SECRET = "s3cret-token_for-tests"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
PHONE = "+447400100101"


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        await asyncio.sleep(0.02)


def test_every_item_reads_back_as_it_was_stored() -> None:
    when = datetime(2026, 12, 6, 2, 30, 1, 123456, tzinfo=UTC)
    items = [
        InboundMessage(
            Address("whatsapp", PHONE), "héllo 😀", "SM1", received_at=when, extra={"num_media": 2}
        ),
        DeliveryReport("sms", "SM2", OutboxStatus.FAILED, "30006", ErrorClass.UNREACHABLE, at=when),
        DeliveryReport("sms", "SM3", OutboxStatus.DELIVERED, at=when),
        Action("telegram", "callback:7", {"address": "telegram:42", "toggle": "m:1"}),
    ]
    for item in items:
        source, _, payload = encode(item)
        assert decode(source, payload) == item
    # Keys: a repeat of the provider's id is stored once; two statuses of one SID are two.
    keys = [encode(item)[1] for item in items]
    assert keys[0] == "whatsapp:SM1" and len(set(keys)) == len(keys)
    # What panel erase and panel show look for: the sender, the action's chat.
    assert payload_addresses(*encode(items[0])[::2]) == {f"whatsapp:{PHONE}"}
    assert payload_addresses(*encode(items[3])[::2]) == {"telegram:42"}
    assert payload_addresses(*encode(items[1])[::2]) == set()


def _settings(tmp_path: Path, **channels: Any) -> Any:
    return make_settings(
        tmp_path,
        bot={"public_base_url": "http://panel.test"},
        channels={
            "twilio": {
                "enabled": True,
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from_number": "+447400100000",
                # Nothing is sent in these tests: the API is never called.
                "api_base_url": "http://127.0.0.1:9",
            },
            **channels,
        },
    )


async def _inbound_ids(bot: Bot) -> set[str]:
    rows = await bot.db.fetchall("SELECT provider_message_id FROM inbound_messages")
    return {r[0] for r in rows}


async def test_raw_payloads_left_by_the_previous_version_are_handled_at_the_next_start(
    tmp_path: Path,
) -> None:
    """An upgrade loses nothing: payloads a web process of the previous version stored as
    the provider's raw body are decoded and handled by the new main process."""
    async with FakeTelegram.running() as fake:
        settings = _settings(
            tmp_path,
            telegram={
                "enabled": True,
                "token": TOKEN,
                "secret_token": SECRET,
                "api_base_url": fake.base_url,
            },
        )
        main = await Bot.create(settings)
        try:
            inbox_db = await open_inbox(main.db.path, writer=True)
            writer = InboxWriter(inbox_db)
            update = fake.message_update(4242, "Hello")
            await writer.put(
                "twilio-message",
                "SMold1",
                urlencode(
                    {"MessageSid": "SMold1", "From": PHONE, "To": "+447400100000", "Body": "Hi"}
                ),
            )
            await writer.put(
                "twilio-status",
                "SMunknown:delivered:",
                urlencode({"MessageSid": "SMunknown", "MessageStatus": "delivered", "To": PHONE}),
            )
            await writer.put("telegram-update", str(update["update_id"]), json.dumps(update))
            await writer.put(
                "sim-message",
                "sim-old",
                json.dumps({"from": "sim:ann", "text": "hi", "id": "sim-old"}),
            )
            await writer.close()
            await inbox_db.close()
            # erase and show find the old formats too.
            assert [p["source"] for p in await payloads_of(main.db.path, [f"sms:{PHONE}"])] == [
                "twilio-message",
                "twilio-status",
            ]
            assert len(await payloads_of(main.db.path, ["telegram:4242"])) == 1
            await main.start()
            reader = await InboxReader.for_leftovers(main)
            assert reader is not None
            try:
                expected = {"SMold1", f"update:{update['update_id']}", "sim-old"}
                await wait_until(lambda: _has(main, expected))
                await wait_until(lambda: _inbox_empty(reader))
            finally:
                await reader.close()
            # Each was answered, as if it had come now.
            await fake.wait_for_sends(1, chat_id=4242)
        finally:
            await main.stop()


async def _has(bot: Bot, expected: set[str]) -> bool:
    return expected <= await _inbound_ids(bot)


async def _inbox_empty(reader: InboxReader) -> bool:
    row = await reader.db.fetchone("SELECT count(*) FROM inbox")
    return row is not None and row[0] == 0


async def test_a_web_process_stores_what_it_parsed_and_the_main_process_acts_on_it(
    tmp_path: Path,
) -> None:
    """Over HTTP into a web process: a Telegram message and a tap that ticks an option are
    stored parsed (no raw update), erasable by address; the main process hands the message
    to the engine and performs the tick through the Bot API."""
    async with FakeTelegram.running() as fake:
        settings = _settings(
            tmp_path,
            telegram={
                "enabled": True,
                "token": TOKEN,
                "secret_token": SECRET,
                "api_base_url": fake.base_url,
            },
        )
        main = await Bot.create(settings)
        web = await Bot.create(settings, migrate=False)
        inbox_db = await open_inbox(web.db.path, writer=True)
        writer = InboxWriter(inbox_db)
        await web.start_web(writer)
        message = fake.message_update(77, "Hello")
        keyboard = {
            "inline_keyboard": [
                [{"text": "1 Red", "callback_data": "m:1"}],
                [{"text": "Send", "callback_data": "m!"}],
            ]
        }
        tap = {
            "update_id": message["update_id"] + 1,
            "callback_query": {
                "id": "cbq-1",
                "from": {"id": 77, "is_bot": False, "first_name": "Pat"},
                "chat_instance": "ci-77",
                "data": "m:1",
                "message": {
                    "message_id": 5,
                    "date": int(time.time()),
                    "chat": {"id": 77, "type": "private", "first_name": "Pat"},
                    "text": "Which colours?",
                    "reply_markup": keyboard,
                },
            },
        }
        try:
            async with (
                serving(web, start_bot=False) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client,
            ):
                for update in (message, tap, message):  # the repeat is stored once
                    answer = await client.post(
                        "/webhooks/telegram", json=update, headers={HEADER: SECRET}
                    )
                    assert answer.status_code == 200, answer.text
            rows = await inbox_db.fetchall("SELECT source, key, payload FROM inbox ORDER BY id")
            assert [(r["source"], r["key"]) for r in rows] == [
                ("inbound", f"telegram:update:{message['update_id']}"),
                ("action", "telegram:callback:cbq-1"),
            ]
            assert all(
                payload_addresses(r["source"], r["payload"]) == {"telegram:77"} for r in rows
            )
            assert not fake.calls_to("editMessageReplyMarkup")  # nothing acted in the web process
            await main.start()
            reader = await InboxReader.open(main)
            try:
                await wait_until(lambda: _has(main, {f"update:{message['update_id']}"}))
                await fake.wait_for(lambda: bool(fake.calls_to("answerCallbackQuery")))
                edits = fake.calls_to("editMessageReplyMarkup")
                assert len(edits) == 1
                assert "\u2705 1 Red" in json.dumps(edits[0].params, ensure_ascii=False)
                await wait_until(lambda: _inbox_empty(reader))
            finally:
                await reader.close()
        finally:
            await writer.close()
            await inbox_db.close()
            await web.db.close()
            await main.stop()


async def test_erase_reaches_parsed_and_raw_payloads_alike(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    await (await Bot.create(settings)).db.close()
    web = await Bot.create(settings, migrate=False)
    inbox_db = await open_inbox(web.db.path, writer=True)
    writer = InboxWriter(inbox_db)
    await web.start_web(writer)
    try:
        assert await web.ingress.accept(InboundMessage(Address("sim", "ann"), "mine", "s1")) is None
        await web.ingress.accept(InboundMessage(Address("sim", "bob"), "his", "s2"))
        await writer.put(
            "sim-message", "s0", json.dumps({"from": "sim:ann", "text": "old", "id": "s0"})
        )
        assert await erase_payloads(web.db.path, ["sim:ann"]) == 2
        left = await inbox_db.fetchall("SELECT source, key FROM inbox")
        assert [(r["source"], r["key"]) for r in left] == [("inbound", "sim:s2")]
    finally:
        await writer.close()
        await inbox_db.close()
        await web.db.close()
