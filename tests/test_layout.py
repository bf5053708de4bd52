"""The module boundaries a reviewer checks at a glance, checked on every run."""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT

# Tally's modules: the top level and the commands' package (commands/).
MODULES = sorted(ROOT.glob("*.py")) + sorted(ROOT.glob("commands/*.py"))
# The benchmarks (bench/) are programs on top of everything, which may reach
# past the boundaries below (a generator writes SQL; a load runs against the
# server): they are not among MODULES, and nothing imports them.
BENCHMARKS = sorted(ROOT.glob("bench/*.py"))


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
                                            ("markdown_it", "markup.py"),
                                            ("crawleruseragents", "visitors.py")])
def test_each_library_is_imported_in_one_module(library, owner):
    users = [p.name for p in MODULES if library in imported(p)]
    assert users == [owner]


def test_the_environment_is_read_in_one_place():
    readers = [p.name for p in MODULES if "os.environ" in p.read_text()]
    assert readers == ["server.py"]  # main() hands it to config.from_env, the only parser
    assert "environ.get" in (ROOT / "config.py").read_text()


def module_name(path) -> str:
    """As an import names it: server, commands, commands.counts."""
    if path.parent == ROOT:
        return path.stem
    return path.parent.name if path.stem == "__init__" else f"{path.parent.name}.{path.stem}"


OWN = {module_name(p) for p in MODULES}


def own_imports(path) -> set[str]:
    """The project's modules a module imports, at the top or inside a
    function (commands.counts, for `from commands import counts` too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in OWN} - {module_name(path)}


def test_the_commands_package_imports_within_itself_by_name():
    # A relative import would hide an arrow from the checks below.
    for path in ROOT.glob("commands/*.py"):
        assert not any(isinstance(node, ast.ImportFrom) and node.level
                       for node in ast.walk(ast.parse(path.read_text()))), path


def test_imports_point_down_and_never_in_a_circle():
    graph = {module_name(p): own_imports(p) for p in MODULES}
    assert graph["commands"] >= {"commands.counts", "commands.traffic"}
    assert "commands" in graph["server"]
    seen: dict[str, str] = {}

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join(path + (module,))
        if seen.get(module) == "done":
            return
        for lower in graph.get(module, ()):
            visit(lower, path + (module,))
        seen[module] = "done"
    for module in graph:
        visit(module, ())


@pytest.mark.parametrize("module, allowed", [
    ("storage", set()),                        # the base: imports nothing of Tally's
    ("sqlite_store", {"storage"}),
    ("postgres_store", {"storage"}),
    ("database", {"storage", "sqlite_store", "postgres_store"}),
])
def test_the_stores_build_on_storage_alone(module, allowed):
    assert own_imports(ROOT / f"{module}.py") <= allowed


def test_only_database_py_knows_the_concrete_stores():
    users = sorted(p.name for p in MODULES
                   if own_imports(p) & {"sqlite_store", "postgres_store"})
    assert users == ["database.py"]


def test_nothing_below_server_py_imports_it():
    users = sorted(p.name for p in MODULES if "server" in own_imports(p))
    assert users == []


def test_the_benchmarks_sit_on_top_and_nothing_imports_them():
    assert [p.name for p in BENCHMARKS] == ["scale.py", "speed.py"]
    users = sorted(p.name for p in MODULES if "bench" in imported(p))
    assert users == []


def test_only_github_py_speaks_http_to_the_outside():
    # The one HTTP client (to GitHub's API); nothing else may fetch anything.
    users = sorted(p.name for p in MODULES
                   if ("urllib.request" in p.read_text() or "http.client" in p.read_text()))
    assert users == ["github.py"]


def test_every_module_s_doctests_run():
    # pytest.ini collects *.py with --doctest-modules, leaving out only
    # postgres_store.py (psycopg may not import): it must hold none.
    assert ">>>" not in (ROOT / "postgres_store.py").read_text()
    ini = (ROOT / "pytest.ini").read_text()
    assert "testpaths = tests *.py commands" in ini
