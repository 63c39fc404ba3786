"""What keeps one client from exhausting the web server: body and header caps, timeouts,
connection limits, security headers on every response, and refusals that are logged.

- ``Guard``, an ASGI middleware in front of every route: a request whose Content-Length is
  over the route's cap gets 413 before a byte of its body is read, a streamed (chunked)
  body is counted as it is read and cut at the cap, the app is called only once the whole
  body has come (a client gone or closed mid-body never reaches it), and every response
  gets the security headers (``nosniff``, no framing, no referrer, a
  Content-Security-Policy, ``no-store``).
- ``GuardedProtocol``, uvicorn's httptools protocol with what it lacks: a cap on the size
  of a request's head (431); deadlines for a connection to send a complete request head,
  for a request body to make progress, and for the whole request (head and body), and a
  minimum rate for a body once its grace period is over (an idle, stalled or trickling
  connection is closed), and for a client to take some of its answer (one that stops
  reading is cut); and when the connection limit is reached, a connection is closed
  to make room: one that is idle or has been sending its request for a while, the
  slowest first. Only when every connection has a request in hand (or began one less
  than ``SLOW_AFTER`` ago) are requests refused with 503.
- ``server_config``: uvicorn's settings (the protocol, ``limit_concurrency`` under the open
  file limit, ``timeout_keep_alive``), after raising the soft open file limit to the hard
  one. Refusals are logged, at most one line per kind every few seconds.

docs/SECURITY.md has the figures and the reverse proxy settings that belong in front.
"""

from __future__ import annotations

import asyncio
import html
import logging
import resource
import time
from typing import Any, ClassVar

import uvicorn
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bot.privacy import loggable_path

logger = logging.getLogger(__name__)

# --- figures ---------------------------------------------------------------------------------

# Request bodies: a Twilio webhook is a few KB; a Telegram update is too, but one quoting
# a long message with many entities can be tens of KB, and refusing a real one makes
# Telegram repeat it and hold back the chat's later updates; the simulator's JSON holds
# one message. The first matching prefix sets the cap.
MAX_BODY_BYTES = 64 * 1024
BODY_CAPS: tuple[tuple[str, int], ...] = (
    ("/webhooks/telegram", 256 * 1024),
    ("/webhooks/", 64 * 1024),
    ("/simulator/", 32 * 1024),
)
# A request's line and headers together (nginx's default allows 4 x 8 KB header lines).
MAX_HEAD_BYTES = 32 * 1024
# A connection must send a complete request head within this many seconds of opening (or
# of its first byte of a later request); one that sends nothing is closed.
HEAD_TIMEOUT = 10.0
# A request whose body makes no progress for this many seconds has its connection closed.
BODY_TIMEOUT = 10.0
# A request (head and body) not complete this many seconds after its first byte (or after
# the connection opened) has its connection closed, however steadily its bytes come.
REQUEST_TIMEOUT = 30.0
# A body still incomplete BODY_GRACE seconds after its head must have come at no less than
# MIN_BODY_RATE bytes a second on average (from the end of the head), or its connection is
# closed: a trickle of a byte every few seconds makes progress but only holds a connection.
# Real bodies (a few KB from Twilio, tens of KB at most from Telegram) come within the grace.
BODY_GRACE = 5.0
MIN_BODY_RATE = 1024.0
# An answer the client takes none of for this many seconds (its write buffer stays full: a
# client that stops reading) has its connection cut, so the request's task is not held.
SEND_TIMEOUT = 10.0
# At the connection limit, a connection sending its request for at least this many seconds
# may be closed to make room (the slowest first); a younger one counts as busy.
SLOW_AFTER = 1.0
# An idle keep-alive connection between two requests is closed after this many seconds.
KEEP_ALIVE_TIMEOUT = 5
# Connections (and requests in flight) per process; fewer when the open file limit is low.
MAX_CONNECTIONS = 1000
# File descriptors kept for everything else: the database and inbox files, pipes, the
# clients of Twilio and Telegram, logs.
FD_RESERVE = 64
# At most one log line per kind of refusal in this many seconds (with a count of the rest).
LOG_EVERY = 10.0


# --- rate-limited log lines ------------------------------------------------------------------


class RefusalLog:
    """Log a kind of refusal at most once every ``every`` seconds, counting the others."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, kind: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        if skipped:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, skipped, now - last if last is not None else self.every)
        logger.log(level, message, *args)


refused = RefusalLog()


class _UvicornRefusals(logging.Filter):
    """uvicorn logs each 503 over its concurrency limit and each unparsable request as a
    line of its own: under a flood, thousands a second. Say it through ``refused``."""

    MESSAGES: ClassVar[dict[str, tuple[str, str]]] = {
        "Exceeded concurrency limit.": (
            "limit",
            "refused a request with 503: the server is at its limit of %d connections or "
            "requests in flight",
        ),
        "Invalid HTTP request received.": ("invalid", "refused an unparsable HTTP request (400)"),
    }

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        known = self.MESSAGES.get(record.msg) if isinstance(record.msg, str) else None
        if known is None:
            return True
        kind, message = known
        if kind == "limit":
            refused(kind, message, self.limit)
        else:
            refused(kind, message)
        return False


# --- the ASGI middleware ---------------------------------------------------------------------


def body_cap(path: str) -> int:
    for prefix, cap in BODY_CAPS:
        if path.startswith(prefix):
            return cap
    return MAX_BODY_BYTES


class BodyTooLarge(Exception):
    """A streamed body passed its cap while the app read it."""


# The page's own CSP (the simulator sets a stricter one for itself) wins over these.
_HTML_CSP = (
    b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    b"form-action 'self'; frame-ancestors 'none'"
)
_OTHER_CSP = b"default-src 'none'; frame-ancestors 'none'"
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
# Static files of the simulator page may be cached (they carry an ETag); nothing else is:
# JSON answers hold conversations and panellists' answers.
_STATIC_PREFIXES = ("/simulator/static/",)


def _response(status: int, text: str, *, close: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    body = ('{"error": "' + text + '"}').encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


def _too_large(path: str, cap: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The 413 answer: JSON for the APIs and webhooks, a page for a person's browser (a
    review link's trial, whose page is a form), with the way back to the link."""
    if not path.startswith("/review/"):
        return _response(413, f"the body is over {cap} bytes", close=True)
    link = html.escape(path.removesuffix("/try").removesuffix("/comments"), quote=True)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>Too long</title></head><body><main><h1>That was too long to send</h1>"
        "<p>The conversation or the text you sent is over what this page accepts. "
        f'<a href="{link}">Open the review link again</a> to start a new trial; '
        "comments you already sent are kept.</p></main></body></html>"
    ).encode()
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return (
        {"type": "http.response.start", "status": 413, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class Guard:
    """ASGI middleware: body caps before reading, and security headers on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cap = body_cap(path)
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
                break
        headers_send = _with_headers(send, path)
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                start, body = _response(400, "invalid Content-Length", close=True)
                await headers_send(start)
                await headers_send(body)
                return
            if declared > cap:
                refused(
                    "body",
                    "refused a %d-byte body on %r with 413 (the cap is %d)",
                    declared,
                    loggable_path(path),
                    cap,
                )
                start, body = _too_large(path, cap)
                await headers_send(start)
                await headers_send(body)
                return
        # The whole body is read (at most the cap) before the app is called: a client that
        # goes away or is closed for being slow never reaches the app (nothing to answer, and
        # no line logged per connection), and a route's handler never waits on a client.
        # httptools holds a body to its Content-Length; a chunked one is counted here.
        try:
            content = await _read_body(receive, cap)
        except BodyTooLarge:
            refused(
                "body", "cut a streamed body on %r at %d bytes with 413", loggable_path(path), cap
            )
            start, answer = _too_large(path, cap)
            await headers_send(start)
            await headers_send(answer)
            return
        if content is None:
            return  # gone mid-body (or closed for being slow): nobody to answer
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": content, "more_body": False}
            return await receive()  # http.disconnect, when it comes

        try:
            await self.app(scope, replay, headers_send)
        except ClientDisconnect:
            pass  # gone before the answer: nobody to answer


async def _read_body(receive: Any, cap: int) -> bytes | None:
    """The request's body, or None if the client went (or was closed) before its end."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > cap:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _with_headers(send: Any, path: str) -> Any:
    static = path.startswith(_STATIC_PREFIXES)

    async def send_with_headers(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            names = {name.lower() for name, _ in headers}
            html = False
            for name, value in headers:
                if name.lower() == b"content-type":
                    html = value.lower().startswith(b"text/html")
            headers.extend(h for h in _ALWAYS if h[0] not in names)
            if b"content-security-policy" not in names:
                headers.append((b"content-security-policy", _HTML_CSP if html else _OTHER_CSP))
            if b"cache-control" not in names:
                headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return send_with_headers


# --- the HTTP protocol -----------------------------------------------------------------------


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request head, deadlines to send the
    head, the body and the whole request, a minimum body rate, and idle or slow connections
    closed to make room when the connection limit is reached."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._heads = 0
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._body_at = 0.0  # the last byte of the body
        self._body_started = 0.0  # the end of the head
        self._body_bytes = 0
        self._request_at = 0.0  # the first byte of the request in hand (or the opening)
        self._request_bytes = 0  # bytes of it received so far, head and body
        self._idle_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_since = self._request_at = time.monotonic()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) >= limit:
            self._make_room(limit)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        self._cancel_write_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(SEND_TIMEOUT, self._write_timed_out)

    def resume_writing(self) -> None:
        self._cancel_write_timer()
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        heads = self._heads
        if self._in_head and self._request_bytes == 0 and self._heads:
            self._request_at = time.monotonic()  # a later request on a kept-alive connection
        self._request_bytes += len(data)
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)
        super().data_received(data)
        # A head still incomplete after this read: checked after the parser has seen the
        # data, so that a body arriving in the same read is not counted (httptools holds at
        # most one read more than the cap).
        if (
            self._in_head
            and self._heads == heads
            and self._head_bytes > MAX_HEAD_BYTES
            and not self.transport.is_closing()
        ):
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._cancel_head_timer()
        # A head that arrived in one read is measured here, from what the parser found.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEAD_BYTES:
            self._refuse_head()
            return
        super().on_headers_complete()
        # Until the body is complete (at once for a request without one).
        self._body_at = self._body_started = time.monotonic()
        self._body_bytes = 0
        self._arm_body_timer(self._body_at)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            self._body_at = time.monotonic()
            self._body_bytes += len(body)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._cancel_body_timer()
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._request_bytes = 0
        self._request_at = time.monotonic()

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:
            super().send_400_response(msg)

    # --- helpers

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        refused(
            "send",
            "cut a connection that took none of its answer for %g s",
            SEND_TIMEOUT,
        )
        self.transport.abort()  # close() would wait to send what is buffered: for ever

    def _arm_body_timer(self, now: float) -> None:
        """Wake up when the body, if no more of it comes, would break one of its limits."""
        due = min(self._body_at + BODY_TIMEOUT, self._request_at + REQUEST_TIMEOUT)
        if MIN_BODY_RATE > 0:
            too_slow = self._body_started + max(BODY_GRACE, self._body_bytes / MIN_BODY_RATE)
            due = min(due, too_slow)
        self._body_timer = self.loop.call_later(max(due - now, 0.001), self._body_timed_out)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._in_head or self.transport.is_closing():
            return
        now = time.monotonic()
        if self.flow.read_paused:
            # The app has not read what came (or a pipelined request waits its turn): the
            # client cannot send more, which is not its delay. Count from when reading resumes.
            self._body_at = now
            self._body_started = now - self._body_bytes / MIN_BODY_RATE if MIN_BODY_RATE else now
            self._request_at = max(self._request_at, now + BODY_TIMEOUT - REQUEST_TIMEOUT)
            self._body_timer = self.loop.call_later(BODY_TIMEOUT, self._body_timed_out)
            return
        since_body = now - self._body_started
        if now - self._body_at >= BODY_TIMEOUT:
            refused(
                "stalled",
                "closed a connection whose request body stalled for %g s",
                BODY_TIMEOUT,
            )
        elif now - self._request_at >= REQUEST_TIMEOUT:
            refused(
                "deadline",
                "closed a connection that took over %g s to send its request",
                REQUEST_TIMEOUT,
            )
        elif (
            MIN_BODY_RATE > 0
            and since_body >= BODY_GRACE
            and self._body_bytes < MIN_BODY_RATE * since_body
        ):
            refused(
                "slow",
                "closed a connection sending its request body at %.0f bytes a second after "
                "%.0f s (the minimum is %g after %g s)",
                self._body_bytes / max(since_body, 0.001),
                since_body,
                MIN_BODY_RATE,
                BODY_GRACE,
            )
        else:  # within its limits (the timer may wake a little early): until the next one
            self._arm_body_timer(now)
            return
        self.transport.close()

    def _idle(self) -> bool:
        """No request in hand: waiting for (the rest of) a request head."""
        return (
            self._in_head
            and (self.cycle is None or self.cycle.response_complete)
            and not self.pipeline
        )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if not self._idle():  # a response still in hand: it may finish first
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)
            return
        refused(
            "idle",
            "closed a connection that sent no complete request in %g s",
            HEAD_TIMEOUT,
            level=logging.INFO,
        )
        self.transport.close()

    def _refuse_head(self) -> None:
        refused("head", "refused a request head over %d bytes with 431", MAX_HEAD_BYTES)
        self._cancel_head_timer()
        body = b'{"error": "the request head is too large"}'
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
        self._refused = True  # whatever else arrives before the close is ignored

    def _pace(self, now: float) -> tuple[bool, float, float] | None:
        """How this connection ranks to be closed to make room (lowest first): whether it is
        young, the bytes a second of the request it is sending (0 for none), and since when.
        None for one that may not be closed: its request is in the app's hands, or it began
        sending its body less than SLOW_AFTER seconds ago."""
        if self.transport.is_closing():
            return (False, -1.0, 0.0)  # going anyway: closing it frees its place at once
        if self._idle():
            start = self._request_at if self._request_bytes else self._idle_since
        elif not self._in_head and not self._refused:  # still receiving the body
            start = self._request_at
            if now - self._body_started < SLOW_AFTER:
                return None
        else:
            return None
        age = now - start
        return (age < SLOW_AFTER, self._request_bytes / max(age, 0.001), start)

    def _make_room(self, limit: int) -> None:
        """At the connection limit: close the idle or slow connection that ranks lowest:
        connections idle or sending a request for at least SLOW_AFTER seconds before
        younger idle ones, and among them the slowest, then the oldest."""
        now = time.monotonic()
        best: tuple[tuple[bool, float, float], GuardedProtocol] | None = None
        for c in self.connections:
            if c is self or not isinstance(c, GuardedProtocol):
                continue
            pace = c._pace(now)
            if pace is not None and (best is None or pace < best[0]):
                best = (pace, c)
        if best is None:
            refused(
                "full",
                "all %d connections are busy: new requests get 503 until one is free",
                limit,
            )
            return
        (_young, rate, start), victim = best
        if victim._idle() or victim.transport.is_closing():
            refused(
                "evict",
                "at the limit of %d connections: closed an idle one to make room",
                limit,
            )
        else:
            refused(
                "evict-slow",
                "at the limit of %d connections: closed one sending its request at %.0f "
                "bytes a second for %.0f s to make room",
                limit,
                rate,
                now - start,
            )
        self.connections.discard(victim)
        victim._cancel_head_timer()
        victim._cancel_body_timer()
        victim.transport.close()


# --- uvicorn's settings ----------------------------------------------------------------------


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logger.warning("could not raise the open file limit from %d: %s", soft, exc)
        return soft
    return target


def connection_limit(open_files: int) -> int:
    """Connections one web process accepts: MAX_CONNECTIONS, or fewer under a low file limit."""
    return max(16, min(MAX_CONNECTIONS, open_files - FD_RESERVE))


def server_config(app: Any, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's settings for panelbot's app (``kwargs``: host, port...)."""
    limit = connection_limit(raise_open_file_limit())
    config = uvicorn.Config(
        app,
        http=GuardedProtocol,
        limit_concurrency=limit,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=3,
        **kwargs,
    )
    # After uvicorn.Config, which configures uvicorn's loggers.
    error_log = logging.getLogger("uvicorn.error")
    for old in [f for f in error_log.filters if isinstance(f, _UvicornRefusals)]:
        error_log.removeFilter(old)
    error_log.addFilter(_UvicornRefusals(limit))
    return config
