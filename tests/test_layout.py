"""The module boundaries a reviewer checks at a glance, checked on every run."""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT

# Tally's modules: the top level and its two packages, commands/ and stores/.
PACKAGES = ("commands", "stores")
MODULES = sorted(ROOT.glob("*.py")) + [p for pkg in PACKAGES for p in sorted(ROOT.glob(f"{pkg}/*.py"))]
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


@pytest.mark.parametrize("library, owner", [("sqlite3", "stores.sqlite_file"),
                                            ("bottle", "server"), ("badgepy", "badge"),
                                            ("granian", "server"), ("psycopg", "stores.postgres"),
                                            ("psycopg_pool", "stores.postgres"),
                                            ("markdown_it", "markup"),
                                            ("crawleruseragents", "visitors")])
def test_each_library_is_imported_in_one_module(library, owner):
    users = [module_name(p) for p in MODULES if library in imported(p)]
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


def test_the_packages_import_within_themselves_by_name():
    # A relative import would hide an arrow from the checks below.
    for path in [p for pkg in PACKAGES for p in ROOT.glob(f"{pkg}/*.py")]:
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


STORES = {"stores.values", "stores.writer", "stores.traffic", "stores.owners", "stores.store",
          "stores.sql"}


@pytest.mark.parametrize("module, allowed", [
    ("stores.values", set()),                   # the base: imports nothing of Tally's
    ("stores.sql", set()),
    ("stores.writer", {"stores.values"}),
    ("stores.traffic", {"stores.values", "stores.writer"}),
    ("stores.owners", {"stores.values", "stores.writer"}),
    ("stores.store", {"stores.values", "stores.writer", "stores.traffic", "stores.owners"}),
    ("stores.sqlite_file", {"stores.values"}),
    ("stores.sqlite", STORES | {"stores", "stores.sqlite_file"}),
    ("stores.postgres", STORES | {"stores"}),
    ("storage", {"stores", "stores.values", "stores.store", "stores.sqlite",
                 "stores.sqlite_file", "stores.postgres"}),
])
def test_the_stores_build_on_what_they_share_and_nothing_above(module, allowed):
    path = ROOT / (module.replace(".", "/") + ".py")
    assert own_imports(path) <= allowed


def test_only_storage_py_imports_the_stores():
    users = sorted(module_name(p) for p in MODULES
                   if any(name == "stores" or name.startswith("stores.") for name in own_imports(p))
                   and not module_name(p).startswith("stores"))
    assert users == ["storage"]


def test_no_store_inherits_more_than_the_interface():
    # The writer and the GitHub table are composed into each store, not
    # inherited through a chain of bases.
    for module in ("sqlite", "postgres"):
        tree = ast.parse((ROOT / "stores" / f"{module}.py").read_text())
        store = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Store")
        assert [ast.unparse(base) for base in store.bases] == ["Base"], module


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
    # stores/postgres.py (psycopg may not import): it must hold none.
    assert ">>>" not in (ROOT / "stores" / "postgres.py").read_text()
    ini = (ROOT / "pytest.ini").read_text()
    assert "testpaths = tests *.py commands" in ini


def test_rooms_stay_small():
    # issue 29: a module past 700 lines, a class past 300 or a function past
    # 80 is doing two jobs.
    too_big = []
    for path in MODULES:
        text = path.read_text()
        if text.count("\n") > 700:
            too_big.append(f"{module_name(path)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            limit = {ast.ClassDef: 300, ast.FunctionDef: 80, ast.AsyncFunctionDef: 80}.get(type(node))
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_big.append(f"{module_name(path)}.{node.name}: "
                               f"{node.end_lineno - node.lineno + 1} lines")
    assert too_big == []
