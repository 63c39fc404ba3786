"""``GET /metrics``: Prometheus metrics, behind a bearer token (``[web] metrics_token``).

Everything is read from the database (and the inbox file) when Prometheus scrapes, so the
figures are the same whichever web process answers and survive restarts. With no token
configured the route does not exist (404); a missing or wrong token gets 401. The token is
compared in constant time.

Metrics (all prefixed ``panelbot_``):

- ``inbound_messages_total{channel}``: inbound messages stored
- ``outbound_messages_total{channel,status}``: outbox rows by status (queued, sending,
  sent, delivered, failed, held, cancelled)
- ``outbox_depth{channel}``: messages waiting to be sent (queued or sending)
- ``outbox_held{channel}``: messages held (e.g. WhatsApp outside its window, no template)
- ``inbox_waiting``, ``inbox_failed``, ``inbox_oldest_seconds``: webhook payloads stored by
  web processes and not yet handled by the main process, and those given up on
- ``send_latency_seconds{channel,priority}``: a histogram of the time from queued to
  accepted by the provider (priority ``reply`` or ``bulk``; bulk includes quiet hours)
- ``panellists{status}``: panellists by status

Counts come from rows that retention and erasure may delete, so a counter can go down;
Prometheus treats that as a reset.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.inbox import backlog, existing_inbox
from bot.storage import metrics as metrics_store

if TYPE_CHECKING:
    from bot.app import Bot

logger = logging.getLogger(__name__)

# Seconds from queued to sent: replies take well under a second; bulk may wait hours.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)
PRIORITIES = {0: "reply", 1: "bulk"}
WAITING = ("queued", "sending")


class _Families:
    """What ``generate_latest`` needs: an object whose ``collect()`` yields the metrics."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


async def collect(bot: Bot) -> list[Metric]:
    conn = bot.db.conn
    families: list[Metric] = []

    inbound = CounterMetricFamily(
        "panelbot_inbound_messages", "Inbound messages stored, by channel.", labels=["channel"]
    )
    for channel, count in sorted((await metrics_store.inbound_by_channel(conn)).items()):
        inbound.add_metric([channel], count)
    families.append(inbound)

    outbound = CounterMetricFamily(
        "panelbot_outbound_messages",
        "Outbound messages by channel and status.",
        labels=["channel", "status"],
    )
    depth = GaugeMetricFamily(
        "panelbot_outbox_depth",
        "Messages waiting to be sent (queued or sending), by channel.",
        labels=["channel"],
    )
    held = GaugeMetricFamily(
        "panelbot_outbox_held", "Messages held and not sent, by channel.", labels=["channel"]
    )
    by_status = await metrics_store.outbound_by_channel_status(conn)
    channels = sorted({c for c, _ in by_status} | set(bot.channels))
    for (channel, status), count in sorted(by_status.items()):
        outbound.add_metric([channel, status], count)
    for channel in channels:
        depth.add_metric([channel], sum(by_status.get((channel, s), 0) for s in WAITING))
        held.add_metric([channel], by_status.get((channel, "held"), 0))
    families += [outbound, depth, held]

    waiting, oldest, failed = await _inbox_backlog(bot)
    families.append(
        GaugeMetricFamily(
            "panelbot_inbox_waiting",
            "Webhook payloads stored by web processes, waiting for the main process.",
            value=waiting,
        )
    )
    families.append(
        GaugeMetricFamily(
            "panelbot_inbox_oldest_seconds",
            "Age of the oldest payload waiting in the inbox (0 when none).",
            value=oldest,
        )
    )
    families.append(
        GaugeMetricFamily(
            "panelbot_inbox_failed",
            "Webhook payloads given up on after repeated failures (see panelbot db inbox).",
            value=failed,
        )
    )

    latency = HistogramMetricFamily(
        "panelbot_send_latency_seconds",
        "Seconds from queued to accepted by the provider, by channel and priority.",
        labels=["channel", "priority"],
    )
    found = await metrics_store.send_latency(conn, LATENCY_BUCKETS)
    for (channel, priority), (cumulative, count, total) in sorted(found.items()):
        buckets: list[tuple[str, float]] = [
            (_bound(b), float(n)) for b, n in zip(LATENCY_BUCKETS, cumulative, strict=True)
        ]
        buckets.append(("+Inf", float(count)))
        latency.add_metric(
            [channel, PRIORITIES.get(priority, str(priority))], buckets, sum_value=total
        )
    families.append(latency)

    panellists = GaugeMetricFamily(
        "panelbot_panellists", "Panellists by status.", labels=["status"]
    )
    for status, count in sorted((await metrics_store.panellists_by_status(conn)).items()):
        panellists.add_metric([status], count)
    families.append(panellists)
    return families


def _bound(value: float) -> str:
    return repr(float(value))


async def _inbox_backlog(bot: Bot) -> tuple[int, float, int]:
    if bot.inbox is not None:  # a web process: its own connection to the inbox
        return await bot.inbox.backlog()
    async with existing_inbox(bot.db.path) as inbox:
        if inbox is None:  # never run with web processes here
            return 0, 0.0, 0
        return await backlog(inbox)


def _authorised(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    # Both sides as bytes of the same kind: compare_digest takes constant time over them.
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def metrics(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    token = bot.settings.web.metrics_token
    if not token:
        return JSONResponse({"error": "Not Found"}, status_code=404)
    if not _authorised(request, token):
        return JSONResponse(
            {"error": "a valid bearer token is required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    try:
        families = await collect(bot)
    except Exception:
        logger.exception("metrics: could not read the database")
        return JSONResponse({"error": "metrics unavailable"}, status_code=503)
    body: Any = generate_latest(_Families(families))  # type: ignore[arg-type]
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics, methods=["GET"])]
