"""`meterbill serve` restarted many times a test, without paying its imports every time.

Importing the app costs seconds (FastAPI, SQLAlchemy, both SDKs), which would be most
of a crash test that restarts the server dozens of times. Here each server process is
forked from a multiprocessing fork server that imported meterbill once. Everything a
restart is about still happens in the new process: settings from the environment,
migrations, the engine and its connections, the outbox worker, binding the port. And
the process killed with SIGKILL is the serving process itself.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

from tests.support.server import ServerProcess

# Imported by the fork server before any fork. None of them starts a thread or opens
# a connection at import, so forking after them is safe. The main module (pytest's
# script) is among them, else every child would import it again.
_PRELOAD = ["meterbill.cli", "meterbill.app", "meterbill.tenants", "uvicorn", "alembic.command", "alembic.config",
            "alembic.runtime.migration", "alembic.operations"]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["__main__", __name__, *_PRELOAD])


def _serve(env: dict[str, str], log_path: str, port: int) -> None:
    from meterbill.cli import app

    os.environ.clear()
    os.environ.update(env)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    app(["serve", "--port", str(port)], prog_name="meterbill")


@dataclass
class ForkedServerProcess(ServerProcess):
    def _spawn(self) -> None:
        self.process = _context.Process(target=_serve, args=(self.env, str(self.log_path), self.port), daemon=True)
        self.process.start()

    def _alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def kill(self) -> None:
        if self.process and self.process.is_alive():
            self.process.kill()
            self.process.join(10)

    def stop(self) -> None:
        if self._runtime is not None:
            self._runtime.db.dispose()
        if self.process and self.process.is_alive():
            self.process.terminate()
            self.process.join(15)
            self.kill()
