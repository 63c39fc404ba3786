"""Masking and keyed hashes of addresses: what a log line, a terminal or the suppression
list may hold of a phone number or chat id.

Imports nothing but the standard library and :mod:`bot.models`, so the CLI, the inbox and
the storage layer use it without loading any channel SDK.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from bot.models import Address

# Address channels whose ids are phone numbers: one number, suppressed on all of them.
PHONE_CHANNELS = ("sms", "whatsapp")

_LONG_NUMBER = re.compile(r"\+?\d{8,15}")

# A review link's path carries its secret token: /review/<token>[/try|/comments].
_REVIEW_TOKEN = re.compile(r"^(/review/)(?!review\.css(?:$|/))[^/]+")


def mask(value: str | None) -> str:
    """A number or chat id fit for a log line: ``+447400100101`` → ``+44740****101``;
    ``whatsapp:+447400100101`` → ``whatsapp:+44740****101``.

    Enough to tell two numbers apart while debugging, not enough to call anyone: at least
    four characters are always hidden, and a value of seven or fewer is hidden whole.
    """
    if not value:
        return ""
    prefix, _, rest = value.rpartition(":")
    prefix = f"{prefix}:" if prefix else ""
    if len(rest) <= 7:
        return prefix + "*" * max(len(rest), 3)
    keep_start = min(6, len(rest) - 7)
    return f"{prefix}{rest[:keep_start]}****{rest[-3:]}"


def scrub(text: str) -> str:
    """Mask every phone number in a free text (providers' error messages quote the number)."""
    return _LONG_NUMBER.sub(lambda m: mask(m.group()), text)


def loggable_path(path: str, limit: int = 100) -> str:
    """A request path fit for a log line: a review link's token replaced by ``…``
    (``/review/<token>/try`` → ``/review/…/try``), and at most ``limit`` characters.

    Every log line that names a path goes through this, so a copy of the logs opens no
    review link.
    """
    return _REVIEW_TOKEN.sub(r"\1…", path)[:limit]


def masked_address(channel: str, address: str | None) -> str:
    """An address fit for a terminal: a phone number masked, any other id shortened."""
    if not address:
        return "(erased)"
    if channel in PHONE_CHANNELS:
        return mask(address)
    return f"{address[:2]}****{address[-2:]}" if len(address) > 6 else "****"


def suppression_key_material(address: Address) -> str:
    """What is hashed: a phone number is suppressed on SMS and WhatsApp alike."""
    if address.channel in PHONE_CHANNELS:
        return f"phone:{address.id}"
    return f"{address.channel}:{address.id}"


def address_hash(key: bytes, address: Address) -> str:
    """The keyed hash of an address the suppression list keeps instead of the address."""
    return hmac.new(key, suppression_key_material(address).encode(), hashlib.sha256).hexdigest()
