"""Code as a dependency: the project files a module runs, found statically.

`import_closure("stages.train")` is the stage's own file plus every module of the project's packages
it imports, directly or through others, at the top level or inside a function (a lazy import still
runs when the stage does), and the `__init__.py` of every package on the way (importing
`diffrepro.methods.sparse` runs `diffrepro/__init__.py` and `diffrepro/methods/__init__.py`).
Imports of other packages (torch, numpy, ...) are not followed: the installed software is not
tracked. The Snakefile lists these files as inputs of the stage's rule and dvc.yaml as `deps:`, so
editing a module reruns exactly the jobs whose stage imports it; README, tests and benchmarks are in
no closure.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Iterable, List, Optional

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("diffrepro", "stages", "workflow")


def module_file(module: str, root: Path = ROOT) -> Optional[Path]:
    """The file that defines `module` (a module file or a package's __init__.py) under `root`, or None."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imported_modules(module: str, root: Path = ROOT) -> List[str]:
    """Project modules that `module`'s source imports anywhere in its body (absolute or relative)."""
    path = module_file(module, root)
    if path is None:
        return []
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(module, path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append(target)
            # `from pkg import name`: name may be a submodule
            found += [f"{target}.{alias.name}" for alias in node.names if alias.name != "*"]
    return [m for m in found if m.split(".")[0] in PACKAGES and module_file(m, root) is not None]


def _with_parents(module: str) -> Iterable[str]:
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


@lru_cache(maxsize=None)
def _closure(module: str, root: Path) -> tuple:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        for name in _with_parents(m):
            if name not in seen and module_file(name, root) is not None:
                seen.add(name)
                todo.extend(imported_modules(name, root))
    files = {module_file(m, root).relative_to(root).as_posix() for m in seen}
    return tuple(sorted(files))


def import_closure(module: str, root: Path | str = ROOT) -> List[str]:
    """Sorted project-relative paths of the files that running `python -m <module>` executes from the
    project's own packages."""
    root = Path(root).resolve()
    if module_file(module, root) is None:
        raise ModuleNotFoundError(f"{module} is not a module of the project under {root}")
    return list(_closure(module, root))
