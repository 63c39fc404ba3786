"""Files the bot keeps personal data in are its owner's alone (mode 0600)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# SQLite's companions of a database file: its write-ahead log, shared memory, old journal.
SIDECARS = ("-wal", "-shm", "-journal")


def owner_only(path: Path | str) -> None:
    """Create ``path`` (a SQLite file) for its owner only, or make it so if it exists.

    Its write-ahead log and shared-memory files, if any, are made owner-only too; the ones
    SQLite creates later take the database file's mode. ``:memory:`` and URIs are left
    alone. Best effort: a file someone else owns keeps its mode (SQLite then says what
    is wrong when it opens it).
    """
    name = str(path)
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    with contextlib.suppress(OSError):
        os.close(os.open(name, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (name, *(name + s for s in SIDECARS)):
        with contextlib.suppress(OSError):
            mode = os.stat(file).st_mode
            if mode & 0o077:
                os.chmod(file, mode & 0o700)
