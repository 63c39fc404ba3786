"""Reconciliation: finding at Twilio a message an earlier attempt may have created.

A row found in ``sending`` after a crash, or retried after a timeout, is looked up among the
messages Twilio has for that number around the row's own times; the one with our text and
no outbox row of its own is taken.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from twilio.base import values as twilio_values

from bot import sms
from bot.channels.twilio.errors import STATUS_MAP
from bot.models import OutboundMessage, OutboxStatus, SendResult, utcnow
from bot.storage import outbox as outbox_store

if TYPE_CHECKING:
    from twilio.rest import Client

# A row is looked up at Twilio by its own times, however old: from when it was queued (less
# a margin for the two clocks) to when its last attempt began plus the longest a message
# can wait in Twilio's queue (ValidityPeriod is at most 10 hours).
RECONCILE_CLOCK_MARGIN = timedelta(minutes=10)
RECONCILE_QUEUE_MARGIN = timedelta(hours=12)
RECONCILE_LIMIT = 50
# At most this many of the messages to one number in that window are read.
RECONCILE_MAX_RECORDS = 200


async def find_existing(
    client: Client,
    conn: Any,
    message: OutboundMessage,
    sender: dict[str, str],
    *,
    sanitize: bool,
) -> SendResult | None:
    """The Twilio record of this message, if an earlier attempt created one.

    Two look-ups: the messages Twilio sent in the row's own window (``DateSent``
    filters, so a row from days ago is found however many messages came since), and,
    while a message could still wait in Twilio's queue (no DateSent yet), the newest
    messages to the number.
    """
    address = message.address
    if address.channel == "sms":
        to, body = address.id, sms.prepare(message.text, sanitise_text=sanitize)[0]
    else:
        to, body = f"whatsapp:{address.id}", message.text
    now = utcnow()
    times = await outbox_store.attempt_times(conn, message.id)
    first, last = times if times is not None else (now, now)
    since = first - RECONCILE_CLOCK_MARGIN
    until = max(last, first) + RECONCILE_QUEUE_MARGIN
    base = {"to": to, "from_": sender.get("from_", twilio_values.unset)}
    candidates = await client.messages.list_async(
        **base,
        date_sent_after=since,
        date_sent_before=min(until, now + RECONCILE_CLOCK_MARGIN),
        limit=RECONCILE_MAX_RECORDS,
        page_size=RECONCILE_LIMIT,
    )
    if until > now:
        candidates += await client.messages.list_async(
            **base, limit=RECONCILE_LIMIT, page_size=RECONCILE_LIMIT
        )
    service = sender.get("messaging_service_sid")
    matches = {
        m.sid: m
        for m in candidates
        if m.sid
        and (m.body or "").strip() == body.strip()
        and str(m.direction or "outbound").startswith("outbound")
        and (m.date_created is None or since <= m.date_created <= until)
        and (service is None or m.messaging_service_sid == service)
    }
    if not matches:
        return None
    # A message with the same text may have gone to them before, as another outbox
    # row: one whose SID is already recorded is not this one.
    known = await outbox_store.known_provider_ids(conn, address.channel, [*matches])
    for m in sorted(matches.values(), key=lambda m: m.date_created or since):
        if m.sid not in known:
            status = STATUS_MAP.get(str(m.status), OutboxStatus.SENT)
            return SendResult(provider_message_id=m.sid, status=status)
    return None
