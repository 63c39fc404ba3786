"""Fields derived from a postcode at sign-up: asked once, checked, looked up, never kept."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from bot import postcodes
from bot.app import Bot
from bot.config import ConfigError, Settings
from tests.conftest import FIELDS, Chat, make_settings
from tests.test_cli import run

LOOKUP = """postcode,locality,imd_quintile
LS1 4AP,Leeds Central,1
ls64qb,Headingley,3
BD1 1HY,Bradford City,1
"""

DERIVED = [
    FIELDS[0],  # age_band, asked
    {
        "name": "locality",
        "values": ["Leeds Central", "Headingley", "Bradford City"],
        "derive_from": "postcode",
    },
    {"name": "imd_quintile", "values": ["1", "2", "3", "4", "5"], "derive_from": "postcode"},
    FIELDS[1],  # sex, asked after the postcode
]


def derived_settings(tmp_path: Path, lookup: str = LOOKUP, fields: list | None = None) -> Settings:
    (tmp_path / "lookup.csv").write_text(lookup)
    return make_settings(
        tmp_path, panel={"fields": fields or DERIVED, "postcode_lookup": "lookup.csv"}
    )


async def demographics(bot: Bot) -> dict[str, dict]:
    rows = await bot.db.fetchall(
        "SELECT a.address, p.demographics FROM panellists p "
        "JOIN addresses a ON a.panellist_id = p.id"
    )
    return {r["address"]: json.loads(r["demographics"]) for r in rows}


def everything_stored(path: Path) -> str:
    with sqlite3.connect(path) as db:
        return "\n".join(db.iterdump())


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("LS1 4AP", "LS1 4AP"),
        ("ls14ap", "LS1 4AP"),
        ("  sw1a-1aa ", "SW1A 1AA"),
        ("M1 1AE", "M1 1AE"),
        ("B33 8TH", "B33 8TH"),
        ("CR2 6XH", "CR2 6XH"),
        ("DN55 1PT", "DN55 1PT"),
        ("W1A 0AX", "W1A 0AX"),
        ("EC1A 1BB", "EC1A 1BB"),
        ("GIR 0AA", "GIR 0AA"),
        ("LS1", None),
        ("hello", None),
        ("LS1 4A", None),
        ("1LS 4AP", None),
        ("LS1 4APP", None),
        ("", None),
    ],
)
def test_postcode_format(text: str, normal: str | None) -> None:
    assert postcodes.normalise(text) == normal


async def test_sign_up_asks_a_postcode_once_and_keeps_only_what_it_derives(
    tmp_path: Path,
) -> None:
    settings = derived_settings(tmp_path)
    bot = await Bot.create(settings)
    try:
        chat = Chat(bot)
        await chat.say("sim:ann", "Hello")
        await chat.say("sim:ann", "yes")
        [question] = await chat.say("sim:ann", "3")  # age band
        assert question.startswith("What is your postcode?")
        assert "we do not keep it" in question
        [sex] = await chat.say("sim:ann", "ls6 4qb")
        assert "What is your sex?" in sex
        [done] = await chat.say("sim:ann", "1")
        assert "you have joined" in done
        found = await demographics(bot)
        assert found["ann"] == {
            "age_band": "35-44",
            "locality": "Headingley",
            "imd_quintile": "3",
            "sex": "female",
        }
    finally:
        await bot.stop()
    stored = everything_stored(settings.bot.database).upper().replace(" ", "")
    assert "LS64QB" not in stored  # not in the panel, nor in the message log


async def test_a_wrong_postcode_is_asked_again_once_then_left_unknown(tmp_path: Path) -> None:
    bot = await Bot.create(derived_settings(tmp_path))
    try:
        chat = Chat(bot)
        await chat.join("sim:bo", ("3",))
        [again] = await chat.say("sim:bo", "my house")
        assert again == "That does not look like a postcode. Please send it like this: LS1 4AP"
        [sex] = await chat.say("sim:bo", "still my house")
        assert "What is your sex?" in sex
        await chat.say("sim:bo", "2")
        assert (await demographics(bot))["bo"] == {"age_band": "35-44", "sex": "male"}
    finally:
        await bot.stop()


async def test_a_postcode_outside_the_lookup_is_stored_as_outside_area(tmp_path: Path) -> None:
    bot = await Bot.create(derived_settings(tmp_path))
    try:
        chat = Chat(bot)
        replies = await chat.join("sim:cy", ("3", "CF10 1EP", "1"))
        assert "you have joined" in replies[0]
        found = (await demographics(bot))["cy"]
        assert found["locality"] == found["imd_quintile"] == postcodes.OUTSIDE_AREA
    finally:
        await bot.stop()


async def test_derived_fields_first_ask_the_postcode_right_after_consent(tmp_path: Path) -> None:
    fields = [DERIVED[1], DERIVED[2], DERIVED[0]]
    bot = await Bot.create(derived_settings(tmp_path, fields=fields))
    try:
        chat = Chat(bot)
        await chat.say("sim:di", "Hello")
        [question] = await chat.say("sim:di", "yes")
        assert question.startswith("What is your postcode?")
        [age] = await chat.say("sim:di", "BD1 1HY")
        assert "age group" in age
        await chat.say("sim:di", "4")
        assert (await demographics(bot))["di"] == {
            "locality": "Bradford City",
            "imd_quintile": "1",
            "age_band": "45-54",
        }
    finally:
        await bot.stop()


@pytest.mark.parametrize(
    ("lookup", "words"),
    [
        (None, "no file at"),
        ("postcode,locality\nLS1 4AP,Leeds Central\n", "has no column imd_quintile"),
        ("postcode,locality,imd_quintile\nLS1 4AP,Leeds,1\n", 'values the field lacks: "Leeds"'),
        ("postcode,locality,imd_quintile\nnot one,Headingley,1\n", "line 2: not a UK postcode"),
        (LOOKUP + "LS14AP,Headingley,2\n", "line 5: LS1 4AP is listed twice"),
        # a row with more values than the header (csv.DictReader would hide them under None)
        (LOOKUP + "LS2 7UE,Headingley,2,extra\n", "line 5: 4 values but the header has 3"),
        ("postcode,locality,imd_quintile\n\nLS2 7UE,Headingley\n", "line 3: 2 values but"),
        ("postcode,locality,imd_quintile\n\n\nLS2 7UE,Headingley,1,x,y\n", "line 4: 5 values"),
        ("postcode,locality,locality,imd_quintile\nLS1 4AP,A,B,1\n", "locality is named twice"),
        ("postcode,locality,imd_quintile\n", "has a header but no postcodes"),
        ("\n\n", "is empty"),
        ('postcode,locality,imd_quintile\n"LS1 4AP,Leeds Central,1\n', "line 2: 1 values but"),
    ],
)
def test_config_check_names_lookup_problems(tmp_path: Path, lookup: str | None, words: str) -> None:
    path = tmp_path / "panelbot.toml"
    path.write_text(
        'bot = { database = "panel.db" }\n'
        '[panel]\npostcode_lookup = "lookup.csv"\n'
        '[[panel.fields]]\nname = "locality"\nderive_from = "postcode"\n'
        'values = ["Leeds Central", "Headingley", "Bradford City"]\n'
        '[[panel.fields]]\nname = "imd_quintile"\nderive_from = "postcode"\n'
        'values = ["1", "2", "3", "4", "5"]\n'
    )
    if lookup is not None:
        (tmp_path / "lookup.csv").write_text(lookup)
    result = run(path, "config", "check")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}: panel.postcode_lookup: ")
    assert words in line


async def test_a_lookup_broken_while_the_bot_runs_leaves_the_fields_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await Bot.create(derived_settings(tmp_path))
    try:
        broken = tmp_path / "lookup.csv"
        broken.write_text(LOOKUP + "LS2 7UE,Headingley,2,extra\n")
        os.utime(broken, (1, 1))  # a new stamp even on a coarse clock: the cache is not used
        chat = Chat(bot)
        for who in ("sim:ed", "sim:fi"):
            await chat.join(who, ("3",))
            [sex] = await chat.say(who, "LS1 4AP")
            assert "What is your sex?" in sex
            [done] = await chat.say(who, "1")
            assert "you have joined" in done
        found = await demographics(bot)
        assert found["ed"] == found["fi"] == {"age_band": "35-44", "sex": "female"}
    finally:
        await bot.stop()
    logged = [r.getMessage() for r in caplog.records if "postcode_lookup" in r.getMessage()]
    assert logged == [
        "panel.postcode_lookup: lookup.csv line 5: 4 values but the header has 3 columns; "
        "derived fields are left unknown"
    ]


def test_a_derived_field_needs_a_lookup(tmp_path: Path) -> None:
    fields = [{"name": "locality", "values": ["A"], "derive_from": "postcode"}]
    with pytest.raises(ConfigError, match="postcode_lookup: required when a field has"):
        make_settings(tmp_path, panel={"fields": fields})
    fields = [{"name": "locality", "values": ["A"], "derive_from": "gp_practice"}]
    with pytest.raises(ConfigError, match="derive_from"):
        make_settings(tmp_path, panel={"fields": fields})


def test_panel_import_derives_fields_from_a_postcode_column(tmp_path: Path) -> None:
    (tmp_path / "lookup.csv").write_text(LOOKUP)
    path = tmp_path / "panelbot.toml"
    path.write_text(
        'bot = { database = "panel.db" }\n'
        '[panel]\npostcode_lookup = "lookup.csv"\n'
        '[[panel.fields]]\nname = "age_band"\nvalues = ["16-34", "35+"]\n'
        '[[panel.fields]]\nname = "locality"\nderive_from = "postcode"\n'
        'values = ["Leeds Central", "Headingley", "Bradford City"]\n'
        '[[panel.fields]]\nname = "imd_quintile"\nderive_from = "postcode"\n'
        'values = ["1", "2", "3", "4", "5"]\n'
    )
    csv_file = tmp_path / "panel.csv"
    csv_file.write_text(
        "phone,consent_at,age_band,postcode\n"
        "+447400100101,2026-01-05,16-34,ls6 4qb\n"
        "+447400100102,2026-01-05,35+,CF10 1EP\n"
        "+447400100103,2026-01-05,35+,not a postcode\n"
    )
    result = run(path, "panel", "import", str(csv_file))
    assert result.returncode == 0, result.stderr
    assert 'line 4: postcode "not a postcode": not a UK postcode' in result.stdout + result.stderr
    with sqlite3.connect(tmp_path / "panel.db") as db:
        rows = db.execute("SELECT demographics FROM panellists ORDER BY id").fetchall()
        stored = "\n".join(db.iterdump()).upper().replace(" ", "")
    assert [json.loads(r[0]) for r in rows] == [
        {"age_band": "16-34", "locality": "Headingley", "imd_quintile": "3"},
        {"age_band": "35+", "locality": "outside_area", "imd_quintile": "outside_area"},
    ]
    assert "LS64QB" not in stored and "CF101EP" not in stored
