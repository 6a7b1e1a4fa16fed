"""The import contract of the codebase, read from the source (every import,
at module level or inside a function).

* Layers: ``cli`` (the command) -> ``_napari`` (the napari adapter) -> the
  core (every other module). The core never imports the adapter, the
  command, napari, magicgui, vispy or Qt; the adapter never imports the
  command.
* ``formats/`` reads and writes files: it never imports the dataset or
  folder code.
* No module imports a private name (``_x``) of another module.
* The modules' imports form no cycle (lazy imports included; imports for
  type hints only, under ``if TYPE_CHECKING:``, never run and do not count).

``.ci/run`` runs this file first, as its own step.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import napari_samboxes

SRC = Path(napari_samboxes.__file__).parent
PKG = "napari_samboxes"
GUI = {
    "napari",
    "napari_builtins",
    "magicgui",
    "qtpy",
    "superqt",
    "vispy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every import in ``path``, relative
    imports resolved to absolute module names."""
    name = module_name(path)
    package = name if is_package(path) else name.rpartition(".")[0]
    found = []
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((mod, [a.name for a in node.names], node.lineno))
    return found


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under ``if TYPE_CHECKING:`` (imports for type
    hints only, which never run)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def layer(mod: str) -> str:
    if mod == f"{PKG}.cli":
        return "cli"
    if mod == f"{PKG}._napari" or mod.startswith(f"{PKG}._napari."):
        return "adapter"
    return "core"


def targets(mod: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """Our modules an import statement reaches (``from pkg import mod``
    reaches ``pkg.mod``)."""
    out = [mod] if mod in known else []
    out += [f"{mod}.{n}" for n in names if f"{mod}.{n}" in known]
    return out


def test_core_never_imports_the_adapter_the_command_or_a_gui():
    known = modules()
    offenders = []
    for name, path in known.items():
        for mod, names, line in imports(path):
            top = mod.split(".")[0]
            where = f"{path.relative_to(SRC)}:{line} imports {mod}"
            reached = {layer(t) for t in targets(mod, names, known)}
            if layer(name) == "core" and (top in GUI or reached & {"adapter", "cli"}):
                offenders.append(where)
            if layer(name) == "adapter" and "cli" in reached:
                offenders.append(where)
    assert offenders == []


def test_formats_never_import_dataset_or_folder_code():
    known = modules()
    offenders = [
        f"{path.relative_to(SRC)}:{line} imports {mod}"
        for name, path in known.items()
        if name.startswith(f"{PKG}.formats")
        for mod, names, line in imports(path)
        for t in targets(mod, names, known)
        if t in (f"{PKG}.dataset", f"{PKG}.folder")
    ]
    assert offenders == []


def test_no_module_imports_a_private_name_of_another():
    known = modules()
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {n} from {mod}"
        for path in known.values()
        for mod, names, line in imports(path)
        if mod.split(".")[0] == PKG
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert offenders == []


def test_no_import_cycles():
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        for mod, names, _ in imports(path):
            for t in targets(mod, names, known):
                if t != name and not name.startswith(t + "."):  # not a parent
                    graph[name].add(t)
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(known):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_contract_sees_what_it_forbids(tmp_path, monkeypatch):
    """The checks can fail: a core module with a lazy Qt import, a private
    import and a cycle are all found."""
    pkg = tmp_path / PKG
    (pkg / "formats").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "formats" / "__init__.py").write_text("")
    (pkg / "formats" / "x.py").write_text("from ..dataset import y\n")
    (pkg / "dataset.py").write_text("def f():\n    from qtpy import QtCore\n")
    (pkg / "a.py").write_text("from .b import _hidden\n")
    (pkg / "b.py").write_text("from . import a\n_hidden = 1\n")
    monkeypatch.setattr(f"{__name__}.SRC", pkg)
    for check in (
        test_core_never_imports_the_adapter_the_command_or_a_gui,
        test_formats_never_import_dataset_or_folder_code,
        test_no_module_imports_a_private_name_of_another,
        test_no_import_cycles,
    ):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} found nothing")
