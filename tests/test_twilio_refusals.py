"""Twilio webhooks refused with 503 because storage fails: logged without flooding.

A web process's parts on real SQLite files (the panel's database and the inbox beside it,
as ``bot.web.workers.run_web_child`` assembles them) behind the real Starlette app under
uvicorn, signed webhooks over HTTP. The inbox's file is made full with ``PRAGMA
max_page_count`` on the connection that stores webhooks, so SQLite itself answers
SQLITE_FULL, as on a full disk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from bot.app import Bot
from bot.inbox import InboxWriter, open_inbox
from tests.conftest import make_settings
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FakeTwilio,
    inbound_params,
    post_signed,
)
from tests.test_inbox import fill_up, make_room
from tests.webserver import serving

BOT_NUMBER = "+447400100000"
MESSAGES = "/webhooks/twilio/messages"
PUBLIC = "http://panel.test"


async def test_webhooks_refused_while_the_inbox_is_full_log_one_line_then_one_when_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refused webhook used to log a traceback; now: one line when refusals start
    (SQLITE_FULL, no traceback), none for the next ones within REFUSALS_LOG_EVERY, one
    with the count once webhooks are stored again, and never a phone number."""
    async with FakeTwilio().running() as twilio:
        settings = make_settings(
            tmp_path,
            bot={"public_base_url": PUBLIC},
            channels={
                "twilio": {
                    "enabled": True,
                    "account_sid": ACCOUNT_SID,
                    "auth_token": AUTH_TOKEN,
                    "from_number": BOT_NUMBER,
                    "api_base_url": twilio.url,
                },
            },
        )
        await (await Bot.create(settings)).db.close()  # the schema, as the main process
        web = await Bot.create(settings, migrate=False)
        inbox_db = await open_inbox(web.db.path, writer=True)
        writer = InboxWriter(inbox_db)
        senders = [f"+4474009{i:05d}" for i in range(20)]
        try:
            await web.start_web(writer)
            async with (
                serving(web, start_bot=False) as url,
                httpx.AsyncClient(base_url=url, timeout=30) as client,
            ):

                async def hello(n: int, number: str) -> httpx.Response:
                    params = inbound_params(f"SM{n:032x}", number, "Hello", to=BOT_NUMBER)
                    return await post_signed(client, MESSAGES, params, public_base_url=PUBLIC)

                # Full for the connection that stores webhooks (the writer's own).
                await fill_up(inbox_db)
                pages = (await inbox_db.fetchone("PRAGMA page_count"))[0]
                writer._conn.execute(f"PRAGMA max_page_count = {pages}")
                # Bodies too large for what is left free in a page.
                padding = "x" * 3000
                with caplog.at_level(logging.INFO):
                    refused = []
                    for i, number in enumerate(senders):
                        params = inbound_params(
                            f"SM{i:032x}", number, "Hello " + padding, to=BOT_NUMBER
                        )
                        refused.append(
                            await post_signed(client, MESSAGES, params, public_base_url=PUBLIC)
                        )
                    # The first may still fit in a page's free bytes (as on a real disk).
                    codes = [r.status_code for r in refused]
                    failures = codes.count(503)
                    assert set(codes) <= {200, 503} and failures >= len(senders) - 3, codes
                    writer._conn.execute("PRAGMA max_page_count = 1073741823")
                    await make_room(inbox_db)
                    assert (await hello(999, "+447400999999")).status_code == 200
        finally:
            await writer.close()
            await inbox_db.close()
            await web.db.close()
    lines = [r for r in caplog.records if r.name == "bot.channels.twilio"]
    refusals = [r for r in lines if "could not be stored" in r.getMessage()]
    assert len(refusals) == 2, [r.getMessage() for r in refusals]
    assert "SQLITE_FULL" in refusals[0].getMessage()
    assert "resolved" in refusals[1].getMessage()
    assert f"({failures} failures)" in refusals[1].getMessage()
    assert all(r.exc_info is None for r in refusals)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not [n for n in [*senders, "+447400999999"] if n in logged or n[1:] in logged]
