"""`panelbot quotas report` through the real CLI, on a panel built through the real engine."""

from __future__ import annotations

import json
from pathlib import Path

from bot.app import Bot
from bot.config import load_settings
from plugins.quotas.report import needed_at_size
from tests.conftest import Chat
from tests.test_cli import run

CONFIG = """
[bot]
name = "Report Panel"
database = "panel.db"
quiet_hours = false

[[panel.fields]]
name = "age_band"
values = ["16-34", "35-64", "65+"]
text.en = "Which age group are you in?"

[[panel.fields]]
name = "sex"
values = ["female", "male"]
text.en = "What is your sex?"

[channels.simulator]
enabled = true

[plugins.quotas]
panel_size_target = 10
tolerance = 0.0

[plugins.quotas.population.age_band]
"16-34" = 0.3
"35-64" = 0.5
"65+" = 0.2

[plugins.quotas.population.sex]
female = 0.5
male = 0.5
"""


async def build_panel(tmp_path: Path) -> Path:
    path = tmp_path / "panelbot.toml"
    path.write_text(CONFIG)
    bot = await Bot.create(load_settings(path))
    try:
        chat = Chat(bot)
        # Older people join first: 65+ fills its 2 places, a third waits.
        people = [("3", "1"), ("3", "2"), ("3", "1"), ("2", "1"), ("2", "2"), ("2", "1")]
        for i, answers in enumerate(people):
            await chat.join(f"sim:p{i}", answers)
    finally:
        await bot.stop()
    return path


async def test_report_shows_gaps_needs_and_the_waiting(tmp_path: Path) -> None:
    path = await build_panel(tmp_path)
    result = run(path, "quotas", "report", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["active"], report["waitlisted"], report["panel_size_target"]) == (5, 1, 10)
    age = {row["value"]: row for row in report["fields"]["age_band"]}
    assert age["65+"]["active"] == 2 and age["65+"]["waitlisted"] == 1
    assert age["65+"]["panel_share"] == 0.4 and age["65+"]["gap_pp"] == 20.0
    assert age["16-34"]["active"] == 0 and age["16-34"]["gap_pp"] == -30.0
    assert age["16-34"]["needed_for_target"] == 3  # 30% of 10
    # 30% of a panel of 5 that grows with each one added: 3/8 = 37.5% (2/7 = 28.6% is short).
    assert age["16-34"]["needed_at_current_size"] == 3
    assert age["35-64"]["needed_for_target"] == 2 and age["35-64"]["needed_at_current_size"] == 0
    sex = {row["value"]: row for row in report["fields"]["sex"]}
    assert (sex["female"]["active"], sex["male"]["active"]) == (3, 2)

    table = run(path, "quotas", "report")
    assert table.returncode == 0, table.stderr
    assert "Panel: 5 active of a target of 10; 1 waitlisted" in table.stdout
    line = next(x for x in table.stdout.splitlines() if x.strip().startswith("65+"))
    assert line.split() == ["65+", "20.0%", "2", "(full)", "40.0%", "+20.0", "0", "0", "1"]


def test_no_targets_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "panelbot.toml"
    path.write_text(CONFIG.split("[plugins.quotas]")[0])
    result = run(path, "quotas", "report")
    assert result.returncode == 1
    assert result.stderr.startswith("panelbot: no population targets configured")
    assert len(result.stderr.splitlines()) == 1


def test_bad_targets_and_missing_panel_are_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "panelbot.toml"
    path.write_text(CONFIG.replace("female = 0.5", "female = 0.7"))
    result = run(path, "quotas", "report")
    assert result.returncode == 1
    assert "plugins.quotas.population.sex: shares sum to 1.2, not 1" in result.stderr
    path.write_text(CONFIG)
    result = run(path, "quotas", "report")
    assert result.returncode == 1
    assert "no database at" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "panel.db").exists()


def test_needed_at_current_size() -> None:
    assert needed_at_size(0.5, 1, 4) == 2  # 3 of 6
    assert needed_at_size(0.5, 2, 4) == 0
    assert needed_at_size(0.2, 0, 0) == 0
    assert needed_at_size(0.25, 0, 3) == 1  # 1 of 4
