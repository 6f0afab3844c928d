"""The layering holds: the library never imports the runner, the report, the paper layer or matplotlib;
no two modules import each other in a cycle; no module grows past what a reader can hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import intriguing

PACKAGE = Path(intriguing.__file__).parent
UPPER_LAYERS = ("intriguing.runner", "intriguing.report", "intriguing.paper", "intriguing.cli",
                "intriguing.commands")
LIBRARY_ENTRY_POINTS = ("intriguing.attacks", "intriguing.transfer", "intriguing.units", "intriguing.spectral",
                        "intriguing.advtrain", "intriguing.zoo", "intriguing.data", "intriguing.stats",
                        "intriguing.seeding")
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str) -> set[str]:
    """Every intriguing module that ``name`` imports anywhere in its source (lazy imports included)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & MODULES.keys()
            found.update(submodules)  # `from package import module` needs the module, not the package's other parts
            if len(submodules) < len(node.names):
                found.add(node.module)
    return {m for m in found if m in MODULES and m != name}


def is_upper(name: str) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in UPPER_LAYERS)


def test_the_library_never_imports_the_layers_above_it():
    offences = [f"{name} imports {target}" for name in MODULES if not is_upper(name)
                for target in imported(name) if is_upper(target)]
    offences += [f"{name} imports matplotlib" for name in MODULES
                 if not name.startswith("intriguing.report") and "matplotlib" in MODULES[name].read_text()
                 and any(line.lstrip().startswith(("import matplotlib", "from matplotlib"))
                         for line in MODULES[name].read_text().splitlines())]
    assert offences == []


def test_importing_the_library_in_a_fresh_interpreter_loads_no_report_layer_or_matplotlib():
    probe = (
        f"import sys; import {', '.join(LIBRARY_ENTRY_POINTS)}; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib' "
        f"or any(m == l or m.startswith(l + '.') for l in {UPPER_LAYERS!r})); print(bad)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_no_import_cycle_among_the_packages_modules():
    graph = {name: imported(name) for name in MODULES}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return path + [name, target]
            if target not in state and (cycle := visit(target, path + [name])):
                return cycle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]):])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_longer_than_a_reader_can_hold(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_code_comments_cite_nothing_outside_the_repository():
    assert [name for name, path in MODULES.items() if "STYLE.md" in path.read_text(encoding="utf-8")] == []



def reached_from(starts: list[str]) -> set[str]:
    """``starts`` and every module they import, directly or not."""
    todo, reached = list(starts), set()
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(imported(name))
    return reached


def not_keyed(computing: set[str], key: tuple[str, ...]) -> list[str]:
    """The modules of ``computing`` that a code version over the packages ``key`` misses."""
    keyed = {m for m in MODULES if any(m == p or m.startswith(p + ".") for p in key)}
    infrastructure = {"intriguing", "intriguing.errors", "intriguing.records", "intriguing.versions"}
    return sorted(computing - keyed - infrastructure)


def test_stored_results_are_keyed_by_all_the_code_that_computes_them():
    """A stored section or unit of work is reused while the library code in ``runner.kept.LIBRARY`` is
    unchanged. A module the paper's sections reach that LIBRARY misses (the exact solver, the chains the
    bounds are computed on) would let a fixed bug's old numbers be reused silently."""
    from intriguing.runner.kept import LIBRARY

    reached = reached_from([m for m in MODULES if m.startswith("intriguing.paper.sections")] + ["intriguing.runner.work"])
    assert not_keyed({m for m in reached if not is_upper(m)} | {"intriguing.runner.work"}, LIBRARY) == []


def test_cached_checkpoints_are_keyed_by_all_the_training_code():
    """The same for the zoo's checkpoints: a cached model is one the current training code would train."""
    from intriguing.zoo import TRAINING_CODE

    assert not_keyed(reached_from(list(TRAINING_CODE)), TRAINING_CODE) == []
