"""Tally's badges beside shields.io's own renderer (npm badge-maker 6, run with
Debian's node): widths, the label/message split, text and fill colours, for a
matrix of styles x labels x messages x colours. The matrix and the per-style
differences are written to test-output/ for a person to read; the browser test
turns test-output/looks.html into a screenshot."""

from __future__ import annotations

import base64
import html
import itertools
import json
import shutil
import statistics
import subprocess
import xml.etree.ElementTree as ET

import pytest

import badge
import params
from conftest import ROOT, missing

NODE_DIR = ROOT / "tests" / "node"
OUTPUT = ROOT / "test-output"
SVG = "{http://www.w3.org/2000/svg}"

STYLES = ["flat", "flat-square", "plastic", "for-the-badge", "social"]
LABELS = ["visitors", "page views", "访客", "👀 views"]
MESSAGES = ["7", "1,234,567"]
COLOURS = [("#555", "#1283c3"), ("#eee", "#f0f0f0"), ("grey", "brightgreen"),
           ("#595959", "yellow"), ("lightgrey", "orange")]
# flat stays pybadges' badge(), measured with its DejaVu Sans table rather
# than shields' Verdana: its widths may differ by a little more (docs/parameters.md).
TOLERANCE = {"flat": 3.0}
CASES = list(itertools.product(STYLES, LABELS, MESSAGES, COLOURS))


def shields_svgs() -> list[str]:
    npm, node = shutil.which("npm"), shutil.which("node")
    if not (npm and node):
        missing("node and npm are not installed",
                "node and npm are required in CI (.ci/run installs them)")
    if not (NODE_DIR / "node_modules" / "badge-maker").is_dir():
        subprocess.run([npm, "install", "--no-package-lock", "--no-audit", "--no-fund",
                        "--prefix", str(NODE_DIR)], check=True, capture_output=True, timeout=600)
    cases = [{"label": label, "message": message, "labelColor": label_color, "color": color,
              "style": style} for style, label, message, (label_color, color) in CASES]
    out = subprocess.run([node, str(NODE_DIR / "badge_maker.mjs")], input=json.dumps(cases),
                         capture_output=True, text=True, check=True, timeout=120, cwd=NODE_DIR)
    return json.loads(out.stdout)


def ours(style: str, label: str, message: str, label_color: str, color: str) -> str:
    look = params.look_from({"label": ("label", label), "label_color": ("labelColor", label_color),
                             "color": ("color", color), "style": ("style", style)})
    return badge.render_fresh(look, message)


def measure(svg: str) -> dict:
    """Width, where the message part starts, the drawn texts' colours and the fills."""
    root = ET.fromstring(svg)
    parents = {child: parent for parent in root.iter() for child in parent}

    def inherited_fill(element) -> str:
        while element is not None:
            if element.get("fill"):
                return element.get("fill")
            element = parents.get(element)
        return "#000"

    def shadow(text) -> bool:
        # Both renderers mark a shadow on the text itself (aria-hidden or an
        # opacity); shields also hides social's whole text group, as the
        # root's aria-label already says it all.
        return text.get("aria-hidden") == "true" or bool(text.get("fill-opacity"))

    texts = [t for t in root.iter(SVG + "text") if not shadow(t) and (t.text or "").strip()]
    rects = list(root.iter(SVG + "rect"))
    return {"width": float(root.get("width")),
            "split": min((float(r.get("x")) for r in rects if r.get("x") and float(r.get("x")) > 1),
                         default=0.0),
            "text_colours": [inherited_fill(t) for t in texts],
            "fills": sorted({r.get("fill") for r in rects if (r.get("fill") or "").startswith("#")}
                            - {"#fff"})}


@pytest.fixture(scope="module")
def compared() -> list[dict]:
    theirs = shields_svgs()
    rows = []
    for (style, label, message, (label_color, color)), shields in zip(CASES, theirs):
        mine = ours(style, label, message, label_color, color)
        rows.append({"style": style, "label": label, "message": message, "labelColor": label_color,
                     "color": color, "tally": measure(mine), "shields": measure(shields),
                     "tally_svg": mine, "shields_svg": shields})
    write_report(rows)
    return rows


def write_report(rows: list[dict]) -> None:
    OUTPUT.mkdir(exist_ok=True)
    summary = {}
    for style in STYLES:
        diffs = [abs(r["tally"]["width"] - r["shields"]["width"]) for r in rows if r["style"] == style]
        summary[style] = {"cases": len(diffs), "mean_width_difference_px": round(statistics.mean(diffs), 2),
                          "worst_width_difference_px": round(max(diffs), 2)}
    matrix = [{k: v for k, v in r.items() if not k.endswith("_svg")} for r in rows]
    (OUTPUT / "looks-matrix.json").write_text(json.dumps({"summary": summary, "cases": matrix},
                                                         ensure_ascii=False, indent=1))
    # Each badge as its own image: inline SVGs in one page would share ids
    # (clip paths, gradients) and clip each other.
    def image(svg: str) -> str:
        return f'<img alt="" src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}">'
    cells = "".join(
        f"<tr><td>{html.escape(r['style'])}</td><td>{html.escape(r['label'])}</td>"
        f"<td>{html.escape(r['labelColor'])} / {html.escape(r['color'])}</td>"
        f"<td>{image(r['tally_svg'])}</td><td>{image(r['shields_svg'])}</td></tr>" for r in rows)
    (OUTPUT / "looks.html").write_text(
        "<!doctype html><meta charset=utf-8><title>Tally beside badge-maker</title>"
        "<style>body{font:14px sans-serif}td{padding:4px 8px}img{display:block}</style>"
        "<table><tr><th>style</th><th>label</th><th>colours</th><th>Tally</th>"
        f"<th>shields.io badge-maker</th></tr>{cells}</table>", encoding="utf-8")


@pytest.mark.parametrize("style", STYLES)
def test_total_width_and_split_match_shields(compared, style):
    tolerance = TOLERANCE.get(style, 1.0)
    for row in (r for r in compared if r["style"] == style):
        case = (row["label"], row["message"], row["labelColor"], row["color"])
        assert abs(row["tally"]["width"] - row["shields"]["width"]) <= tolerance, case
        assert abs(row["tally"]["split"] - row["shields"]["split"]) <= tolerance, case


@pytest.mark.parametrize("style", STYLES)
def test_text_colours_match_shields_for_each_part(compared, style):
    for row in (r for r in compared if r["style"] == style):
        case = (row["label"], row["message"], row["labelColor"], row["color"])
        assert row["tally"]["text_colours"] == row["shields"]["text_colours"], case


@pytest.mark.parametrize("style", STYLES)
def test_fill_colours_match_shields(compared, style):
    for row in (r for r in compared if r["style"] == style):
        case = (row["label"], row["message"], row["labelColor"], row["color"])
        assert row["tally"]["fills"] == row["shields"]["fills"], case


def test_the_report_is_written(compared):
    summary = json.loads((OUTPUT / "looks-matrix.json").read_text())["summary"]
    assert set(summary) == set(STYLES) and all(s["cases"] == len(CASES) // len(STYLES)
                                                 for s in summary.values())


def test_a_screenshot_of_every_case_beside_badge_maker(compared, browser):  # noqa: F811
    page = browser.new_page(device_scale_factor=2)
    page.goto((OUTPUT / "looks.html").as_uri())
    rows = page.locator("tr").count()
    assert rows == len(CASES) + 1
    # Every badge drew: each image loaded with the width its SVG declares.
    widths = page.evaluate("[...document.querySelectorAll('img')].map(i => i.complete ? i.naturalWidth : 0)")
    declared = [round(measure(r[k])["width"]) for r in compared for k in ("tally_svg", "shields_svg")]
    assert len(widths) == 2 * len(CASES)
    assert all(abs(w - d) <= 1 for w, d in zip(widths, declared))
    page.screenshot(path=str(OUTPUT / "looks.png"), full_page=True)
    page.close()
