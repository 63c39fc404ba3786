"""The config file: loading, every kind of problem, the example, dump_toml and `config` commands."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib
import typing
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import (
    ConfigError,
    QuietHours,
    Settings,
    dump_toml,
    format_duration,
    load_settings,
    parse_duration,
    settings_from_dict,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.toml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path / "panelbot.toml", text))
    return info.value.problems


@pytest.fixture(autouse=True)
def _no_panelbot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own environment must not leak into what a test loads.
    for name in list(os.environ):
        if name.startswith(("PANELBOT_", "TWILIO_", "TELEGRAM_")):
            monkeypatch.delenv(name)


# --- loading ---------------------------------------------------------------------------------


def test_default_settings_use_panelbot_db_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None)
    assert settings.source is None
    assert settings.bot.database == tmp_path / "panelbot.db"
    # The simulator has no login: off unless a config (the demo's) turns it on.
    assert not settings.channels.simulator.enabled
    assert not settings.channels.simulator.allow_panellists
    assert not settings.channels.twilio.enabled
    assert not settings.channels.telegram.enabled
    assert settings.bot.locales == ["en"]
    assert settings.bot.quiet_hours == QuietHours(time(20, 0), time(9, 0))
    assert settings.bot.reminder_after == timedelta(hours=48)
    assert settings.outbox.retry_backoff == (
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=30),
    )
    assert settings.panel.fields == []


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = settings_from_dict({}, tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.bot.name = "changed"  # type: ignore[misc]


def test_source_records_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "panelbot.toml", '[bot]\nname = "Test panel"\n')
    settings = load_settings(path)
    assert settings.source == path
    assert settings.bot.name == "Test panel"


def test_relative_database_is_resolved_from_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config_dir = tmp_path / "deploy"
    write(config_dir / "a.toml", '[bot]\ndatabase = "data/panel.db"\n')
    write(config_dir / "b.toml", "[web]\nport = 9000\n")
    # Given relative to the cwd, the config's folder still anchors the database.
    assert load_settings(Path("deploy/a.toml")).bot.database == config_dir / "data/panel.db"
    assert load_settings(Path("deploy/b.toml")).bot.database == config_dir / "panelbot.db"


def test_absolute_database_is_kept(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere" / "panel.db"
    path = write(tmp_path / "panelbot.toml", f"[bot]\ndatabase = {json.dumps(str(database))}\n")
    assert load_settings(path).bot.database == database


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.toml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.toml'}: cannot read the file")


def test_toml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "panelbot.toml", '[bot]\nname = "ok"\ntimezone = = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"{path}: TOML syntax error")
    assert "line 3, column" in message


# --- problems --------------------------------------------------------------------------------


def test_misspelt_key_suggests_the_right_one(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[bot]\nnmae = "x"\n')
    assert problems == ['bot.nmae: unknown key (did you mean "name"?)']


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[web]\nzzz = 1\n") == ["web.zzz: unknown key"]


def test_unknown_section_is_reported(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[channel.twilio]\nenabled = true\n") == [
        'channel: unknown key (did you mean "channels"?)'
    ]


def test_wrong_type_names_the_key_path(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[channels.twilio]\nrate_per_second = "ten"\n')
    assert problems == ['channels.twilio.rate_per_second: expected a number, got "ten"']


def test_integer_is_accepted_for_a_number_but_not_a_bool_for_an_integer(tmp_path: Path) -> None:
    settings = settings_from_dict({"channels": {"twilio": {"rate_per_second": 5}}}, tmp_path)
    assert settings.channels.twilio.rate_per_second == 5.0
    assert isinstance(settings.channels.twilio.rate_per_second, float)
    assert problems_of(tmp_path, "[web]\nport = true\n") == [
        "web.port: expected an integer, got true"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "panelbot.toml",
        '[bot]\nnmae = "x"\ntimezone = "Mars/Olympus"\n'
        "[web]\nport = 70000\n"
        '[channels.simulator]\nenabled = "yes"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert all(line.startswith(f"{path}: ") for line in lines)
    joined = "\n".join(lines)
    assert "bot.nmae: unknown key" in joined
    assert 'bot.timezone: unknown timezone "Mars/Olympus"' in joined
    assert "web.port: must be between 1 and 65535, got 70000" in joined
    assert 'channels.simulator.enabled: expected true or false, got "yes"' in joined


def test_timezone_typo_gets_a_suggestion(tmp_path: Path) -> None:
    assert problems_of(tmp_path, '[bot]\ntimezone = "Europe/Londn"\n') == [
        'bot.timezone: unknown timezone "Europe/Londn" (did you mean "Europe/London"?)'
    ]


def test_unknown_locale_is_rejected(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, '[bot]\nlocales = ["en", "xx"]\n')
    assert problem.startswith('bot.locales: unknown locale "xx"')


def test_locales_default_to_the_default_locale(tmp_path: Path) -> None:
    settings = settings_from_dict({"bot": {"default_locale": "cy"}}, tmp_path)
    assert settings.bot.locales == ["cy"]
    regional = settings_from_dict(
        {"bot": {"locales": ["en-GB", "cy"], "default_locale": "cy"}}, tmp_path
    )
    assert regional.bot.locales == ["en-GB", "cy"]


def test_default_locale_must_be_one_of_the_locales(tmp_path: Path) -> None:
    assert problems_of(tmp_path, '[bot]\ndefault_locale = "en"\nlocales = ["cy"]\n') == [
        'bot.default_locale: "en" is not one of locales'
    ]


def test_public_base_url_needs_a_scheme_and_loses_its_trailing_slash(tmp_path: Path) -> None:
    settings = settings_from_dict(
        {"bot": {"public_base_url": "https://panel.example.org/"}}, tmp_path
    )
    assert settings.bot.public_base_url == "https://panel.example.org"
    (problem,) = problems_of(tmp_path, '[bot]\npublic_base_url = "panel.example.org"\n')
    assert problem == 'bot.public_base_url: "panel.example.org" must start with http:// or https://'


# --- secrets from the environment ------------------------------------------------------------

TWILIO_ENABLED = """
[bot]
public_base_url = "https://panel.example.org"

[channels.twilio]
enabled = true
account_sid = { env = "TWILIO_ACCOUNT_SID" }
auth_token = { env = "TWILIO_AUTH_TOKEN" }
from_number = "+447400100000"
"""


def test_env_secret_is_read_at_load_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "s3cret")
    settings = load_settings(write(tmp_path / "panelbot.toml", TWILIO_ENABLED))
    assert settings.channels.twilio.account_sid == "AC123"
    assert settings.channels.twilio.auth_token == "s3cret"


def test_missing_env_for_an_enabled_channel_names_key_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    # Only the unset variable is reported, not also "auth_token: required when enabled".
    assert problems_of(tmp_path, TWILIO_ENABLED) == [
        "channels.twilio.auth_token: environment variable TWILIO_AUTH_TOKEN is not set"
    ]


def test_missing_env_for_a_disabled_channel_is_fine(tmp_path: Path) -> None:
    text = TWILIO_ENABLED.replace("enabled = true", "enabled = false")
    settings = load_settings(write(tmp_path / "panelbot.toml", text))
    assert settings.channels.twilio.auth_token is None
    assert settings.channels.twilio.account_sid is None


def test_missing_env_outside_a_channel_is_an_error(tmp_path: Path) -> None:
    assert problems_of(tmp_path, '[bot]\nsecret_key = { env = "PANELBOT_SECRET_KEY" }\n') == [
        "bot.secret_key: environment variable PANELBOT_SECRET_KEY is not set"
    ]


def test_env_value_is_converted_to_the_field_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PANELBOT_PORT", "9001")
    settings = settings_from_dict({"web": {"port": {"env": "PANELBOT_PORT"}}}, tmp_path)
    assert settings.web.port == 9001


def test_enabled_twilio_needs_exactly_one_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "s3cret")
    both = TWILIO_ENABLED + 'messaging_service_sid = "MG1"\n'
    expected = [
        "channels.twilio.from_number: set exactly one of from_number, messaging_service_sid"
    ]
    assert problems_of(tmp_path, both) == expected
    neither = TWILIO_ENABLED.replace('from_number = "+447400100000"', "")
    assert problems_of(tmp_path, neither) == expected


def test_provider_webhooks_need_the_public_base_url(tmp_path: Path) -> None:
    data = {
        "channels": {
            "twilio": {
                "enabled": True,
                "account_sid": "AC1",
                "auth_token": "t",
                "from_number": "+447400100000",
            },
            "telegram": {"enabled": True, "token": "1:a", "secret_token": "s"},
        }
    }
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data, tmp_path)
    assert [p.split(":")[0] for p in info.value.problems] == ["bot.public_base_url"] * 2
    data["bot"] = {"public_base_url": "https://panel.example.org"}
    assert settings_from_dict(data, tmp_path).channels.twilio.enabled


def test_enabled_telegram_needs_token_and_webhook_secret(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[channels.telegram]\nenabled = true\n")
    assert problems == [
        "channels.telegram.token: required when enabled",
        'channels.telegram.secret_token: required when mode is "webhook"',
    ]
    polling = {"channels": {"telegram": {"enabled": True, "token": "t", "mode": "polling"}}}
    assert settings_from_dict(polling, tmp_path).channels.telegram.mode == "polling"
    (problem,) = problems_of(tmp_path, '[channels.telegram]\nmode = "push"\n')
    assert problem == 'channels.telegram.mode: must be "webhook" or "polling", got "push"'


# --- quiet hours and durations ---------------------------------------------------------------


def test_quiet_hours_crossing_midnight() -> None:
    quiet = QuietHours(time(20, 0), time(9, 0))
    assert quiet.contains(time(20, 0))
    assert quiet.contains(time(23, 59))
    assert quiet.contains(time(0, 0))
    assert quiet.contains(time(8, 59))
    assert not quiet.contains(time(9, 0))
    assert not quiet.contains(time(12, 0))
    assert not quiet.contains(time(19, 59))


def test_quiet_hours_within_one_day() -> None:
    quiet = QuietHours(time(13, 0), time(14, 0))
    assert quiet.contains(time(13, 30))
    assert not quiet.contains(time(14, 0))
    assert not quiet.contains(time(2, 0))


def test_quiet_hours_from_toml(tmp_path: Path) -> None:
    text = '[bot]\nquiet_hours = { start = "21:30", end = "08:00" }\n'
    quiet = load_settings(write(tmp_path / "panelbot.toml", text)).bot.quiet_hours
    assert quiet == QuietHours(time(21, 30), time(8, 0))
    off = load_settings(write(tmp_path / "off.toml", "[bot]\nquiet_hours = false\n"))
    assert off.bot.quiet_hours is None
    assert problems_of(tmp_path, '[bot]\nquiet_hours = { start = "25:00", end = "08:00" }\n') == [
        'bot.quiet_hours.start: invalid time "25:00": use 24-hour "HH:MM", e.g. "20:00"'
    ]
    assert problems_of(tmp_path, '[bot]\nquiet_hours = { start = "20:00" }\n') == [
        "bot.quiet_hours.end: required"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48h", timedelta(hours=48)),
        ("90m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("30s", timedelta(seconds=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1d 12h 30m", timedelta(days=1, hours=12, minutes=30)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "48", "h", "1.5h", "2 days", "12h1d", "-1h", "1h1h"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration_inverts_parse_duration() -> None:
    for text in ["2d", "1d12h", "1h30m", "30s", "0s"]:
        assert format_duration(parse_duration(text)) == text
    assert format_duration(parse_duration("48h")) == "2d"


def test_durations_in_the_config(tmp_path: Path) -> None:
    text = '[bot]\nreminder_after = "36h"\n[outbox]\nretry_backoff = ["30s", "2m"]\n'
    settings = load_settings(write(tmp_path / "panelbot.toml", text))
    assert settings.bot.reminder_after == timedelta(hours=36)
    assert settings.outbox.retry_backoff == (timedelta(seconds=30), timedelta(minutes=2))
    (problem,) = problems_of(tmp_path, '[bot]\nclose_after = "a fortnight"\n')
    assert problem.startswith('bot.close_after: invalid duration "a fortnight"')
    (problem,) = problems_of(tmp_path, '[outbox]\nretry_backoff = ["1m", 5]\n')
    assert problem == 'outbox.retry_backoff[1]: expected a duration like "48h", got 5'
    assert problems_of(tmp_path, "[outbox]\nretry_backoff = []\n") == [
        'outbox.retry_backoff: needs at least one duration, e.g. ["1m"]'
    ]


# --- panel fields and plugins ----------------------------------------------------------------


def test_panel_fields(tmp_path: Path) -> None:
    text = """
[[panel.fields]]
name = "sex"
values = ["female", "male"]
text.en = "What is your sex?"
labels.cy = ["Benyw", "Gwryw"]
"""
    (field,) = load_settings(write(tmp_path / "panelbot.toml", text)).panel.fields
    assert field.name == "sex"
    assert field.values == ["female", "male"]
    assert field.text == {"en": "What is your sex?"}
    assert field.labels == {"cy": ["Benyw", "Gwryw"]}


def test_panel_field_problems(tmp_path: Path) -> None:
    text = """
[[panel.fields]]
name = "Age Band"
values = ["a", "a"]
labels.en = ["A"]

[[panel.fields]]
name = "sex"
values = []

[[panel.fields]]
name = "sex"
values = ["x"]

[[panel.fields]]
values = ["x"]
"""
    assert problems_of(tmp_path, text) == [
        'panel.fields[0].name: "Age Band" must be lower-case letters, digits and _',
        "panel.fields[0].values: each value may appear only once",
        "panel.fields[0].labels.en: needs one label per value: 2, got 1",
        "panel.fields[1].values: must not be empty",
        "panel.fields[3].name: required",
        'panel.fields: duplicate field name "sex"',
    ]


def test_plugin_sections_are_kept_raw(tmp_path: Path) -> None:
    text = """
[plugins]
disabled = ["translations"]

[plugins.quotas]
tolerance = 0.1
fields = ["age_band"]
"""
    plugins = load_settings(write(tmp_path / "panelbot.toml", text)).plugins
    assert plugins.disabled == ["translations"]
    assert plugins.for_plugin("quotas") == {"tolerance": 0.1, "fields": ["age_band"]}
    assert plugins.for_plugin("impact_updates") == {}
    assert problems_of(tmp_path, "[plugins]\nquotas = 3\n") == ["plugins.quotas: unknown key"]


# --- dump_toml -------------------------------------------------------------------------------


def test_dump_toml_round_trips_through_tomllib() -> None:
    data: dict[str, Any] = {
        "title": 'Quotes " and \\ backslash\nand a newline, café',
        "bot": {
            "name": "Demo panel",
            "port": 8080,
            "rate": 0.0463,
            "on": True,
            "off": False,
            "locales": ["en", "cy"],
            "secret_key": {"env": "PANELBOT_SECRET_KEY"},
            "quiet_hours": {"start": "20:00", "end": "09:00"},
        },
        "panel": {
            "fields": [
                {"name": "sex", "values": ["female", "male"], "text": {"en": "Sex?"}},
                {"name": "locality", "values": ["a"], "labels": {"en": ["A"]}},
            ]
        },
        "channels": {"twilio": {"enabled": False, "auth_token": {"env": "TWILIO_AUTH_TOKEN"}}},
        "plugins": {"disabled": [], "quotas": {}, "odd key": {"x.y": [1, 2]}},
        "empty_list": [],
    }
    text = dump_toml(data)
    assert tomllib.loads(text) == data
    assert 'auth_token = { env = "TWILIO_AUTH_TOKEN" }' in text
    assert "[[panel.fields]]" in text


def test_dump_toml_output_loads_as_settings(tmp_path: Path) -> None:
    data = {
        "bot": {"name": "Demo", "database": "demo.db", "quiet_hours": False},
        "panel": {"fields": [{"name": "sex", "values": ["female", "male"]}]},
    }
    path = write(tmp_path / "demo.toml", dump_toml(data))
    settings = load_settings(path)
    assert settings.bot.database == tmp_path / "demo.db"
    assert settings.bot.quiet_hours is None


def test_dump_toml_refuses_what_toml_cannot_hold() -> None:
    with pytest.raises(TypeError, match=r"bot\.x"):
        dump_toml({"bot": {"x": None}})


# --- the example config ----------------------------------------------------------------------


def test_example_config_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert [f.name for f in settings.panel.fields] == [
        "age_band",
        "sex",
        "ethnicity",
        "imd_quintile",
        "locality",
    ]
    assert all(f.text.get("en") for f in settings.panel.fields)
    assert not settings.channels.twilio.enabled
    assert not settings.channels.telegram.enabled
    assert settings.plugins.config, "the example should show a plugin's own section"


def _schema_paths(cls: type, prefix: str = "") -> list[str]:
    """Every TOML key path the settings schema reads, e.g. ``bot.quiet_hours.start``."""
    paths = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("toml", True):
            continue
        path = f"{prefix}{f.name}"
        paths.append(path)
        for inner in (hints[f.name], *typing.get_args(hints[f.name])):
            if dataclasses.is_dataclass(inner):
                paths += _schema_paths(typing.cast(type, inner), f"{path}.")
    return paths


def _present(data: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    if isinstance(data, list):
        return any(_present(item, parts) for item in data)
    return isinstance(data, dict) and parts[0] in data and _present(data[parts[0]], parts[1:])


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    undocumented = []
    for path in _schema_paths(Settings):
        leaf = path.rsplit(".", 1)[-1]
        # A key is documented if it is set, or shown commented out (an alternative).
        commented = re.search(rf"^\s*#\s*{leaf}\s*=", text, re.MULTILINE)
        if not _present(data, path.split(".")) and not commented:
            undocumented.append(path)
    assert undocumented == []


# --- the CLI ---------------------------------------------------------------------------------


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PANELBOT_")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_check_ok(tmp_path: Path) -> None:
    path = write(tmp_path / "panelbot.toml", '[bot]\nlocales = ["en", "cy"]\n')
    result = run_cli("-c", str(path), "config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"OK: {path}",
        "locales: en, cy; channels: none; panel fields: 0",
    ]


def test_config_check_lists_every_problem_without_a_traceback(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.toml", '[bot]\nnmae = "x"\n[channels.twilio]\nrate_per_second = "ten"\n'
    )
    result = run_cli("-c", str(path), "config", "check", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f'{path}: bot.nmae: unknown key (did you mean "name"?)',
        f'{path}: channels.twilio.rate_per_second: expected a number, got "ten"',
    ]


def test_config_check_reports_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "[bot\n")
    result = run_cli("-c", str(path), "config", "check", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "line 1, column" in result.stderr


def test_config_discovery_order(tmp_path: Path) -> None:
    def checked(*args: str, env: dict[str, str] | None = None) -> str:
        result = run_cli(*args, "config", "check", cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[0]

    for name in ("cli.toml", "env.toml", "panelbot.toml"):
        write(tmp_path / name, f'[bot]\nname = "{name}"\n')
    env = {"PANELBOT_CONFIG": "env.toml"}
    assert checked("-c", "cli.toml", env=env) == f"OK: {tmp_path / 'cli.toml'}"
    assert checked(env=env) == f"OK: {tmp_path / 'env.toml'}"
    assert checked() == f"OK: {tmp_path / 'panelbot.toml'}"
    (tmp_path / "panelbot.toml").unlink()
    assert checked() == "OK: built-in default"


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path / "panelbot.toml",
        '[bot]\nsecret_key = { env = "PANELBOT_SECRET_KEY" }\n'
        '[channels.telegram]\nenabled = true\nmode = "polling"\ntoken = "123:abc"\n',
    )
    result = run_cli(
        "-c", str(path), "config", "show", cwd=tmp_path, env={"PANELBOT_SECRET_KEY": "hush"}
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["bot"]["secret_key"] == "***"
    assert shown["channels"]["telegram"]["token"] == "***"
    assert shown["channels"]["telegram"]["secret_token"] is None
    assert shown["bot"]["database"] == str(tmp_path / "panelbot.db")
    assert shown["bot"]["reminder_after"] == "2d"
    assert "hush" not in result.stdout and "123:abc" not in result.stdout


# --- secrets are never shown, and belong in the environment -----------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("auth_token = 12345", "a number"),
        ("auth_token = 12345.678", "a number"),
        ('auth_token = ["s3cr3t-in-a-list"]', "a list"),
        ('auth_token = { value = "s3cr3t-in-a-table" }', "a table"),
    ],
)
def test_config_check_never_echoes_a_wrongly_typed_secret(
    tmp_path: Path, line: str, kind: str
) -> None:
    path = write(tmp_path / "panelbot.toml", f"[channels.twilio]\n{line}\n")
    result = run_cli("-c", str(path), "config", "check", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}: channels.twilio.auth_token: expected a string or "
        f'{{ env = "NAME" }}, got {kind} (not shown: it is a secret)'
    ]
    for secret in ("12345", "s3cr3t"):
        assert secret not in result.stderr and secret not in result.stdout


def test_a_wrongly_typed_setting_that_is_no_secret_is_still_shown(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[channels.twilio]\naccount_sid = 12345\n") == [
        "channels.twilio.account_sid: expected a string, got 12345"
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[channels.twilio]\nauth_token = "plain-secret"\n', "channels.twilio.auth_token"),
        ('[channels.telegram]\ntoken = "123:abc"\n', "channels.telegram.token"),
        ('[channels.telegram]\nsecret_token = "s3cr3t"\n', "channels.telegram.secret_token"),
        ('[bot]\nsecret_key = "0123456789abcdef"\n', "bot.secret_key"),
        ('[plugins.survey_sync]\napi_key = "k-123"\n', "plugins.survey_sync.api_key"),
        ('[plugins.crm.auth]\npassword = "hunter22"\n', "plugins.crm.auth.password"),
    ],
)
def test_config_check_warns_of_a_secret_in_plain_text(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path / "panelbot.toml", text)

    result = run_cli("-c", str(path), "config", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"OK: {path}")
    [warning] = result.stderr.splitlines()
    assert warning == (
        f"{path}: warning: {key}: a secret in plain text in the file; write "
        '{ env = "NAME" } and set NAME in the environment (secrets never go in the file)'
    )

    strict = run_cli("-c", str(path), "config", "check", "--strict", cwd=tmp_path)
    assert strict.returncode == 1
    assert strict.stderr.splitlines() == [warning, f"{path}: 1 warning (--strict)"]
    assert "OK" not in strict.stdout


def test_secrets_from_the_environment_and_other_keys_give_no_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path / "panelbot.toml",
        '[channels.twilio]\naccount_sid = "AC123"\nauth_token = { env = "TWILIO_AUTH_TOKEN" }\n'
        '[plugins.survey_sync]\napi_key = { env = "SYNC_KEY" }\nbase_url = "https://x.org"\n',
    )
    result = run_cli("-c", str(path), "config", "check", "--strict", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    example = run_cli("-c", str(EXAMPLE), "config", "check", "--strict", cwd=tmp_path)
    assert example.returncode == 0, example.stderr


def test_config_show_and_check_hide_the_userinfo_of_urls(tmp_path: Path) -> None:
    path = write(
        tmp_path / "panelbot.toml",
        '[bot]\npublic_base_url = "https://panel:pa55w0rd@bot.example.org/"\n'
        '[channels.twilio]\napi_base_url = "https://AC1:tok@en@api.twilio.example"\n'
        '[plugins.survey_sync]\nurl = "postgres://sync:hunter22@db.example/panel"\n'
        'urls = ["https://a:b1b2b3@one.example", "https://two.example/path@x"]\n',
    )
    result = run_cli("-c", str(path), "config", "show", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["bot"]["public_base_url"] == "https://***@bot.example.org"
    assert shown["channels"]["twilio"]["api_base_url"] == "https://***@api.twilio.example"
    sync = shown["plugins"]["config"]["survey_sync"]
    assert sync["url"] == "postgres://***@db.example/panel"
    assert sync["urls"] == ["https://***@one.example", "https://two.example/path@x"]
    for secret in ("pa55w0rd", "tok@en", "hunter22", "b1b2b3"):
        assert secret not in result.stdout

    bad = write(tmp_path / "bad.toml", '[bot]\npublic_base_url = "ftp://panel:pa55w0rd@x.org"\n')
    check = run_cli("-c", str(bad), "config", "check", cwd=tmp_path)
    assert check.returncode == 1
    assert "pa55w0rd" not in check.stderr and "ftp://***@x.org" in check.stderr
