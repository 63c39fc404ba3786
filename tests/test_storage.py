"""The SQLite database: migrations, pragmas, transactions, two processes, online backups.

Every test uses a real SQLite file; the CLI is run as a real process (``python -m bot``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.storage import (
    Conn,
    Database,
    DatabaseError,
    NestedTransactionError,
    ReadConn,
    fetch_one,
)
from bot.storage.db import latest_version, migrations
from tests.conftest import REPO

EVERY_TYPE = REPO / "tests" / "data" / "every-type.toml"


def write_config(tmp_path: Path, database: str = "panel.db") -> Path:
    config = tmp_path / "panelbot.toml"
    config.write_text(f'[bot]\ndatabase = "{database}"\nquiet_hours = false\n', encoding="utf-8")
    return config


def panelbot(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        cwd=config.parent,
        timeout=60,
        check=False,
    )


async def panelbot_process(config: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "-c",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=config.parent,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a user error (exit 1, no traceback)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("panelbot: ")
    return lines[0]


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()


async def new_database(path: Path) -> None:
    db = await Database.open(path)
    await db.close()


# -- migrations ------------------------------------------------------------------------------


async def test_new_database_gets_every_migration_and_reopening_changes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "panel.db"
    db = await Database.open(path)
    try:
        assert latest_version() == len(migrations()) >= 1
        assert await db.schema_version() == latest_version()
        tables = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master")}
        assert {"panellists", "addresses", "outbox", "surveys", "answers"} <= tables
        await db.execute_write("INSERT INTO meta (key, value) VALUES ('kept', 'yes')")
    finally:
        await db.close()

    again = await Database.open(path)
    try:
        assert await again.upgrade() == []
        assert await again.schema_version() == latest_version()
        row = await again.fetchone("SELECT value FROM meta WHERE key = 'kept'")
        assert row is not None and row[0] == "yes"
    finally:
        await again.close()


@pytest.mark.parametrize("migrate", [True, False])
async def test_database_newer_than_this_panelbot_is_refused(tmp_path: Path, migrate: bool) -> None:
    path = tmp_path / "panel.db"
    await new_database(path)
    newer = latest_version() + 1
    set_user_version(path, newer)

    with pytest.raises(DatabaseError) as caught:
        await Database.open(path, migrate=migrate)

    message = str(caught.value)
    assert f"schema version {newer}" in message
    assert f"up to {latest_version()}" in message
    assert user_version(path) == newer  # left exactly as it was


def test_db_upgrade_command_prints_the_version(tmp_path: Path) -> None:
    config = write_config(tmp_path)

    first = panelbot(config, "db", "upgrade")
    again = panelbot(config, "db", "upgrade")

    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial.sql" in first.stdout
    assert f"database at schema version {latest_version()}" in first.stdout
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"database at schema version {latest_version()}"
    assert user_version(tmp_path / "panel.db") == latest_version()


def test_db_upgrade_command_refuses_a_newer_database(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    asyncio.run(new_database(tmp_path / "panel.db"))
    newer = latest_version() + 1
    set_user_version(tmp_path / "panel.db", newer)

    line = one_line_error(panelbot(config, "db", "upgrade"))

    assert str(newer) in line and str(latest_version()) in line
    assert user_version(tmp_path / "panel.db") == newer


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "panel.db"
    content = b"id,phone\n1,+447400100101\n" * 200
    path.write_bytes(content)

    with pytest.raises(DatabaseError, match="not a panelbot database"):
        await Database.open(path)
    line = one_line_error(panelbot(write_config(tmp_path), "db", "upgrade"))

    assert "panel.db" in line
    assert path.read_bytes() == content  # nothing of the user's file was lost


# -- pragmas and transactions ----------------------------------------------------------------


async def test_wal_foreign_keys_and_busy_timeout_are_on(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "panel.db")
    try:
        assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
        assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
        assert (await db.fetchone("PRAGMA busy_timeout"))[0] >= 1000  # type: ignore[index]
        # Foreign keys are enforced, not only declared.
        with pytest.raises(sqlite3.IntegrityError):
            await db.execute_write(
                "INSERT INTO addresses (panellist_id, channel, address, created_at) "
                "VALUES (999, 'sim', 'nobody', '2026-01-01T00:00:00.000+00:00')"
            )
    finally:
        await db.close()


async def test_transaction_rolls_back_on_an_exception(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "panel.db")
    try:
        with pytest.raises(RuntimeError, match="halfway"):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO meta (key, value) VALUES ('a', '1')")
                await conn.execute("INSERT INTO meta (key, value) VALUES ('b', '2')")
                raise RuntimeError("halfway")

        assert await db.fetchall("SELECT * FROM meta WHERE key IN ('a', 'b')") == []
        assert not db.writer.in_transaction
        async with db.transaction() as conn:  # the connection is fit for the next one
            await conn.execute("INSERT INTO meta (key, value) VALUES ('c', '3')")
        assert (await db.fetchone("SELECT value FROM meta WHERE key = 'c'"))[0] == "3"  # type: ignore[index]
    finally:
        await db.close()


async def test_concurrent_read_modify_write_transactions_do_not_lose_updates(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "panel.db")
    try:
        await db.execute_write("INSERT INTO meta (key, value) VALUES ('counter', '0')")

        async def bump() -> None:
            async with db.transaction() as conn:
                row = await fetch_one(conn, "SELECT value FROM meta WHERE key = 'counter'")
                assert row is not None
                await asyncio.sleep(0)  # every chance for another task to cut in
                await conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'counter'", (str(int(row[0]) + 1),)
                )

        await asyncio.gather(*(bump() for _ in range(50)))

        assert (await db.fetchone("SELECT value FROM meta WHERE key = 'counter'"))[0] == "50"  # type: ignore[index]
    finally:
        await db.close()


# -- two processes ---------------------------------------------------------------------------


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux /proc)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the other process's files"
)
async def test_a_cli_command_waits_while_the_bot_holds_the_write_lock(tmp_path: Path) -> None:
    path = (tmp_path / "panel.db").resolve()
    config = write_config(tmp_path)
    db = await Database.open(path)
    try:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO meta (key, value) VALUES ('bot', 'was here')")
            cli = await panelbot_process(config, "survey", "add", str(EVERY_TYPE))
            async with asyncio.timeout(30):
                while True:
                    if has_open(cli.pid, path) or cli.returncode is not None:
                        break
                    await asyncio.sleep(0.01)
            # The CLI has the file open and needs to write: it must wait, not fail.
            await asyncio.sleep(0.5)
            assert cli.returncode is None
        out, err = await asyncio.wait_for(cli.communicate(), timeout=30)

        assert cli.returncode == 0, err.decode()
        assert "added every-type version 1" in out.decode()
        surveys = await db.fetchall("SELECT survey_id FROM surveys")
        assert [r[0] for r in surveys] == ["every-type"]
        assert (await db.fetchone("SELECT value FROM meta WHERE key = 'bot'"))[0] == "was here"  # type: ignore[index]
    finally:
        await db.close()


# -- online backup ---------------------------------------------------------------------------


async def test_db_backup_while_another_connection_writes(tmp_path: Path) -> None:
    path = tmp_path / "panel.db"
    target = tmp_path / "backups" / "panel-copy.db"
    target.parent.mkdir()
    config = write_config(tmp_path)
    db = await Database.open(path)
    try:
        await db.executemany_write(
            "INSERT INTO audit_log (at, actor, action) VALUES ('2026-01-01', 'test', ?)",
            [(f"before {n}",) for n in range(200)],
        )
        stop = asyncio.Event()

        async def keep_writing() -> None:
            n = 0
            while not stop.is_set():
                await db.execute_write(
                    "INSERT INTO audit_log (at, actor, action) VALUES ('2026-01-01', 'test', ?)",
                    (f"during {n}",),
                )
                n += 1
                await asyncio.sleep(0.002)

        writer = asyncio.create_task(keep_writing())
        try:
            cli = await panelbot_process(config, "db", "backup", str(target))
            out, err = await asyncio.wait_for(cli.communicate(), timeout=30)
        finally:
            stop.set()
            await writer
        source = [tuple(r) for r in await db.fetchall("SELECT id, action FROM audit_log")]
    finally:
        await db.close()

    assert cli.returncode == 0, err.decode()
    assert f"backed up to {target}" in out.decode()
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("PRAGMA user_version").fetchone()[0] == latest_version()
        copied = copy.execute("SELECT id, action FROM audit_log ORDER BY id").fetchall()
    finally:
        copy.close()
    # A consistent snapshot: every row up to some moment, nothing half-written.
    assert len(copied) >= 200
    assert copied == source[: len(copied)]
    assert len(source) > len(copied)  # the other connection went on writing meanwhile


def test_db_backup_never_overwrites_a_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    asyncio.run(new_database(tmp_path / "panel.db"))
    existing = tmp_path / "yesterday.db"
    existing.write_bytes(b"yesterday's backup")

    line = one_line_error(panelbot(config, "db", "backup", str(existing)))

    assert "already exists" in line
    assert existing.read_bytes() == b"yesterday's backup"


def test_db_backup_into_a_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    asyncio.run(new_database(tmp_path / "panel.db"))

    line = one_line_error(panelbot(config, "db", "backup", str(tmp_path / "nope" / "copy.db")))

    assert "nope" in line


async def test_held_writes_keep_their_order_and_roll_back_together(tmp_path: Path) -> None:
    """Tx.later holds writes until the next read or COMMIT; a failure undoes them all."""
    import sqlite3

    from bot.storage import Database
    from bot.storage.tx import Tx, write_later

    db = await Database.open(tmp_path / "held.db")
    try:
        async with db.transaction() as tx:
            assert isinstance(tx, Tx)
            await write_later(tx, "INSERT INTO meta (key, value) VALUES ('a', '1')")
            await write_later(tx, "UPDATE meta SET value = '2' WHERE key = 'a'")
            rows = await tx.execute_fetchall("SELECT value FROM meta WHERE key = 'a'")
            assert [r[0] for r in rows] == ["2"]  # held writes ran first, in order
        with pytest.raises(sqlite3.IntegrityError):
            async with db.transaction() as tx:
                tx.later("INSERT INTO meta (key, value) VALUES ('b', '1')")
                tx.later("INSERT INTO meta (key, value) VALUES ('a', 'duplicate')")
        rows = await db.fetchall("SELECT key, value FROM meta WHERE key IN ('a', 'b')")
        assert [(r[0], r[1]) for r in rows] == [("a", "2")]
        # A transaction that is left alone afterwards still works.
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO meta (key, value) VALUES ('c', '3')")
        assert (await db.fetchone("SELECT value FROM meta WHERE key = 'c'"))[0] == "3"
    finally:
        await db.close()


# -- a writer it owns, read connections apart from it -----------------------------------------


async def test_a_read_never_sees_a_transaction_that_is_still_open(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "panel.db")
    try:
        inside, release = asyncio.Event(), asyncio.Event()

        async def writer() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO meta (key, value) VALUES ('open', 'uncommitted')")
                # Inside the transaction its own reads see its writes, through db too.
                assert (await db.fetchone("SELECT value FROM meta WHERE key = 'open'")) is not None
                assert await fetch_one(db.conn, "SELECT 1 FROM meta WHERE key = 'open'")
                inside.set()
                await release.wait()

        task = asyncio.create_task(writer())
        await inside.wait()
        # Another task's reads (db.fetchone, db.conn, db.reader) see only what is committed.
        assert await db.fetchone("SELECT value FROM meta WHERE key = 'open'") is None
        assert await fetch_one(db.conn, "SELECT 1 FROM meta WHERE key = 'open'") is None
        assert await fetch_one(db.reader, "SELECT 1 FROM meta WHERE key = 'open'") is None
        release.set()
        await task
        row = await db.fetchone("SELECT value FROM meta WHERE key = 'open'")
        assert row is not None and row[0] == "uncommitted"
        # Read connections cannot write: writes go through a transaction.
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await db.reader.execute_fetchall("DELETE FROM meta")
    finally:
        await db.close()


async def test_the_connections_are_what_storage_functions_say_they_take(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "panel.db")
    try:
        assert isinstance(db.reader, ReadConn) and not isinstance(db.reader, Conn)
        async with db.transaction() as tx:
            assert isinstance(tx, Conn) and isinstance(tx, ReadConn)
            assert db.conn is tx  # this task's reads go through its transaction
        assert db.conn is db.reader
    finally:
        await db.close()


async def test_a_transaction_inside_another_fails_at_once_and_the_outer_one_goes_on(
    tmp_path: Path,
) -> None:
    db = await Database.open(tmp_path / "panel.db")

    async def a_helper_that_opens_its_own() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO meta (key, value) VALUES ('inner', 'x')")

    try:
        # A guard only: a nested transaction that waited would wait for ever.
        async with asyncio.timeout(30):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO meta (key, value) VALUES ('outer', '1')")
                with pytest.raises(NestedTransactionError, match="already open in this task"):
                    await a_helper_that_opens_its_own()
                with pytest.raises(NestedTransactionError, match="use the tx you were given"):
                    await db.execute_write("INSERT INTO meta (key, value) VALUES ('w', 'x')")
                with pytest.raises(NestedTransactionError):
                    async with db.exclusive():
                        pass
                await tx.execute("UPDATE meta SET value = '2' WHERE key = 'outer'")
        rows = await db.fetchall("SELECT key, value FROM meta WHERE key IN ('outer', 'inner', 'w')")
        assert sorted((r[0], r[1]) for r in rows) == [("outer", "2")]
        # Nor inside the write lock held without a transaction (VACUUM, checkpoints).
        async with asyncio.timeout(30), db.exclusive():
            with pytest.raises(NestedTransactionError, match="holds the write lock"):
                await db.execute_write("INSERT INTO meta (key, value) VALUES ('x', 'y')")
        # Afterwards the same task opens transactions as before.
        await a_helper_that_opens_its_own()
        assert await db.fetchone("SELECT 1 FROM meta WHERE key = 'inner'") is not None
    finally:
        await db.close()


async def test_a_transaction_in_another_task_waits_its_turn(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "panel.db")
    try:
        holding, release = asyncio.Event(), asyncio.Event()
        order: list[str] = []

        async def first() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO meta (key, value) VALUES ('turn', 'first')")
                holding.set()
                await release.wait()
                order.append("first commits")

        async def second() -> None:
            await holding.wait()
            async with db.transaction() as tx:
                order.append("second begins")
                row = await fetch_one(tx, "SELECT value FROM meta WHERE key = 'turn'")
                assert row is not None and row[0] == "first"  # it waited for the commit
                await tx.execute("UPDATE meta SET value = 'second' WHERE key = 'turn'")

        tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
        await holding.wait()
        for _ in range(20):
            await asyncio.sleep(0)
        assert order == []  # the second is waiting, not failing
        release.set()
        await asyncio.gather(*tasks)
        assert order == ["first commits", "second begins"]
        assert (await db.fetchone("SELECT value FROM meta WHERE key = 'turn'"))[0] == "second"  # type: ignore[index]
    finally:
        await db.close()


def test_bot_uses_no_private_sqlite_driver_api() -> None:
    """The storage layer owns its threads and connections: no aiosqlite in the bot."""
    code = (
        "import sys, bot.app, bot.cli.db_cmd, bot.inbox, bot.web.app; "
        "print('aiosqlite' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "False"


# -- plugins' own migrations ------------------------------------------------------------------

RESERVATIONS_PLUGIN = """
from pathlib import Path

from bot.plugin_api import hookimpl


@hookimpl
def panelbot_migrations():
    return Path(__file__).parent / "reservations_migrations"
"""


def plugin_panel(tmp_path: Path, migrations_sql: dict[str, str]) -> Path:
    folder = tmp_path / "plugins.d"
    (folder / "reservations_migrations").mkdir(parents=True, exist_ok=True)
    (folder / "reservations.py").write_text(RESERVATIONS_PLUGIN)
    for name, sql in migrations_sql.items():
        (folder / "reservations_migrations" / name).write_text(sql)
    config = tmp_path / "panelbot.toml"
    config.write_text(
        '[bot]\ndatabase = "panel.db"\nquiet_hours = false\n'
        '[plugins]\ndirectories = ["plugins.d"]\n',
        encoding="utf-8",
    )
    return config


def test_a_plugins_migrations_are_applied_by_db_upgrade_and_tracked_per_plugin(
    tmp_path: Path,
) -> None:
    first = {"0001_places.sql": "CREATE TABLE places (panellist_id INTEGER PRIMARY KEY);"}
    config = plugin_panel(tmp_path, first)
    result = panelbot(config, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "applied reservations/0001_places.sql" in result.stdout
    again = panelbot(config, "db", "upgrade")
    assert again.returncode == 0 and "reservations" not in again.stdout
    # A second migration arrives with a new version of the plugin.
    plugin_panel(tmp_path, {"0002_band.sql": "ALTER TABLE places ADD COLUMN band TEXT;"})
    result = panelbot(config, "db", "upgrade")
    assert "applied reservations/0002_band.sql" in result.stdout, result.stderr
    with sqlite3.connect(tmp_path / "panel.db") as conn:
        # The built-in plugins (quotas, impact_updates) keep their own versions beside it.
        assert conn.execute(
            "SELECT version FROM plugin_schema WHERE plugin = 'reservations'"
        ).fetchall() == [(2,)]
        assert conn.execute("SELECT band FROM places").fetchall() == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == latest_version()


def test_a_failing_plugin_migration_changes_nothing(tmp_path: Path) -> None:
    config = plugin_panel(
        tmp_path,
        {"0001_places.sql": "CREATE TABLE places (id INTEGER);\nINSERT INTO nowhere VALUES (1);"},
    )
    result = panelbot(config, "db", "upgrade")
    assert result.returncode != 0
    with sqlite3.connect(tmp_path / "panel.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "places" not in tables


async def test_hook_migrations(tmp_path: Path) -> None:
    """panelbot_migrations: the bot applies a plugin's migrations when it starts."""
    from bot.app import Bot
    from bot.config import load_settings

    config = plugin_panel(tmp_path, {"0001_places.sql": "CREATE TABLE places (id INTEGER);"})
    bot = await Bot.create(load_settings(config))
    try:
        assert (await bot.db.plugin_versions())["reservations"] == 1
        assert await bot.db.fetchall("SELECT * FROM places") == []
    finally:
        await bot.db.close()


def test_a_database_newer_than_a_plugin_is_refused_in_one_line(tmp_path: Path) -> None:
    config = plugin_panel(
        tmp_path,
        {
            "0001_places.sql": "CREATE TABLE places (id INTEGER);",
            "0002_more.sql": "CREATE TABLE more_places (id INTEGER);",
        },
    )
    assert panelbot(config, "db", "upgrade").returncode == 0
    # An older copy of the plugin, which knows only its first migration.
    (tmp_path / "plugins.d" / "reservations_migrations" / "0002_more.sql").unlink()
    for command in (["db", "upgrade"], ["serve"]):
        line = one_line_error(panelbot(config, *command))
        assert "the tables of plugin reservations are at version 2" in line, line
        assert "only knows up to 1" in line
