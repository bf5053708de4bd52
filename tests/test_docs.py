"""README and docs/: every setting and command documented, every link resolving."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

import badge
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        text = line.lstrip("#").strip().lower()
        slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
        found.add(slug.replace(" ", "-"))
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [target for target in LINK.findall(text) if "://" not in target]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    for target in links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target}"


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "make run" in readme and "make test" in readme
    assert "![visitors](https://counter.example.org/badge?page_id=alice.my-repo)" in readme
    assert all(f"docs/{page.name}" in readme for page in PAGES[1:])


def test_the_readmes_badge_is_what_tally_draws():
    # The README's own badge follows the reader's scheme (issue 31).
    assert (ROOT / "docs" / "visitors.svg").read_text() == badge.render(
        badge.Look(style="social", theme="auto"), 1234, 0)


def test_every_command_and_its_options_are_in_the_docs():
    import argparse
    import server
    commands = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    parser = server.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in subparsers.choices.items():
        assert f"`{name}" in commands, name
        for action in command._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help", "--db"):
                    assert option in commands + (ROOT / "docs" / "settings.md").read_text(), \
                        f"{name} {option}"
