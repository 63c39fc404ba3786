"""Nothing a client sends causes a 500: random bodies at every route of the real app.

Hypothesis throws arbitrary bytes, JSON and forms (with and without valid signatures and
secrets) at each POST route of a bot with every channel on, served over HTTP, and checks
that the answer is never a server error and that what was already stored survives.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import Bot
from tests.conftest import make_settings
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, sign
from tests.webserver import serving

SECRET = "telegram-secret"
PUBLIC = "https://panel.example.org"

ROUTES = [
    "/simulator/api/messages",
    "/simulator/api/identities",
    "/webhooks/twilio/messages",
    "/webhooks/twilio/status",
    "/webhooks/telegram",
]

text = st.text(max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=500).map(lambda b: ("application/octet-stream", b)),
    json_values.map(lambda v: ("application/json", json.dumps(v).encode())),
    st.dictionaries(
        st.sampled_from(
            [
                "from",
                "text",
                "From",
                "Body",
                "MessageSid",
                "MessageStatus",
                "ErrorCode",
                "panellist_id",
                "update_id",
                "message",
            ]
        )
        | text,
        json_values,
        max_size=6,
    ).map(lambda d: ("application/json", json.dumps(d).encode())),
    st.dictionaries(
        st.sampled_from(["From", "Body", "MessageSid", "MessageStatus", "ErrorCode", "To"]) | text,
        text,
        max_size=6,
    ).map(lambda d: ("application/x-www-form-urlencoded", str(httpx.QueryParams(d)).encode())),
)


@pytest.fixture
async def base_url(tmp_path: Path) -> AsyncIterator[str]:
    async with FakeTwilio().running() as twilio, FakeTelegram.running() as telegram:
        settings = make_settings(
            tmp_path,
            bot={"public_base_url": PUBLIC},
            channels={
                "twilio": {
                    "enabled": True,
                    "account_sid": ACCOUNT_SID,
                    "auth_token": AUTH_TOKEN,
                    "from_number": "+447400100000",
                    "api_base_url": twilio.url,
                },
                "telegram": {
                    "enabled": True,
                    "token": TOKEN,
                    "secret_token": SECRET,
                    "api_base_url": telegram.base_url,
                },
                # allow_panellists is for a demo only, and a demo has no real channels.
                "simulator": {"enabled": True},
            },
        )
        bot = await Bot.create(settings)
        try:
            async with serving(bot) as url:
                yield url
        finally:
            await bot.stop()


async def test_random_bodies_never_cause_a_server_error(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        # Something stored first, which no bad request may lose.
        first = await client.post(
            "/simulator/api/messages", json={"from": "sim:keep", "text": "hi"}
        )
        assert first.status_code == 200

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(route=st.sampled_from(ROUTES), body=bodies, signed=st.booleans())
        def check(route: str, body: tuple[str, bytes], signed: bool) -> None:
            # Hypothesis runs synchronously: collect the requests, send them afterwards.
            content_type, payload = body
            headers = {"content-type": content_type}
            if signed and route.startswith("/webhooks/twilio"):
                form = dict(httpx.QueryParams(payload.decode("latin-1")))
                headers["X-Twilio-Signature"] = sign(AUTH_TOKEN, PUBLIC + route, form)
            if signed and route == "/webhooks/telegram":
                headers["X-Telegram-Bot-Api-Secret-Token"] = SECRET
            requests.append((route, payload, headers))

        requests: list[tuple[str, bytes, dict[str, str]]] = []
        check()
        for route, payload, headers in requests:
            response = await client.post(route, content=payload, headers=headers)
            assert response.status_code < 500, (route, payload[:200], response.text)
        assert len(requests) >= 30
        for route, payload, _ in requests[:30]:  # the same junk as query strings
            response = await client.get(
                "/simulator/api/messages", params={"address": payload.decode("latin-1")[:100]}
            )
            # 404: a well-formed address that is not this client's person.
            assert response.status_code in (200, 400, 404), (route, response.text)
        history = await client.get("/simulator/api/messages", params={"address": "sim:keep"})
        assert history.json()["messages"][0]["text"] == "hi"
