"""Plain types shared by every layer: channels, engine, storage and plugins meet here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every stored time is UTC ISO-8601)."""
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """A UTC ISO-8601 string with seconds precision, sortable as text."""
    if dt.tzinfo is not UTC:  # astimezone costs more than the formatting: skip it for UTC
        dt = dt.astimezone(UTC)
    return dt.isoformat(timespec="milliseconds")


def local_time(wall: datetime, timezone: str) -> datetime:
    """A date-time typed without an offset, as wall-clock time in ``timezone``.

    ValueError (a one-line reason) when that time does not exist there: the hour the
    clocks skip when they go forward (in Europe/London, 01:00-02:00 on the last Sunday of
    March). A time with an offset is returned as it is.
    """
    if wall.tzinfo is not None:
        return wall
    tz = ZoneInfo(timezone)
    when = wall.replace(tzinfo=tz)
    if when.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        raise ValueError(
            f"{wall.isoformat(timespec='minutes')} does not exist in {timezone}: the clocks "
            "go forward then; choose a time outside the skipped hour"
        )
    return when


def parse_iso(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Address:
    """Where a panellist is reached: a channel name and the id on that channel.

    Channels: ``sim`` (the simulator), ``sms``, ``whatsapp`` and ``telegram``.
    The text form is ``channel:id``, e.g. ``sim:alice``, ``sms:+447400100101``,
    ``whatsapp:+447400100101``, ``telegram:123456``.
    """

    channel: str
    id: str

    CHANNELS = ("sim", "sms", "whatsapp", "telegram")

    def __str__(self) -> str:
        return f"{self.channel}:{self.id}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``channel:id``; raises ValueError with a readable reason."""
        if not isinstance(text, str) or ":" not in text:
            raise ValueError(f"address {text!r} is not of the form channel:id")
        channel, _, ident = text.partition(":")
        channel = channel.strip().lower()
        ident = ident.strip()
        if channel not in cls.CHANNELS:
            raise ValueError(
                f"address {text!r}: unknown channel {channel!r} "
                f"(expected one of {', '.join(cls.CHANNELS)})"
            )
        if not ident or len(ident) > 64:
            raise ValueError(f"address {text!r}: the id must be 1 to 64 characters")
        return cls(channel, ident)


class PanellistStatus(enum.StrEnum):
    PENDING = "pending"  # sign-up in progress: no consent yet
    ACTIVE = "active"
    OPTED_OUT = "opted_out"
    UNREACHABLE = "unreachable"
    ERASED = "erased"


class MessageKind(enum.StrEnum):
    """Why a message is sent. Replies go before bulk; quiet hours hold bulk only."""

    REPLY = "reply"
    STOP_CONFIRMATION = "stop_confirmation"  # the one message an opted-out person gets
    INVITATION = "invitation"
    REMINDER = "reminder"
    IMPACT_UPDATE = "impact_update"
    BROADCAST = "broadcast"

    @property
    def is_bulk(self) -> bool:
        return self not in (MessageKind.REPLY, MessageKind.STOP_CONFIRMATION)

    @property
    def priority(self) -> int:
        return 1 if self.is_bulk else 0


class OutboxStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # handed to a provider; reconciled after a crash, never blindly resent
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    HELD = "held"  # cannot be sent as it is (e.g. WhatsApp outside its window without a template)
    CANCELLED = "cancelled"  # the recipient opted out or was erased before it went


class ErrorClass(enum.StrEnum):
    """How a send failure is treated (after RapidPro's courier)."""

    RETRYABLE = "retryable"  # rate limits, 5xx, timeouts: try again with backoff
    PERMANENT = "permanent"  # will never work as it is: record and report
    OPTED_OUT = "opted_out"  # the provider says the person opted out: mark them, never retry
    UNREACHABLE = "unreachable"  # invalid number, blocked bot: mark them, never retry


@dataclass(slots=True)
class InboundMessage:
    """A message from a panellist, as any channel hands it to the engine."""

    address: Address
    text: str
    provider_message_id: str
    received_at: datetime = field(default_factory=utcnow)
    # Channel specifics the engine may ignore (e.g. a Telegram callback query id).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class OutboundMessage:
    """One row of the outbox, as the dispatcher hands it to a channel."""

    id: int
    address: Address
    text: str
    kind: MessageKind
    panellist_id: int | None
    idempotency_key: str
    attempts: int = 0
    template: str | None = None
    # Structured extras a channel may use: numbered options for quick replies or
    # inline keyboards, a WhatsApp template name. The text always stands alone.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SendResult:
    """What a channel reports after handing a message to its provider."""

    provider_message_id: str | None = None
    status: OutboxStatus = OutboxStatus.SENT
    cost_units: int = 1  # e.g. SMS segments
    # Why, when the status is HELD (e.g. no approved WhatsApp template outside 24 hours).
    detail: str | None = None


class SendError(Exception):
    """A send failed; ``error_class`` says what the dispatcher does next."""

    def __init__(
        self,
        error_class: ErrorClass,
        detail: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.error_class = error_class
        self.detail = detail
        self.code = code
        self.retry_after = retry_after


@dataclass(slots=True)
class DeliveryReport:
    """A provider's later word on a message (e.g. a Twilio status callback)."""

    channel: str
    provider_message_id: str
    status: OutboxStatus
    error_code: str | None = None
    error_class: ErrorClass | None = None
    at: datetime = field(default_factory=utcnow)


@dataclass(slots=True)
class Panellist:
    id: int
    status: PanellistStatus
    locale: str
    demographics: dict[str, str]
    consent_at: datetime | None
    stage: str | None  # sign-up stage while pending; None once active
    created_at: datetime
    addresses: list[Address] = field(default_factory=list)


class SignupDecision(enum.StrEnum):
    """What ``panelbot_screen_signup`` may answer for a newly signed-up person."""

    ACCEPT = "accept"
    WAITLIST = "waitlist"
    DECLINE = "decline"
