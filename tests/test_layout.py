"""The module boundaries a reviewer checks at a glance, checked on every run."""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT

MODULES = sorted(p for p in ROOT.glob("*.py"))


def imported(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("library, owner", [("sqlite3", "sqlite_store.py"), ("bottle", "server.py"),
                                            ("badgepy", "badge.py"), ("granian", "server.py"),
                                            ("psycopg", "postgres_store.py"),
                                            ("psycopg_pool", "postgres_store.py"),
                                            ("markdown_it", "markup.py")])
def test_each_library_is_imported_in_one_module(library, owner):
    users = [p.name for p in MODULES if library in imported(p) and p.name != "bench.py"]
    assert users == [owner]


def test_the_environment_is_read_in_one_place():
    readers = [p.name for p in MODULES if p.name != "bench.py" and "os.environ" in p.read_text()]
    assert readers == ["server.py"]  # main() hands it to config.from_env, the only parser
    assert "environ.get" in (ROOT / "config.py").read_text()
