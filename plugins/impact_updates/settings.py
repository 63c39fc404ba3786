"""``[plugins.impact_updates]``: the plugin's settings, read and checked in one place.

```toml
[plugins.impact_updates]
auto_schedule = false   # recording a decided/implemented decision schedules its update
send_after = "2d"       # how long after recording an auto-scheduled update goes out
misfire_grace = "6h"    # an update that fell due while the bot was down still goes out
                        # on start within this; later, it is held for staff
batch_size = 500        # messages rendered and queued per transaction
public_page = false     # GET /impact, the public register
feedback_for = "7d"     # how long after an update a "1"/"2" reply counts as its feedback
follow_up_after = "1d"  # an update's --follow-up survey opens this long after it went out
```
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.plugin_api import parse_duration

if TYPE_CHECKING:
    from bot.plugin_api import Settings

NAME = "impact_updates"
PREFIX = f"plugins.{NAME}"
MAX_BATCH = 10_000


@dataclass(frozen=True)
class ImpactSettings:
    auto_schedule: bool = False
    send_after: timedelta = timedelta(days=2)
    misfire_grace: timedelta = timedelta(hours=6)
    batch_size: int = 500
    public_page: bool = False
    feedback_for: timedelta = timedelta(days=7)
    follow_up_after: timedelta = timedelta(days=1)


KNOWN = {
    "auto_schedule",
    "send_after",
    "misfire_grace",
    "batch_size",
    "public_page",
    "feedback_for",
    "follow_up_after",
}


def _read(table: dict[str, Any]) -> tuple[ImpactSettings, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for key in ("auto_schedule", "public_page"):
        if key in table:
            if isinstance(table[key], bool):
                values[key] = table[key]
            else:
                problems.append((f"{PREFIX}.{key}", "must be true or false"))
    for key in ("send_after", "misfire_grace", "feedback_for", "follow_up_after"):
        if key in table:
            try:
                values[key] = parse_duration(table[key])
            except ValueError as exc:
                problems.append((f"{PREFIX}.{key}", str(exc)))
    if "batch_size" in table:
        size = table["batch_size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH:
            problems.append(
                (f"{PREFIX}.batch_size", f"must be a whole number from 1 to {MAX_BATCH}")
            )
        else:
            values["batch_size"] = size
    for key in sorted(set(table) - KNOWN):
        problems.append((f"{PREFIX}.{key}", f"unknown key; known: {', '.join(sorted(KNOWN))}"))
    return ImpactSettings(**values), problems


def check_config(settings: Settings) -> list[tuple[str, str]]:
    """Each problem in ``[plugins.impact_updates]`` as ``(key, message)``."""
    return _read(settings.plugins.for_plugin(NAME))[1]


def impact_settings(settings: Settings) -> ImpactSettings:
    """The plugin's settings (defaults for anything missing or wrong: checked at start)."""
    return _read(settings.plugins.for_plugin(NAME))[0]
