"""Imports run one way (issue 18): tunefarm (front door, CLI) → api → workers → tuner →
tuning_db. A lower layer importing a higher one would pull servers or Celery into the tuner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["tuning_db", "tuner", "workers", "api"]
"""Bottom first; the front door (``tunefarm/`` and ``tunefarm/cli``) sits above them all."""


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("layer", ORDER)
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    above = ORDER[ORDER.index(layer) + 1 :]
    forbidden = [f"tunefarm.{name}" for name in above] + ["tunefarm.cli"]
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in _imported(path)
        if any(module == bad or module.startswith(bad + ".") for bad in forbidden)
        or module in ("tunefarm", "tunefarm.compile_model", "tunefarm.compiled_model")
        or module.split(".")[0] in ORDER  # the old top-level names
    ]
    assert not wrong, wrong
