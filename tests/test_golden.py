"""Golden SVG files: each style and a few inputs, compared as parsed XML so a
visual change shows as a readable diff. `make golden` rewrites them on purpose."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

import badge
from badge import Look
from conftest import ROOT

GOLDEN = ROOT / "tests" / "golden"

CASES = {
    f"{style}-default": (Look(style=style), 1234, 5) for style in badge.STYLES
} | {
    "flat-comma-both": (Look(format="comma", show="both"), 1234567, 89),
    "flat-short-base": (Look(format="short", base=1_000_000), 234_567, 0),
    "plastic-colours": (Look(style="plastic", label="hits", label_color="#ffeeaa", color="rgb(20,120,60)"), 42, 1),
    "for-the-badge-short": (Look(style="for-the-badge", label="views", format="short"), 15_300, 0),
    "social-today": (Look(style="social", label="readers", show="today"), 0, 77),
    "flat-cjk-label": (Look(label="访客 👀"), 7, 7),
    "flat-rtl-label": (Look(label="زوار"), 7, 7),
    "flat-escaped-label": (Look(label='<b>"&"</b>'), 3, 3),
    "flat-square-logo": (Look(style="flat-square", logo="data:image/svg+xml;base64,PHN2Zy8+"), 9, 9),
    # Themes (issue 31): the files above are the light drawing, unchanged.
    "social-dark": (Look(style="social", theme="dark"), 1234, 5),
    "social-auto": (Look(style="social", theme="auto"), 1234, 5),
    "plastic-auto-dark-colours": (Look(style="plastic", theme="auto", label_color_dark="#222",
                                       color_dark="#ea7233"), 42, 1),
}


def structure(svg: str) -> list[str]:
    """One line per element: its path, sorted attributes and text."""
    lines = []

    def walk(element: ET.Element, path: str) -> None:
        tag = element.tag.split("}")[-1]
        here = f"{path}/{tag}"
        attrs = " ".join(f"{k.split('}')[-1]}={v!r}" for k, v in sorted(element.attrib.items()))
        text = (element.text or "").strip()
        lines.append(f"{here} {attrs}" + (f" text={text!r}" if text else ""))
        for child in element:
            walk(child, here)
    walk(ET.fromstring(svg), "")
    return lines


@pytest.mark.parametrize("name", sorted(CASES))
def test_badge_matches_its_golden_file(name):
    look, total, today = CASES[name]
    svg = badge.render(look, total, today)
    path = GOLDEN / f"{name}.svg"
    if os.environ.get("TALLY_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(svg + "\n", encoding="utf-8")
    assert structure(svg) == structure(path.read_text(encoding="utf-8"))
    # Byte for byte too: a README's badge must not change under its readers.
    assert svg + "\n" == path.read_text(encoding="utf-8")


def test_every_golden_file_has_a_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.svg")) == sorted(CASES)
