"""`python -m tests.fakes`: panelbot serve with both real channels against the local fakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize("workers", [0, 1])
def test_sign_up_by_sms_and_by_telegram_through_panelbot_serve(
    tmp_path: Path, workers: int
) -> None:
    commands = "\n".join(
        [
            "sms +447400100101 hello",
            "sms +447400100101 yes",
            "sms +447400100101 2",
            "tg 4242 hello",
            "tg 4242 yes",
            "tg 4242 1",
            "quit",
        ]
    )
    result = subprocess.run(
        [
            *(sys.executable, "-m", "tests.fakes", "--data-dir", str(tmp_path)),
            *("--workers", str(workers)),
        ],
        input=commands + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[twilio -> +447400100101] Hello from Fake Providers Panel!" in out
    assert "[telegram -> 4242] Hello from Fake Providers Panel!" in out
    assert "buttons: ['1 Female', '2 Male', '3 Other', '4 Prefer not to say']" in out
    assert out.count("you have joined Fake Providers Panel") == 2
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "-c",
            str(tmp_path / "panelbot.toml"),
            "panel",
            "export",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '"+447400100101"' in export.stdout and '"4242"' in export.stdout
