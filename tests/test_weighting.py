"""Raking (plugins/quotas/weighting.py) and ``survey results --weighted`` over the real CLI.

The raking cases have answers worked out by hand; the command-line ones run on a real
SQLite file with answers given through ``panelbot chat``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.config import load_settings
from plugins.quotas import weighting
from plugins.quotas.weighting import effective_sample_size, kish_design_effect, rake

# -- raking ----------------------------------------------------------------------------------


def test_raking_a_two_by_two_reaches_the_known_weights() -> None:
    # Sex and age are independent in the sample (women 6 of 9, young 1 in 3), so raking to
    # half women and half young gives each cell the product of its two factors:
    # women 0.5/(2/3) = 0.75, men 1.5; young 0.5/(1/3) = 1.5, old 0.75.
    cells = [("f", "young")] * 2 + [("f", "old")] * 4 + [("m", "young")] + [("m", "old")] * 2
    result = rake(
        {"sex": [c[0] for c in cells], "age": [c[1] for c in cells]},
        {"sex": {"f": 0.5, "m": 0.5}, "age": {"young": 0.5, "old": 0.5}},
    )
    expected = {("f", "young"): 1.125, ("f", "old"): 0.5625, ("m", "young"): 2.25}
    expected[("m", "old")] = 1.125
    assert result.converged and result.max_error < 1e-6
    np.testing.assert_allclose(result.weights, [expected[c] for c in cells], atol=1e-9)
    assert result.weights.mean() == pytest.approx(1.0)


def test_raking_hits_every_margin_on_a_skewed_sample() -> None:
    rng = np.random.default_rng(7)
    n = 2000
    age = rng.choice(["16-34", "35-64", "65+"], n, p=[0.1, 0.4, 0.5])
    imd = np.where(age == "65+", rng.choice(["1", "5"], n, p=[0.2, 0.8]), rng.choice(["1", "5"], n))
    targets = {"age": {"16-34": 0.3, "35-64": 0.5, "65+": 0.2}, "imd": {"1": 0.6, "5": 0.4}}
    result = rake({"age": age, "imd": imd}, targets, tolerance=1e-9)
    assert result.converged and result.iterations > 1
    for name, column in (("age", age), ("imd", imd)):
        for value, share in targets[name].items():
            assert result.weights[column == value].sum() / n == pytest.approx(share, abs=1e-9)


def test_an_impossible_case_says_it_did_not_converge_and_how_far_off() -> None:
    # Everyone female is young and everyone male is old, so half women and 20% young
    # cannot both hold: the margins fight and the larger gap stays at 0.3.
    result = rake(
        {"sex": ["f", "m"], "age": ["young", "old"]},
        {"sex": {"f": 0.5, "m": 0.5}, "age": {"young": 0.2, "old": 0.8}},
        max_iterations=50,
    )
    assert not result.converged
    assert result.iterations == 50
    assert result.max_error == pytest.approx(0.3)
    assert result.diagnostics()["converged"] is False


def test_bounds_are_respected_and_a_failure_is_reported() -> None:
    sex = ["f"] * 9 + ["m"]
    bounded = rake({"sex": sex}, {"sex": {"f": 0.6, "m": 0.4}}, bounds=(0.5, 5.0))
    # Unbounded, the man would weigh 4; within 0.5 to 5 that is reached exactly.
    assert bounded.converged and bounded.bounds_held
    assert bounded.weights.max() == pytest.approx(4.0)
    tight = rake({"sex": sex}, {"sex": {"f": 0.6, "m": 0.4}}, bounds=(0.5, 2.0), max_iterations=200)
    assert not tight.converged
    assert tight.bounds_held is True  # the weights end within the bounds...
    assert tight.max_error > 0.1  # ...and the margin is honestly missed
    assert tight.weights.max() <= 2.0 + 1e-9 and tight.weights.min() >= 0.5 - 1e-9
    assert tight.diagnostics()["bounds"] == [0.5, 2.0]


def test_design_effect_and_effective_sample_size_on_a_known_set() -> None:
    w = np.array([1.0, 1.0, 2.0, 4.0])  # sum 8, sum of squares 22
    assert kish_design_effect(w) == pytest.approx(4 * 22 / 64)
    assert effective_sample_size(w) == pytest.approx(64 / 22)
    assert kish_design_effect(np.ones(5)) == 1.0 and effective_sample_size(np.ones(5)) == 5.0


def test_an_empty_cell_is_named_and_the_rest_reached() -> None:
    result = rake(
        {"age": ["35-64", "35-64", "65+", "65+", "65+", "65+"]},
        {"age": {"16-34": 0.2, "35-64": 0.4, "65+": 0.4}},
    )
    assert result.empty_cells == [{"field": "age", "value": "16-34", "target": 0.2}]
    # The other values share the population left: 0.4 and 0.4 of 0.8, half each.
    assert result.converged
    assert result.weights[:2].sum() == pytest.approx(result.weights[2:].sum())


def test_unknown_values_are_left_out_of_their_field_only() -> None:
    result = rake(
        {"sex": ["f", "f", "f", "m", None, "prefer not"], "age": ["y", "o", "y", "o", "y", "o"]},
        {"sex": {"f": 0.5, "m": 0.5}, "age": {"y": 0.5, "o": 0.5}},
        tolerance=1e-10,
    )
    assert result.unknown == {"sex": 2}
    w = result.weights
    assert w[:3].sum() == pytest.approx(w[3])  # among the known sexes, half and half
    assert w[[0, 2, 4]].sum() == pytest.approx(w[[1, 3, 5]].sum())  # everyone's age counts


def test_weighting_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "panelbot.toml"
    path.write_text(
        "[plugins.quotas]\nweight_tolerance = 0.5\nweight_max_iterations = 0\n"
        "weight_bounds = [2, 5]\n",
        encoding="utf-8",
    )
    problems = dict(weighting.check_config(load_settings(path)))
    assert set(problems) == {
        "plugins.quotas.weight_tolerance",
        "plugins.quotas.weight_max_iterations",
        "plugins.quotas.weight_bounds",
    }
    path.write_text("[plugins.quotas]\nweight_bounds = [0.2, 5]\n", encoding="utf-8")
    settings = load_settings(path)
    assert weighting.check_config(settings) == []
    assert weighting.options(settings)["bounds"] == (0.2, 5.0)


# -- survey results --weighted, through the command line -------------------------------------

SURVEY = """\
id = "gp"
title = "Seeing a GP"
locales = ["en"]
intro.en = "A short survey."

[[questions]]
id = "ease"
type = "choice"
text.en = "How easy was it?"
options = [
  { id = "easy", text.en = "Easy" },
  { id = "hard", text.en = "Hard" },
]
"""

BASE = (
    '[bot]\nname = "Weighted Panel"\ndatabase = "panel.db"\nquiet_hours = false\n'
    "[channels.simulator]\nenabled = true\n"
    '[[panel.fields]]\nname = "sex"\nvalues = ["female", "male"]\ntext.en = "Your sex?"\n'
    '[[panel.fields]]\nname = "area"\nvalues = ["north", "south"]\ntext.en = "Your area?"\n'
)
TARGETS = (
    "[plugins.quotas]\npanel_size_target = 1000\n"
    "[plugins.quotas.population.sex]\nfemale = 0.5\nmale = 0.5\n"
)


def run(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        input=stdin,
        cwd=config.parent,
    )


def ok(config: Path, *args: str, stdin: str | None = None) -> str:
    result = run(config, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def panel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three women and a man answered: two women easy, a woman and the man hard."""
    root = tmp_path_factory.mktemp("weighted")
    path = root / "panelbot.toml"
    path.write_text(BASE + TARGETS, encoding="utf-8")
    (root / "gp.toml").write_text(SURVEY, encoding="utf-8")
    ok(path, "survey", "add", str(root / "gp.toml"))
    people = (("ann", "1", "1"), ("bea", "1", "2"), ("cat", "1", "1"), ("dan", "2", "2"))
    for name, sex, area in people:
        ok(path, "chat", "--as", f"sim:{name}", stdin=f"hi\nyes\n{sex}\n{area}\n")
    ok(path, "survey", "launch", "gp", "--close-after", "3d")
    for name, answer in (("ann", "1"), ("bea", "1"), ("cat", "2"), ("dan", "2")):
        ok(path, "chat", "--as", f"sim:{name}", stdin=f"{answer}\n")
    return path


def test_weighted_results_in_json_carry_weights_moe_and_diagnostics(panel: Path) -> None:
    data = json.loads(ok(panel, "survey", "results", "gp", "--weighted", "--format", "json"))
    # Women 3 of 4 weigh 0.5/0.75 = 2/3 each, the man 0.5/0.25 = 2: easy is (2/3 + 2/3)/4.
    options = {o["id"]: o for o in data["questions"][0]["options"]}
    assert options["easy"]["percent"] == 33.3 and options["hard"]["percent"] == 66.7
    # "count" is who answered, unweighted (ann and bea); the weighted sum is apart.
    assert (options["easy"]["count"], options["easy"]["weighted_count"]) == (2, 1.33)
    assert (options["hard"]["count"], options["hard"]["weighted_count"]) == (2, 2.67)
    w = data["weighting"]
    assert w["converged"] is True and w["fields"] == ["sex"]
    assert w["respondents"] == 4
    # deff = 4 * (3 * 4/9 + 4) / 4**2 = 4/3; n_eff = 3.
    assert w["design_effect"] == pytest.approx(1.333, abs=1e-3)
    assert w["n_eff"] == 3.0 and data["questions"][0]["n_eff"] == 3.0
    # 1.96 * sqrt((1/3)(2/3)/3) = 0.5334: 53.3 points either way, on three effective answers.
    assert options["easy"]["moe"] == round(100 * 1.96 * math.sqrt((1 / 3) * (2 / 3) / 3), 1)
    assert options["easy"]["moe"] == 53.3
    [wave] = data["representativeness"]
    assert wave["respondents"] == 4
    assert wave["before"] == {
        "field": "sex",
        "value": "female",
        "respondents_percent": 75.0,
        "population_percent": 50.0,
        "gap_points": 25.0,
    }
    assert abs(wave["after"]["gap_points"]) == 0.0


def test_weighted_table_by_group_and_csv(panel: Path) -> None:
    table = ok(panel, "survey", "results", "gp", "--weighted", "--by", "area")
    assert "weights: raked on sex; converged in" in table
    assert "design effect 1.333, effective sample size 3.0 of 4 respondents" in table
    assert "largest gap from the population sex=female +25.0 points" in table
    assert "after weighting" in table
    easy = next(line for line in table.splitlines() if line.strip().startswith("Easy"))
    assert easy.split()[1:4] == ["2", "33.3%", "±53.3"]  # unweighted n, weighted percent
    # area=north: ann and cat, both women (weights 2/3 each), so n_eff 2: easy 50% ± 69.3.
    north = next(line for line in table.splitlines() if "area=north" in line)
    assert north.startswith("    area=north (2, effective 2.0): Easy 50.0% ±69.3")

    rows = list(
        csv.DictReader(
            io.StringIO(ok(panel, "survey", "results", "gp", "--weighted", "--format", "csv"))
        )
    )
    easy_row = next(r for r in rows if r["option"] == "easy" and r["group"] == "all")
    assert (easy_row["percent"], easy_row["moe"]) == ("33.3", "53.3")
    assert (easy_row["count"], easy_row["weighted_count"]) == ("2", "1.33")
    plain = ok(panel, "survey", "results", "gp", "--format", "csv")
    assert "moe" not in plain.splitlines()[0] and "weighted_count" not in plain


def test_unweighted_results_still_show_representativeness(panel: Path) -> None:
    data = json.loads(ok(panel, "survey", "results", "gp", "--format", "json"))
    assert data["weighting"] is None
    assert data["questions"][0]["options"][0]["percent"] == 50.0
    assert "moe" not in data["questions"][0]["options"][0]
    assert "weighted_count" not in data["questions"][0]["options"][0]
    assert data["questions"][0]["options"][0]["count"] == 2
    assert data["representativeness"][0]["before"]["gap_points"] == 25.0
    assert "after" not in data["representativeness"][0]


def test_weighted_without_targets_is_a_one_line_error(panel: Path, tmp_path: Path) -> None:
    path = tmp_path / "panelbot.toml"
    path.write_text(
        BASE.replace('database = "panel.db"', f'database = "{panel.parent / "panel.db"}"'),
        encoding="utf-8",
    )
    result = run(path, "survey", "results", "gp", "--weighted")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "no plugin provides weights" in line and "has none" in line


def test_weighted_results_before_anyone_answered(tmp_path: Path) -> None:
    path = tmp_path / "panelbot.toml"
    path.write_text(BASE + TARGETS, encoding="utf-8")
    (tmp_path / "gp.toml").write_text(SURVEY, encoding="utf-8")
    ok(path, "survey", "add", str(tmp_path / "gp.toml"))
    table = ok(path, "survey", "results", "gp", "--weighted")
    assert "weights: nobody has answered yet, so there is nothing to weight" in table
    assert "±" not in table  # no margin of error on no answers
    data = json.loads(ok(path, "survey", "results", "gp", "--weighted", "--format", "json"))
    assert data["weighting"]["respondents"] == 0
    assert data["questions"][0]["options"][0]["moe"] is None
    assert data["representativeness"] == []


def test_bounds_from_config_are_shown_and_checked(panel: Path, tmp_path: Path) -> None:
    path = tmp_path / "panelbot.toml"
    database = f'database = "{panel.parent / "panel.db"}"'
    config = (BASE + TARGETS).replace('database = "panel.db"', database)
    # The man needs a weight of 2 to stand for half the population; 1.5 is the most allowed.
    path.write_text(
        config.replace(
            "panel_size_target = 1000\n", "panel_size_target = 1000\nweight_bounds = [0.5, 1.5]\n"
        ),
        encoding="utf-8",
    )
    data = json.loads(ok(path, "survey", "results", "gp", "--weighted", "--format", "json"))
    w = data["weighting"]
    assert w["bounds"] == [0.5, 1.5] and w["bounds_held"] is True
    assert w["max_weight"] <= 1.5 and w["converged"] is False
    table = ok(path, "survey", "results", "gp", "--weighted")
    assert "NOT converged after" in table
    assert "weight bounds 0.5 to 1.5: held" in table

    path.write_text(
        config.replace(
            "panel_size_target = 1000\n", "panel_size_target = 1000\nweight_bounds = [2, 5]\n"
        ),
        encoding="utf-8",
    )
    result = run(path, "config", "check")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "plugins.quotas.weight_bounds" in result.stdout + result.stderr
