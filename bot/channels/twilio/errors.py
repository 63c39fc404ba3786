"""Twilio's errors and statuses, as the dispatcher and the outbox understand them."""

from __future__ import annotations

import logging
from email.utils import parsedate_to_datetime

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)

from bot.models import ErrorClass, OutboxStatus, SendError, utcnow
from bot.privacy import scrub

logger = logging.getLogger(__package__)

# Twilio error codes (https://www.twilio.com/docs/api/errors).
OPTED_OUT_CODES = {21610}  # the recipient replied STOP
UNREACHABLE_CODES = {21211, 21614}  # invalid "To" number; not a mobile number
# Delivery failures (status callbacks) that mean the number itself is dead. 30003
# ("handset switched off or out of coverage") is deliberately NOT here: it is usually
# temporary, and marking someone unreachable for it would quietly drop people with poor
# signal from the panel. It fails that one message (permanent) instead.
UNDELIVERABLE_CODES = {21211, 21614, 30005, 30006}
RATE_LIMIT_CODES = {20429}
AUTH_CODES = {20003}

# Twilio message statuses as outbox statuses. A message Twilio has accepted is "sent" as far
# as the outbox goes; statuses never move backwards, so a late "queued" changes nothing.
STATUS_MAP = {
    "accepted": OutboxStatus.SENT,
    "scheduled": OutboxStatus.SENT,
    "queued": OutboxStatus.SENT,
    "sending": OutboxStatus.SENT,
    "sent": OutboxStatus.SENT,
    "delivered": OutboxStatus.DELIVERED,
    "read": OutboxStatus.DELIVERED,
    "undelivered": OutboxStatus.FAILED,
    "failed": OutboxStatus.FAILED,
    "canceled": OutboxStatus.FAILED,
}


def classify(
    status: int, code: int | None, detail: str, retry_after: float | None = None
) -> SendError:
    """What the dispatcher should do about a Twilio API error."""
    code_text = str(code) if code is not None else None
    detail = scrub(detail)
    if code in OPTED_OUT_CODES:
        return SendError(ErrorClass.OPTED_OUT, detail, code=code_text)
    if code in UNREACHABLE_CODES:
        return SendError(ErrorClass.UNREACHABLE, detail, code=code_text)
    if status == 429 or code in RATE_LIMIT_CODES:
        return SendError(ErrorClass.RETRYABLE, detail, code=code_text, retry_after=retry_after)
    if status >= 500:
        return SendError(ErrorClass.RETRYABLE, detail, code=code_text)
    if status == 401 or code in AUTH_CODES:
        # Wrong credentials fail every message alike: retrying (with the usual backoff)
        # gives staff time to fix the config before anything is marked failed.
        logger.error(
            "Twilio refused our credentials (HTTP %s): check account_sid/auth_token",
            status,
        )
        return SendError(ErrorClass.RETRYABLE, detail, code=code_text)
    # Everything else, 30007 (filtered as spam) included, will not work as it is.
    return SendError(ErrorClass.PERMANENT, detail, code=code_text)


def delivery_error_class(code: int | None) -> ErrorClass:
    """The class of a failed or undelivered status callback's ErrorCode."""
    if code in OPTED_OUT_CODES:
        return ErrorClass.OPTED_OUT
    if code in UNDELIVERABLE_CODES:
        return ErrorClass.UNREACHABLE
    return ErrorClass.PERMANENT


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), capped at an hour."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - utcnow()).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 3600.0)


def describe(exc: BaseException) -> str:
    """A short description of a failed call to Twilio, with any phone number masked."""
    if isinstance(exc, TwilioRestException):
        text = f"HTTP {exc.status}, code {exc.code}: {exc.msg}"
    elif isinstance(exc, TwilioServiceException):
        text = f"HTTP {exc.status}, code {exc.code}: {exc.detail or exc.title}"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    elif isinstance(exc, aiohttp.ClientError):
        text = f"unreachable ({type(exc).__name__})"
    elif isinstance(exc, TwilioException) and exc.args:
        # e.g. ("Unable to fetch page", <the response>) from a failed list call
        status = getattr(exc.args[-1], "status_code", None)
        text = f"{exc.args[0]} (HTTP {status})" if status else str(exc.args[0])
    else:
        text = f"an unexpected answer ({type(exc).__name__})"
    return scrub(text)


def int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None
