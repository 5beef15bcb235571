"""The connector is an adapter with two ports: it reaches billing and metering only over HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

import meterbill

PACKAGE = Path(meterbill.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_connector_imports_no_billing_or_metering_code() -> None:
    offending = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in (PACKAGE / "connector").rglob("*.py")
        for name in _imports(path)
        if name.startswith(("meterbill.billing", "meterbill.metering"))
    }
    assert not offending, offending
