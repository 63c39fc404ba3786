"""`panelbot demo` (twice, without duplicating) and `panelbot chat` in a terminal."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.test_serve import free_port


def start_demo(data_dir: Path, port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise AssertionError(process.stderr.read())
    process.kill()
    raise AssertionError("demo did not start")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    return out


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_demo_serves_the_example_panel_and_a_second_run_duplicates_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "demo"
    port = free_port()
    process = start_demo(data, port)
    api = f"http://127.0.0.1:{port}/simulator/api/messages"
    browser = httpx.Client(timeout=10)  # keeps the cookie sim:visitor belongs to
    menu = browser.post(api, json={"from": "sim:visitor", "text": "hello"}).json()
    assert "Choose your language" in menu["replies"][0]
    assert "2 Cymraeg" in menu["replies"][0]
    consent = browser.post(api, json={"from": "sim:visitor", "text": "1"}).json()
    assert "Reply YES to join" in consent["replies"][0]
    out = stop(process)
    assert f"http://127.0.0.1:{port}/simulator" in out
    assert "240 added" in out
    # The dashboard and its first admin, with a password made for this demo folder.
    assert f"dashboard:  http://127.0.0.1:{port}/admin" in out
    [password] = re.findall(r"sign in:  demo-admin@example\.org  password: (\S+)", out)

    config = data / "panelbot.toml"
    assert config.is_file()
    first = json.loads(cli(config, "survey", "list", "--format", "json").stdout)

    process = start_demo(data, port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as staff:
        form = staff.get("/admin/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        signed = staff.post(
            "/admin/login",
            data={"email": "demo-admin@example.org", "password": password, "csrf_token": token},
        )
        assert signed.status_code == 303
        assert "on the panel (active)" in staff.get("/admin").text
    out = stop(process)
    assert "example panel imported before: kept as it is" in out
    assert f"password: {password}  (demo only)" in out  # the same admin, not a new one
    second = json.loads(cli(config, "survey", "list", "--format", "json").stdout)
    assert first == second  # same versions, one wave, same invitations
    assert {s["id"]: s["waves"] for s in second} == {
        "digital-access-2026": 0,
        "gp-access-2026": 1,
    }
    exported = cli(config, "panel", "export", "--format", "json")
    assert len(json.loads(exported.stdout)) == 240 + 1  # the panel and the visitor


def test_chat_in_the_terminal_talks_to_the_bot(tmp_path: Path) -> None:
    config = tmp_path / "panelbot.toml"
    config.write_text(
        '[bot]\nname = "Chat Panel"\ndatabase = "panel.db"\nquiet_hours = false\n'
        "[channels.simulator]\nenabled = true\n"
        '[[panel.fields]]\nname = "sex"\nvalues = ["female", "male"]\n'
        'text.en = "What is your sex?"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), "chat", "--as", "sim:terminal"],
        input="hello\nyes\n1\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Reply YES to join" in result.stdout
    assert "What is your sex?" in result.stdout
    assert "you have joined Chat Panel" in result.stdout


def test_chat_refuses_an_address_that_is_not_the_simulator(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "chat", "--as", "sms:+447400100101"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == ("panelbot: --as must be a simulator address such as sim:alice")


def test_demo_on_a_busy_port_says_so_in_one_line_and_does_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "demo"
        result = subprocess.run(
            [sys.executable, "-m", "bot", "demo", "--port", str(port), "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in lines[0]
    assert "make demo PORT=8090" in lines[0]
    assert not data.exists()  # no config written, no panel loaded, no wave opened


def test_make_demo_takes_a_port() -> None:
    dry = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "demo", "PORT=8090"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert "panelbot demo --port 8090" in dry.stdout
    default = subprocess.run(
        ["make", "-n", "demo"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert "panelbot demo --port 8080" in default.stdout


def test_chat_ends_quietly_when_its_output_is_closed(tmp_path: Path) -> None:
    # `panelbot chat --as sim:x | head -2`: head exits, and chat must not wait on for input.
    config = tmp_path / "panelbot.toml"
    config.write_text(
        '[bot]\nname = "Pipe Panel"\ndatabase = "panel.db"\nquiet_hours = false\n'
        "[channels.simulator]\nenabled = true\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "-c", str(config), "chat", "--as", "sim:piped"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("hello\n")
        process.stdin.flush()  # and stdin stays open, as a terminal's would
        assert process.stdout.readline().startswith("chatting as sim:piped")
        assert "bot> " in process.stdout.readline()
        process.stdout.close()
        assert process.wait(timeout=20) == 0
        assert process.stderr is not None
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
