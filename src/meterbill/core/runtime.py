"""The process-wide things every request needs, built once from settings."""

from __future__ import annotations

import gc
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


# Collections of the youngest generation per this many new container objects (Python's default: 700).
# A bill run keeps hundreds of thousands of objects alive until it writes them (terms, priced bands,
# line rows), and at the default each of them was scanned again and again by full collections that
# found almost nothing to free: at 10,000 accounts the collector took 0.76 s of a 4.3 s job. At this
# threshold it took none of it, and the garbage cycles a process can hold between two collections
# stay bounded (at most this many objects).
YOUNG_GENERATION_THRESHOLD = 100_000


def settle_collector() -> None:
    """Once a long-running process (the server, `meterbill worker`) has started: everything built so
    far (modules, routes, models, the SDK-shaped schemas) lives as long as the process, so it is moved
    out of the collector's way, and the collector runs less often (see YOUNG_GENERATION_THRESHOLD)."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain function dependency on a pool thread, a hop (and a wait for the GIL)
    # per request for an attribute read.
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
