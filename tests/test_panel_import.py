"""`panel import` as staff use it: only mobiles for SMS, --dry-run, files of junk, dates."""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import dump_toml

HEADER = "phone,telegram_chat_id,locale,consent_at,sex"
CONFIG = {
    "bot": {"name": "Import Panel", "database": "panel.db", "timezone": "Europe/London"},
    "panel": {"fields": [{"name": "sex", "values": ["female", "male"], "text": {"en": "Sex?"}}]},
}


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "panelbot.toml"
    path.write_text(dump_toml(CONFIG), encoding="utf-8")
    return path


def panelbot(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANELBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(cfg), "panel", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cfg.parent,
        timeout=300,
    )


def write(cfg: Path, rows: list[str], name: str = "panel.csv") -> Path:
    path = cfg.parent / name
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def stored_addresses(cfg: Path) -> list[str]:
    database = cfg.parent / "panel.db"
    if not database.exists():
        return []
    with sqlite3.connect(database) as db:
        return [r[0] for r in db.execute("SELECT address FROM addresses ORDER BY id")]


def test_only_numbers_that_can_take_a_text_are_imported(cfg: Path) -> None:
    path = write(
        cfg,
        [
            "07400 100101,,,,",  # line 2: a UK mobile
            "+1 201 555 0123,,,,",  # line 3: North America: mobile or fixed, cannot tell
            "020 7946 0000,,,,",  # line 4: landline
            "0800 123 4567,,,,",  # line 5: freephone
            "0300 123 4567,,,,",  # line 6: non-geographic
            "0845 123 4567,,,,",  # line 7: service number
            "056 1234 5678,,,,",  # line 8: VoIP
            "070 1234 5678,,,,",  # line 9: personal number
            "07640 123456,,,,",  # line 10: pager
            "0800 FLOWERS,,,,",  # line 11: letters
            "07400 100102 ext. 123,,,,",  # line 12: an extension
            "+447400100103;ext=12,,,,",  # line 13: an extension
            ",4242,,,",  # line 14: Telegram only: no phone to check
            "020 7946 0001,4343,,,",  # line 15: a landline beside a chat id is still texted
        ],
    )
    result = panelbot(cfg, "import", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3 added, 0 updated, 11 rejected"
    mobile = "not a mobile number ({}); SMS and WhatsApp need a mobile"
    assert result.stderr.splitlines() == [
        f'line 4: phone "020 7946 0000": {mobile.format("a landline")}',
        f'line 5: phone "0800 123 4567": {mobile.format("a freephone number")}',
        f'line 6: phone "0300 123 4567": {mobile.format("a non-geographic number")}',
        f'line 7: phone "0845 123 4567": {mobile.format("a premium-rate or service number")}',
        f'line 8: phone "056 1234 5678": {mobile.format("a VoIP number")}',
        f'line 9: phone "070 1234 5678": {mobile.format("a personal number")}',
        f'line 10: phone "07640 123456": {mobile.format("a pager")}',
        'line 11: phone "0800 FLOWERS": has letters; write the number in digits',
        'line 12: phone "07400 100102 ext. 123": has an extension; a mobile has none',
        'line 13: phone "+447400100103;ext=12": has an extension; a mobile has none',
        f'line 15: phone "020 7946 0001": {mobile.format("a landline")}',
    ]
    assert stored_addresses(cfg) == ["+447400100101", "+12015550123", "4242"]


def test_dry_run_checks_every_row_and_stores_nothing(cfg: Path) -> None:
    path = write(cfg, ["07400 100101,,,,", "020 7946 0000,,,,", ",4242,,,male"])
    result = panelbot(cfg, "import", "--dry-run", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dry run: 2 rows to import, 1 rejected; nothing stored"
    assert result.stderr.startswith('line 3: phone "020 7946 0000": not a mobile number')
    assert not (cfg.parent / "panel.db").exists()
    assert panelbot(cfg, "import", str(path)).stdout.strip() == "2 added, 0 updated, 1 rejected"


def test_a_file_of_mostly_bad_rows_is_refused_in_one_line_with_nothing_stored(
    cfg: Path,
) -> None:
    rows = [f"07400 1{i:05d},,,," for i in range(400)]  # good, but in the minority
    rows += [f"020 7946 {i:04d},,,," for i in range(600)]
    rows += [f"07400 2{i:05d},,,," for i in range(2000)]
    result = panelbot(cfg, "import", str(write(cfg, rows)))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "600 of the first 1,000 rows are bad" in lines[0]
    assert "nothing imported" in lines[0] and "Traceback" not in result.stderr
    assert stored_addresses(cfg) == []


def test_many_bad_rows_are_summarised_by_reason(cfg: Path) -> None:
    rows = [f"07400 1{i:05d},,,," for i in range(600)]
    rows += [f"020 7946 {i:04d},,,," for i in range(300)]
    rows += [f"07400 3{i:05d},,,,unknown" for i in range(50)]
    rows += [",-12x,,,"]
    result = panelbot(cfg, "import", str(write(cfg, rows)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "600 added, 0 updated, 351 rejected"
    lines = result.stderr.splitlines()
    assert len(lines) == 21, result.stderr
    assert all(line.startswith("line ") for line in lines[:20])
    assert lines[20] == (
        "... and 331 more rows: phone: not a mobile number (a landline) (280), "
        "sex: not one of its values (50), telegram_chat_id: not digits (1)"
    )


def test_a_large_file_of_junk_is_read_in_bounded_memory(cfg: Path) -> None:
    # About 30 MB of junk under a valid header, and a few good rows at the start.
    path = cfg.parent / "junk.csv"
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER + "\n")
        for i in range(11):
            out.write(f"07400 1{i:05d},,,,\n")
        junk = "x" * 60
        for i in range(480_000):
            out.write(f"{junk}{i},,,,\n")
    # A fresh Python runs the import and reports its child's peak memory.
    measure = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(r.stderr)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    command = [sys.executable, "-m", "bot", "-c", str(cfg), "panel", "import", str(path)]
    result = subprocess.run(
        [sys.executable, "-c", measure, *command],
        capture_output=True,
        text=True,
        cwd=cfg.parent,
        timeout=300,
    )
    code, peak_kib = (int(x) for x in result.stdout.split())
    assert code == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[:2000]
    assert "989 of the first 1,000 rows are bad" in result.stderr
    assert stored_addresses(cfg) == []
    # The whole file in memory (bytes, text, a Problem per row) took several hundred MB.
    assert peak_kib < 150 * 1024, peak_kib


def test_a_consent_date_is_exported_as_that_date(cfg: Path) -> None:
    path = write(
        cfg,
        [
            "07400 100101,,,2026-06-04,",  # summer: local midnight is 23:00 UTC the day before
            "07400 100102,,,2026-01-10,",  # winter
            "07400 100103,,,2026-06-04T14:30,",  # a time stays a time
        ],
    )
    assert panelbot(cfg, "import", str(path)).returncode == 0
    exported = panelbot(cfg, "export")
    assert exported.returncode == 0, exported.stderr
    consent = {r["phone"]: r["consent_at"] for r in csv.DictReader(io.StringIO(exported.stdout))}
    assert consent["+447400100101"] == "2026-06-04"
    assert consent["+447400100102"] == "2026-01-10"
    assert consent["+447400100103"].startswith("2026-06-04T13:30:00")
    # Importing the export again changes nobody's consent time.
    again = cfg.parent / "again.csv"
    again.write_text(exported.stdout, encoding="utf-8")
    assert panelbot(cfg, "import", str(again)).stdout.strip() == "0 added, 3 updated, 0 rejected"
    assert panelbot(cfg, "export").stdout == exported.stdout
