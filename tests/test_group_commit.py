"""Inbound messages arriving together are written in one transaction, each still its own."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.app import Bot
from bot.models import Address, InboundMessage
from tests.conftest import Chat


def message(who: str, text: str, sid: str) -> InboundMessage:
    return InboundMessage(Address("sim", who), text, sid)


async def test_concurrent_messages_each_get_their_own_replies(bot: Bot) -> None:
    results = await asyncio.gather(
        *(bot.handle(message(f"p{i}", "hello", f"sid-{i}")) for i in range(40))
    )
    rows = await bot.db.fetchall("SELECT id, address FROM outbox ORDER BY id")
    by_id = {r["id"]: r["address"] for r in rows}
    assert len(rows) == 40
    for i, result in enumerate(results):
        assert not result.duplicate
        assert [by_id[row_id] for row_id in result.outbox_ids] == [f"p{i}"]
    # They went in far fewer transactions than messages (one per batch).
    assert bot.engine.batches < 40


async def test_messages_from_one_address_are_handled_in_order(bot: Bot) -> None:
    chat = Chat(bot)
    await chat.say("sim:ann", "hi")
    # Consent then the first field answer, sent at once: the second must see the first.
    first, second = await asyncio.gather(
        bot.handle(message("ann", "yes", "a-1")), bot.handle(message("ann", "2", "a-2"))
    )
    texts = await bot.db.fetchall("SELECT text FROM outbox ORDER BY id")
    assert "Which age group" in texts[1]["text"]
    assert "What is your sex?" in texts[2]["text"]
    row = await bot.db.fetchone("SELECT demographics FROM panellists")
    assert json.loads(row["demographics"]) == {"age_band": "25-34"}
    assert first.outbox_ids and second.outbox_ids


async def test_a_repeat_in_the_same_burst_is_a_duplicate(bot: Bot) -> None:
    results = await asyncio.gather(*(bot.handle(message("bob", "hi", "same")) for _ in range(5)))
    assert sorted(r.duplicate for r in results) == [False, True, True, True, True]
    assert (await bot.db.fetchone("SELECT COUNT(*) FROM inbound_messages"))[0] == 1


async def test_one_failing_message_loses_no_other(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = bot.engine._route

    async def fragile(turn):
        if turn.text == "boom":
            raise RuntimeError("a bug while handling this one message")
        await route(turn)

    monkeypatch.setattr(bot.engine, "_route", fragile)
    outcomes = await asyncio.gather(
        *(bot.handle(message(f"q{i}", "boom" if i == 3 else "hello", f"q-{i}")) for i in range(8)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, Exception)]
    assert [str(e) for e in failed] == ["a bug while handling this one message"]
    assert isinstance(outcomes[3], RuntimeError)
    stored = await bot.db.fetchall("SELECT provider_message_id FROM inbound_messages")
    # The failed message left nothing behind, so the provider's retry will be handled.
    assert sorted(r[0] for r in stored) == sorted(f"q-{i}" for i in range(8) if i != 3)
    assert (await bot.db.fetchone("SELECT COUNT(*) FROM outbox"))[0] == 7
