"""Twilio: SMS and WhatsApp through one account, with the official SDK's async client.

- :mod:`.webhook`: inbound messages and status callbacks, signed, checked and parsed;
- :mod:`.client`: the REST API (sending, pacing, the WhatsApp window) and
  :class:`TwilioChannel`, the channel the bot builds;
- :mod:`.reconciliation`: finding a message an earlier attempt may have created;
- :mod:`.errors`: Twilio's error codes and statuses as the dispatcher understands them.

This package is the only one that imports the Twilio SDK. Masking numbers for logs lives in
:mod:`bot.privacy`, which needs no SDK.
"""

from bot.channels.twilio.client import TwilioChannel
from bot.channels.twilio.errors import classify, delivery_error_class, describe
from bot.channels.twilio.webhook import (
    EMPTY_TWIML,
    MESSAGES_PATH,
    STATUS_PATH,
    FormParams,
    address_from,
    parse_form,
    signature_ok,
)
from bot.privacy import mask, scrub

__all__ = [
    "EMPTY_TWIML",
    "MESSAGES_PATH",
    "STATUS_PATH",
    "FormParams",
    "TwilioChannel",
    "address_from",
    "classify",
    "delivery_error_class",
    "describe",
    "mask",
    "parse_form",
    "scrub",
    "signature_ok",
]
