"""A plugin (METERBILL_PLUGINS) that makes the outbox workers' statements matching
METERBILL_TEST_SLOW_SQL (a regular expression) wait METERBILL_TEST_SLOW_SQL_SECONDS
before they run: a bill job or a file upload on a slow database, so a test can stop
the server while one is mid-run, and cancel a job while it is RUNNING. Requests the
server answers are not slowed; only the worker threads are."""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

PATTERN = re.compile(os.environ["METERBILL_TEST_SLOW_SQL"], re.IGNORECASE | re.DOTALL)
SECONDS = float(os.environ.get("METERBILL_TEST_SLOW_SQL_SECONDS", "1"))


@event.listens_for(Engine, "before_cursor_execute")
def _slow_down(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
    if threading.current_thread().name.startswith("outbox-worker") and PATTERN.search(statement):
        time.sleep(SECONDS)
