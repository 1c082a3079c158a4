"""raygan's layout: no module imports one that imports it back, and the libraries never reach up to the
commands built on them.

The import graph is read from the source with `ast` (nothing is imported), every import counted, those
inside functions too: a lazy import only hides a cycle until the day someone moves it to the top.
"""

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "raygan"
COMMANDS = (
    "raygan.cli",
    "raygan.tune",
    "raygan.report",
    "raygan.sampling",
    "raygan.compare",
    "raygan.export",
    "raygan.serve",
)
SWEEP_READERS = ("raygan.report", "raygan.cli")
RAY_ROOMS = (  # the modules that hold raygan's Ray glue
    "raygan.ray_private",
    "raygan.train.session",
    "raygan.train.local_ray",
    "raygan.train.reports",
    "raygan.train.ray_train",
    "raygan.train.bench",
)
NEVER_IMPORTS = {  # a part of raygan -> what it must not import (a name covers the package's modules)
    "raygan.config": ("raygan.models", "raygan.metrics", "raygan.train", "raygan.data", *COMMANDS),
    "raygan.storage": ("raygan.config", "raygan.data", "raygan.train", *COMMANDS),
    "raygan.data": ("raygan.models", "raygan.metrics", "raygan.train", "raygan.checkpoint", *COMMANDS),
    "raygan.models": ("raygan.metrics", "raygan.train", "raygan.checkpoint", *COMMANDS),
    "raygan.images": ("raygan.metrics", "raygan.train", "raygan.checkpoint", *COMMANDS),
    "raygan.metrics": ("raygan.train", "raygan.checkpoint", *COMMANDS),
    "raygan.checkpoint": ("raygan.metrics", "raygan.train", *COMMANDS),
    "raygan.train": COMMANDS,
    # the rooms of train: the step and the loop know no Ray; the adapter (ray_train) uses the session (the Ray a
    # command runs on) and the report bridge, and bench runs the adapter's workers; the report's type is a leaf
    "raygan.train.step": (*RAY_ROOMS, "raygan.train.loop"),
    "raygan.train.loop": RAY_ROOMS,
    "raygan.train.train_report": ("raygan.train", *RAY_ROOMS),
    "raygan.train.session": ("raygan.train.ray_train", "raygan.train.reports", "raygan.train.bench"),
    "raygan.train.reports": ("raygan.train.ray_train", "raygan.train.session", "raygan.train.bench"),
    "raygan.train.ray_train": ("raygan.train.bench",),
    "raygan.ray_private": ("raygan",),  # Ray's private names, and nothing of raygan's
    # inside the sweep (its __main__ is the CLI): report and cli read a sweep's results from summary, which
    # knows no driver, and no room of tune reads the report
    "raygan.tune.space": (
        *SWEEP_READERS,
        "raygan.tune.searchers",
        "raygan.tune.trials",
        "raygan.tune.summary",
        "raygan.tune.sweep",
    ),
    "raygan.tune.searchers": (*SWEEP_READERS, "raygan.tune.trials", "raygan.tune.summary", "raygan.tune.sweep"),
    "raygan.tune.summary": (*SWEEP_READERS, "raygan.tune.searchers", "raygan.tune.trials", "raygan.tune.sweep"),
    "raygan.tune.trials": (*SWEEP_READERS, "raygan.tune.sweep"),
    "raygan.tune.sweep": SWEEP_READERS,
    "raygan.report": ("raygan.cli", "raygan.tune.searchers", "raygan.tune.trials", "raygan.tune.sweep"),
    "raygan.report.loading": ("raygan.report.plots", "raygan.report.page"),
    "raygan.report.plots": ("raygan.report.page",),
}
REEXPORT_ONLY = ("raygan.tune", "raygan.report")  # packages whose __init__ re-exports and implements nothing
MAX_MODULE_LINES = 650  # past this a module holds more than one concern; split it by concern


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere in it (`from raygan import storage` counts
    raygan.storage). Only the modules named count: Python also runs the packages above `raygan.a.b`,
    but a package's __init__ that imports its own modules is how a package is built, not a cycle."""
    this = module_name(path, root)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .x import y: relative to this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in modules and name != this}


@functools.cache
def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports."""
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in paths}
    return {module_name(path, root): imported_modules(path, root, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """A shortest cycle [a, b, ..., a] for each group of modules that reach each other."""
    reach = {name: reachable(graph, name) for name in graph}
    found, seen = [], set()
    for name in sorted(graph):
        if name in seen or name not in reach[name]:
            continue
        seen |= {other for other in reach[name] if name in reach[other]}
        found.append(shortest_path_back(graph, name))
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    found, todo = set(), list(graph[start])
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(graph[name])
    return found


def shortest_path_back(graph: dict[str, set[str]], start: str) -> list[str]:
    """Breadth first from `start` until an import leads back to it."""
    came_from, frontier = {}, [start]
    while frontier:
        following = []
        for name in frontier:
            for child in sorted(graph[name]):
                if child == start:
                    path = [name]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if child not in came_from:
                    came_from[child] = name
                    following.append(child)
        frontier = following
    raise ValueError(f"{start} is on no cycle")


def test_the_graph_counts_imports_inside_functions_and_relative_ones(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub import a  # a package importing its own module\n")
    (package / "sub" / "a.py").write_text("def f():\n    from .. import b\n")
    (package / "b.py").write_text("from pkg.sub.a import f\n")
    (package / "c.py").write_text("import pkg.b\n")
    graph = import_graph(package)
    assert graph == {
        "pkg": set(),
        "pkg.sub": {"pkg.sub.a"},
        "pkg.sub.a": {"pkg", "pkg.b"},
        "pkg.b": {"pkg.sub.a"},
        "pkg.c": {"pkg.b"},
    }
    assert cycles(graph) == [["pkg.b", "pkg.sub.a", "pkg.b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_the_libraries_never_import_what_is_built_on_them():
    graph = import_graph()
    assert "raygan.train.ray_train" in graph["raygan.cli"]  # the graph sees imports inside functions

    def within(name: str, part: str) -> bool:
        return name == part or name.startswith(part + ".")

    upward = sorted(
        f"{module} -> {imported}"
        for module, imports in graph.items()
        for part, forbidden in NEVER_IMPORTS.items()
        if within(module, part)
        for imported in imports
        if any(within(imported, other) for other in forbidden)
    )
    assert not upward, "imports that point upwards:\n" + "\n".join(upward)


def test_the_packages_that_re_export_implement_nothing():
    for package in REEXPORT_ONLY:
        init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py")
        tree = ast.parse(init.read_text())
        defined = [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        assert not defined, f"{init}: defines {defined}; move them to the module that owns them"
        assert "raygan.tune.summary" in import_graph()["raygan.report.loading"]  # readers import the producer's rows


def test_every_module_says_what_it_owns_and_stays_small():
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if not text.strip():
            continue  # an empty package __init__ owns nothing
        lines = text.count("\n")
        assert lines <= MAX_MODULE_LINES, f"{path}: {lines} lines (at most {MAX_MODULE_LINES}); split it by concern"
        docstring = ast.get_docstring(ast.parse(text))
        assert docstring and docstring.strip(), f"{path}: no docstring whose first line says what it owns"
