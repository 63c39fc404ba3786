"""Read panelbot's TOML config into the frozen settings declared in ``bot.config_schema``.

Validation is generic: a small walker follows each dataclass's type hints, so a new setting
needs only a new field (and a documented line in ``config.example.toml``). Every problem is
collected, so one ``panelbot config check`` shows them all.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from datetime import time, timedelta
from pathlib import Path
from typing import Any

from bot.config_schema import (
    BotSettings,
    ChannelsSettings,
    OutboxSettings,
    PanelField,
    PanelSettings,
    PluginsSettings,
    QuietHours,
    Settings,
    SimulatorSettings,
    TelegramSettings,
    TwilioSettings,
    WebSettings,
    format_duration,
    mask_userinfo,
    parse_duration,
    parse_time,
)

__all__ = [
    "BotSettings",
    "ChannelsSettings",
    "ConfigError",
    "OutboxSettings",
    "PanelField",
    "PanelSettings",
    "PluginsSettings",
    "QuietHours",
    "Settings",
    "SimulatorSettings",
    "TelegramSettings",
    "TwilioSettings",
    "WebSettings",
    "dump_toml",
    "format_duration",
    "load_settings",
    "parse_duration",
    "parse_time",
    "settings_as_dict",
    "settings_from_dict",
]


class ConfigError(Exception):
    """Every problem found in one config; ``str()`` gives one line per problem."""

    def __init__(self, problems: list[str], path: Path | None = None) -> None:
        super().__init__(problems)
        self.problems = list(problems)
        self.path = path

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "config"
        return "\n".join(f"{where}: {problem}" for problem in self.problems)


# --- the walker ------------------------------------------------------------------------------

_INVALID = object()  # a value already reported as a problem

# How each scalar type is read: its name in messages, the TOML types accepted, a converter.
_SCALARS: dict[Any, tuple[str, tuple[type, ...], Callable[[Any], Any]]] = {
    str: ("a string", (str,), str),
    int: ("an integer", (int,), int),
    float: ("a number", (int, float), float),  # TOML `rate = 10` should not be an error
    bool: ("true or false", (bool,), bool),
    Path: ("a path", (str,), Path),
    timedelta: ('a duration like "48h"', (str,), parse_duration),
    time: ('a time like "20:00"', (str, time), parse_time),
}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        value = mask_userinfo(value)
        return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _kind(value: Any) -> str:
    """What a value is, without showing it (for secrets)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return "a value of another type"


def _is_env_ref(value: Any) -> bool:
    return isinstance(value, dict) and list(value) == ["env"]


# Keys of plugin sections (kept raw, with no schema) that hold secrets, guessed by name.
_SECRET_NAME = re.compile(
    r"secret|token|password|passwd|api_?key|private_?key|credential", re.IGNORECASE
)
PLAIN_SECRET = (
    'a secret in plain text in the file; write { env = "NAME" } and set NAME in the '
    "environment (secrets never go in the file)"
)


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


class _Walker:
    """Converts raw TOML data to settings by following type hints, collecting problems."""

    def __init__(self, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[str] = []
        # Not problems: ``config check`` prints them and exits 0 (1 with --strict).
        self.warnings: list[str] = []
        self._secret: str | None = None  # the path of the secret being read, if any

    def fail(self, path: str, expected: str, got: Any) -> object:
        if self._secret is not None:
            # A secret's value never appears in a message, even a mistyped one.
            self.problems.append(
                f'{path}: expected {expected} or {{ env = "NAME" }}, got {_kind(got)} '
                "(not shown: it is a secret)"
            )
        else:
            self.problems.append(f"{path}: expected {expected}, got {_describe(got)}")
        return _INVALID

    def secret(
        self, raw: Any, hint: Any, path: str, local: list[tuple[str, str]], check: Any
    ) -> Any:
        """Read a secret: warn when it is plain text in the file, never show its value."""
        if isinstance(raw, str) and raw:
            self.warnings.append(f"{path}: {PLAIN_SECRET}")
        before = len(self.problems)
        self._secret = path
        try:
            value = self.value(raw, hint, path, local)
            if value is not _INVALID and value is not None and check is not None:
                try:
                    value = check(value)
                except ValueError as exc:
                    self.problems.append(f"{path}: {exc}")
                    value = _INVALID
        finally:
            self._secret = None
        if isinstance(raw, str) and len(raw) >= 4:
            self.problems[before:] = [p.replace(raw, "***") for p in self.problems[before:]]
        return value

    def plugin_secrets(self, table: Mapping[str, Any], path: str) -> None:
        """Warn for plain-text secrets in a raw plugin section, guessing them by key name."""
        for key, value in table.items():
            sub = _join(path, str(key))
            if isinstance(value, dict) and not _is_env_ref(value):
                self.plugin_secrets(value, sub)
            elif isinstance(value, str) and value and _SECRET_NAME.search(str(key)):
                self.warnings.append(f"{sub}: {PLAIN_SECRET}")

    def dataclass(self, cls: type, data: Any, path: str, pending: list[tuple[str, str]]) -> Any:
        """Build ``cls`` from a table. ``pending`` receives unset environment variables,
        which only count as problems if the section using them is not disabled."""
        if not isinstance(data, dict):
            return self.fail(path or "config", "a table", data)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("toml", True)}
        extra_field: str | None = getattr(cls, "extra_tables_field", None)
        kwargs: dict[str, Any] = {extra_field: {}} if extra_field else {}
        local: list[tuple[str, str]] = []
        bad: set[str] = set()
        for key, raw in data.items():
            sub = _join(path, key)
            f = fields.get(key)
            if f is None and extra_field and isinstance(raw, dict) and not _is_env_ref(raw):
                kwargs[extra_field][key] = raw
                self.plugin_secrets(raw, sub)
                continue
            if f is None:
                close = difflib.get_close_matches(key, list(fields), n=1)
                self.problems.append(
                    f'{sub}: unknown key (did you mean "{close[0]}"?)'
                    if close
                    else f"{sub}: unknown key"
                )
                continue
            check = f.metadata.get("check")
            if f.metadata.get("secret"):
                value = self.secret(raw, hints[key], sub, local, check)
                check = None  # applied by secret()
            else:
                value = self.value(raw, hints[key], sub, local)
            if value is not _INVALID and value is not None and check is not None:
                try:
                    value = check(value)
                except ValueError as exc:
                    self.problems.append(f"{sub}: {exc}")
                    value = _INVALID
            if value is _INVALID:
                bad.add(sub)
            else:
                kwargs[key] = value
        complete = True
        for name, f in fields.items():
            if name in kwargs:
                continue
            if not _has_default(f):
                complete = False
                if _join(path, name) not in bad:
                    self.problems.append(f"{_join(path, name)}: required")
            elif hints[name] is Path:
                # A default path is relative to the config too, like one written out.
                kwargs[name] = self.base_dir / f.default
            elif dataclasses.is_dataclass(hints[name]):
                # Walk an omitted section too, so its own defaults (paths) are resolved.
                kwargs[name] = self.dataclass(hints[name], {}, _join(path, name), pending)
        if not complete:
            pending.extend(local)
            return _INVALID
        result = cls(**kwargs)
        flagged = bad | {p for p, _ in local}
        for key, message in getattr(result, "problems", list)():
            if _join(path, key) not in flagged:
                self.problems.append(f"{_join(path, key)}: {message}")
        if getattr(result, "enabled", True) is not False:
            pending.extend(local)
        return result

    def value(self, raw: Any, hint: Any, path: str, pending: list[tuple[str, str]]) -> Any:
        """Convert one value to ``hint``, or report it and return ``_INVALID``."""
        if hint is Any:
            return raw
        if _is_env_ref(raw):
            return self.env(raw["env"], hint, path, pending)
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            inner = next(a for a in args if a is not type(None))
            # TOML has no null, so `key = false` switches an optional setting off.
            if raw is False and inner is not bool:
                return None
            return self.value(raw, inner, path, pending)
        if dataclasses.is_dataclass(hint):
            return self.dataclass(typing.cast(type, hint), raw, path, pending)
        if origin in (list, tuple):
            if not isinstance(raw, list):
                return self.fail(path, "a list", raw)
            items = [self.value(v, args[0], f"{path}[{i}]", pending) for i, v in enumerate(raw)]
            # Bad items are already reported; the rest still get their cross-field checks.
            items = [item for item in items if item is not _INVALID]
            return items if origin is list else tuple(items)
        if origin is dict or hint is dict:
            if not isinstance(raw, dict):
                return self.fail(path, "a table", raw)
            if hint is dict:
                return raw
            table = {k: self.value(v, args[1], _join(path, k), pending) for k, v in raw.items()}
            return {k: v for k, v in table.items() if v is not _INVALID}
        return self.scalar(raw, hint, path)

    def env(self, name: Any, hint: Any, path: str, pending: list[tuple[str, str]]) -> Any:
        if not isinstance(name, str) or not name:
            return self.fail(path, "an environment variable name in { env = ... }", name)
        text = self.environ.get(name)
        if not text:
            pending.append((path, f"environment variable {name} is not set"))
            return _INVALID
        # Environment variables are text; numbers and switches may come from them too.
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        inner = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        raw: Any = text
        try:
            if inner is bool and text.lower() in ("true", "false"):
                raw = text.lower() == "true"
            elif inner in (int, float):
                raw = inner(text)
        except ValueError:
            pass
        return self.value(raw, hint, path, pending)

    def scalar(self, raw: Any, hint: Any, path: str) -> Any:
        if hint not in _SCALARS:
            raise TypeError(f"config schema: unsupported type {hint!r} at {path}")
        expected, accepted, convert = _SCALARS[hint]
        # bool is an int subclass in Python, but `port = true` is not a port.
        if not isinstance(raw, accepted) or (isinstance(raw, bool) and hint is not bool):
            return self.fail(path, expected, raw)
        try:
            value = convert(raw)
        except ValueError as exc:
            self.problems.append(f"{path}: {exc}")
            return _INVALID
        if hint is Path:
            value = self.base_dir / value.expanduser()
        return value


def settings_from_dict(
    data: Mapping[str, Any],
    base_dir: Path,
    source: Path | None = None,
    *,
    warnings: list[str] | None = None,
) -> Settings:
    """Build settings from already-parsed TOML data; relative paths are under ``base_dir``.

    Raises ConfigError listing every problem. ``warnings``, if given, receives what is
    allowed but unwise, one line each: secrets written in the file as plain text.
    """
    walker = _Walker(Path(base_dir), os.environ)
    pending: list[tuple[str, str]] = []
    settings = walker.dataclass(Settings, dict(data), "", pending)
    if warnings is not None:
        warnings.extend(walker.warnings)
    problems = walker.problems + [f"{path}: {message}" for path, message in pending]
    if not problems and settings is not _INVALID:
        problems = _cross_section_problems(settings)
    if problems or settings is _INVALID:
        raise ConfigError(problems, source)
    return dataclasses.replace(settings, source=source)


def _cross_section_problems(settings: Settings) -> list[str]:
    """Checks that span sections (each section checks its own keys)."""
    problems = []
    channels = settings.channels
    if channels.twilio.enabled and not settings.bot.public_base_url:
        problems.append(
            "bot.public_base_url: required when channels.twilio.enabled is true "
            "(Twilio signs its webhooks over the public URL)"
        )
    if (
        channels.telegram.enabled
        and channels.telegram.mode == "webhook"
        and not settings.bot.public_base_url
    ):
        problems.append(
            'bot.public_base_url: required when channels.telegram.mode is "webhook" '
            "(updates arrive at public_base_url + /webhooks/telegram)"
        )
    if channels.simulator.demo:
        real = [name for name in ("twilio", "telegram") if getattr(channels, name).enabled]
        problems += [
            f"channels.simulator.demo: a demo panel has no real channels; "
            f"channels.{name}.enabled must be false"
            for name in real
        ]
    return problems


def load_settings(path: Path | None, *, warnings: list[str] | None = None) -> Settings:
    """Load and check a config file; ``None`` gives the built-in default (``./panelbot.db``).

    Raises ConfigError, whose lines start with the file path as given. ``warnings``: see
    :func:`settings_from_dict`.
    """
    if path is None:
        return settings_from_dict({}, Path.cwd(), None)
    path = Path(path)
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], path) from None
    except UnicodeDecodeError:
        raise ConfigError(["the file is not UTF-8 text"], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax error: {exc}"], path) from None
    source = path.absolute()
    try:
        return settings_from_dict(data, source.parent, source, warnings=warnings)
    except ConfigError as exc:
        raise ConfigError(exc.problems, path) from None


# --- showing and writing ---------------------------------------------------------------------


def settings_as_dict(value: Any, *, mask_secrets: bool = True) -> Any:
    """Settings (or any part of them) as JSON-ready data; secrets set are shown as ``***``,
    and so are the user and password of any URL (``https://***@host``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            masked = mask_secrets and f.metadata.get("secret") and item is not None
            out[f.name] = "***" if masked else settings_as_dict(item, mask_secrets=mask_secrets)
        return out
    if isinstance(value, dict):
        # Plugin sections are raw, so guess their secrets from the key names.
        return {
            k: "***"
            if mask_secrets and _SECRET_NAME.search(str(k)) and isinstance(v, str)
            else settings_as_dict(v, mask_secrets=mask_secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [settings_as_dict(v, mask_secrets=mask_secrets) for v in value]
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and mask_secrets:
        return mask_userinfo(value)
    return value


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes; TOML also forbids a raw DEL.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any, path: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else repr(value)
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v, f"{path}[]") for v in value) + "]"
    if isinstance(value, dict):
        pairs = [f"{_toml_key(k)} = {_toml_value(v, _join(path, k))}" for k, v in value.items()]
        return "{ " + ", ".join(pairs) + " }" if pairs else "{}"
    raise TypeError(f"dump_toml: cannot write {type(value).__name__} at {path or 'top level'}")


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and not _is_env_ref(value)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _dump_table(
    table: Mapping[str, Any], keys: list[str], header: str | None, lines: list[str]
) -> None:
    # Inside an array element, nested tables are written inline: they read better that way.
    in_array = header is not None and header.startswith("[[")
    nested = [k for k, v in table.items() if not in_array and (_is_table(v) or _is_table_array(v))]
    plain = [k for k in table if k not in nested]
    if header is not None and (plain or not nested or in_array):
        lines += ["", header]
    for key in plain:
        lines.append(f"{_toml_key(key)} = {_toml_value(table[key], '.'.join([*keys, key]))}")
    for key in nested:
        dotted = ".".join(_toml_key(k) for k in [*keys, key])
        items = [table[key]] if _is_table(table[key]) else table[key]
        for item in items:
            brackets = "[{}]" if _is_table(table[key]) else "[[{}]]"
            _dump_table(item, [*keys, key], brackets.format(dotted), lines)


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write simple data as TOML: tables, arrays of tables, strings, numbers, booleans, lists
    and inline ``{ env = "NAME" }`` tables (as ``panelbot demo`` needs). Raises TypeError."""
    lines: list[str] = []
    _dump_table(data, [], None, lines)
    return "\n".join(lines).lstrip("\n") + "\n"
