"""Import rules: the connector is an adapter with two ports (it reaches billing and metering only over
HTTP); billing and metering share code only through core, which imports no domain."""

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


def _imports_from(folder: str, forbidden: tuple[str, ...]) -> set[str]:
    return {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in (PACKAGE / folder).rglob("*.py")
        for name in _imports(path)
        if name.startswith(forbidden)
    }


def test_the_connector_imports_no_billing_or_metering_code() -> None:
    offending = _imports_from("connector", ("meterbill.billing", "meterbill.metering"))
    assert not offending, offending


def test_billing_and_metering_share_code_only_through_core() -> None:
    # One pricing engine for both (core.pricing), and neither domain reaching into the other.
    offending = _imports_from("billing", ("meterbill.metering", "meterbill.connector")) | _imports_from(
        "metering", ("meterbill.billing", "meterbill.connector"))
    assert not offending, offending


def test_core_imports_no_domain() -> None:
    domains = ("meterbill.billing", "meterbill.metering", "meterbill.connector", "meterbill.console")
    offending = _imports_from("core", domains)
    assert not offending, offending
