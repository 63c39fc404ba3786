"""`panelbot panel select` (quotas plugin): a fair, seeded, audited lottery for a sub-panel.

The command runs for real (a subprocess on a real SQLite file, the panel imported through
`panel import`); the lottery's optimality is checked against a person-level linear program
over every valid panel of a small pool, solved independently here.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linprog

from bot.config import dump_toml
from plugins.quotas.selection import (
    PoolMember,
    Quota,
    classes_of,
    draw,
    find_distribution,
    panel_meets,
)

FIELDS = [
    {"name": "sex", "values": ["female", "male"], "text": {"en": "Sex?"}},
    {"name": "age_band", "values": ["16-34", "35-64", "65+"], "text": {"en": "Age?"}},
    {"name": "household", "values": [f"h{i}" for i in range(1, 31)], "text": {"en": "Home?"}},
]
CONFIG = {
    "bot": {
        "name": "Select Panel",
        "database": "panel.db",
        "locales": ["en", "cy"],
        "quiet_hours": False,
    },
    "panel": {"fields": FIELDS},
}


def panelbot(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANELBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cfg.parent,
        timeout=300,
    )


# 40 people: (sex, age_band) for each, households h1..h30 (h1-h10 hold two people each).
PEOPLE = [
    ("female", "16-34"),
    ("female", "35-64"),
    ("female", "65+"),
    ("male", "16-34"),
    ("male", "35-64"),
    ("male", "65+"),
    ("male", "65+"),
    ("female", "65+"),
] * 5


def household_of(index: int) -> str:
    return f"h{index // 2 + 1}" if index < 20 else f"h{index - 10 + 1}"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "panelbot.toml"
    path.write_text(dump_toml(CONFIG), encoding="utf-8")
    rows = ["telegram_chat_id,locale,consent_at,sex,age_band,household"]
    for i, (sex, age) in enumerate(PEOPLE):
        locale = "cy" if i % 4 == 0 else "en"
        rows.append(f"{5000 + i},{locale},2026-01-05,{sex},{age},{household_of(i)}")
    (tmp_path / "panel.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = panelbot(path, "panel", "import", "panel.csv")
    assert result.returncode == 0, result.stderr
    return path


def quota_file(cfg: Path, quotas: list[tuple[str, str, int, int]], name: str = "q.toml") -> Path:
    path = cfg.parent / name
    path.write_text(
        "".join(
            f'[[quota]]\nfield = "{f}"\nvalue = "{v}"\nmin = {lo}\nmax = {hi}\n\n'
            for f, v, lo, hi in quotas
        ),
        encoding="utf-8",
    )
    return path


QUOTAS = [
    ("sex", "female", 4, 6),
    ("sex", "male", 4, 6),
    ("age_band", "16-34", 2, 3),
    ("age_band", "65+", 3, 5),
]


def select(cfg: Path, *args: str) -> dict:
    result = panelbot(cfg, "panel", "select", "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def rows(cfg: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(cfg.parent / "panel.db") as db:
        return db.execute(sql).fetchall()


def test_the_same_seed_gives_the_same_panel_and_reserves(cfg: Path) -> None:
    quota_file(cfg, QUOTAS)
    first = select(cfg, "--size", "10", "--quotas", "q.toml", "--seed", "42")
    again = select(cfg, "--size", "10", "--quotas", "q.toml", "--seed", "42")
    assert again["selected"] == first["selected"] and again["reserves"] == first["reserves"]
    assert again["selection_id"] == first["selection_id"] and again["repeated"] is True
    others = [
        select(cfg, "--size", "10", "--quotas", "q.toml", "--seed", str(seed))["selected"]
        for seed in (1, 2, 3)
    ]
    assert any(other != first["selected"] for other in others)
    # Without --seed a random one is used, printed and recorded.
    table = panelbot(cfg, "panel", "select", "--size", "10", "--quotas", "q.toml")
    assert table.returncode == 0, table.stderr
    assert "drawn at random; --seed" in table.stdout
    seeds = [r[0] for r in rows(cfg, "SELECT seed FROM quotas_selections ORDER BY id")]
    assert seeds[:4] == [42, 1, 2, 3] and len(seeds) == 5
    assert f"--seed {seeds[4]} repeats" in table.stdout


def test_output_has_probabilities_summing_to_the_size_and_no_phone_numbers(cfg: Path) -> None:
    quota_file(cfg, QUOTAS)
    out = select(cfg, "--size", "10", "--quotas", "q.toml", "--seed", "5", "--reserves", "6")
    probabilities = out["probabilities"]
    assert len(probabilities) == 40
    assert sum(probabilities.values()) == pytest.approx(10, abs=1e-6)
    assert out["minimum_probability"] == pytest.approx(min(probabilities.values()))
    assert out["optimal"] is True
    assert out["minimum_upper_bound"] == pytest.approx(out["minimum_probability"])
    assert len(out["selected"]) == 10 and len(out["reserves"]) == 6
    chosen = {p["id"] for p in out["selected"]}
    assert not chosen & {p["id"] for p in out["reserves"]}
    # Everyone with the same profile has the same probability.
    by_profile: dict[tuple, set[float]] = {}
    features = {p["id"]: p["features"] for p in out["selected"] + out["reserves"]}
    for pid, p in probabilities.items():
        if int(pid) in features:
            key = tuple(sorted(features[int(pid)].items()))
            by_profile.setdefault(key, set()).add(round(p, 9))
    assert all(len(values) == 1 for values in by_profile.values())
    # Ids and quota fields only: no chat ids (nor phone numbers) in the people listed.
    listed = json.dumps(out["selected"] + out["reserves"])
    assert not any(str(5000 + i) in listed for i in range(len(PEOPLE)))
    [(algorithm, seed, sha, size, pool, selected)] = rows(
        cfg,
        "SELECT algorithm, seed, quota_file_sha256, size, pool_size, selected "
        "FROM quotas_selections",
    )
    assert (algorithm, seed, size, pool) == ("maximin", 5, 10, 40)
    assert sha == out["quota_file_sha256"] and json.loads(selected) == sorted(chosen)
    [(actor, detail)] = rows(
        cfg, "SELECT actor, detail FROM audit_log WHERE action = 'panel_select'"
    )
    assert actor.startswith("cli:") and json.loads(detail)["selection_id"] == out["selection_id"]
    # The table: the minimum, one line per profile with its probability, the people.
    table = panelbot(cfg, "panel", "select", "--size", "10", "--quotas", "q.toml", "--seed", "5")
    assert table.returncode == 0, table.stderr
    assert f"Minimum selection probability {out['minimum_probability']:.2%}" in table.stdout
    profile_lines = [line.split() for line in table.stdout.splitlines() if "%" in line]
    assert ["female", "16-34", "5"] == profile_lines[1][:3]  # sex, age band, people
    assert "Selected (10):" in table.stdout and "Reserves (10, call them in this order):" in (
        table.stdout
    )
    # nash through the command line too: probabilities still sum to the size.
    nash = select(cfg, "--size", "10", "--quotas", "q.toml", "--seed", "5", "--algorithm", "nash")
    assert sum(nash["probabilities"].values()) == pytest.approx(10, abs=1e-5)
    assert nash["minimum_probability"] > 0.15


def test_every_drawn_panel_meets_the_quotas(cfg: Path) -> None:
    quota_file(cfg, QUOTAS)
    for seed in range(3):
        out = select(cfg, "--size", "10", "--quotas", "q.toml", "--seed", str(seed))
        people = [p["features"] for p in out["selected"]]
        for field, value, low, high in QUOTAS:
            assert low <= sum(1 for p in people if p[field] == value) <= high, (seed, value)


def _brute_force_maximin(
    pool: list[PoolMember], quotas: list[Quota], size: int
) -> tuple[float, list[tuple[int, ...]]]:
    """The person-level maximin optimum over every valid panel, by one linear program."""
    ids = [p.id for p in pool]
    panels = [
        combo
        for combo in itertools.combinations(ids, size)
        if not panel_meets(combo, pool, quotas, size)
    ]
    # Variables: one weight per panel, then z; maximise z with P(i) >= z for everyone.
    membership = np.array([[1.0 if i in panel else 0.0 for panel in panels] for i in ids])
    result = linprog(
        np.r_[np.zeros(len(panels)), -1.0],
        A_ub=np.hstack([-membership, np.ones((len(ids), 1))]),
        b_ub=np.zeros(len(ids)),
        A_eq=np.r_[np.ones(len(panels)), 0.0].reshape(1, -1),
        b_eq=[1.0],
        bounds=[(0, None)] * len(panels) + [(None, None)],
        method="highs",
    )
    assert result.status == 0
    return -result.fun, panels


SMALL = [
    PoolMember(1, {"sex": "female", "age": "young"}, "a"),
    PoolMember(2, {"sex": "female", "age": "young"}, "b"),
    PoolMember(3, {"sex": "female", "age": "old"}, "a"),
    PoolMember(4, {"sex": "male", "age": "old"}, "d"),
    PoolMember(5, {"sex": "male", "age": "old"}, "d"),
    PoolMember(6, {"sex": "male", "age": "old"}, "d"),
    PoolMember(7, {"sex": "male", "age": "old"}, "f"),
    PoolMember(8, {"sex": "male", "age": "young"}, "g"),
    PoolMember(9, {"sex": "female", "age": "old"}, "h"),
]
SMALL_QUOTAS = [
    Quota("sex", "female", 2, 2, 1),
    Quota("sex", "male", 2, 2, 2),
    Quota("age", "young", 1, 2, 3),
]


# Two households of two old men (one make-up, two seats), one of a young woman and an old
# man, and three people alone.
PAIRS = [
    PoolMember(1, {"sex": "male", "age": "old"}, "h1"),
    PoolMember(2, {"sex": "male", "age": "old"}, "h1"),
    PoolMember(3, {"sex": "male", "age": "old"}, "h2"),
    PoolMember(4, {"sex": "male", "age": "old"}, "h2"),
    PoolMember(5, {"sex": "female", "age": "young"}, "h3"),
    PoolMember(6, {"sex": "male", "age": "old"}, "h3"),
    PoolMember(7, {"sex": "female", "age": "old"}),
    PoolMember(8, {"sex": "female", "age": "young"}, "h4"),
    PoolMember(9, {"sex": "male", "age": "young"}),
]


@pytest.mark.parametrize("households", ["none", "small", "pairs"])
def test_the_minimum_is_the_person_level_optimum_on_a_small_pool(households: str) -> None:
    pool = {
        "none": [PoolMember(p.id, p.features) for p in SMALL],
        "small": SMALL,
        "pairs": PAIRS,
    }[households]
    optimum, _ = _brute_force_maximin(pool, SMALL_QUOTAS, 4)
    dist = find_distribution(pool, SMALL_QUOTAS, 4, "maximin")
    assert dist.minimum == pytest.approx(optimum, abs=1e-7)
    assert sum(dist.probabilities.values()) == pytest.approx(4)
    # Two of four women and two of five men: 0.4 at best; with men 4, 5 and 6 in one
    # household only one of them may sit, so 1/3 at best. The constraint really bites.
    expected = {"none": 0.4, "small": 1 / 3}.get(households, optimum)
    assert optimum == pytest.approx(expected, abs=1e-7)
    # Every panel in the lottery (counts per class) meets the size, the quotas and the
    # households: a make-up's classes never take more than its households.
    fields = ["sex", "age"]
    for panel, weight in zip(dist.panels, dist.weights, strict=True):
        if weight <= 0:
            continue
        assert panel.sum() == 4
        for q in SMALL_QUOTAS:
            at = fields.index(q.field)
            count = sum(
                int(n) for c, n in zip(dist.classes, panel, strict=True) if c.profile[at] == q.value
            )
            assert q.min <= count <= q.max
        taken: dict[tuple, int] = {}
        for c, n in zip(dist.classes, panel, strict=True):
            taken[c.make_up] = taken.get(c.make_up, 0) + int(n)
            assert taken[c.make_up] <= c.seats
    # Drawn panels meet quotas and households, and each person's share of them comes
    # near their probability.
    rng = np.random.default_rng(0)
    seen: dict[int, int] = dict.fromkeys(dist.probabilities, 0)
    for _ in range(4000):
        panel = draw(dist, rng)
        assert not panel_meets(panel, pool, SMALL_QUOTAS, 4)
        for pid in panel:
            seen[pid] += 1
    for pid, p in dist.probabilities.items():
        assert seen[pid] / 4000 == pytest.approx(p, abs=0.04), pid


def test_nash_spreads_probability_and_keeps_the_quotas() -> None:
    pool = [PoolMember(p.id, p.features) for p in SMALL]
    dist = find_distribution(pool, SMALL_QUOTAS, 4, "nash")
    assert sum(dist.probabilities.values()) == pytest.approx(4, abs=1e-6)
    assert dist.minimum > 0.3
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert not panel_meets(draw(dist, rng), pool, SMALL_QUOTAS, 4)


def test_profiles_group_people_who_are_interchangeable() -> None:
    classes, households = classes_of(SMALL, ["sex", "age"])
    # Households a (a young and an old woman) and d (three old men) are shared make-ups;
    # the other four people are households of one, grouped by profile.
    assert len(classes) == 7 and len(households) == 2
    shared = sorted(m for c in classes if len(c.make_up) > 1 for m in c.members)
    assert shared == [1, 3, 4, 5, 6]
    [men] = [c for c in classes if len(c.make_up) == 3]
    assert men.members == (4, 5, 6) and men.seats == 1  # one household: one seat
    # Households of the same make-up are interchangeable too: 20 two-person households of
    # one make-up are one or two classes, not 40.
    pairs = [
        PoolMember(i, {"sex": "female" if i % 2 else "male", "age": "old"}, f"home{i // 2}")
        for i in range(40)
    ]
    classes, households = classes_of(pairs, ["sex", "age"])
    assert [(c.profile, len(c.members), c.seats) for c in classes] == [
        (("female", "old"), 20, 20),
        (("male", "old"), 20, 20),
    ]
    no_households = [PoolMember(p.id, p.features) for p in SMALL]
    classes, households = classes_of(no_households, ["sex", "age"])
    assert len(classes) == 4 and households == {}


def test_the_household_constraint_holds_on_every_panel(cfg: Path) -> None:
    quota_file(cfg, QUOTAS)
    household = {5000 + i: household_of(i) for i in range(len(PEOPLE))}
    with sqlite3.connect(cfg.parent / "panel.db") as db:
        ids = dict(
            db.execute(
                "SELECT CAST(a.address AS INTEGER), a.panellist_id FROM addresses a "
                "WHERE a.channel = 'telegram'"
            ).fetchall()
        )
    household_by_id = {ids[chat]: key for chat, key in household.items()}
    seen_shared = False
    for seed in range(4):
        out = select(
            cfg,
            "--size",
            "12",
            "--quotas",
            "q.toml",
            "--seed",
            str(seed),
            "--household",
            "household",
        )
        homes = [household_by_id[p["id"]] for p in out["selected"]]
        assert len(homes) == len(set(homes)), seed
        reserve_homes = [household_by_id[p["id"]] for p in out["reserves"]]
        assert not set(reserve_homes) & set(homes)
        assert len(reserve_homes) == len(set(reserve_homes))
        seen_shared = seen_shared or any(h in {f"h{i}" for i in range(1, 11)} for h in homes)
        assert "share a household" in out["note"]
    assert seen_shared  # people in shared households are still selected
    result = panelbot(
        cfg, "panel", "select", "--size", "10", "--quotas", "q.toml", "--household", "flat"
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "panelbot: no active panellist has a value for the household field 'flat'"
    ]


def test_infeasible_quotas_exit_1_with_the_suggested_relaxation(cfg: Path) -> None:
    # PEOPLE has 10 aged 16-34: a minimum of 11 cannot be met.
    quota_file(
        cfg,
        [("sex", "female", 5, 12), ("age_band", "16-34", 11, 12), ("age_band", "65+", 0, 12)],
    )
    result = panelbot(cfg, "panel", "select", "--size", "12", "--quotas", "q.toml")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("panelbot: no panel of 12 from these 40 people meets every quota")
    assert "sortition-algorithms suggests: [[quota]] #2 (age_band = 16-34) min 11 -> 10" in line
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # nor the solver's banner
    assert rows(cfg, "SELECT count(*) FROM quotas_selections") == [(0,)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[quota]]\nfield = 'sex'\n", "[[quota]] #1: missing 'value'"),
        (
            "[[quota]]\nfield='sex'\nvalue='female'\nmin=1\nmax=2\n"
            "[[quota]]\nfield='sx'\nvalue='female'\nmin=1\nmax=2\n",
            "[[quota]] #2: 'sx' is not a panel field (sex, age_band, household)",
        ),
        (
            "[[quota]]\nfield='sex'\nvalue='woman'\nmin=1\nmax=2\n",
            "[[quota]] #1: 'woman' is not a value of sex (female, male)",
        ),
        (
            "[[quota]]\nfield='sex'\nvalue='female'\nmin=3\nmax=2\n",
            "[[quota]] #1 (sex = female): min 3 is more than max 2",
        ),
        (
            "[[quota]]\nfield='sex'\nvalue='female'\nmin=3\nmax=4\n"
            "[[quota]]\nfield='sex'\nvalue='male'\nmin=3\nmax=4\n",
            "[[quota]] #1, #2 (sex): the maximums add up to 8, less than the size 10",
        ),
        (
            "[[quota]]\nfield='sex'\nvalue='female'\nmin=6\nmax=9\n"
            "[[quota]]\nfield='sex'\nvalue='male'\nmin=5\nmax=9\n",
            "[[quota]] #1, #2 (sex): the minimums add up to 11, more than the size 10",
        ),
        ("[[quota]]\nfield='sex'\nvalue='female'\nmin=1.5\nmax=2\n", "min must be a whole"),
        ("[[quota]\n", "not valid TOML"),
        ("title = 'x'\n", "unknown key 'title'"),
    ],
)
def test_a_bad_quota_file_is_one_line_naming_the_table(
    cfg: Path, content: str, message: str
) -> None:
    (cfg.parent / "bad.toml").write_text(content, encoding="utf-8")
    result = panelbot(cfg, "panel", "select", "--size", "10", "--quotas", "bad.toml")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("panelbot: quota file bad.toml") and message in line, line


def test_invite_queues_one_message_per_selected_person_however_often_it_runs(cfg: Path) -> None:
    quota_file(cfg, QUOTAS)
    args = ("--size", "10", "--quotas", "q.toml", "--seed", "9", "--invite")
    first = select(cfg, *args)
    assert first["invitations"] == {"queued": 10, "already_queued": 0, "no_address": 0}
    again = select(cfg, *args)
    assert again["invitations"] == {"queued": 0, "already_queued": 10, "no_address": 0}
    queued = rows(
        cfg,
        "SELECT o.panellist_id, o.kind, o.text, p.locale FROM outbox o "
        "JOIN panellists p ON p.id = o.panellist_id WHERE o.idempotency_key LIKE 'selection:%'",
    )
    assert sorted(r[0] for r in queued) == sorted(p["id"] for p in first["selected"])
    for _, kind, text, locale in queued:
        assert kind == "invitation"
        expected = "cawsoch eich dewis" if locale == "cy" else "you have been chosen"
        assert text.startswith("Select Panel: ") and expected in text
    # Reserves are not invited; a selection without --invite queues nothing.
    select(cfg, "--size", "10", "--quotas", "q.toml", "--seed", "10")
    assert rows(cfg, "SELECT count(*) FROM outbox") == [(10,)]


def test_legacy_is_seeded_and_meets_the_quotas(cfg: Path) -> None:
    quota_file(cfg, QUOTAS)
    args = ("--size", "10", "--quotas", "q.toml", "--algorithm", "legacy", "--seed", "3")
    first = select(cfg, *args)
    assert select(cfg, *args)["selected"] == first["selected"]
    assert first["probabilities"] is None and first["minimum_probability"] is None
    people = [p["features"] for p in first["selected"]]
    assert len(people) == 10
    for field, value, low, high in QUOTAS:
        assert low <= sum(1 for p in people if p[field] == value) <= high


def test_legacy_prints_nothing_of_the_librarys_own(cfg: Path) -> None:
    quota_file(cfg, QUOTAS)
    args = ("--size", "10", "--quotas", "q.toml", "--algorithm", "legacy", "--seed", "3")
    for fmt in ("table", "json"):
        result = panelbot(cfg, "panel", "select", "--format", fmt, *args)
        assert result.returncode == 0, result.stderr
        assert "Trial number" not in result.stdout + result.stderr
        assert result.stderr == ""


def test_a_huge_quota_file_is_refused_in_one_line(cfg: Path) -> None:
    big = cfg.parent / "big.toml"
    big.write_text("# " + "x" * 1_000_000 + "\n", encoding="utf-8")
    for source in (str(big), "/dev/zero"):
        result = panelbot(cfg, "panel", "select", "--size", "10", "--quotas", source)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"panelbot: quota file {source}: larger than 1 MB; a quota file is a few [[quota]] "
            "tables"
        )


def test_select_needs_the_quotas_plugin(cfg: Path) -> None:
    disabled = {**CONFIG, "plugins": {"disabled": ["quotas"]}}
    path = cfg.parent / "off.toml"
    path.write_text(dump_toml(disabled), encoding="utf-8")
    result = panelbot(path, "panel", "select", "--help")
    assert result.returncode == 2 and "No such command 'select'" in result.stderr
    assert panelbot(cfg, "panel", "select", "--help").returncode == 0


def test_a_missing_database_or_too_small_a_pool_is_one_line(cfg: Path, tmp_path: Path) -> None:
    quota_file(cfg, QUOTAS)
    quota_file(cfg, [("sex", "female", 0, 41)], name="wide.toml")
    result = panelbot(cfg, "panel", "select", "--size", "41", "--quotas", "wide.toml")
    assert result.returncode == 1
    assert result.stderr.strip() == "panelbot: only 40 active panellists, fewer than --size 41"
    empty = tmp_path / "empty"
    empty.mkdir()
    other = empty / "panelbot.toml"
    other.write_text(dump_toml(CONFIG), encoding="utf-8")
    (empty / "q.toml").write_text((cfg.parent / "q.toml").read_text(), encoding="utf-8")
    result = panelbot(other, "panel", "select", "--size", "10", "--quotas", "q.toml")
    assert result.returncode == 1 and result.stderr.startswith("panelbot: no database at")
    assert not (empty / "panel.db").exists()


async def test_the_example_workshop_quotas_select_from_the_demo_panel(tmp_path: Path) -> None:
    import tomllib

    from bot.app import Bot
    from bot.config import load_settings
    from bot.demo import load_examples, prepare_data_dir
    from tests.conftest import REPO

    config = prepare_data_dir(tmp_path / "demo", 8799)
    settings = load_settings(config)
    bot = await Bot.create(settings)
    try:
        await load_examples(bot, settings)
    finally:
        await bot.stop()
    example = REPO / "examples" / "workshop_quotas.toml"
    out = select(config, "--size", "24", "--quotas", str(example), "--seed", "1")
    assert len(out["selected"]) == 24 and out["pool_size"] >= 200
    assert out["minimum_probability"] > 0.05  # every demo panellist has a real chance
    quotas = tomllib.loads(example.read_text(encoding="utf-8"))["quota"]
    for quota in quotas:
        count = sum(1 for p in out["selected"] if p["features"][quota["field"]] == quota["value"])
        assert quota["min"] <= count <= quota["max"], quota
    # Out of time at once: the best lottery found so far, said not to be optimal, with a
    # proven ceiling above its minimum; its panel still meets every quota.
    early = select(config, "--size", "24", "--quotas", str(example), "--time-limit", "0")
    assert early["optimal"] is False
    assert early["minimum_upper_bound"] >= out["minimum_probability"] - 1e-9
    assert early["minimum_probability"] <= out["minimum_probability"] + 1e-9
    for quota in quotas:
        count = sum(1 for p in early["selected"] if p["features"][quota["field"]] == quota["value"])
        assert quota["min"] <= count <= quota["max"], quota


def test_the_invitation_is_in_every_panel_language_within_three_segments(cfg: Path) -> None:
    messages = Path(__file__).resolve().parent.parent / "plugins" / "quotas" / "messages"
    core = messages.parent.parent.parent / "messages"
    result = panelbot(
        cfg,
        "messages",
        "check",
        "--format",
        "json",
        "--messages-dir",
        str(messages),
        "--messages-dir",
        str(core),
    )
    report = json.loads(result.stdout)
    found = {}
    for locale in report["locales"]:
        for message in locale["messages"]:
            if message["name"] == "selection_invitation":
                found[locale["locale"]] = message
    assert set(found) == {"en", "cy", "pl", "ro", "ur"}
    for locale, message in found.items():
        assert message["status"] == "present" and message["used_locale"] == locale, message
        assert message["segments"] <= 3, message


def test_household_keys_ignore_case_and_spacing() -> None:
    from plugins.quotas.selection_cli import household_key

    assert household_key(" 12  High St ") == household_key("12 high st") == "12 high st"
    assert household_key("") is None and household_key(None) is None
