"""Stratified survey samples (issue 12 part 3): the quotas plugin's panelbot_select_sample,
``survey launch --sample N --stratify-by F1,F2``, the fatigue rule, and refusals. Real SQLite
files, the real bot and the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import Bot
from bot.engine.waves import WaveError, launch
from bot.models import iso, utcnow
from bot.panel import import_parsed
from bot.panel_csv import parse_panel_csv
from bot.storage import wave_stats
from plugins.quotas.sampling import joint_shares
from tests.conftest import REPO, add_survey, make_settings

SURVEY = REPO / "tests" / "data" / "every-type.toml"

FIELDS = [
    {"name": "sex", "values": ["female", "male"], "text": {"en": "Sex?"}},
    {"name": "area", "values": ["north", "south"], "text": {"en": "Area?"}},
]
POPULATION = {"sex": {"female": 0.5, "male": 0.5}, "area": {"north": 0.25, "south": 0.75}}


def quotas(**extra: Any) -> dict[str, Any]:
    return {"quotas": {"panel_size_target": 10000, "population": POPULATION, **extra}}


async def make_bot(tmp_path: Path, **quota_keys: Any) -> Bot:
    settings = make_settings(tmp_path, panel={"fields": FIELDS}, plugins=quotas(**quota_keys))
    return await Bot.create(settings)


def panel_csv(cells: dict[tuple[str, str], int], start: int = 1000) -> str:
    lines = ["telegram_chat_id,locale,consent_at,sex,area"]
    n = start
    for (sex, area), count in cells.items():
        for _ in range(count):
            n += 1
            lines.append(f"{n},en,2026-01-01,{sex},{area}")
    return "\n".join(lines) + "\n"


async def import_panel(bot: Bot, cells: dict[tuple[str, str], int]) -> None:
    parsed = parse_panel_csv(panel_csv(cells).encode(), bot.settings)
    report = await import_parsed(bot.db, bot.hash_key, bot.settings, parsed)
    assert not report.problems


async def bot_without_quotas(tmp_path: Path, plugin: str = "", name: str = "sampler") -> Bot:
    """The quotas plugin disabled and, if given, ``plugin`` (a local plugin's source, saved as
    NAME.py) loaded; three women in the north on the panel and the every-type survey added."""
    plugins: dict[str, Any] = {"disabled": ["quotas"]}
    if plugin:
        folder = tmp_path / "plugins.d"
        folder.mkdir()
        (folder / f"{name}.py").write_text(plugin, encoding="utf-8")
        plugins["directories"] = [str(folder)]
    bot = await Bot.create(make_settings(tmp_path, panel={"fields": FIELDS}, plugins=plugins))
    try:
        await import_panel(bot, {("female", "north"): 3})
        await add_survey(bot, SURVEY)
    except BaseException:
        await bot.stop()
        raise
    return bot


async def invited_cells(bot: Bot, wave_id: int) -> Counter[tuple[str, str]]:
    rows = await bot.db.fetchall(
        "SELECT p.demographics FROM invitations i JOIN panellists p ON p.id = i.panellist_id"
        " WHERE i.wave_id = ?",
        (wave_id,),
    )
    out: Counter[tuple[str, str]] = Counter()
    for r in rows:
        d = json.loads(r["demographics"])
        out[(d.get("sex", ""), d.get("area", ""))] += 1
    return out


BALANCED = {
    ("female", "north"): 40,
    ("female", "south"): 40,
    ("male", "north"): 40,
    ("male", "south"): 40,
    ("", "south"): 10,  # sex unknown
}


async def test_stratified_sample_is_exactly_n_and_proportional_to_the_population(
    tmp_path: Path,
) -> None:
    bot = await make_bot(tmp_path)
    try:
        await import_panel(bot, BALANCED)
        await add_survey(bot, SURVEY)
        wave_id = await launch(bot, "every-type", sample=40, stratify_by=["sex", "area"])
        got = await invited_cells(bot, wave_id)
        # 10 of 170 have no sex: their own cell, 40 x 10/170 = 2.35. The known cells share
        # 40 x 160/170 = 37.65 as the targets' product (1/8, 3/8, 1/8, 3/8): 4.71, 14.12,
        # 4.71, 14.12. Floors 4+14+4+14+2 = 38; the two largest remainders (.71, .71) get one.
        assert got == {
            ("female", "north"): 5,
            ("female", "south"): 14,
            ("male", "north"): 5,
            ("male", "south"): 14,
            ("", "south"): 2,
        }
        report = await wave_stats.sample_report(bot.db.conn, wave_id)
        assert report is not None and report["invited"] == 40 and report["eligible"] == 170
        cells = {c["cell"]: c for c in report["cells"]}
        assert cells["sex=female, area=south"]["invited"] == 14
        assert cells["sex=female, area=south"]["population_share"] == pytest.approx(
            0.375 * 160 / 170, abs=1e-6
        )
        assert cells["unknown"]["invited"] == 2
        assert not any("fewer eligible people" in note for note in report["notes"])
    finally:
        await bot.stop()


async def test_a_short_cell_invites_all_and_its_remainder_goes_to_the_others(
    tmp_path: Path,
) -> None:
    bot = await make_bot(tmp_path)
    try:
        await import_panel(
            bot,
            {
                ("female", "north"): 30,
                ("female", "south"): 30,
                ("male", "north"): 30,
                ("male", "south"): 4,
            },
        )
        await add_survey(bot, SURVEY)
        wave_id = await launch(bot, "every-type", sample=40, stratify_by=["sex", "area"])
        got = await invited_cells(bot, wave_id)
        assert sum(got.values()) == 40
        # The panel's mix (30, 30, 30, 4) raked to the margins (sex 1:1, area 1:3) gives the
        # cells 0.043, 0.457, 0.207, 0.293 (each margin exact; see the next test).
        # male/south wants 11.7 and has 4; the other 36 go 0.043 : 0.457 : 0.207 ->
        # 2.1, 23.0, 10.9 -> 2, 23, 11.
        assert got == {
            ("female", "north"): 2,
            ("female", "south"): 23,
            ("male", "north"): 11,
            ("male", "south"): 4,
        }
        report = await wave_stats.sample_report(bot.db.conn, wave_id)
        assert any(
            note.startswith("1 cell(s) had fewer eligible people than their share")
            for note in report["notes"]
        )
    finally:
        await bot.stop()


def test_cell_shares_keep_the_panels_mix_and_match_every_margin() -> None:
    # Rows: age (young, old); columns: area (north, south). In the panel old people live
    # mostly in the north; the targets say 30% young and 60% north.
    shares, converged = joint_shares([10, 30, 50, 10], [[0.3, 0.7], [0.6, 0.4]])
    assert converged
    young_n, young_s, old_n, old_s = shares
    assert young_n + young_s == pytest.approx(0.3, abs=1e-8)
    assert young_n + old_n == pytest.approx(0.6, abs=1e-8)
    assert sum(shares) == pytest.approx(1.0, abs=1e-8)
    # The association survives: old people are still more northern than young ones.
    assert old_n / (old_n + old_s) > young_n / (young_n + young_s)
    # The odds ratio of the panel (10*10)/(30*50) is what raking preserves.
    assert (young_n * old_s) / (young_s * old_n) == pytest.approx(100 / 1500, rel=1e-6)
    # A uniform panel gives the product of the margins.
    uniform, _ = joint_shares([5, 5, 5, 5], [[0.3, 0.7], [0.6, 0.4]])
    assert uniform == pytest.approx([0.18, 0.12, 0.42, 0.28], abs=1e-8)
    # A value nobody in the panel holds still gets its margin.
    empty, converged = joint_shares([0, 0, 5, 5], [[0.3, 0.7], [0.6, 0.4]])
    assert converged and empty[0] + empty[1] == pytest.approx(0.3, abs=1e-8)


async def test_a_sample_larger_than_the_panel_invites_everyone_and_says_so(
    tmp_path: Path,
) -> None:
    bot = await make_bot(tmp_path)
    try:
        await import_panel(bot, {("female", "north"): 3, ("male", "south"): 2})
        await add_survey(bot, SURVEY)
        wave_id = await launch(bot, "every-type", sample=50, stratify_by=["area"])
        assert sum((await invited_cells(bot, wave_id)).values()) == 5
        report = await wave_stats.sample_report(bot.db.conn, wave_id)
        assert any("only 5 eligible for a sample of 50" in n for n in report["notes"])
    finally:
        await bot.stop()


async def _past_wave(
    bot: Bot, *, days_ago: float, outcomes: dict[int, bool], closed: bool = True
) -> int:
    """A past wave of the survey, with invitations sent ``days_ago`` (setup through SQL)."""
    when = iso(utcnow() - timedelta(days=days_ago))
    survey_row = (await bot.db.fetchone("SELECT id FROM surveys ORDER BY id LIMIT 1"))[0]
    async with bot.db.transaction() as conn:
        cur = await conn.execute(
            "INSERT INTO waves (survey_row_id, status, opens_at, closes_at, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (survey_row, "closed" if closed else "open", when, when, when),
        )
        wave_id = cur.lastrowid
        for pid, done in outcomes.items():
            await conn.execute(
                "INSERT INTO invitations (wave_id, panellist_id, status, created_at, sent_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (wave_id, pid, "completed" if done else "expired", when, when),
            )
    return int(wave_id)


async def _ids_by_area(bot: Bot) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in await bot.db.fetchall("SELECT id, demographics FROM panellists ORDER BY id"):
        out.setdefault(json.loads(r["demographics"])["area"], []).append(r["id"])
    return out


async def test_oversampling_low_responders_matches_expected_completes_to_targets(
    tmp_path: Path,
) -> None:
    panel = {("female", "north"): 100, ("female", "south"): 100}
    for oversample in (False, True):
        (tmp_path / str(oversample)).mkdir()
        bot = await make_bot(tmp_path / str(oversample), oversample_low_responders=oversample)
        try:
            await import_panel(bot, panel)
            await add_survey(bot, SURVEY)
            ids = await _ids_by_area(bot)
            # Past closed wave: 80 invited per area; north answered 10 of 80, south 40 of 80.
            outcomes = {pid: i < 10 for i, pid in enumerate(ids["north"][:80])}
            outcomes |= {pid: i < 40 for i, pid in enumerate(ids["south"][:80])}
            await _past_wave(bot, days_ago=60, outcomes=outcomes)
            wave_id = await launch(bot, "every-type", sample=100, stratify_by=["area"])
            got = await invited_cells(bot, wave_id)
            north = got[("female", "north")]
            # Off: by target share (25%). On: rates shrunk toward the overall 50/160 with 20
            # pseudo-invitations: north (10 + 6.25) / 100 = 0.1625, south (40 + 6.25) / 100
            # = 0.4625; weights 0.25/0.1625 : 0.75/0.4625 = 1.538 : 1.622 -> 48.7 : 51.3.
            if oversample:
                assert north == 49 and got[("female", "south")] == 51
                report = await wave_stats.sample_report(bot.db.conn, wave_id)
                cells = {c["cell"]: c for c in report["cells"]}
                assert cells["area=north"]["expected_rate"] == pytest.approx(0.1625)
                exp_n = cells["area=north"]["expected_completes"]
                exp_s = cells["area=south"]["expected_completes"]
                # Expected completes now split about 1:3, as the population does.
                assert exp_n / (exp_n + exp_s) == pytest.approx(0.25, abs=0.01)
            else:
                assert north == 25
        finally:
            await bot.stop()


async def test_with_several_fields_a_cell_without_history_borrows_its_values_rates(
    tmp_path: Path,
) -> None:
    bot = await make_bot(tmp_path, oversample_low_responders=True)
    try:
        await import_panel(bot, {cell: n for cell, n in BALANCED.items() if cell[0]})
        await add_survey(bot, SURVEY)
        people = await bot.db.fetchall("SELECT id, demographics FROM panellists ORDER BY id")
        demographics = {r["id"]: json.loads(r["demographics"]) for r in people}
        cell = {pid: (d["sex"], d["area"]) for pid, d in demographics.items()}
        female_north = [pid for pid, c in cell.items() if c == ("female", "north")]
        male_south = [pid for pid, c in cell.items() if c == ("male", "south")]
        # Only two cells have history: female/north 4 of 40, male/south 36 of 40.
        outcomes = {pid: i < 4 for i, pid in enumerate(female_north)}
        outcomes |= {pid: i < 36 for i, pid in enumerate(male_south)}
        await _past_wave(bot, days_ago=60, outcomes=outcomes)
        wave_id = await launch(bot, "every-type", sample=40, stratify_by=["sex", "area"])
        report = await wave_stats.sample_report(bot.db.conn, wave_id)
        rates = {c["cell"]: c["expected_rate"] for c in report["cells"]}
        # Overall 40/80 = 0.5. female: (4 + 20 x 0.5) / 60 = 0.2333; south: (36 + 10) / 60
        # = 0.7667. female/south has no history of its own: 0.5 x (0.2333/0.5) x
        # (0.7667/0.5) = 0.3578, between its values' rates, not the overall 0.5.
        assert rates["sex=female, area=south"] == pytest.approx(0.3578, abs=1e-4)
        # female/north: prior 0.5 x 0.4667 x 0.4667 = 0.1089, with its own 4 of 40:
        # (4 + 20 x 0.1089) / 60 = 0.1030.
        assert rates["sex=female, area=north"] == pytest.approx(0.1030, abs=1e-4)
        assert rates["sex=male, area=south"] > rates["sex=male, area=north"]
    finally:
        await bot.stop()


async def test_fatigue_rule_prefers_people_not_invited_lately(tmp_path: Path) -> None:
    bot = await make_bot(tmp_path, min_days_between_invitations=30)
    try:
        await import_panel(bot, {("female", "north"): 20})
        await add_survey(bot, SURVEY)
        ids = (await _ids_by_area(bot))["north"]
        recent, rested = ids[:10], ids[10:]
        await _past_wave(bot, days_ago=5, outcomes=dict.fromkeys(recent, False))
        # Five of the rested were invited twice long ago; the other five never.
        await _past_wave(bot, days_ago=200, outcomes=dict.fromkeys(rested[:5], True))
        await _past_wave(bot, days_ago=100, outcomes=dict.fromkeys(rested[:5], True))
        # No --stratify-by: the plugin still applies the rule to a simple draw.
        first = await launch(bot, "every-type", sample=5)
        chosen = await bot.db.fetchall(
            "SELECT panellist_id FROM invitations WHERE wave_id = ?", (first,)
        )
        assert sorted(r[0] for r in chosen) == sorted(rested[5:])  # never invited first
        plain = await wave_stats.sample_report(bot.db.conn, first)
        assert plain["method"] == "random with fatigue rule" and plain["cells"] == []
        assert any(
            n.startswith("fatigue rule: people invited within 30 days") for n in plain["notes"]
        )
        second = await launch(bot, "every-type", sample=18, stratify_by=["area"])
        picked = {
            r[0]
            for r in await bot.db.fetchall(
                "SELECT panellist_id FROM invitations WHERE wave_id = ?", (second,)
            )
        }
        # Only 10 were not invited within 30 days (5 of them in the first wave just now):
        # the 5 rested ones not in it go first, then 13 of the 15 invited lately.
        assert len(picked) == 18 and set(rested[:5]) <= picked
        report = await wave_stats.sample_report(bot.db.conn, second)
        assert any("13 invited despite an invitation within 30 days" in n for n in report["notes"])
    finally:
        await bot.stop()


async def test_refusals_name_the_problem(tmp_path: Path) -> None:
    bot = await make_bot(tmp_path)
    try:
        await import_panel(bot, {("female", "north"): 3})
        await add_survey(bot, SURVEY)
        with pytest.raises(WaveError, match="not a panel field"):
            await launch(bot, "every-type", sample=2, stratify_by=["age"])
        with pytest.raises(WaveError, match="needs --sample"):
            await launch(bot, "every-type", stratify_by=["sex"])
        with pytest.raises(WaveError, match="only once"):
            await launch(bot, "every-type", sample=2, stratify_by=["sex", "sex"])
        assert (await bot.db.fetchone("SELECT COUNT(*) FROM waves"))[0] == 0
    finally:
        await bot.stop()


async def test_without_a_sampling_plugin_a_stratified_wave_is_refused(tmp_path: Path) -> None:
    bot = await bot_without_quotas(tmp_path)
    try:
        with pytest.raises(WaveError, match="no loaded plugin draws stratified samples"):
            await launch(bot, "every-type", sample=2, stratify_by=["sex"])
        assert (await bot.db.fetchone("SELECT COUNT(*) FROM invitations"))[0] == 0
    finally:
        await bot.stop()


async def test_too_many_cells_is_refused_with_the_reason(tmp_path: Path) -> None:
    many = [
        {"name": name, "values": [f"v{i}" for i in range(50)], "text": {"en": "?"}}
        for name in ("first", "second")
    ]
    bot = await Bot.create(make_settings(tmp_path, panel={"fields": many}))
    try:
        csv_text = "telegram_chat_id,locale,consent_at,first,second\n1,en,2026-01-01,v1,v2\n"
        await import_parsed(
            bot.db, bot.hash_key, bot.settings, parse_panel_csv(csv_text.encode(), bot.settings)
        )
        await add_survey(bot, SURVEY)
        with pytest.raises(WaveError, match=r"has 2500 cells \(at most 2000\); stratify by fewer"):
            await launch(bot, "every-type", sample=1, stratify_by=["first", "second"])
        # Refused before the wave is made: no closed wave row left behind.
        assert (await bot.db.fetchone("SELECT COUNT(*) FROM waves"))[0] == 0
    finally:
        await bot.stop()


PLUGIN_THAT_DECLINES = """
from bot.plugin_api import hookimpl

@hookimpl
def panelbot_select_sample(bot, survey, wave, eligible, size, stratify_by):
    return ANSWER
"""


# Nothing, or something that is not a list of ids: either way no plugin drew the sample.
@pytest.mark.parametrize("answer", ["None", "42"])
async def test_a_plugin_that_answers_nothing_gets_the_stratified_wave_closed(
    tmp_path: Path, answer: str
) -> None:
    plugin = PLUGIN_THAT_DECLINES.replace("ANSWER", answer)
    bot = await bot_without_quotas(tmp_path, plugin, "declines")
    try:
        with pytest.raises(WaveError, match="no plugin drew its sample"):
            await launch(bot, "every-type", sample=2, stratify_by=["sex"])
        row = await bot.db.fetchone("SELECT id, status FROM waves")
        assert row["status"] == "closed"
        assert (await bot.db.fetchone("SELECT COUNT(*) FROM invitations"))[0] == 0
        assert "no plugin drew" in (await wave_stats.refusal(bot.db.conn, row["id"]) or "")
        # A wave opened later by the scheduler is refused the same way, without raising.
        later = await launch(
            bot, "every-type", sample=2, stratify_by=["sex"], at=utcnow() + timedelta(hours=2)
        )
        assert (await bot.db.fetchone("SELECT status FROM waves WHERE id = ?", (later,)))[0] == (
            "scheduled"
        )
        await bot.run_wave_step("open", later)
        assert (await bot.db.fetchone("SELECT status FROM waves WHERE id = ?", (later,)))[0] == (
            "closed"
        )
        assert await wave_stats.refusal(bot.db.conn, later)
        assert (await bot.db.fetchone("SELECT COUNT(*) FROM invitations"))[0] == 0
    finally:
        await bot.stop()


async def test_a_plugin_refusal_is_said_once_not_with_a_doubled_prefix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = PLUGIN_THAT_DECLINES.replace("ANSWER", '{"refused": "no one fits"}')
    bot = await bot_without_quotas(tmp_path, plugin, "declines")
    try:
        with pytest.raises(WaveError) as raised:
            await launch(bot, "every-type", sample=2, stratify_by=["sex"])
        assert str(raised.value) == "wave 1 not opened: no one fits; nobody was invited"
    finally:
        await bot.stop()
    said = [r.getMessage() for r in caplog.records if "no one fits" in r.getMessage()]
    assert said == ["wave 1 not opened: no one fits; nobody was invited"]


PLUGIN_WITH_A_BAD_REPORT = """
from bot.plugin_api import hookimpl

@hookimpl
def panelbot_select_sample(bot, survey, wave, eligible, size, stratify_by):
    return {"ids": [p.id for p in eligible][:size], "report": {"cells": object()}}
"""


async def test_a_report_that_is_not_json_is_left_out_and_the_wave_opens(
    tmp_path: Path,
) -> None:
    bot = await bot_without_quotas(tmp_path, PLUGIN_WITH_A_BAD_REPORT, "bad_report")
    try:
        wave_id = await launch(bot, "every-type", sample=2, stratify_by=["sex"])
        assert (await bot.db.fetchone("SELECT status FROM waves"))[0] == "open"
        assert (await bot.db.fetchone("SELECT COUNT(*) FROM invitations"))[0] == 2
        report = await wave_stats.sample_report(bot.db.conn, wave_id)
        assert report["invited"] == 2 and "cells" not in report
    finally:
        await bot.stop()


# -- the command line ---------------------------------------------------------------------


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


CONFIG = """
[bot]
name = "Sample Panel"
database = "panel.db"
quiet_hours = false
[channels.simulator]
enabled = true
[[panel.fields]]
name = "sex"
values = ["female", "male"]
text.en = "Sex?"
[[panel.fields]]
name = "area"
values = ["north", "south"]
text.en = "Area?"
[plugins]
disabled = DISABLED
[plugins.quotas]
panel_size_target = 10000
min_days_between_invitations = 14
[plugins.quotas.population.sex]
female = 0.5
male = 0.5
[plugins.quotas.population.area]
north = 0.25
south = 0.75
"""


def cli_panel(tmp_path: Path, disabled: str = "[]") -> Path:
    config = tmp_path / "panelbot.toml"
    config.write_text(CONFIG.replace("DISABLED", disabled), encoding="utf-8")
    csv_file = tmp_path / "panel.csv"
    csv_file.write_text(panel_csv(BALANCED), encoding="utf-8")
    assert run(config, "panel", "import", str(csv_file)).returncode == 0
    assert run(config, "survey", "add", str(SURVEY)).returncode == 0
    return config


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_launch_prints_the_allocation_per_cell(tmp_path: Path) -> None:
    config = cli_panel(tmp_path)
    result = run(
        config, "survey", "launch", "every-type", "--sample", "40", "--stratify-by", "sex,area"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "wave 1 of every-type: open" in out
    assert "invited 40 of 170 eligible, stratified by sex, area" in out
    assert "CELL" in out and "POP SHARE" in out and "EXP RATE" in out
    line = next(x for x in out.splitlines() if x.startswith("sex=female, area=south"))
    assert line.split()[-2:] == ["14", "-"]  # invited, expected completes (no history)
    assert "no closed waves yet" in out
    # survey results shows how each wave was drawn (the report is kept in the audit log).
    shown = run(config, "survey", "results", "every-type")
    assert "wave 1 (open): invited 40, completed 0" in shown.stdout
    assert "sample stratified by sex, area" in shown.stdout
    data = json.loads(run(config, "survey", "results", "every-type", "--format", "json").stdout)
    [wave] = data["waves"]
    assert wave["stratify_by"] == ["sex", "area"]
    assert len(wave["sample"]["cells"]) == 5 and wave["sample"]["invited"] == 40
    # config check accepts the sampling keys; bad ones are named.
    assert run(config, "config", "check").returncode == 0


def test_cli_refusals_are_one_line(tmp_path: Path) -> None:
    config = cli_panel(tmp_path)
    err = one_line_error(
        run(config, "survey", "launch", "every-type", "--sample", "5", "--stratify-by", "age")
    )
    assert "'age': not a panel field (fields: sex, area)" in err
    err = one_line_error(run(config, "survey", "launch", "every-type", "--stratify-by", "sex"))
    assert "--stratify-by needs --sample" in err
    off = tmp_path / "off"
    off.mkdir()
    config = cli_panel(off, disabled='["quotas"]')
    err = one_line_error(
        run(config, "survey", "launch", "every-type", "--sample", "5", "--stratify-by", "sex")
    )
    assert "no loaded plugin draws stratified samples" in err


def test_config_check_names_bad_sampling_keys(tmp_path: Path) -> None:
    config = tmp_path / "panelbot.toml"
    config.write_text(
        CONFIG.replace("DISABLED", "[]").replace(
            "min_days_between_invitations = 14",
            'min_days_between_invitations = -1\noversample_low_responders = "yes"',
        ),
        encoding="utf-8",
    )
    result = run(config, "config", "check")
    assert result.returncode == 1
    assert "plugins.quotas.min_days_between_invitations" in result.stderr + result.stdout
    assert "plugins.quotas.oversample_low_responders" in result.stderr + result.stdout
