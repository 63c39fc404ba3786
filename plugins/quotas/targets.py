"""Population targets from ``[plugins.quotas]``: parsed and checked.

```toml
[plugins.quotas]
panel_size_target = 1000   # how many active panellists the panel aims for
tolerance = 0.05           # a group is full at ceil(share * target * (1 + tolerance))

[plugins.quotas.population.age_band]   # one table per panel field; shares sum to 1
"16-24" = 0.12
...
```

``tolerance`` is how far over its own target a group may go before new sign-ups in it are
waitlisted, as a fraction of that group's target: with a target of 1,000 and a share of
0.2, the group's target is 200 and with 0.05 it is full at 210. A share of 0 sets no cap
(for values with no population figure, such as "prefer not to say").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.plugin_api import Settings

PLUGIN = "quotas"
KEY = f"plugins.{PLUGIN}"
SUM_TOLERANCE = 0.001
DEFAULT_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class Targets:
    """The quotas plugin's parsed configuration."""

    panel_size_target: int | None = None
    tolerance: float = DEFAULT_TOLERANCE
    # field -> value -> share of the population
    population: dict[str, dict[str, float]] = field(default_factory=dict)

    def target_count(self, field_name: str, value: str) -> float | None:
        """The group's target size (share x panel_size_target), or None without one."""
        share = self.population.get(field_name, {}).get(value)
        if share is None or self.panel_size_target is None:
            return None
        return share * self.panel_size_target

    def cap(self, field_name: str, value: str) -> int | None:
        """How many active panellists the group may have before it is full, or None.

        A value whose share is 0 has no cap: it has no counterpart in the population
        figures ("prefer not to say"), and nobody is turned away for choosing it.
        """
        target = self.target_count(field_name, value)
        if not target:
            return None
        # Rounded first so that 0.2 * 1000 * 1.05 (210.00000000000003) is not 211.
        return math.ceil(round(target * (1 + self.tolerance), 9))


def _section(settings: Settings) -> dict[str, Any]:
    # Other helpers may add their own keys to [plugins.quotas]; we read only ours.
    return settings.plugins.for_plugin(PLUGIN)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse(settings: Settings) -> tuple[Targets, list[tuple[str, str]]]:
    """The targets and the problems found (a problem leaves the bad part out)."""
    problems: list[tuple[str, str]] = []
    section = _section(settings)
    size = section.get("panel_size_target")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        problems.append((f"{KEY}.panel_size_target", "must be a whole number of 1 or more"))
        size = None
    tolerance = section.get("tolerance", DEFAULT_TOLERANCE)
    if not _number(tolerance) or not 0 <= tolerance <= 1:
        problems.append(
            (f"{KEY}.tolerance", "must be a number from 0 to 1 (0.05 = 5% over a group's target)")
        )
        tolerance = DEFAULT_TOLERANCE
    population: dict[str, dict[str, float]] = {}
    raw = section.get("population", {})
    if not isinstance(raw, dict):
        problems.append((f"{KEY}.population", "must be a table of [population.<field>] tables"))
        raw = {}
    fields = {f.name: list(f.values) for f in settings.panel.fields}
    for name, shares in raw.items():
        key = f"{KEY}.population.{name}"
        if name not in fields:
            known = ", ".join(fields) or "none configured"
            problems.append((key, f'"{name}" is not a panel field (panel fields: {known})'))
            continue
        if not isinstance(shares, dict) or not shares:
            problems.append((key, "must be a table of value = share"))
            continue
        found = _check_shares(key, shares, fields[name])
        if found:
            problems += found
            continue
        population[name] = {v: float(shares[v]) for v in fields[name] if v in shares}
    if population and size is None and "panel_size_target" not in section:
        problems.append((f"{KEY}.panel_size_target", "required with population targets"))
    return Targets(size, float(tolerance), population), problems


def _check_shares(key: str, shares: dict[str, Any], values: list[str]) -> list[tuple[str, str]]:
    problems = []
    for value, share in shares.items():
        if value not in values:
            problems.append(
                (f'{key}."{value}"', f"not a value of the field (values: {', '.join(values)})")
            )
        elif not _number(share) or not 0 <= share <= 1:
            problems.append((f'{key}."{value}"', "share must be a number from 0 to 1"))
    if problems:
        return problems
    missing = [v for v in values if v not in shares]
    if missing:
        problems.append(
            (key, f"no share for {', '.join(missing)} (give every value one; 0 is allowed)")
        )
    total = sum(float(s) for s in shares.values())
    if abs(total - 1) > SUM_TOLERANCE:
        problems.append((key, f"shares sum to {round(total, 4):g}, not 1"))
    return problems


def check_config(settings: Settings) -> list[tuple[str, str]]:
    """Every problem in ``[plugins.quotas]``, as (dotted key, message)."""
    try:
        return parse(settings)[1]
    except ValueError as exc:  # an { env = ... } that is not set
        return [(KEY, str(exc))]


def load(settings: Settings) -> Targets:
    """The targets, leaving out any part with a problem (``config check`` names those)."""
    try:
        return parse(settings)[0]
    except ValueError:
        return Targets()


def population_targets(settings: Settings) -> dict[str, dict[str, float]] | None:
    """Population shares per field and value, or None when none are configured."""
    return load(settings).population or None
