"""Issue 11, parts 6 and 7: masking lives in bot.privacy (no channel SDK needed), the
dispatcher is bot.dispatcher, and duplicated logic is one function."""

from __future__ import annotations

import subprocess
import sys

from bot.models import Address
from bot.privacy import address_hash, mask, masked_address, scrub
from tests.conftest import REPO


def test_mask_keeps_numbers_apart_but_uncallable() -> None:
    assert mask("+447400100101") == "+44740****101"
    assert mask("whatsapp:+447400100101") == "whatsapp:+44740****101"
    assert mask("123") == "***"
    assert mask("1234567") == "*******"
    assert mask(None) == mask("") == ""
    for value in ("12345678", "123456789", "+4474001001011234"):
        masked = mask(value)
        assert masked.count("*") >= 4 and value not in masked


def test_scrub_and_masked_address() -> None:
    text = scrub("To number +447400100101 is not a mobile; 12345 is fine")
    assert "+447400100101" not in text and "+44740****101" in text and "12345 " in text
    assert masked_address("sms", "+447400100101") == "+44740****101"
    assert masked_address("telegram", "123456789") == "12****89"
    assert masked_address("telegram", None) == "(erased)"


def test_address_hash_is_keyed_and_one_for_a_phone_on_both_channels() -> None:
    sms, wa = Address("sms", "+447400100101"), Address("whatsapp", "+447400100101")
    assert address_hash(b"k", sms) == address_hash(b"k", wa)
    assert address_hash(b"k", sms) != address_hash(b"other", sms)
    assert "+447400100101" not in address_hash(b"k", sms)


def test_privacy_and_the_cli_load_without_any_channel_sdk() -> None:
    code = (
        "import sys, bot.privacy, bot.cli.db_cmd, bot.panel; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('twilio', 'telegram')); "
        "assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
