"""The layering rules of the codebase, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_samboxes

SRC = Path(napari_samboxes.__file__).parent
GUI = ("napari", "magicgui", "qtpy", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6")


def modules():
    return sorted(p for p in SRC.rglob("*.py"))


def test_only_the_adapter_imports_napari_magicgui_or_qt():
    offenders = []
    for path in modules():
        if (
            path.name.startswith("_")
            and path.name != "__init__.py"
            or path.name == "cli.py"
        ):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in GUI]
    assert offenders == []


def test_module_sizes():
    sizes = {p.name: len(p.read_text().splitlines()) for p in modules()}
    assert max(sizes.values()) <= 400, sizes
    assert sizes["_widget.py"] <= 300
