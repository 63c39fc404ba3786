"""The command line as a user runs it: survey commands, exit codes, help everywhere."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.conftest import REPO

SURVEY = REPO / "tests" / "data" / "every-type.toml"


def run(config: Path | None, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    prefix = ["-c", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "bot", *prefix, *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "panelbot.toml"
    path.write_text(
        '[bot]\nname = "CLI Panel"\ndatabase = "panel.db"\nquiet_hours = false\n'
        "[channels.simulator]\nenabled = true\n"
        '[[panel.fields]]\nname = "sex"\nvalues = ["female", "male"]\n'
        'text.en = "What is your sex?"\n',
        encoding="utf-8",
    )
    return path


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_survey_validate_reports_the_question_and_field(tmp_path: Path) -> None:
    assert run(None, "survey", "validate", str(SURVEY)).stdout.startswith("OK: every-type")
    bad = tmp_path / "bad.toml"
    bad.write_text(
        SURVEY.read_text(encoding="utf-8").replace("ease == 'hard'", "eaze == 'hard'"),
        encoding="utf-8",
    )
    result = run(None, "survey", "validate", str(bad))
    assert result.returncode == 1
    assert 'question "why_hard"' in result.stderr and "eaze" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text('id = "x"\n[[questions]\n', encoding="utf-8")
    result = run(None, "survey", "validate", str(broken))
    assert result.returncode == 1 and "line 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_survey_add_versions_a_changed_file(config: Path, tmp_path: Path) -> None:
    assert run(config, "survey", "add", str(SURVEY)).stdout.strip() == "added every-type version 1"
    assert run(config, "survey", "add", str(SURVEY)).stdout.strip() == (
        "unchanged: every-type version 1"
    )
    changed = tmp_path / "changed.toml"
    changed.write_text(
        SURVEY.read_text(encoding="utf-8").replace("Anything else?", "Anything more?"),
        encoding="utf-8",
    )
    assert run(config, "survey", "add", str(changed)).stdout.strip() == (
        "added every-type version 2"
    )
    listed = json.loads(run(config, "survey", "list", "--format", "json").stdout)
    assert listed == [
        {
            "id": "every-type",
            "version": 2,
            "title": "Every question type",
            "waves": 0,
            "open_waves": 0,
            "invited": 0,
            "completed": 0,
        }
    ]
    table = run(config, "survey", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "VERSION", "WAVES", "OPEN", "INVITED", "COMPLETED", "TITLE"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such"], "no survey 'no-such'"),
        (["every-type", "--at", "next tuesday"], "--at 'next tuesday'"),
        # The hour skipped when the clocks go forward does not exist in Europe/London.
        (
            ["every-type", "--at", "2027-03-28T01:30"],
            "--at: 2027-03-28T01:30 does not exist in Europe/London",
        ),
        (["every-type", "--close-after", "a while"], "--close-after"),
        # "0s" is not "the default": a wave open for no time at all is refused.
        (["every-type", "--close-after", "0s"], "--close-after must be positive"),
        (["every-type", "--close-after", "0d"], "--close-after must be positive"),
        (["every-type", "--at", "2020-01-06T09:00"], "--at: 2020-01-06T09:00 is in the past"),
    ],
)
def test_survey_launch_refuses_bad_requests_in_one_line(
    config: Path, args: list[str], message: str
) -> None:
    run(config, "survey", "add", str(SURVEY))
    assert message in one_line_error(run(config, "survey", "launch", *args))
    assert json.loads(run(config, "survey", "list", "--format", "json").stdout)[0]["waves"] == 0


def test_survey_launch_then_results_in_every_format(config: Path) -> None:
    run(config, "survey", "add", str(SURVEY))
    chat = run(config, "chat", "--as", "sim:ann", stdin="hi\nyes\n1\n")
    assert chat.returncode == 0, chat.stderr
    launched = run(config, "survey", "launch", "every-type", "--close-after", "3d")
    assert launched.stdout.strip() == "wave 1 of every-type: open"
    later = run(config, "survey", "launch", "every-type", "--at", "2h")
    assert "scheduled for" in later.stdout
    answers = run(config, "chat", "--as", "sim:ann", stdin="3\n1 2\n5\nyes\n4\nall fine\n")
    assert "Thanks for finishing the test survey." in answers.stdout

    data = json.loads(run(config, "survey", "results", "every-type", "--format", "json").stdout)
    assert (data["invited"], data["started"], data["completed"]) == (1, 1, 1)
    assert data["response_rate"] == 100.0
    ease = data["questions"][0]
    assert [(o["id"], o["count"]) for o in ease["options"]] == [("easy", 0), ("ok", 0), ("hard", 1)]
    assert data["questions"][-1]["responses"] == ["all fine"]

    rows = list(
        csv.DictReader(
            io.StringIO(run(config, "survey", "results", "every-type", "--format", "csv").stdout)
        )
    )
    assert {
        "question": "why_hard",
        "type": "multi",
        "group": "all",
        "option": "online",
        "count": "1",
        "percent": "100.0",
        "answered": "1",
    } in rows
    table = run(config, "survey", "results", "every-type", "--by", "sex").stdout
    assert "invited 1, started 1, completed 1, response rate 100.0%" in table
    assert "sex=female (1)" in table
    assert "--by 'age'" in one_line_error(
        run(config, "survey", "results", "every-type", "--by", "age")
    )
    assert "no plugin provides weights" in one_line_error(
        run(config, "survey", "results", "every-type", "--weighted")
    )


def test_every_command_has_help() -> None:
    from bot.cli import _register_commands, cli

    _register_commands([])

    def walk(group: click.Group, path: list[str]) -> list[list[str]]:
        found = [path]
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                found += walk(command, [*path, name])
            else:
                found.append([*path, name])
        return found

    paths = walk(cli, [])
    assert len(paths) > 20
    for path in paths:
        result = run(None, *path, "--help")
        assert result.returncode == 0, (path, result.stderr)
        assert "Usage: panelbot" in result.stdout


def test_an_unknown_command_is_a_usage_error() -> None:
    result = run(None, "frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["survey", "list"],
        ["survey", "results", "gp-access-2026"],
        ["panel", "export"],
        ["panel", "show", "1"],
        ["db", "inbox"],
        ["db", "backup", "copy.db"],
        ["db", "held"],
        ["db", "prune"],
    ],
)
def test_a_read_only_command_without_a_database_says_where_it_looked(
    tmp_path: Path, args: list[str]
) -> None:
    # A folder with no panelbot.toml: the built-in default's ./panelbot.db does not exist.
    result = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PANELBOT_CONFIG"},
    )
    line = one_line_error(result)
    assert f"no database at {tmp_path / 'panelbot.db'}" in line
    assert "the built-in default" in line and "-c demo-data/panelbot.toml" in line
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_the_config_option_works_after_the_sub_command(config: Path) -> None:
    assert run(config, "survey", "add", str(SURVEY)).returncode == 0
    for option in (["-c", str(config)], [f"--config={config}"], ["--config", str(config)]):
        result = run(None, "survey", "list", "--format", "json", *option)
        assert result.returncode == 0, result.stderr
        assert [s["id"] for s in json.loads(result.stdout)] == ["every-type"]
    shown = run(None, "config", "show", "-c", str(config))
    assert shown.returncode == 0 and "CLI Panel" in shown.stdout


def test_inbox_with_retry_and_discard_is_a_usage_error(config: Path) -> None:
    run(config, "survey", "add", str(SURVEY))  # the database exists
    result = run(config, "db", "inbox", "--retry", "--discard")
    assert result.returncode == 2
    assert "choose --retry or --discard, not both" in result.stderr
