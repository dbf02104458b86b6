"""The package layout of DESIGN.md: who may import whom, and a declared public surface."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: DESIGN.md's table: package -> the packages of ours it may import.
ALLOWED = {
    "store": set(),
    "segments": {"store"},
    "templates": set(),
    "channels": set(),
    "workers": {"store", "segments", "templates", "channels"},
    "scheduler": {"store", "segments", "workers"},
    "api": {"store", "channels", "workers"},
    "loyalcast": {"store", "segments", "templates", "channels", "workers", "scheduler", "api"},
}
OURS = set(ALLOWED)


def _imports(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module, node.lineno))
    return found


def test_imports_follow_the_design_table() -> None:
    """No package imports one of ours that DESIGN.md forbids.

    Of ``loyalcast`` only ``loyalcast.settings`` may be imported by the others.
    """
    # Given every module of every package
    violations = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            # When its absolute imports are read
            for module, line in _imports(path):
                top = module.split(".")[0]
                if top not in OURS or top == package:
                    continue
                if top == "loyalcast" and module == "loyalcast.settings":
                    continue
                # Then each one is allowed by the table
                if top not in allowed:
                    violations.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert violations == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_package_declares_its_public_surface(package: str) -> None:
    """Each package's __init__ declares __all__, and every name in it exists."""
    module = importlib.import_module(package)
    assert isinstance(module.__all__, list)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
