"""A fake Twilio REST API on 127.0.0.1, and webhook requests signed the way Twilio signs them.

The fake serves the two Messages endpoints panelbot uses, with Twilio's JSON shapes:

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` creates a message (basic auth
  checked) and answers 201 with a message resource whose status is ``queued``;
- ``GET /2010-04-01/Accounts/{AccountSid}/Messages.json`` lists messages, newest first,
  filtered by ``To``, ``From``, ``DateSent``, ``DateSent<`` and ``DateSent>``.

Every request is recorded. The next calls can be scripted to fail the way Twilio fails
(an error JSON with a code, a 429 with Retry-After, a 500) or to answer slowly. The
message list can be switched to fail (500) or to hang until switched back, for as long as
a test wants: ``fake.list_mode = "fail"``, or from another process
``POST /_fake/list-mode`` with ``mode=ok|fail|hang`` (``python -m tests.fakes`` prints
the fake's URL).

Message SIDs carry a random part, so two runs of the fake never hand out the same SID.

It runs in the test's own event loop (aiohttp.web), so a test needs no threads.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from aiohttp import BasicAuth, web
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"
API_VERSION = "2010-04-01"

# What Twilio says for the codes tests use (messages as Twilio words them).
ERROR_MESSAGES = {
    20003: "Authenticate",
    20429: "Too Many Requests",
    21211: "The 'To' number {to} is not a valid phone number.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    30007: "Message filtered",
}


@dataclass
class RecordedRequest:
    """One call the fake received."""

    method: str
    path: str
    form: dict[str, str]
    query: dict[str, str]
    auth: tuple[str, str] | None
    at: datetime
    monotonic: float


@dataclass
class Script:
    """How the fake answers one coming call instead of succeeding at once."""

    status: int = 500
    code: int | None = None
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Create the message anyway, then answer as scripted (Twilio took it but the answer
    # was slow or lost): what makes a blind retry send twice.
    create: bool = False
    method: str = "POST"


def _rfc2822(dt: datetime) -> str:
    return format_datetime(dt.astimezone(UTC), usegmt=False).replace("-0000", "+0000")


def _parse_date_filter(text: str) -> datetime:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(text)


class FakeTwilio:
    """The fake API. Use ``async with FakeTwilio().running() as fake:``."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[RecordedRequest] = []
        self.messages: list[dict[str, Any]] = []  # resources, oldest first
        self._scripts: list[Script] = []
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._seen = asyncio.Event()  # set whenever a request is recorded
        self._list_mode = "ok"
        self._list_changed: asyncio.Event | None = None

    # --- the message list's health -------------------------------------------------------

    LIST_MODES = ("ok", "fail", "hang")

    @property
    def list_mode(self) -> str:
        """``ok``; ``fail``: every list call answers 500; ``hang``: list calls wait, without
        answering, until the mode changes (then answer as the new mode says)."""
        return self._list_mode

    @list_mode.setter
    def list_mode(self, mode: str) -> None:
        if mode not in self.LIST_MODES:
            raise ValueError(f"list_mode must be one of {self.LIST_MODES}, not {mode!r}")
        self._list_mode = mode
        if self._list_changed is not None:
            self._list_changed.set()
            self._list_changed = None

    # --- running -----------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeTwilio]:
        app = web.Application()
        base = f"/{API_VERSION}/Accounts/{{account}}/Messages.json"
        app.router.add_post(base, self._create)
        app.router.add_get(base, self._list)
        app.router.add_post("/_fake/list-mode", self._set_list_mode)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            self.list_mode = "ok"  # let hanging list calls finish before the server stops
            await self._runner.cleanup()

    # --- scripting -----------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        code: int | None = None,
        *,
        times: int = 1,
        message: str | None = None,
        retry_after: float | None = None,
        method: str = "POST",
    ) -> None:
        """Answer the next ``times`` calls (of ``method``) with a Twilio error."""
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        for _ in range(times):
            self._scripts.append(Script(status, code, message, headers, method=method))

    def slow_next(self, seconds: float, *, times: int = 1, create: bool = True) -> None:
        """Wait ``seconds`` before answering the next POSTs (creating the message first)."""
        for _ in range(times):
            self._scripts.append(Script(status=201, delay=seconds, create=create))

    def add_message(
        self,
        *,
        to: str,
        from_: str,
        body: str,
        status: str = "sent",
        created: datetime | None = None,
    ) -> dict[str, Any]:
        """Put a message in the account as if an earlier (crashed) run had sent it."""
        return self._store({"To": to, "From": from_, "Body": body}, status=status, created=created)

    # --- what was seen -------------------------------------------------------------------

    def posts(self) -> list[RecordedRequest]:
        """Create calls that carried valid credentials, oldest first."""
        return [r for r in self.requests if r.method == "POST"]

    def gets(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "GET"]

    def sent_to(self, to: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["to"] == to]

    async def wait_for_posts(self, count: int, timeout: float = 2.5) -> list[RecordedRequest]:
        """Wait until at least ``count`` create calls arrived; fail the test after ``timeout``."""
        async with asyncio.timeout(timeout):
            while len(self.posts()) < count:
                self._seen.clear()
                await self._seen.wait()
        return self.posts()

    # --- handlers ------------------------------------------------------------------------

    def _error(
        self,
        status: int,
        code: int | None,
        message: str | None = None,
        headers: Mapping[str, str] | None = None,
        **fmt: str,
    ) -> web.Response:
        code = code or status
        text = message or ERROR_MESSAGES.get(code, "Error").replace("{to}", fmt.get("to", ""))
        body = {
            "code": code,
            "message": text,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return web.json_response(body, status=status, headers=dict(headers or {}))

    async def _record(self, request: web.Request) -> tuple[RecordedRequest, web.Response | None]:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        auth = None
        if "Authorization" in request.headers:
            try:
                decoded = BasicAuth.decode(request.headers["Authorization"])
                auth = (decoded.login, decoded.password)
            except ValueError:
                auth = None
        recorded = RecordedRequest(
            request.method,
            request.path,
            form,
            dict(request.query),
            auth,
            datetime.now(UTC),
            time.monotonic(),
        )
        self.requests.append(recorded)
        self._seen.set()
        if auth != (self.account_sid, self.auth_token):
            return recorded, self._error(401, 20003)
        if request.match_info["account"] != self.account_sid:
            return recorded, self._error(404, 20404, "The requested resource was not found")
        return recorded, None

    def _next_script(self, method: str) -> Script | None:
        for i, script in enumerate(self._scripts):
            if script.method == method:
                return self._scripts.pop(i)
        return None

    async def _create(self, request: web.Request) -> web.Response:
        recorded, refused = await self._record(request)
        if refused is not None:
            return refused
        form = recorded.form
        script = self._next_script("POST")
        if script is not None and not script.create:
            await asyncio.sleep(script.delay)
            return self._error(
                script.status, script.code, script.message, script.headers, to=form.get("To", "")
            )
        if "To" not in form:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not form.get("Body") and not form.get("ContentSid"):
            return self._error(400, 21602, "Message body is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return self._error(400, 21603, "A 'From' or 'MessagingServiceSid' is required.")
        resource = self._store(form, status="queued")
        answer = dict(resource)  # the create answer says "queued"...
        self._mark_sent(resource["sid"])  # ...and Twilio hands it on at once
        if script is not None:
            await asyncio.sleep(script.delay)
            if script.status >= 400:
                return self._error(script.status, script.code, script.message, script.headers)
        return web.json_response(answer, status=201)

    def _store(
        self, form: Mapping[str, str], *, status: str, created: datetime | None = None
    ) -> dict[str, Any]:
        now = created or datetime.now(UTC)
        sid = f"SM{next(self._ids):08d}{secrets.token_hex(12)}"
        body = form.get("Body") or ""
        if not body and form.get("ContentSid"):
            body = f"[template {form['ContentSid']}]"  # Twilio renders the template here
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        resource = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": _rfc2822(now),
            "date_sent": _rfc2822(now) if status in ("sent", "delivered") else None,
            "date_updated": _rfc2822(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "GBP",
            "sid": sid,
            "status": status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form["To"],
            "uri": f"{uri}.json",
        }
        self.messages.append(resource)
        return resource

    async def _set_list_mode(self, request: web.Request) -> web.Response:
        """``POST /_fake/list-mode`` with ``mode=ok|fail|hang`` (a test in another process)."""
        mode = (await request.post()).get("mode")
        if not isinstance(mode, str) or mode not in self.LIST_MODES:
            return web.json_response(
                {"error": f"mode must be one of {self.LIST_MODES}"}, status=400
            )
        self.list_mode = mode
        return web.json_response({"list_mode": mode})

    def _mark_sent(self, sid: str) -> None:
        for resource in self.messages:
            if resource["sid"] == sid:
                resource["status"] = "sent"
                resource["date_sent"] = resource["date_created"]

    async def _list(self, request: web.Request) -> web.Response:
        recorded, refused = await self._record(request)
        if refused is not None:
            return refused
        script = self._next_script("GET")
        if script is not None:
            await asyncio.sleep(script.delay)
            return self._error(script.status, script.code, script.message, script.headers)
        while self._list_mode == "hang":
            if self._list_changed is None:
                self._list_changed = asyncio.Event()
            await self._list_changed.wait()
        if self._list_mode == "fail":
            return self._error(500, 20500, "Internal Server Error")
        query = recorded.query
        try:
            after = _parse_date_filter(query["DateSent>"]) if "DateSent>" in query else None
            before = _parse_date_filter(query["DateSent<"]) if "DateSent<" in query else None
            on = _parse_date_filter(query["DateSent"]).date() if "DateSent" in query else None
            page_size = int(query.get("PageSize", "50"))
        except ValueError:
            return self._error(400, 20001, "Invalid filter")
        found = []
        for resource in reversed(self.messages):  # newest first, as Twilio lists them
            if "To" in query and resource["to"] != query["To"]:
                continue
            if "From" in query and resource["from"] != query["From"]:
                continue
            if after or before or on:
                if resource["date_sent"] is None:
                    continue  # a message not sent yet has no DateSent to filter on
                sent = datetime.strptime(resource["date_sent"], "%a, %d %b %Y %H:%M:%S %z")
                if (
                    (after and sent < after)
                    or (before and sent > before)
                    or (on and sent.date() != on)
                ):
                    continue
            found.append(resource)
        page = found[:page_size]
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"
        return web.json_response(
            {
                "messages": page,
                "end": max(len(page) - 1, 0),
                "first_page_uri": f"{uri}?{urlencode({**query, 'Page': 0})}",
                "next_page_uri": None,
                "page": 0,
                "page_size": page_size,
                "previous_page_uri": None,
                "start": 0,
                "uri": f"{uri}?{urlencode(query)}",
            }
        )


# --- webhooks signed like Twilio's ---------------------------------------------------------


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send for a POST of ``params`` to ``url``."""
    return RequestValidator(auth_token).compute_signature(url, dict(params))


def inbound_params(
    sid: str, from_: str, body: str, *, to: str = "+447400100000", **extra: str
) -> dict[str, str]:
    """The form Twilio posts for an inbound SMS (``from_`` "whatsapp:+44..." for WhatsApp)."""
    params = {
        "ToCountry": "GB",
        "ToState": "",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "GB",
        "To": f"whatsapp:{to}" if from_.startswith("whatsapp:") else to,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    params.update(extra)
    return params


def status_params(
    sid: str, status: str, *, to: str, error_code: int | None = None, from_: str = "+447400100000"
) -> dict[str, str]:
    """The form of a status callback for message ``sid``."""
    params = {
        "SmsSid": sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": to,
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": f"whatsapp:{from_}" if to.startswith("whatsapp:") else from_,
        "ApiVersion": API_VERSION,
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params


async def post_signed(
    client: httpx.AsyncClient,
    path: str,
    params: Mapping[str, str],
    *,
    public_base_url: str,
    auth_token: str = AUTH_TOKEN,
    signed_url: str | None = None,
    signature: str | None = None,
    sign_params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST ``params`` form-encoded to ``path`` on the client's server, signed like Twilio.

    Twilio signs the public URL it calls (``public_base_url + path``), not the address the
    bot listens on. ``signed_url``, ``sign_params``, ``auth_token`` or ``signature`` override
    what is signed, to test refusals.
    """
    url = signed_url if signed_url is not None else public_base_url + path
    header = (
        signature
        if signature is not None
        else sign(auth_token, url, sign_params if sign_params is not None else params)
    )
    return await client.post(
        path,
        content=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": header,
        },
    )
