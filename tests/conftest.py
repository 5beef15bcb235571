"""Shared fixtures: one live server per test session, on SQLite by default or on
PostgreSQL when METERBILL_TEST_DATABASE_URL names a server (a fresh database is
created on it and dropped afterwards)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import chargebee
import m3ter
import pytest

from meterbill.core.db import Database, upgrade
from tests.support.server import ServerProcess, create_database, drop_database

TEST_DATABASE_URL = os.environ.get("METERBILL_TEST_DATABASE_URL")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (bigger variants of checks the default suite "
                          "makes at a smaller size)")


# The files that took longest (per-file sums of --junitxml times, the mean of the SQLite and PostgreSQL passes,
# 2-core machine, 2026-12-07), longest first.
# They are handed out first: under `--dist loadfile` a worker runs a file to its end, so a long file handed
# out last keeps one worker busy while the others idle. Every other file follows in collection order.
LONGEST_FILES_FIRST = (
    "tests/api/test_connector_chaos.py", "tests/api/test_recovery_leases.py", "tests/api/test_cli_store_copy.py",
    "tests/api/test_connector_negative_lines.py", "tests/api/test_cli_errors.py",
    "tests/api/test_reliability_ingest_crash.py", "tests/api/test_cli_store_setting.py",
    "tests/api/test_outbox_crash.py", "tests/api/test_webhook_deliveries.py", "tests/api/test_cli_serve.py",
    "tests/api/test_connector.py", "tests/api/test_cli_ingest_trust.py", "tests/api/test_billing_webhooks.py",
    "tests/api/test_connector_mappings.py", "tests/api/test_billing_list_filters.py",
    "tests/api/test_billing_subscriptions.py", "tests/store/test_conformance.py",
    "tests/api/test_reliability_schemathesis.py", "tests/api/test_connector_prepaid.py",
    "tests/api/test_connector_corrections.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: n for n, path in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: a file keeps its order
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="a bigger variant: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def new_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], str]]:
    created: list[str] = []

    def make() -> str:
        url = create_database(TEST_DATABASE_URL, tmp_path_factory.mktemp("db"))
        created.append(url)
        return url

    yield make
    for url in created:
        drop_database(url)


@pytest.fixture
def migrated_db(new_database_url: Callable[[], str]) -> Iterator[Database]:
    """A fresh database at the newest migration, for tests of storage code without a server."""
    url = new_database_url()
    upgrade(url)
    database = Database(url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def server(new_database_url: Callable[[], str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url=new_database_url(), workdir=tmp_path_factory.mktemp("server"))
    process.start()
    yield process
    process.stop()


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def tenant(server: ServerProcess) -> dict[str, str]:
    return server.create_tenant(unique_name())


def chargebee_client(server: ServerProcess, api_key: str) -> chargebee.Chargebee:
    # The SDK picks http only when this class attribute is off (see SDK-NOTES).
    chargebee.Chargebee.verify_ca_certs = False
    return chargebee.Chargebee(api_key=api_key, site="127.0.0", chargebee_domain=f"1:{server.port}", protocol="http")


def m3ter_client(server: ServerProcess, tenant: dict[str, str], **overrides: object) -> m3ter.M3ter:
    options: dict[str, object] = dict(
        api_key=tenant["metering_api_key"], api_secret=tenant["metering_api_secret"],
        org_id=tenant["org_id"], base_url=server.base_url, max_retries=0,
    )
    options.update(overrides)
    return m3ter.M3ter(**options)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
