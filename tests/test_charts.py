"""bot/web/charts.py: the SVG and its table carry the values, escape what came from data,
and say what they show to a screen reader."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from bot.web.charts import WIDTH, bar_chart, grouped_bar_chart, line_chart

SVG_NS = "{http://www.w3.org/2000/svg}"


def _svg(markup: str) -> ET.Element:
    found = re.search(r"<svg.*?</svg>", markup, re.S)
    assert found, markup
    return ET.fromstring(found.group(0))


def test_bar_chart_shows_each_label_and_value_in_svg_and_table() -> None:
    out = str(bar_chart("How easy?", [("Very easy", 42.5), ("Very hard", 7)]))
    svg = _svg(out)
    assert svg.get("role") == "img"
    assert svg.get("viewBox", "").startswith(f"0 0 {WIDTH} ")
    texts = [t.text for t in svg.iter(SVG_NS + "text")]
    assert texts == ["Very easy", "42.5%", "Very hard", "7%"]
    assert svg.find(SVG_NS + "title").text == "How easy?"
    assert "Very easy: 42.5%" in svg.find(SVG_NS + "desc").text
    # The longer value gets the longer bar.
    widths = [float(r.get("width")) for r in svg.iter(SVG_NS + "rect")]
    assert widths[0] > widths[1] > 0
    assert '<th scope="row">Very hard</th><td>7%</td>' in out


def test_bar_chart_escapes_labels_and_titles() -> None:
    out = str(bar_chart("<b>t</b>", [('<script>alert("x")</script>', 3)], unit=""))
    assert "<script>" not in out and "<b>" not in out
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in out
    _svg(out)  # still well-formed XML


def test_bar_chart_caps_at_max_value_and_survives_bad_numbers() -> None:
    svg = _svg(str(bar_chart("t", [("a", 250), ("b", float("nan")), ("c", None)], max_value=100)))
    widths = [float(r.get("width")) for r in svg.iter(SVG_NS + "rect")]
    assert widths[0] == WIDTH - 80 and widths[1] == 0 and widths[2] == 0


def test_empty_bar_chart_says_so() -> None:
    assert "No data yet" in str(bar_chart("Nothing", []))


def test_grouped_bars_legend_values_and_table() -> None:
    out = str(
        grouped_bar_chart(
            "Panel vs target", ["16-24", "75+"], [("Panel", [10, 20]), ("Target", [15, 12.5])]
        )
    )
    svg = _svg(out)
    texts = [t.text for t in svg.iter(SVG_NS + "text")]
    assert texts[:2] == ["Panel", "Target"]
    assert "10%" in texts and "12.5%" in texts
    assert "<td>20%</td><td>12.5%</td>" in out
    # The second series has a pattern, not colour alone.
    assert "<pattern" in out
    assert "16-24: Panel 10%, Target 15%" in svg.find(SVG_NS + "desc").text


def test_line_chart_steps_and_table() -> None:
    out = str(
        line_chart(
            "Over time",
            ["1 Dec", "2 Dec", "3 Dec"],
            [("Invited", [10, 10, 10]), ("Completed", [0, 3, 5])],
        )
    )
    svg = _svg(out)
    lines = list(svg.iter(SVG_NS + "polyline"))
    assert len(lines) == 2
    # A step line has two points per value after the first.
    assert len(lines[1].get("points").split()) == 5
    assert '<th scope="row">3 Dec</th><td>10</td><td>5</td>' in out
    assert "Completed: 5 by 3 Dec" in svg.find(SVG_NS + "desc").text


def test_each_chart_has_its_own_ids() -> None:
    a, b = str(bar_chart("a", [("x", 1)])), str(bar_chart("b", [("x", 1)]))
    ida = re.search(r'id="(chart\d+)"', a).group(1)
    idb = re.search(r'id="(chart\d+)"', b).group(1)
    assert ida != idb
