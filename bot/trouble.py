"""Failures that repeat, logged without flooding, and telling a failure of the storage
itself (full, busy, locked, failing disk I/O) from anything else.

The inbox, the scheduler and the channels' webhooks all report through :class:`Trouble`:
a line when a problem starts, at most one every so often while it lasts, one when it ends.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import time

# While a problem lasts, a line about it at most this often.
TROUBLE_LOG_EVERY = 60.0

# SQLite's primary result codes that say "the database", not the data written.
_STORAGE_CODES = frozenset(
    (
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
    )
)
_STORAGE_MESSAGES = (
    "database or disk is full",
    "database is locked",
    "database table is locked",
    "disk i/o error",
)
_STORAGE_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EIO) if code
)


def storage_error(exc: BaseException | None) -> str | None:
    """What is wrong with the storage itself (the database full, busy, locked, failing
    disk I/O), when ``exc`` or one of its causes says so; None for any other failure.

    Such a failure is nobody's payload's fault: it passes once there is room (or the lock
    is released), so it is reported without a traceback and retried without counting.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sqlite3.OperationalError):
            code = getattr(exc, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF in _STORAGE_CODES) or any(
                text in str(exc).lower() for text in _STORAGE_MESSAGES
            ):
                return getattr(exc, "sqlite_errorname", None) or str(exc)
        elif isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            return errno.errorcode.get(exc.errno, str(exc.errno))
        exc = exc.__cause__ or exc.__context__
    return None


class Trouble:
    """A failure that repeats, logged without flooding: one line when it starts (with a
    traceback only when it is not a known storage failure), then at most one every
    ``every`` seconds with how many happened since, and one when it ends.

    ``what`` says what failed; it is logged as it is, so it must hold no personal data.
    """

    def __init__(self, log: logging.Logger, what: str, *, every: float = TROUBLE_LOG_EVERY):
        self.log = log
        self.what = what
        self.every = every
        self.since: float | None = None
        self.failures = 0  # in this episode
        self._unlogged = 0
        self._last_line = 0.0

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        known = storage_error(exc)
        reason = known or f"{type(exc).__name__}: {exc}"[:200]
        self.failures += 1
        if self.since is None:
            self.since = now
            self._last_line = now
            self._unlogged = 0
            if known:
                self.log.warning("%s: %s", self.what, reason)
            else:
                self.log.error("%s: %s", self.what, reason, exc_info=exc)
            return
        self._unlogged += 1
        if now - self._last_line >= self.every:
            self.log.warning(
                "%s: %d more times in %.0f s (%s; failing for %.0f s)",
                self.what,
                self._unlogged,
                now - self._last_line,
                reason,
                now - self.since,
                exc_info=None if known else exc,
            )
            self._last_line = now
            self._unlogged = 0

    def ok(self) -> bool:
        """The failure is over (logged once); True when there was one."""
        if self.since is None:
            return False
        self.log.warning(
            "%s: resolved after %.0f s (%d failures)",
            self.what,
            time.monotonic() - self.since,
            self.failures,
        )
        self.since = None
        self.failures = 0
        self._unlogged = 0
        return True
