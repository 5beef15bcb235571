"""Group commit for threads: the jobs that queue while one step runs are done together in the next.

Used where a step costs about as much for many jobs as for one (a ClickHouse insert and its
fsyncs), or where Python work done by many threads at once costs more than done by one (a
request's validation: eight threads decoding at once contend for the GIL and got through half
as much as one thread taking their work in turn)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar


class Waiting:
    """One caller's job waiting for a grouped step (`run_grouped`), and its error, if any."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.done = threading.Event()


JobT = TypeVar("JobT", bound=Waiting)


def run_grouped(job: JobT, queue: list[JobT], lock: threading.Lock, queue_lock: threading.Lock,
                run: Callable[[list[JobT]], None]) -> None:
    """Have `job` done by `run`: the thread that takes `lock` runs every job queued by then in one
    step, while the others wait for its answer; raises the job's error. `run` may set one job's
    `error` and go on with the rest; what it raises is every job's error."""
    with queue_lock:
        queue.append(job)
    with lock:
        if not job.done.is_set():
            with queue_lock:
                jobs = queue[:]
                queue.clear()
            try:
                run(jobs)
            except BaseException as exc:
                for each in jobs:
                    each.error = exc
            finally:
                for each in jobs:
                    each.done.set()
    if job.error is not None:
        raise job.error
