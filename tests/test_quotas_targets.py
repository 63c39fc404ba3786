"""The quotas plugin's population targets: parsed, checked by `config check` and at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot, StartupError
from bot.config import Settings
from bot.hookspecs import hookimpl
from bot.plugins import load_plugins
from plugins.quotas import targets
from tests.conftest import make_settings
from tests.test_cli import run

AGE = {"16-24": 0.12, "25-34": 0.17, "35-44": 0.16, "45-54": 0.17, "55-64": 0.15}
AGE |= {"65-74": 0.12, "75+": 0.11}
SEX = {"female": 0.51, "male": 0.49, "other": 0.0, "prefer_not_to_say": 0.0}


def quotas(tmp_path: Path, **section: Any) -> Settings:
    return make_settings(tmp_path, plugins={"quotas": section})


def write_config(tmp_path: Path, quotas_toml: str) -> Path:
    path = tmp_path / "panelbot.toml"
    path.write_text(
        'bot = { database = "panel.db" }\n'
        "[[panel.fields]]\n"
        'name = "sex"\n'
        'values = ["female", "male"]\n'
        "[plugins.quotas]\n" + quotas_toml
    )
    return path


def test_good_targets_parse_with_their_caps(tmp_path: Path) -> None:
    settings = quotas(
        tmp_path,
        panel_size_target=1000,
        tolerance=0.05,
        population={"age_band": AGE, "sex": SEX},
    )
    assert targets.check_config(settings) == []
    loaded = targets.load(settings)
    assert loaded.population["sex"] == SEX
    assert loaded.target_count("age_band", "75+") == pytest.approx(110)
    assert loaded.cap("age_band", "35-44") == 168  # ceil(160 * 1.05)
    assert loaded.cap("sex", "female") == 536  # ceil(535.5)
    assert loaded.cap("sex", "other") is None  # a share of 0 caps nobody


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"population": {"sex": SEX}}, "plugins.quotas.panel_size_target", "required"),
        ({"panel_size_target": 0}, "plugins.quotas.panel_size_target", "whole number"),
        ({"panel_size_target": 10, "tolerance": 2}, "plugins.quotas.tolerance", "from 0 to 1"),
        (
            {"panel_size_target": 10, "population": {"shoe_size": {"9": 1.0}}},
            "plugins.quotas.population.shoe_size",
            "not a panel field",
        ),
        (
            {"panel_size_target": 10, "population": {"sex": {**SEX, "robot": 0.0}}},
            'plugins.quotas.population.sex."robot"',
            "not a value of the field",
        ),
        (
            {"panel_size_target": 10, "population": {"sex": {"female": 0.5, "male": 0.5}}},
            "plugins.quotas.population.sex",
            "no share for other, prefer_not_to_say",
        ),
        (
            {"panel_size_target": 10, "population": {"sex": {**SEX, "male": 0.46}}},
            "plugins.quotas.population.sex",
            "shares sum to 0.97, not 1",
        ),
        (
            {"panel_size_target": 10, "population": {"sex": {**SEX, "male": -0.1}}},
            'plugins.quotas.population.sex."male"',
            "from 0 to 1",
        ),
    ],
)
def test_each_problem_names_its_key(
    tmp_path: Path, section: dict[str, Any], key: str, words: str
) -> None:
    problems = targets.check_config(quotas(tmp_path, **section))
    assert len(problems) == 1, problems
    assert problems[0][0] == key
    assert words in problems[0][1]
    # A field with a problem is left out of the targets others use.
    if key.startswith("plugins.quotas.population.sex"):
        assert "sex" not in (targets.population_targets(quotas(tmp_path, **section)) or {})


def test_shares_within_a_thousandth_of_one_pass(tmp_path: Path) -> None:
    near = {**SEX, "male": 0.4885}
    assert targets.check_config(quotas(tmp_path, panel_size_target=5, population={"sex": near}))
    close = {**SEX, "male": 0.4905}
    settings = quotas(tmp_path, panel_size_target=5, population={"sex": close})
    assert targets.check_config(settings) == []


def test_hook_check_config(tmp_path: Path) -> None:
    """`config check` and bot start both ask the plugins; a problem names key and message."""
    bad = write_config(
        tmp_path, "panel_size_target = 100\npopulation.sex = { female = 0.6, male = 0.3 }\n"
    )
    result = run(bad, "config", "check")
    assert result.returncode == 1
    assert f"{bad}: plugins.quotas.population.sex: shares sum to 0.9, not 1" in result.stderr
    assert "OK" not in result.stdout

    good = write_config(
        tmp_path, "panel_size_target = 100\npopulation.sex = { female = 0.51, male = 0.49 }\n"
    )
    result = run(good, "config", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")


def test_config_check_refuses_an_unknown_key_naming_the_known_ones(tmp_path: Path) -> None:
    typo = write_config(
        tmp_path,
        "panel_size_target = 100\nweight_bound = [0.2, 5]\n"
        "population.sex = { female = 0.51, male = 0.49 }\n",
    )
    result = run(typo, "config", "check")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{typo}: plugins.quotas.weight_bound: unknown key; known: ")
    for known in ("min_days_between_invitations", "panel_size_target", "weight_bounds"):
        assert known in line
    every = write_config(
        tmp_path,
        "panel_size_target = 100\ntolerance = 0.05\nweight_bounds = [0.2, 5]\n"
        "weight_tolerance = 1e-6\nweight_max_iterations = 1000\n"
        "oversample_low_responders = true\nmin_days_between_invitations = 21\n"
        "population.sex = { female = 0.51, male = 0.49 }\n",
    )
    result = run(every, "config", "check")
    assert result.returncode == 0, result.stderr


async def test_hook_check_config_stops_the_bot(tmp_path: Path) -> None:
    class Strict:
        @hookimpl
        def panelbot_check_config(self, settings: Settings) -> list[tuple[str, str]]:
            return [("plugins.strict.level", "must be high")]

    plugins = load_plugins(entry_points=False)
    plugins.register(Strict(), name="strict")
    with pytest.raises(StartupError, match=r"plugins\.strict\.level: must be high"):
        await Bot.create(make_settings(tmp_path), plugins=plugins)
    assert not (tmp_path / "panel.db").exists()  # stopped before opening the database


def test_a_bad_quota_config_stops_serve_with_one_line(tmp_path: Path) -> None:
    bad = write_config(tmp_path, "panel_size_target = -3\n")
    (tmp_path / "panel.db").touch()  # commands that open the panel need its file
    result = run(bad, "panel", "export")
    assert result.returncode == 1
    assert "plugins.quotas.panel_size_target: must be a whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_hook_population_targets(tmp_path: Path) -> None:
    settings = quotas(tmp_path, panel_size_target=500, population={"age_band": AGE})
    plugins = load_plugins(entry_points=False)
    answers = dict(plugins.call_each_sync("panelbot_population_targets", settings=settings))
    assert answers["quotas"] == {"age_band": AGE}
    # Without targets the plugin has no opinion, so another plugin's answer can win.
    answers = dict(
        plugins.call_each_sync("panelbot_population_targets", settings=make_settings(tmp_path))
    )
    assert "quotas" not in answers
