"""Start real meterbill processes against real databases for the tests."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[2]
# For the tests of a server whose measurement store is chDB (METERBILL_MEASUREMENT_STORE=chdb:///PATH).
CHDB = importlib.util.find_spec("chdb") is not None and \
    importlib.util.find_spec("meterbill.metering.store.clickhouse") is not None
needs_chdb = pytest.mark.skipif(not CHDB, reason="needs the ClickHouse adapter and chdb "
                                                 "(pip install 'meterbill[clickhouse]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database(template_url: str | None, workdir: Path, prefix: str = "meterbill_test") -> str:
    """A brand-new, empty database: a fresh PostgreSQL database (`prefix` and a random
    suffix) when `template_url` names a server, else a new SQLite file in `workdir`."""
    if not template_url:
        return f"sqlite:///{workdir / f'meterbill-{secrets.token_hex(4)}.db'}"
    url = make_url(template_url)
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq_dsn(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    if not url.drivername.startswith("postgresql"):
        return
    admin = url.set(database="postgres")
    with psycopg.connect(_libpq_dsn(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def _libpq_dsn(url) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        METERBILL_DATABASE_URL=database_url,
        METERBILL_SECRET_KEY="test-instance-secret-" + "x" * 32,
        METERBILL_LOG_LEVEL="INFO",
        # Chargebee's webhook retry schedule, shrunk to seconds so retries are testable.
        METERBILL_WEBHOOK_RETRY_SECONDS="[1, 1, 1, 2, 2, 2, 2]",
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def meterbill(*args: str, env: dict[str, str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterbill.cli", *args], env=env, cwd=cwd, capture_output=True, text=True,
        check=check, timeout=120,
    )


@dataclass
class ServerProcess:
    """`meterbill serve` on a free port; restartable (e.g. after kill -9) on the same port."""

    database_url: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _runtime: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def env(self) -> dict[str, str]:
        return base_env(self.database_url, METERBILL_PUBLIC_URL=self.base_url, **self.extra_env)

    def start(self) -> None:
        """Start the server and wait until it answers. A first start whose port another process took
        meanwhile (`free_port` frees it before the server binds it) moves to a new port."""
        first = self.process is None
        for _ in range(3):
            if self._start_once():
                return
            if not first:
                break
            self.port = free_port()
        raise RuntimeError(f"server could not listen on its port:\n{self.log_path.read_text()[-4000:]}")

    def _start_once(self) -> bool:
        """Whether this process came up; False when its port was taken. Only our own process's
        line in the log counts: a healthy answer on the port may be another test's server."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._spawn()
        listening = f"meterbill listening on {self.base_url} "
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not self._alive():
                since = self.log_path.read_bytes()[offset:].decode(errors="replace")
                if "cannot listen on" in since:
                    return False
                raise RuntimeError(f"server exited early:\n{since[-4000:]}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200 and \
                        listening in self.log_path.read_bytes()[offset:].decode(errors="replace"):
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()  # the caller never gets to stop a server that failed to start: no orphan left behind
        raise RuntimeError("server did not become healthy in 60 s")

    def _spawn(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meterbill.cli", "serve", "--port", str(self.port)],
            env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
        )

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, grace: float = 30) -> float:
        """A graceful stop (SIGTERM, as a deploy sends), which must end within `grace` seconds:
        returns the seconds it took. (Works for ForkedServerProcess's processes too.)"""
        assert self.process is not None
        alive = getattr(self.process, "is_alive", None) or (lambda: self.process.poll() is None)
        started = time.monotonic()
        os.kill(self.process.pid, signal.SIGTERM)
        while alive():
            if time.monotonic() - started > grace:
                raise AssertionError(f"the server did not exit within {grace} s of SIGTERM")
            time.sleep(0.02)
        return time.monotonic() - started

    def stop(self) -> None:
        if self._runtime is not None:
            self._runtime.db.dispose()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def create_tenant_with_cli(self, name: str) -> dict[str, str]:
        result = meterbill("tenants", "create", name, "--json", env=self.env, cwd=self.workdir)
        return json.loads(result.stdout)

    def create_tenant(self, name: str) -> dict[str, str]:
        """Provision in-process (the CLI costs seconds of imports per call); the pinned
        CLI contract itself is tested through `create_tenant_with_cli`."""
        from meterbill.core.runtime import Runtime
        from meterbill.settings import Settings
        from meterbill.tenants import create_tenant

        if self._runtime is None:
            env = self.env
            self._runtime = Runtime.from_settings(
                Settings(database_url=self.database_url, secret_key=env["METERBILL_SECRET_KEY"],
                         public_url=self.base_url)
            )
        return create_tenant(self._runtime, name).as_json()


@contextmanager
def chdb_server(database_url: str, workdir: Path) -> Iterator[ServerProcess]:
    """A running server on `database_url` whose measurement store is a chDB folder in `workdir`."""
    server = ServerProcess(database_url=database_url, workdir=workdir,
                           extra_env={"METERBILL_MEASUREMENT_STORE": f"chdb://{workdir / 'chdb'}"})
    server.start()
    try:
        yield server
    finally:
        server.stop()
