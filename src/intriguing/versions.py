"""Which version of the code produced a stored result, so that caches notice code changes.

``__version__`` is the package's release; :func:`code_version` names the code itself.

Checkpoints, stored sections and stored attack artifacts are keyed by a hash of the source of the
modules that computed them. The hash is taken over the parsed syntax tree with docstrings removed
(comments never reach it), so editing documentation keeps caches valid while any change to what the
code does, in training, the solver or an analysis, makes the next run recompute.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import pkgutil

from intriguing.errors import IntriguingError

__version__ = "0.1.0"


@functools.lru_cache(maxsize=None)
def _module_digest(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise IntriguingError(f"code_version: no Python source for module {name!r}")
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=spec.origin)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def _expand(name: str) -> list[str]:
    """A module, or every module of a package (recursively), in a fixed order."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise IntriguingError(f"code_version: unknown module {name!r}")
    if not spec.submodule_search_locations:
        return [name]
    found = [name]
    for info in pkgutil.walk_packages(spec.submodule_search_locations, prefix=f"{name}."):
        found.append(info.name)
    return sorted(found)


@functools.lru_cache(maxsize=None)
def code_version(*modules: str) -> str:
    """A short hash of the given modules' code (packages include all their modules)."""
    names = sorted({m for name in modules for m in _expand(name)})
    digest = hashlib.sha256()
    for name in names:
        digest.update(f"{name}:{_module_digest(name)}\n".encode())
    return digest.hexdigest()[:12]
