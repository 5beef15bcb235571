"""The process-wide things every request needs, built once from settings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from meterbill.core.db import Database
from meterbill.core.security import Vault, load_instance_secret
from meterbill.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    vault: Vault

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        secret = load_instance_secret(settings.secret_key, settings.secret_key_file)
        return cls(settings=settings, db=Database(settings.database_url), vault=Vault(secret))


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_session(request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]) -> Iterator[Session]:
    """One unit of work per request: committed when the endpoint returns normally.

    GETs only read, so on SQLite they never queue behind writers for the write lock."""
    scope = runtime.db.read if request.method in ("GET", "HEAD") else runtime.db.transaction
    with scope() as session:
        yield session


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# scope="function": commit before the response is sent, so a client never sees a
# success for a write that is not yet durable (or that then fails to commit).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
