"""The shape of panelbot's settings: frozen dataclasses read by the walker in ``bot.config``.

Each field's type hint is its schema. Field ``metadata`` may add:

- ``check``: a callable taking the converted value and returning it (possibly normalised),
  raising ``ValueError`` with a message for the user;
- ``secret``: masked as ``***`` by ``panelbot config show``;
- ``toml``: ``False`` for fields that are not read from a TOML key of their own.

A class may define ``problems(self) -> list[tuple[str, str]]`` for checks that span several
fields; each is ``(key, message)`` relative to the class's own section.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time, timedelta
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import babel

# --- durations and times (the value types the walker reads from strings) -------------------

_DURATION = re.compile(
    r"\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*"
)
_DURATION_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
_DURATION_SECONDS = (604800, 86400, 3600, 60, 1)
# The longest duration anything takes (100 years): longer ones overflow date arithmetic.
MAX_DURATION_DAYS = 36500


class DurationTooLong(ValueError):
    """A well-formed duration longer than ``MAX_DURATION_DAYS`` (or a setting's own limit)."""


def parse_duration(text: str) -> timedelta:
    """Parse ``"48h"``, ``"90m"``, ``"2d"``, ``"30s"`` or ``"1d12h"``; raises ValueError.

    At most ``MAX_DURATION_DAYS`` days (:class:`DurationTooLong`, a ValueError, beyond).
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or not any(match.groups()):
        raise ValueError(
            f"invalid duration {json.dumps(text)}: use whole numbers with units w, d, h, m or s, "
            'e.g. "48h", "90m", "2d", "30s" or "1d12h"'
        )
    seconds = sum(
        int(n) * size for n, size in zip(match.groups(), _DURATION_SECONDS, strict=True) if n
    )
    if seconds > MAX_DURATION_DAYS * 86400:
        raise DurationTooLong(
            f"duration {json.dumps(text.strip())} is too long: at most {MAX_DURATION_DAYS}d "
            "(100 years)"
        )
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of ``parse_duration``: ``timedelta(hours=36)`` gives ``"1d12h"``."""
    seconds = int(value.total_seconds())
    out = ""
    for suffix, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{suffix}"
            seconds %= size
    return out or "0s"


def parse_time(text: str | time) -> time:
    """Parse a 24-hour ``"HH:MM"`` (a TOML time literal is passed through); raises ValueError."""
    if isinstance(text, time):
        return text
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    try:
        if match:
            return time(int(match[1]), int(match[2]))
    except ValueError:
        pass
    raise ValueError(f'invalid time {json.dumps(text)}: use 24-hour "HH:MM", e.g. "20:00"')


# --- checks used in field metadata -----------------------------------------------------------

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, available_timezones(), n=1)
        hint = f'did you mean "{close[0]}"?' if close else 'use an IANA name like "Europe/London"'
        raise ValueError(f'unknown timezone "{name}" ({hint})') from None
    return name


def _check_locale(code: str) -> str:
    try:
        babel.Locale.parse(code.replace("-", "_"))
    except (ValueError, babel.UnknownLocaleError):
        raise ValueError(
            f'unknown locale "{code}" (use a code like "en", "cy" or "en-GB")'
        ) from None
    return code


def _check_locales(codes: list[str]) -> list[str]:
    for code in codes:
        _check_locale(code)
    if len(set(codes)) != len(codes):
        raise ValueError("each locale may appear only once")
    return codes


def _check_locale_keys(table: dict[str, Any]) -> dict[str, Any]:
    for code in table:
        _check_locale(code)
    return table


# A URL's user and password: up to the last "@" before its path (a password may hold an "@").
_URL_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
# A query parameter whose name looks secret (``?token=...``, ``&api_key=...``, ``&sig=...``).
_SECRET_QUERY = re.compile(
    r"([?&;][^=&;#\s]*(?:token|secret|key|passw|pwd|sig|auth)[^=&;#\s]*=)[^&;#\s]*",
    re.IGNORECASE,
)


def mask_userinfo(text: str) -> str:
    """Every URL in ``text`` without its user and password (``https://***@host/...``) and
    with the values of secret-looking query parameters masked (``?token=***``)."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    if "://" in text:
        text = _SECRET_QUERY.sub(r"\1***", text)
    return text


def _check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f'"{mask_userinfo(url)}" must start with http:// or https://')
    # Stored without the trailing slash so callers can always append "/path".
    return url.rstrip("/")


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def _price(value: float) -> float:
    if not 0 <= value <= 10:
        raise ValueError(f"must be a price in GBP from 0 to 10, got {value}")
    return value


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


# The longest message retention accepted (50 years): the cut-off is taken from today.
MAX_RETENTION_DAYS = 18250


def _retention(value: timedelta) -> timedelta:
    value = _positive_duration(value)
    if value > timedelta(days=MAX_RETENTION_DAYS):
        raise DurationTooLong(f"must be at most {MAX_RETENTION_DAYS}d (50 years)")
    return value


def _check_backoff(waits: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
    # The outbox indexes this list by attempt, so it cannot be empty.
    if not waits:
        raise ValueError('needs at least one duration, e.g. ["1m"]')
    return waits


def _port(value: int) -> int:
    if not 0 < value < 65536:
        raise ValueError(f"must be between 1 and 65535, got {value}")
    return value


def _workers(value: int) -> int:
    if not 0 <= value <= 32:
        raise ValueError(f"must be between 0 and 32, got {value}")
    return value


def _check_token(value: str) -> str:
    # The value itself is never repeated in a message: it is a secret.
    if len(value) < 16:
        raise ValueError(f"must be at least 16 characters, got {len(value)}")
    return value


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _nice(value: int) -> int:
    if not 0 <= value <= 19:
        raise ValueError(f"must be between 0 and 19, got {value}")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            allowed = " or ".join(f'"{c}"' for c in choices)
            raise ValueError(f'must be {allowed}, got "{value}"')
        return value

    return check


def _check_plugin_directories(folders: list[Path]) -> list[Path]:
    # Checked with the config, so that `config check` names the key rather than every
    # command failing later while it loads plugins.
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"no folder at {folder}")
    return folders


def _meta(check: Callable[[Any], Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"check": check, **extra} if check else extra


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local hours in which bulk sends (invitations, reminders) are held; replies still go."""

    start: time
    end: time

    def contains(self, local_time: time) -> bool:
        """Whether ``local_time`` falls in quiet hours; ranges may cross midnight."""
        if self.start <= self.end:
            return self.start <= local_time < self.end
        # e.g. 20:00-09:00: quiet late in the evening or early in the morning.
        return local_time >= self.start or local_time < self.end

    def problems(self) -> list[tuple[str, str]]:
        if self.start == self.end:
            return [("end", "must differ from start (use quiet_hours = false for none)")]
        return []


@dataclass(frozen=True, slots=True)
class BotSettings:
    name: str = "Citizens' Panel"
    database: Path = Path("panelbot.db")
    timezone: str = field(default="Europe/London", metadata=_meta(_check_timezone))
    default_locale: str = field(default="en", metadata=_meta(_check_locale))
    locales: list[str] = field(default_factory=list, metadata=_meta(_check_locales))
    public_base_url: str | None = field(default=None, metadata=_meta(_check_url))
    quiet_hours: QuietHours | None = QuietHours(time(20, 0), time(9, 0))
    contact: str = "your local NHS engagement team"
    reminder_after: timedelta = field(
        default=timedelta(hours=48), metadata=_meta(_positive_duration)
    )
    close_after: timedelta = field(default=timedelta(days=14), metadata=_meta(_positive_duration))
    secret_key: str | None = field(default=None, metadata=_meta(secret=True))
    # More inbound messages than this from one address in any minute are stored but not
    # answered, so nobody can run up SMS costs; 0: no limit.
    max_inbound_per_minute: int = field(default=30, metadata=_meta(_not_negative))

    def __post_init__(self) -> None:
        # Omitted locales mean "only the default locale"; frozen, hence object.__setattr__.
        if not self.locales:
            object.__setattr__(self, "locales", [self.default_locale])

    def problems(self) -> list[tuple[str, str]]:
        if self.default_locale not in self.locales:
            return [("default_locale", f'"{self.default_locale}" is not one of locales')]
        return []


@dataclass(frozen=True, slots=True)
class WebSettings:
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_meta(_port))
    # N (default 1): N web processes share the port, store what webhooks bring in the inbox
    # and answer at once (see bot/inbox.py). 0: the web server runs in the bot's process.
    workers: int = field(default=1, metadata=_meta(_workers))
    # With workers: how much the main process lowers its CPU priority (nice), so that under
    # a burst the web processes answer first and the engine catches up after. 0: equal.
    main_process_nice: int = field(default=5, metadata=_meta(_nice))
    # Bearer token for GET /metrics (Prometheus); without one the route answers 404.
    metrics_token: str | None = field(default=None, metadata=_meta(_check_token, secret=True))
    # Signs the dashboard's session cookies; default: a random key made once and kept
    # owner-only beside the database (<database>.web-key).
    secret_key: str | None = field(default=None, metadata=_meta(_check_token, secret=True))


@dataclass(frozen=True, slots=True)
class PanelField:
    """One demographic question asked at sign-up and used by quotas."""

    name: str
    values: list[str]
    # Question text and display labels per locale; without text a generic template is used.
    text: dict[str, str] = field(default_factory=dict, metadata=_meta(_check_locale_keys))
    labels: dict[str, list[str]] = field(default_factory=dict, metadata=_meta(_check_locale_keys))
    # "postcode": not asked; taken from [panel] postcode_lookup's column of the field's name
    # for the postcode sign-up asks instead (see bot/postcodes.py).
    derive_from: str | None = field(default=None, metadata=_meta(_one_of("postcode")))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if not _IDENTIFIER.fullmatch(self.name):
            found.append(("name", f'"{self.name}" must be lower-case letters, digits and _'))
        if not self.values:
            found.append(("values", "must not be empty"))
        elif len(set(self.values)) != len(self.values):
            found.append(("values", "each value may appear only once"))
        for locale, labels in self.labels.items():
            if len(labels) != len(self.values):
                found.append(
                    (
                        f"labels.{locale}",
                        f"needs one label per value: {len(self.values)}, got {len(labels)}",
                    )
                )
        return found


@dataclass(frozen=True, slots=True)
class PanelSettings:
    fields: list[PanelField] = field(default_factory=list)
    # CSV the ICS supplies (relative to the config): postcode, then one column per field
    # with derive_from = "postcode" (e.g. locality, imd_quintile). The postcode is never kept.
    postcode_lookup: Path | None = None

    def problems(self) -> list[tuple[str, str]]:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        found = [("fields", f'duplicate field name "{n}"') for n in dupes]
        derived = {f.name: list(f.values) for f in self.fields if f.derive_from == "postcode"}
        if derived and self.postcode_lookup is None:
            found.append(("postcode_lookup", 'required when a field has derive_from = "postcode"'))
        elif derived and self.postcode_lookup is not None:
            from bot.postcodes import lookup_problems  # only panels that derive fields

            found += [
                ("postcode_lookup", p) for p in lookup_problems(self.postcode_lookup, derived)
            ]
        return found


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    # Off unless a config turns it on (`panelbot demo` does): it has no login.
    enabled: bool = False
    rate_per_second: float = field(default=50.0, metadata=_meta(_positive))
    # Marks a demo panel of synthetic people (`panelbot demo` writes it). Only a demo may
    # let the simulator speak as imported panellists, and a demo has no real channels.
    demo: bool = False
    # Lets the simulator page list imported panellists and speak as them: only with demo.
    allow_panellists: bool = False
    # How many new people one browser (or one network address) may start on the simulator
    # in a minute; more are refused with 429.
    new_identities_per_minute: int = field(default=20, metadata=_meta(_positive))

    def problems(self) -> list[tuple[str, str]]:
        if self.allow_panellists and not self.demo:
            return [
                (
                    "allow_panellists",
                    "only a demo panel may speak as imported panellists: set demo = true "
                    "only for a panel of synthetic people, as `panelbot demo` does",
                )
            ]
        return []


def _check_whatsapp_templates(table: dict[str, str]) -> dict[str, str]:
    """Keys are bulk message kinds; values look like Twilio Content SIDs."""
    from bot.models import MessageKind  # a leaf module; imported here to keep this one light

    kinds = sorted(kind.value for kind in MessageKind if kind.is_bulk)
    for kind, sid in table.items():
        if kind not in kinds:
            raise ValueError(f'unknown message kind "{kind}" (use {", ".join(kinds)})')
        if not sid.startswith("HX"):
            raise ValueError(f'{kind}: "{sid}" is not a Content SID (they start with "HX")')
    return table


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    enabled: bool = False
    account_sid: str | None = None
    auth_token: str | None = field(default=None, metadata=_meta(secret=True))
    from_number: str | None = None
    messaging_service_sid: str | None = None
    api_base_url: str = field(default="https://api.twilio.com", metadata=_meta(_check_url))
    rate_per_second: float = field(default=10.0, metadata=_meta(_positive))
    sms_price_per_segment: float = field(default=0.0463, metadata=_meta(_price))  # GBP
    # One WhatsApp message, in GBP, for the per-wave cost estimates (survey results).
    whatsapp_price_per_message: float = field(default=0.004, metadata=_meta(_price))
    sanitize: bool = True
    # The WhatsApp sender (E.164, without "whatsapp:"); None means from_number.
    whatsapp_from: str | None = None
    # Approved WhatsApp templates (Content SIDs, "HX...") by bulk message kind, sent to
    # someone whose 24-hour window is closed; without one such a message is held.
    whatsapp_templates: dict[str, str] = field(
        default_factory=dict, metadata=_meta(_check_whatsapp_templates)
    )
    # Seconds to wait for Twilio's API before a send counts as a (retryable) timeout.
    request_timeout: float = field(default=10.0, metadata=_meta(_positive))

    def problems(self) -> list[tuple[str, str]]:
        if not self.enabled:
            return []
        found = [(k, "required when enabled") for k in ("account_sid", "auth_token")]
        found = [(k, m) for k, m in found if getattr(self, k) is None]
        if (self.from_number is None) == (self.messaging_service_sid is None):
            found.append(("from_number", "set exactly one of from_number, messaging_service_sid"))
        return found


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    enabled: bool = False
    token: str | None = field(default=None, metadata=_meta(secret=True))
    mode: str = field(default="webhook", metadata=_meta(_one_of("webhook", "polling")))
    secret_token: str | None = field(default=None, metadata=_meta(secret=True))
    api_base_url: str = field(default="https://api.telegram.org/bot", metadata=_meta(_check_url))
    rate_per_second: float = field(default=30.0, metadata=_meta(_positive))
    # Seconds between two messages to one chat (Telegram allows about one a second).
    per_chat_interval: float = field(default=1.0, metadata=_meta(_positive))

    def problems(self) -> list[tuple[str, str]]:
        if not self.enabled:
            return []
        found = []
        if self.token is None:
            found.append(("token", "required when enabled"))
        if self.mode == "webhook" and self.secret_token is None:
            found.append(("secret_token", 'required when mode is "webhook"'))
        return found


@dataclass(frozen=True, slots=True)
class ChannelsSettings:
    simulator: SimulatorSettings = SimulatorSettings()
    twilio: TwilioSettings = TwilioSettings()
    telegram: TelegramSettings = TelegramSettings()


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    max_attempts: int = field(default=4, metadata=_meta(_positive))
    retry_backoff: tuple[timedelta, ...] = field(
        default=(timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30)),
        metadata=_meta(_check_backoff),
    )
    poll_interval: float = field(default=1.0, metadata=_meta(_positive))  # seconds
    batch_size: int = field(default=100, metadata=_meta(_positive))


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    # Message texts (inbound and outbound) older than this are deleted by a daily job;
    # answers stay, detached from the messages. See docs/PRIVACY.md.
    keep_messages_for: timedelta = field(default=timedelta(days=365), metadata=_meta(_retention))


def _resolve_env(value: Any, path: str) -> Any:
    """``value`` with each ``{ env = "NAME" }`` replaced by that environment variable."""
    if isinstance(value, dict):
        if list(value) == ["env"] and isinstance(value["env"], str):
            found = os.environ.get(value["env"])
            if not found:
                raise ValueError(f"{path}: environment variable {value['env']} is not set")
            return found
        return {key: _resolve_env(item, f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve_env(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


@dataclass(frozen=True, slots=True)
class PluginsSettings:
    disabled: list[str] = field(default_factory=list)
    # Folders (relative to the config file) whose every .py file is a plugin named after the
    # file, loaded without packaging (like Datasette's --plugins-dir). See bot/plugins.py.
    directories: list[Path] = field(default_factory=list, metadata=_meta(_check_plugin_directories))
    # Each other table under [plugins] is one plugin's own section, kept raw for the plugin.
    config: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={"toml": False})

    # The walker gathers unknown keys whose values are tables into this field.
    extra_tables_field: ClassVar[str] = "config"

    def for_plugin(self, name: str) -> dict[str, Any]:
        """The plugin's own ``[plugins.<name>]`` section, or an empty dict.

        A value written ``{ env = "NAME" }`` is read from the environment here, as every
        other secret is; the section itself stays as written (``config show`` never sees
        the value). An unset variable is a ``ValueError`` naming the key and the variable.
        """
        return _resolve_env(self.config.get(name, {}), f"plugins.{name}")


@dataclass(frozen=True, slots=True)
class Settings:
    bot: BotSettings = BotSettings()
    web: WebSettings = WebSettings()
    panel: PanelSettings = PanelSettings()
    channels: ChannelsSettings = ChannelsSettings()
    outbox: OutboxSettings = OutboxSettings()
    privacy: PrivacySettings = PrivacySettings()
    plugins: PluginsSettings = PluginsSettings()
    # The file these settings came from; None for the built-in default.
    source: Path | None = field(default=None, metadata={"toml": False})
