"""The inbox: web processes store verified payloads, the main process handles them in order.

Every test runs on real SQLite files in tmp_path. Readers and writers that stand for
different processes use connections of their own to the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import bot.inbox as inbox_module
from bot.inbox import (
    MAX_ATTEMPTS,
    MAX_WRITE_BATCH,
    InboxReader,
    InboxWriter,
    UnstorablePayload,
    erase_payloads,
    inbox_path,
    open_inbox,
    payload_addresses,
)
from bot.storage.db import Database
from bot.trouble import storage_error

# Long enough that a reader which relies on its idle poll visibly misses the deadline.
LONG_POLL = 30.0
# How long a test waits for something that should happen at once.
PATIENCE = 5.0


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """Where the panel's database would be; the inbox lives beside it."""
    return tmp_path / "panel.db"


@pytest.fixture
async def inbox(database: Path) -> AsyncIterator[Database]:
    db = await open_inbox(database)
    try:
        yield db
    finally:
        await db.close()


async def stored(db: Database) -> list[sqlite3.Row]:
    return await db.fetchall("SELECT * FROM inbox ORDER BY id")


async def wait_until(
    condition: Callable[[], Any], *, timeout: float = PATIENCE, what: str = "the condition"
) -> None:
    """Poll ``condition`` (sync or async) until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def empty(db: Database) -> bool:
    return not await stored(db)


@asynccontextmanager
async def running(reader: InboxReader, *, drain: float = 2.0) -> AsyncIterator[InboxReader]:
    await reader.start()
    try:
        yield reader
    finally:
        await reader.stop(drain=drain)


class Recorder:
    """Handlers that record the payloads they are given, in the order they START."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.finished: list[tuple[str, str]] = []
        self.times: list[datetime] = []

    def handler(
        self, source: str, *, work: Callable[[str], Awaitable[None]] | None = None
    ) -> Callable[[str, datetime], Awaitable[None]]:
        async def handle(payload: str, received_at: datetime) -> None:
            # First thing, before any await: the order in which handlers were started.
            self.started.append((source, payload))
            self.times.append(received_at)
            if work is not None:
                await work(payload)
            else:
                await asyncio.sleep(0)
            self.finished.append((source, payload))

        return handle

    def payloads(self, which: str = "finished") -> list[str]:
        return [payload for _, payload in getattr(self, which)]


def sim(sender: str, text: str) -> str:
    return json.dumps({"from": sender, "text": text})


# --- the file -----------------------------------------------------------------------------


def test_inbox_path_is_beside_the_database(tmp_path: Path) -> None:
    assert inbox_path(tmp_path / "panel.db") == tmp_path / "panel.db-inbox"
    assert inbox_path(Path("data/other.sqlite")) == Path("data/other.sqlite-inbox")


async def test_open_inbox_creates_the_file_and_schema_beside_the_database(
    database: Path,
) -> None:
    db = await open_inbox(database)
    try:
        assert isinstance(db, Database)
        assert db.path == database.with_name("panel.db-inbox")
        assert db.path.exists()
        # Only the inbox: opening it does not create the panel's database.
        assert not database.exists()  # noqa: ASYNC240 - a test's tmp_path
        columns = {r["name"] for r in await db.fetchall("PRAGMA table_info(inbox)")}
        assert columns == {
            "id",
            "source",
            "key",
            "payload",
            "received_at",
            "attempts",
            "last_error",
        }
        sql = (await db.fetchone("SELECT sql FROM sqlite_master WHERE name = 'inbox'"))["sql"]
        assert "AUTOINCREMENT" in sql
        assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"
    finally:
        await db.close()


async def test_open_inbox_twice_at_once_and_again_later(database: Path) -> None:
    first = await open_inbox(database)
    second = await open_inbox(database)
    try:
        await InboxWriter(first).put("sim-message", "k1", sim("sim:ann", "hi"))
        # The other connection (another process, say) sees the committed row.
        rows = await stored(second)
        assert [(r["source"], r["key"]) for r in rows] == [("sim-message", "k1")]
    finally:
        await first.close()
        await second.close()
    # Opening an existing inbox keeps what it holds.
    again = await open_inbox(str(database))
    try:
        assert [r["key"] for r in await stored(again)] == ["k1"]
    finally:
        await again.close()


async def test_a_writers_inbox_leaves_checkpoints_to_the_reader(database: Path) -> None:
    reader_db = await open_inbox(database)
    writer_db = await open_inbox(database, writer=True)
    try:
        # A connection's own setting: the one that writes (its readers never write).
        assert (await writer_db.writer.execute_fetchall("PRAGMA wal_autocheckpoint"))[0][0] == 0
        assert (await reader_db.writer.execute_fetchall("PRAGMA wal_autocheckpoint"))[0][0] > 0
        await InboxWriter(writer_db).put("sim-message", "k1", "x")
        assert [r["key"] for r in await stored(reader_db)] == ["k1"]
    finally:
        await writer_db.close()
        await reader_db.close()


# --- the writer ---------------------------------------------------------------------------


async def test_concurrent_puts_are_all_stored_in_fewer_transactions(
    database: Path, inbox: Database
) -> None:
    writer = InboxWriter(inbox)
    await asyncio.gather(
        *(writer.put("sim-message", f"k{i}", sim(f"sim:p{i}", f"m{i}")) for i in range(200))
    )
    # Seen from another connection: every put returned only once its row was committed.
    other = await open_inbox(database)
    try:
        rows = await stored(other)
    finally:
        await other.close()
    assert [r["key"] for r in rows] == [f"k{i}" for i in range(200)]
    assert [json.loads(r["payload"])["text"] for r in rows] == [f"m{i}" for i in range(200)]
    assert all(r["attempts"] == 0 and r["last_error"] is None for r in rows)
    assert 1 <= writer.batches < 200


async def test_a_batch_holds_at_most_max_write_batch_rows(inbox: Database) -> None:
    writer = InboxWriter(inbox)
    count = MAX_WRITE_BATCH * 2 + 10
    await asyncio.gather(*(writer.put("sim-message", f"k{i}", "x") for i in range(count)))
    assert len(await stored(inbox)) == count
    assert writer.batches >= 3


async def test_a_repeated_source_and_key_is_stored_once(inbox: Database) -> None:
    writer = InboxWriter(inbox)
    await writer.put("twilio-message", "SM1", "From=%2B447400100101&Body=first")
    await writer.put("twilio-message", "SM1", "From=%2B447400100101&Body=again")
    # Repeats inside one batch, too.
    await asyncio.gather(*(writer.put("telegram-update", "42", f'{{"n": {i}}}') for i in range(5)))
    # The same key from another source is another payload.
    await writer.put("twilio-status", "SM1", "MessageSid=SM1&MessageStatus=sent")
    rows = await stored(inbox)
    assert [(r["source"], r["key"]) for r in rows] == [
        ("twilio-message", "SM1"),
        ("telegram-update", "42"),
        ("twilio-status", "SM1"),
    ]
    # The first one stored is the one kept.
    assert rows[0]["payload"].endswith("Body=first")
    assert rows[1]["payload"] == '{"n": 0}'


async def test_put_stores_the_payload_text_exactly_with_the_time_received(
    inbox: Database,
) -> None:
    payload = 'Body=caf%C3%A9+%F0%9F%98%80&From=%2B447400100101\n{"é": "😀"}\r\n'
    before = time.time()
    await InboxWriter(inbox).put("twilio-message", "SMx", payload)
    after = time.time()
    (row,) = await stored(inbox)
    assert row["payload"] == payload
    assert before - 1 <= row["received_at"] <= after + 1


async def test_one_unencodable_payload_fails_alone_and_the_rest_of_its_batch_is_stored(
    database: Path, inbox: Database
) -> None:
    # Issue 9 #5: a simulator message with a lone surrogate shared a transaction with
    # signed Twilio webhooks; the batch insert raised and every put in it failed (503).
    writer = InboxWriter(inbox)
    good = [
        writer.put("twilio-message", f"SM{i}", f"From=%2B4474001{i:05d}&Body=hi+{i}")
        for i in range(400)
    ]
    bad = writer.put("sim-message", "bad", '{"from": "sim:x", "text": "\ud800"}')
    outcomes = await asyncio.gather(*good[:200], bad, *good[200:], return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1 and isinstance(outcomes[200], UnstorablePayload), errors
    # A request's own fault (4xx), not the storage's (503).
    assert isinstance(outcomes[200], ValueError)
    other = await open_inbox(database)
    try:
        keys = [r["key"] for r in await stored(other)]
    finally:
        await other.close()
    assert sorted(keys) == sorted(f"SM{i}" for i in range(400))
    # The writer goes on, in shared transactions again.
    before = writer.batches
    await asyncio.gather(*(writer.put("sim-message", f"after{i}", "x") for i in range(50)))
    assert writer.batches - before < 50
    await writer.close()


async def test_a_locked_inbox_fails_the_batch_at_once_without_one_by_one_waits(
    database: Path, inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A storage problem (the lock held past BUSY_WAIT) is not replayed row by row: that
    # would wait BUSY_WAIT again for each row.
    monkeypatch.setattr(inbox_module, "BUSY_WAIT", 0.3)
    writer = InboxWriter(inbox)
    other = sqlite3.connect(inbox_path(database), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        outcomes = await asyncio.gather(
            *(writer.put("sim-message", f"k{i}", "x") for i in range(20)),
            return_exceptions=True,
        )
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes), outcomes
    # One attempt for the whole batch: every put carries that one failure.
    assert len({id(o) for o in outcomes}) == 1
    await writer.close()


async def test_a_cancelled_put_is_still_committed(inbox: Database) -> None:
    writer = InboxWriter(inbox)
    task = asyncio.create_task(writer.put("sim-message", "hung-up", "x"))
    await asyncio.sleep(0)  # queued in the shared batch
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await writer.close()
    assert [r["key"] for r in await stored(inbox)] == ["hung-up"]


async def test_a_failed_batch_fails_its_puts_and_the_writer_goes_on(
    database: Path, inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = InboxWriter(inbox)
    monkeypatch.setattr(inbox_module, "BUSY_WAIT", 0.2)  # give up soon rather than wait 10 s
    # Another process holds the write lock: the shared transaction cannot begin.
    other = sqlite3.connect(inbox_path(database), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        outcomes = await asyncio.gather(
            writer.put("sim-message", "one", "x"),
            writer.put("sim-message", "two", "y"),
            return_exceptions=True,
        )
        # One transaction: both puts fail with it (the web process answers with an error
        # and the provider sends the payload again).
        assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes), outcomes
        assert writer.batches == 0
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert await stored(inbox) == []
    assert not writer._conn.in_transaction
    await writer.put("sim-message", "later", "z")
    assert [r["key"] for r in await stored(inbox)] == ["later"]
    assert writer.batches == 1


async def test_each_committed_batch_writes_a_byte_to_notify_fd(inbox: Database) -> None:
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(read_end, False)
        writer = InboxWriter(inbox, notify_fd=write_end)
        with pytest.raises(BlockingIOError):
            os.read(read_end, 100)
        await writer.put("sim-message", "k1", "x")
        assert len(os.read(read_end, 100)) >= 1
        await asyncio.gather(*(writer.put("sim-message", f"b{i}", "x") for i in range(20)))
        assert len(os.read(read_end, 100)) >= 1
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_a_full_or_closed_notify_pipe_does_not_stop_puts(inbox: Database) -> None:
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        with pytest.raises(BlockingIOError):  # fill the pipe up
            while True:
                os.write(write_end, b"x" * 4096)
        writer = InboxWriter(inbox, notify_fd=write_end)
        await writer.put("sim-message", "k1", "x")  # the pipe is full: still stored
        os.close(read_end)
        read_end = -1
        await writer.put("sim-message", "k2", "x")  # nobody reads it: still stored
    finally:
        if read_end >= 0:
            os.close(read_end)
        os.close(write_end)
    assert [r["key"] for r in await stored(inbox)] == ["k1", "k2"]


# --- the reader ---------------------------------------------------------------------------


async def test_reader_hands_each_row_to_its_sources_handler_and_deletes_it(
    inbox: Database,
) -> None:
    writer = InboxWriter(inbox)
    twilio = "From=%2B447400100101&To=%2B447400999999&Body=hi+%C3%A9&MessageSid=SM1"
    telegram = json.dumps({"update_id": 7, "message": {"chat": {"id": 5}, "text": "hé"}})
    before = datetime.now(UTC)
    await writer.put("twilio-message", "SM1", twilio)
    await writer.put("telegram-update", "7", telegram)
    await writer.put("sim-message", "s1", sim("sim:ann", "hello"))
    after = datetime.now(UTC)
    seen = Recorder()
    handlers = {
        source: seen.handler(source)
        for source in ("twilio-message", "telegram-update", "sim-message", "twilio-status")
    }
    reader = InboxReader(inbox, handlers)
    async with running(reader):
        await wait_until(lambda: empty(inbox), what="the rows to be handled and deleted")
    assert seen.finished == [
        ("twilio-message", twilio),
        ("telegram-update", telegram),
        ("sim-message", sim("sim:ann", "hello")),
    ]
    for received_at in seen.times:
        assert received_at.tzinfo is not None
        assert received_at.utcoffset().total_seconds() == 0
        assert before.timestamp() - 1 <= received_at.timestamp() <= after.timestamp() + 1
    assert reader.handled == 3


async def test_rows_are_started_in_the_order_they_were_stored(inbox: Database) -> None:
    writer = InboxWriter(inbox)
    seen = Recorder()

    async def uneven(payload: str) -> None:
        # Later payloads finish first: handling is concurrent, starting is in order.
        n = json.loads(payload)["text"]
        await asyncio.sleep(0.002 * (7 - int(n) % 7))

    reader = InboxReader(inbox, {"sim-message": seen.handler("sim-message", work=uneven)})
    # More than one read's worth before the start, then more while it runs.
    first = [sim("sim:ann", str(i)) for i in range(300)]
    await asyncio.gather(*(writer.put("sim-message", f"a{i}", p) for i, p in enumerate(first)))
    async with running(reader):
        second = [sim("sim:ann", str(i)) for i in range(300, 340)]
        for i, payload in enumerate(second):
            await writer.put("sim-message", f"b{i}", payload)
            if i % 10 == 0:
                reader.wake()
        reader.wake()
        await wait_until(lambda: empty(inbox), what="every row to be handled")
    assert seen.payloads("started") == first + second
    assert sorted(seen.payloads("finished")) == sorted(first + second)


async def test_ids_never_go_back_after_the_table_empties(database: Path) -> None:
    db = await open_inbox(database)
    writer = InboxWriter(db)
    seen = Recorder()
    reader = InboxReader(db, {"sim-message": seen.handler("sim-message")})
    try:
        async with running(reader):
            for i in range(3):
                await writer.put("sim-message", f"a{i}", f"first {i}")
            reader.wake()
            await wait_until(lambda: len(seen.finished) == 3, what="the first rows")
            await wait_until(lambda: empty(db), what="the first rows to be deleted")
            # Every row is gone; new ones must still get ids after the ones already read.
            for i in range(3):
                await writer.put("sim-message", f"b{i}", f"second {i}")
            reader.wake()
            await wait_until(lambda: len(seen.finished) == 6, what="the rows stored after")
            await wait_until(lambda: empty(db), what="the later rows to be deleted")
    finally:
        await db.close()
    assert seen.payloads() == [f"first {i}" for i in range(3)] + [f"second {i}" for i in range(3)]
    # Also across a reopen of the file (the sequence is kept in it).
    db = await open_inbox(database)
    try:
        await InboxWriter(db).put("sim-message", "c0", "third")
        (row,) = await stored(db)
        assert row["id"] > 6
    finally:
        await db.close()


async def test_a_failing_handler_keeps_its_row_and_others_are_handled(
    inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "RETRY_EVERY", 3600.0)
    writer = InboxWriter(inbox)
    seen = Recorder()
    bad_calls: list[str] = []

    async def bad(payload: str, received_at: datetime) -> None:
        bad_calls.append(payload)
        raise ValueError(f"cannot parse {payload}")

    await writer.put("sim-message", "1", "ok one")
    await writer.put("broken", "2", "boom")
    await writer.put("sim-message", "3", "ok two")
    reader = InboxReader(inbox, {"sim-message": seen.handler("sim-message"), "broken": bad})
    async with running(reader):

        async def only_the_failure_left() -> bool:
            rows = await stored(inbox)
            return len(rows) == 1 and rows[0]["attempts"] == 1

        await wait_until(only_the_failure_left, what="the failure to be recorded")
        # Not tried again before RETRY_EVERY, however often the reader wakes.
        for _ in range(5):
            reader.wake()
            await asyncio.sleep(0.02)
    (row,) = await stored(inbox)
    assert (row["source"], row["key"], row["payload"]) == ("broken", "2", "boom")
    assert row["attempts"] == 1
    assert row["last_error"].startswith("ValueError")
    assert "cannot parse boom" in row["last_error"]
    assert seen.payloads() == ["ok one", "ok two"]
    assert bad_calls == ["boom"]
    assert reader.handled == 2


async def test_a_row_for_a_source_without_handler_is_kept_with_the_error(
    inbox: Database,
) -> None:
    writer = InboxWriter(inbox)
    await writer.put("mystery", "m1", "?")
    await writer.put("sim-message", "s1", "fine")
    seen = Recorder()
    reader = InboxReader(inbox, {"sim-message": seen.handler("sim-message")})
    async with running(reader):

        async def recorded() -> bool:
            rows = await stored(inbox)
            return [r["key"] for r in rows] == ["m1"] and rows[0]["attempts"] == 1

        await wait_until(recorded, what="the missing handler to be recorded")
    (row,) = await stored(inbox)
    assert "LookupError" in row["last_error"]
    assert "no handler" in row["last_error"]
    assert "mystery" in row["last_error"]
    assert seen.payloads() == ["fine"]


async def test_failed_rows_are_retried_until_max_attempts_then_left_alone(
    inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "RETRY_EVERY", 0.2)
    monkeypatch.setattr(inbox_module, "IDLE_POLL", 0.01)
    writer = InboxWriter(inbox)
    calls: dict[str, int] = {"always": 0, "once": 0}

    async def handler(payload: str, received_at: datetime) -> None:
        calls[payload] += 1
        if payload == "always" or calls[payload] == 1:
            raise RuntimeError(f"failure {calls[payload]}")

    await writer.put("sim-message", "a", "always")
    await writer.put("sim-message", "o", "once")
    reader = InboxReader(inbox, {"sim-message": handler})
    async with running(reader):

        async def gave_up() -> bool:
            rows = await stored(inbox)
            return [(r["payload"], r["attempts"]) for r in rows] == [("always", MAX_ATTEMPTS)]

        await wait_until(gave_up, timeout=MAX_ATTEMPTS * 0.2 + 10, what="the retries")
        # Several retry periods later it has not been tried again.
        await asyncio.sleep(0.2 * 4)
    (row,) = await stored(inbox)
    assert row["attempts"] == MAX_ATTEMPTS
    assert row["last_error"] == f"RuntimeError: failure {MAX_ATTEMPTS}"
    assert calls == {"always": MAX_ATTEMPTS, "once": 2}


async def test_a_new_reader_tries_rows_that_failed_before_but_not_given_up_ones(
    inbox: Database,
) -> None:
    writer = InboxWriter(inbox)
    await writer.put("sim-message", "retry", "retry me")
    await writer.put("sim-message", "dead", "given up")
    async with inbox.transaction() as tx:
        tx.later("UPDATE inbox SET attempts = 2, last_error = 'X' WHERE key = 'retry'")
        tx.later(f"UPDATE inbox SET attempts = {MAX_ATTEMPTS}, last_error = 'X' WHERE key = 'dead'")
    seen = Recorder()
    reader = InboxReader(inbox, {"sim-message": seen.handler("sim-message")})
    async with running(reader):
        await wait_until(
            lambda: seen.payloads() == ["retry me"], what="the earlier failure to be tried"
        )
        await wait_until(lambda: _keys(inbox, ["dead"]), what="the handled row to be deleted")
    assert seen.payloads() == ["retry me"]
    (row,) = await stored(inbox)
    assert (row["key"], row["attempts"]) == ("dead", MAX_ATTEMPTS)


async def _keys(db: Database, keys: list[str]) -> bool:
    return [r["key"] for r in await stored(db)] == keys


# --- stopping -----------------------------------------------------------------------------


async def test_stop_handles_what_is_stored_and_a_restart_handles_the_rest(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "IDLE_POLL", LONG_POLL)
    db = await open_inbox(database)
    writer = InboxWriter(db)
    seen = Recorder()
    handlers = {"sim-message": seen.handler("sim-message")}
    await writer.put("sim-message", "s", "sentinel")
    reader = InboxReader(db, handlers)
    await reader.start()
    try:
        # Once the sentinel is handled the reader sleeps for LONG_POLL: nothing wakes it.
        await wait_until(lambda: empty(db), what="the sentinel to be handled")
        before = [f"before stop {i}" for i in range(20)]
        for i, payload in enumerate(before):
            await writer.put("sim-message", f"b{i}", payload)
        await asyncio.sleep(0.2)
        assert seen.payloads() == ["sentinel"], "the reader was meant to be asleep"
    finally:
        await reader.stop(drain=PATIENCE)
    assert seen.payloads() == ["sentinel", *before]
    assert await stored(db) == []

    # Stored after the stop: kept in the file, for the next start.
    after = [f"after stop {i}" for i in range(5)]
    for i, payload in enumerate(after):
        await writer.put("sim-message", f"a{i}", payload)
    await writer.close()
    await asyncio.sleep(0.05)
    assert seen.payloads() == ["sentinel", *before]
    await db.close()

    db = await open_inbox(database)
    try:
        assert [r["payload"] for r in await stored(db)] == after
        restarted = Recorder()
        reader = InboxReader(db, {"sim-message": restarted.handler("sim-message")})
        async with running(reader):
            await wait_until(lambda: empty(db), what="the leftovers to be handled")
        assert restarted.payloads("started") == after
    finally:
        await db.close()


async def test_stop_gives_up_on_a_hung_handler_after_drain_and_keeps_its_row(
    inbox: Database,
) -> None:
    writer = InboxWriter(inbox)
    never = asyncio.Event()
    cancelled: list[str] = []

    async def hang(payload: str) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(payload)
            raise

    seen = Recorder()
    reader = InboxReader(
        inbox,
        {"slow": seen.handler("slow", work=hang), "sim-message": seen.handler("sim-message")},
    )
    await writer.put("slow", "1", "stuck")
    await writer.put("sim-message", "2", "quick")
    await reader.start()
    await wait_until(lambda: len(seen.started) == 2, what="both handlers to start")
    await asyncio.wait_for(reader.stop(drain=0.3), timeout=PATIENCE)
    assert cancelled == ["stuck"]
    assert seen.payloads() == ["quick"]
    # A cancelled handler is not a failure: the row is kept as it was, for the next start.
    (row,) = await stored(inbox)
    assert (row["key"], row["attempts"], row["last_error"]) == ("1", 0, None)


async def test_close_stops_the_reader_and_closes_the_inbox(database: Path) -> None:
    db = await open_inbox(database)
    writer = InboxWriter(db)
    seen = Recorder()
    reader = InboxReader(db, {"sim-message": seen.handler("sim-message")})
    await reader.start()
    await writer.put("sim-message", "1", "last one")
    await reader.close()
    assert seen.payloads() == ["last one"]
    with pytest.raises(ValueError):  # the database is closed
        await db.fetchall("SELECT 1")
    check = await open_inbox(database)
    try:
        assert await stored(check) == []
    finally:
        await check.close()


async def test_reading_pauses_while_too_many_rows_are_in_flight(
    inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "MAX_IN_FLIGHT", 3)
    monkeypatch.setattr(inbox_module, "READ_BATCH", 2)
    writer = InboxWriter(inbox)
    release = asyncio.Event()

    async def wait_for_release(payload: str) -> None:
        await release.wait()

    seen = Recorder()
    reader = InboxReader(inbox, {"sim-message": seen.handler("sim-message", work=wait_for_release)})
    payloads = [f"p{i}" for i in range(10)]
    for i, payload in enumerate(payloads):
        await writer.put("sim-message", str(i), payload)
    async with running(reader):
        await wait_until(lambda: len(seen.started) >= 3, what="the first handlers")
        for _ in range(5):
            reader.wake()
            await asyncio.sleep(0.02)
        # Reading stopped once MAX_IN_FLIGHT were running (a read is not cut short).
        assert 3 <= len(seen.started) <= 3 + 2 - 1
        release.set()
        await wait_until(lambda: empty(inbox), what="the rest to be handled")
    assert seen.payloads("started") == payloads


# --- waking up ----------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["writer", "raw byte"])
async def test_a_byte_on_wake_fd_wakes_the_reader_at_once(
    database: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    monkeypatch.setattr(inbox_module, "IDLE_POLL", LONG_POLL)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    # Two connections, as in two processes: a web process writes, the main process reads.
    reader_db = await open_inbox(database)
    writer_db = await open_inbox(database, writer=True)
    seen = Recorder()
    reader = InboxReader(reader_db, {"sim-message": seen.handler("sim-message")}, wake_fd=read_end)
    try:
        await InboxWriter(writer_db).put("sim-message", "s", "sentinel")
        async with running(reader):
            await wait_until(lambda: empty(reader_db), what="the sentinel to be handled")
            # The reader now sleeps for LONG_POLL unless something wakes it.
            if via == "writer":
                await InboxWriter(writer_db, notify_fd=write_end).put("sim-message", "n", "new")
            else:
                await InboxWriter(writer_db).put("sim-message", "n", "new")
                await asyncio.sleep(0.1)
                assert seen.payloads() == ["sentinel"], "the reader was meant to be asleep"
                os.write(write_end, b"!")
            await wait_until(
                lambda: seen.payloads() == ["sentinel", "new"],
                timeout=PATIENCE,
                what="the wake-up (well before the idle poll)",
            )
            await wait_until(lambda: empty(reader_db), what="the new row to be deleted")
            # More bytes than one read takes: the pipe is drained, the reader keeps going.
            os.write(write_end, b"!" * 10_000)
            await InboxWriter(writer_db).put("sim-message", "m", "more")
            os.write(write_end, b"!")
            await wait_until(lambda: len(seen.finished) == 3, what="the second wake-up")
        assert seen.payloads() == ["sentinel", "new", "more"]
    finally:
        await reader_db.close()
        await writer_db.close()
        os.close(read_end)
        os.close(write_end)


async def test_wake_wakes_the_reader_at_once(
    inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "IDLE_POLL", LONG_POLL)
    writer = InboxWriter(inbox)
    seen = Recorder()
    reader = InboxReader(inbox, {"sim-message": seen.handler("sim-message")})
    await writer.put("sim-message", "s", "sentinel")
    async with running(reader):
        await wait_until(lambda: empty(inbox), what="the sentinel to be handled")
        await writer.put("sim-message", "n", "new")
        reader.wake()
        await wait_until(lambda: seen.payloads() == ["sentinel", "new"], what="the wake-up")


# --- erasure ------------------------------------------------------------------------------

ANN = "sms:+447400100101"
BOT_NUMBER = "sms:+447400999999"


@pytest.mark.parametrize(
    ("source", "payload", "expected"),
    [
        (
            "twilio-message",
            "From=%2B447400100101&To=%2B447400999999&Body=hi&MessageSid=SM1",
            {ANN, BOT_NUMBER},
        ),
        (
            "twilio-message",
            "Body=hi&From=whatsapp%3A%2B447400100102&To=whatsapp%3A%2B14155238886",
            {"whatsapp:+447400100102", "whatsapp:+14155238886"},
        ),
        (
            "twilio-message",
            "From=WhatsApp%3A%2B447400100102",
            {"whatsapp:+447400100102"},
        ),
        (
            "twilio-status",
            "MessageSid=SM2&MessageStatus=delivered&To=%2B447400100103&From=%2B447400999999",
            {"sms:+447400100103", BOT_NUMBER},
        ),
        ("twilio-message", "From=&To=&Body=x", set()),
        (
            "telegram-update",
            json.dumps(
                {
                    "update_id": 1,
                    "message": {"from": {"id": 111}, "chat": {"id": 111}, "text": "hi"},
                }
            ),
            {"telegram:111"},
        ),
        (
            "telegram-update",
            json.dumps({"update_id": 2, "message": {"from": {"id": 111}, "chat": {"id": -900}}}),
            {"telegram:111", "telegram:-900"},
        ),
        (
            "telegram-update",
            json.dumps({"edited_message": {"chat": {"id": 444}, "text": "x"}}),
            {"telegram:444"},
        ),
        (
            "telegram-update",
            json.dumps(
                {
                    "update_id": 3,
                    "callback_query": {
                        "id": "cb1",
                        "from": {"id": 222},
                        "message": {"message_id": 9, "chat": {"id": 333}},
                        "data": "1",
                    },
                }
            ),
            {"telegram:222", "telegram:333"},
        ),
        ("telegram-update", json.dumps({"update_id": 4, "my_chat_member": {}}), set()),
        ("sim-message", json.dumps({"from": "sim:ann", "text": "hi"}), {"sim:ann"}),
    ],
)
def test_payload_addresses(source: str, payload: str, expected: set[str]) -> None:
    assert payload_addresses(source, payload) == expected


@pytest.mark.parametrize(
    ("source", "payload"),
    [
        ("telegram-update", "not json"),
        ("telegram-update", ""),
        ("telegram-update", "[1, 2]"),
        ("telegram-update", "null"),
        ("telegram-update", '{"message": "x"}'),
        ("telegram-update", '{"message": {"chat": "x", "from": 5}}'),
        ("telegram-update", '{"message": {"chat": {"name": "no id"}, "from": []}}'),
        ("telegram-update", '{"callback_query": {"message": null, "from": "x"}}'),
        ("telegram-update", '{"callback_query": {"message": [1], "from": null}}'),
        ("telegram-update", '{"callback_query": "x"}'),
        ("sim-message", "{"),
        ("sim-message", "null"),
        ("sim-message", '"sim:ann"'),
        ("sim-message", '{"from": 5}'),
        ("sim-message", '{"from": null}'),
        ("twilio-message", "%%%&&&===\x00"),
        ("twilio-message", '{"From": "+447400100101"}'),
        ("twilio-status", ""),
        ("unknown-source", "From=%2B447400100101"),
        ("unknown-source", '{"from": "sim:ann"}'),
    ],
)
def test_payload_addresses_of_garbage_is_empty(source: str, payload: str) -> None:
    assert payload_addresses(source, payload) == set()


async def test_erase_payloads_deletes_only_the_matching_rows(
    database: Path, inbox: Database
) -> None:
    writer = InboxWriter(inbox)
    rows = {
        "ann-sms": ("twilio-message", "From=%2B447400100101&To=%2B447400999999&Body=hi"),
        "ann-status": ("twilio-status", "MessageStatus=sent&To=%2B447400100101"),
        "bob-wa": ("twilio-message", "From=whatsapp%3A%2B447400100102&Body=hi"),
        "tg-111": (
            "telegram-update",
            json.dumps({"callback_query": {"from": {"id": 111}, "message": {"chat": {"id": 111}}}}),
        ),
        "tg-222": ("telegram-update", json.dumps({"message": {"chat": {"id": 222}}})),
        "sim-carol": ("sim-message", sim("sim:carol", "hi")),
        "sim-dave": ("sim-message", sim("sim:dave", "hi")),
        "garbage": ("telegram-update", "not json"),
    }
    for key, (source, payload) in rows.items():
        await writer.put(source, key, payload)
    # A payload that keeps failing is reached too.
    async with inbox.transaction() as tx:
        tx.later("UPDATE inbox SET attempts = 5, last_error = 'X' WHERE key = 'tg-111'")

    wanted = {ANN, "whatsapp:+447400100102", "telegram:111", "sim:carol", "sms:+440000000000"}
    assert await erase_payloads(database, wanted) == 5
    assert [r["key"] for r in await stored(inbox)] == ["tg-222", "sim-dave", "garbage"]
    assert await erase_payloads(database, wanted) == 0
    assert await erase_payloads(database, iter(["sim:dave"])) == 1
    assert await erase_payloads(database, []) == 0
    assert [r["key"] for r in await stored(inbox)] == ["tg-222", "garbage"]


async def test_erase_payloads_without_an_inbox_file_does_nothing(tmp_path: Path) -> None:
    database = tmp_path / "panel.db"
    assert await erase_payloads(database, [ANN]) == 0
    assert not inbox_path(database).exists()
    assert not database.exists()
    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240 - a test's tmp_path


# --- bugs found by these tests, now fixed ----------------------------------------------------


@asynccontextmanager
async def traffic(reader: InboxReader, every: float = 0.1) -> AsyncIterator[None]:
    """Wake the reader now and then, as other payloads arriving would."""

    async def nudge() -> None:
        while True:
            await asyncio.sleep(every)
            reader.wake()

    task = asyncio.create_task(nudge())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_failing_row_is_tried_no_more_than_max_attempts_under_traffic(
    inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Passes of the loop come from wake-ups more than RETRY_EVERY apart (in production:
    # whenever a retry falls due between a failure and the next pass).
    monkeypatch.setattr(inbox_module, "RETRY_EVERY", 0.05)
    monkeypatch.setattr(inbox_module, "IDLE_POLL", LONG_POLL)
    calls = 0

    async def failing(payload: str, received_at: datetime) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("still broken")

    await InboxWriter(inbox).put("sim-message", "1", "x")
    reader = InboxReader(inbox, {"sim-message": failing})
    async with running(reader), traffic(reader):

        async def gave_up() -> bool:
            return (await stored(inbox))[0]["attempts"] >= MAX_ATTEMPTS

        await wait_until(gave_up, timeout=10, what="the retries")
        await asyncio.sleep(0.5)  # a few more passes
    (row,) = await stored(inbox)
    assert (calls, row["attempts"]) == (MAX_ATTEMPTS, MAX_ATTEMPTS)


async def test_a_retry_that_succeeds_is_handled_once_under_traffic(
    inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "RETRY_EVERY", 0.05)
    monkeypatch.setattr(inbox_module, "IDLE_POLL", LONG_POLL)
    calls = 0

    async def flaky(payload: str, received_at: datetime) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("first try fails")

    await InboxWriter(inbox).put("sim-message", "1", "x")
    reader = InboxReader(inbox, {"sim-message": flaky})
    async with running(reader), traffic(reader):
        await wait_until(lambda: empty(inbox), timeout=10, what="the retry to succeed")
        await asyncio.sleep(0.5)
    assert calls == 2


async def test_stop_returns_after_drain_even_with_max_in_flight_stuck_handlers(
    inbox: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "MAX_IN_FLIGHT", 2)
    release = asyncio.Event()

    async def stuck(payload: str, received_at: datetime) -> None:
        await release.wait()

    writer = InboxWriter(inbox)
    for i in range(3):
        await writer.put("sim-message", str(i), "x")
    reader = InboxReader(inbox, {"sim-message": stuck})
    await reader.start()
    try:
        await wait_until(lambda: len(reader._in_flight) >= 2, what="the handlers to start")
        await asyncio.wait_for(reader.stop(drain=0.2), timeout=PATIENCE)
    finally:
        release.set()
        await reader.stop(drain=PATIENCE)


async def test_a_wake_during_a_read_is_not_lost(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_module, "IDLE_POLL", LONG_POLL)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    reader_db = await open_inbox(database)
    writer_db = await open_inbox(database, writer=True)
    writer = InboxWriter(writer_db, notify_fd=write_end)
    seen = Recorder()
    reader = InboxReader(reader_db, {"sim-message": seen.handler("sim-message")}, wake_fd=read_end)
    real_fetchall = reader_db.fetchall
    armed = True

    async def fetchall(sql: str, params: Any = ()) -> list[sqlite3.Row]:
        # The real query; then, as another process might, a payload is committed and its
        # byte written just after the reader's SELECT found nothing.
        nonlocal armed
        rows = await real_fetchall(sql, params)
        if armed and "WHERE id > ?" in sql and not rows:
            armed = False
            await writer.put("sim-message", "n", "new")
            await asyncio.sleep(0.05)  # the event loop sees the byte on the pipe
        return rows

    monkeypatch.setattr(reader_db, "fetchall", fetchall)
    try:
        async with running(reader):
            await wait_until(lambda: seen.payloads() == ["new"], what="the wake-up")
    finally:
        await reader_db.close()
        await writer_db.close()
        os.close(read_end)
        os.close(write_end)


# --- storage failures: the database's fault, not the payload's -------------------------------


async def fill_up(db: Database) -> None:
    """Make ``db``'s file full for its own (writing) connection, as on a full disk: every
    page taken with ballast and no page more allowed (``PRAGMA max_page_count``); SQLite
    then answers SQLITE_FULL."""
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
    async with db.exclusive() as conn:
        ((pages,),) = await conn.execute_fetchall("PRAGMA page_count")
        await conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    for size in (4000, 1000, 100, 10, 1):
        while True:
            try:
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO ballast VALUES (zeroblob(?))", (size,))
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc), exc
                break


async def make_room(db: Database) -> None:
    async with db.exclusive() as conn:
        await conn.execute("PRAGMA max_page_count = 1073741823")


def full_error() -> sqlite3.OperationalError:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE TABLE t (b BLOB)")
        conn.execute("PRAGMA max_page_count = 2")
        conn.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("SQLite took 100 kB in two pages")


def test_storage_error_tells_the_database_from_the_payload() -> None:
    full = full_error()
    assert storage_error(full) == "SQLITE_FULL"
    wrapped = RuntimeError("not handled")
    wrapped.__cause__ = full
    assert storage_error(wrapped) == "SQLITE_FULL"
    assert storage_error(sqlite3.OperationalError("database is locked"))
    assert storage_error(OSError(28, "No space left on device")) == "ENOSPC"
    assert storage_error(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert storage_error(sqlite3.OperationalError("no such table: x")) is None
    assert storage_error(KeyError("from")) is None


async def test_payloads_wait_while_the_panels_database_is_full_and_are_all_handled_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The main bot's database full (SQLITE_FULL) for longer than MAX_ATTEMPTS retries: a
    payload the engine cannot store is not given up on (the failures are the database's,
    not its own) and none is counted as an attempt; once there is room every one is
    handled. One line when it starts, one when it ends, no traceback."""
    from bot.app import Bot
    from tests.conftest import make_settings

    monkeypatch.setattr(inbox_module, "RETRY_EVERY", 0.1)
    monkeypatch.setattr(inbox_module, "MAX_STORAGE_BACKOFF", 0.2, raising=False)
    monkeypatch.setattr(inbox_module, "IDLE_POLL", 0.05)
    bot = await Bot.create(make_settings(tmp_path))
    inbox_db = await open_inbox(bot.db.path, writer=True)
    writer = InboxWriter(inbox_db)
    reader: InboxReader | None = None
    tries: dict[str, int] = {}
    try:
        await bot.start()
        await fill_up(bot.db)
        reader = await InboxReader.open(bot)
        handle = reader.handlers["sim-message"]

        async def counted(payload: str, received_at: datetime) -> None:
            key = json.loads(payload)["id"]
            tries[key] = tries.get(key, 0) + 1
            await handle(payload, received_at)

        reader.handlers["sim-message"] = counted
        # Messages long enough that the engine needs new pages for them: a page may still
        # hold one or two in its free bytes (as on a real full disk), not all of them.
        keys = [f"full-{i}" for i in range(4)]
        with caplog.at_level("WARNING", logger="bot.inbox"):
            for i, key in enumerate(keys):
                text = f"message {i} " + "x" * 1990
                payload = json.dumps({"from": f"sim:full{i}", "text": text, "id": key})
                await writer.put("sim-message", key, payload)

            async def each_waiting_row_tried_more_than_max_attempts() -> bool:
                rows = await stored(inbox_db)
                return bool(rows) and all(tries.get(r["key"], 0) > MAX_ATTEMPTS + 2 for r in rows)

            await wait_until(
                each_waiting_row_tried_more_than_max_attempts,
                timeout=60,
                what="more than MAX_ATTEMPTS tries of each payload left",
            )
            rows = await stored(inbox_db)
            assert {r["attempts"] for r in rows} == {0}, [dict(r) for r in rows]
            await make_room(bot.db)
            await wait_until(lambda: empty(inbox_db), timeout=30, what="every payload handled")
        got = await bot.db.fetchall("SELECT provider_message_id FROM inbound_messages")
        assert sorted(r[0] for r in got) == keys
        lines = [r for r in caplog.records if r.name == "bot.inbox"]
        assert [r.getMessage() for r in lines if "row" in r.getMessage()] == []
        waiting = [r for r in lines if "the database cannot store them" in r.getMessage()]
        assert len(waiting) == 2, [r.getMessage() for r in waiting]
        assert "SQLITE_FULL" in waiting[0].getMessage()
        assert "resolved" in waiting[1].getMessage()
        assert all(r.exc_info is None for r in lines)
    finally:
        if reader is not None:
            await reader.close()
        await writer.close()
        await inbox_db.close()
        await bot.stop()


async def test_a_full_inbox_is_logged_once_while_handled_rows_cannot_be_recorded(
    inbox: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording what was handled (attempts, errors, deletes) fails while the inbox's file
    is full: one line without a traceback when it starts, one when it ends, none between,
    though the reader tries again every FLUSH_EVERY."""
    monkeypatch.setattr(inbox_module, "RETRY_EVERY", 0.1)
    monkeypatch.setattr(inbox_module, "IDLE_POLL", 0.05)
    writer = InboxWriter(inbox)
    # Errors recorded for all of them take more than the page they share has free.
    for i in range(12):
        await writer.put("sim-message", f"k{i}", sim(f"sim:{i}", "hello"))
    calls = 0

    async def handler(payload: str, received_at: datetime) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("this payload is bad " + "x" * 400)  # a long last_error

    reader = InboxReader(inbox, {"sim-message": handler})
    await fill_up(reader.db)  # the reader's connection records attempts
    with caplog.at_level("WARNING", logger="bot.inbox"):
        async with running(reader):
            await wait_until(lambda: calls == 12, what="every row handled once")
            await wait_until(
                lambda: reader.recording.failures >= 8, timeout=30, what="failed flushes"
            )
            assert {r["attempts"] for r in await stored(inbox)} == {0}
            await make_room(reader.db)

            async def counted() -> bool:
                return all(r["attempts"] > 0 for r in await stored(inbox))

            await wait_until(counted, what="attempts recorded once there is room")
    lines = [r for r in caplog.records if "could not record" in r.getMessage()]
    assert len(lines) == 2, [r.getMessage() for r in lines]
    assert "SQLITE_FULL" in lines[0].getMessage()
    assert "resolved" in lines[1].getMessage()
    assert all(r.exc_info is None for r in lines)
