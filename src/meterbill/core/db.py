"""Database engine, session scopes, column types and migrations.

The same models and migrations run on SQLite (the embedded default, WAL mode)
and on PostgreSQL (psycopg 3). Column types that SQLite would silently degrade
(timezones, exact decimals) are wrapped here so callers never see the difference.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from sqlalchemy import (
    JSON,
    ColumnElement,
    CursorResult,
    Dialect,
    Engine,
    MetaData,
    Numeric,
    Result,
    String,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute, Session, sessionmaker
from sqlalchemy.types import DateTime, TypeDecorator

from meterbill.core.wirejson import dumps

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


M = TypeVar("M", bound=Base)
V = TypeVar("V")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC on PostgreSQL; text on SQLite, whose NUMERIC affinity rounds through float.
    Both keep `SCALE` decimal places (`fit`), so a value reads back the same from either."""

    SCALE = 12
    impl = Numeric(38, SCALE)
    cache_ok = True

    @classmethod
    def fit(cls, value: Decimal) -> Decimal:
        """The value as stored: PostgreSQL's NUMERIC rounds (half away from zero) past its scale,
        and SQLite's text is made to do the same (an average unit price like 101/1920 has more)."""
        if value.as_tuple().exponent < -cls.SCALE:  # type: ignore[operator]  # finite: an int exponent
            return value.quantize(Decimal(1).scaleb(-cls.SCALE), rounding=ROUND_HALF_UP)
        return value

    def load_dialect_impl(self, dialect: Dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(38, 12))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect):
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal needs a Decimal, got {type(value).__name__}")
        value = self.fit(value)
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


class JSONDocument(TypeDecorator[object]):
    """JSONB on PostgreSQL, JSON text elsewhere."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(JSON())


class JSONText(JSONDocument):
    """JSON kept as written (PostgreSQL `json`, not `jsonb`), for documents written far more than
    queried into: converting to JSONB's binary form costs every insert and more bytes on disk
    (a bill run writes tens of thousands of line items with their bands; ingest, a measurement's
    fields, read by key only by aggregations over a few rows)."""

    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect):
        return dialect.type_descriptor(JSON())


def new_id() -> str:
    """A random (version 4) UUID as text; built from the bytes directly, as uuid.uuid4() costs
    ten times more and a bill run makes one per bill, line and event."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def must_get(session: Session, model: type[M], key: Any) -> M:
    """A row that other stored data refers to, e.g. the item price of a subscription's item.

    Such rows are never removed (archived and deleted catalog entries keep their row), so a
    missing one is a broken invariant of the database, not a caller's "not found".
    """
    row = session.get(model, key)
    if row is None:
        raise LookupError(f"{model.__name__} {key!r} is referred to but missing")
    return row


READ_ONLY = "meterbill_read_only"


def _json_loads(text: str | bytes) -> object:
    # Numbers come back as exact Decimals, as they were written (see wirejson.dumps).
    return json.loads(text, parse_float=Decimal)


def _json_dumps(value: object) -> str:
    return dumps(value).decode()


SQLITE_BUSY_SECONDS = 30


def make_engine(url: str) -> Engine:
    # hide_parameters: a database error's message names the statement, never its values
    # (customer emails, addresses), so an error log carries no personal data.
    json_options = {"json_serializer": _json_dumps, "json_deserializer": _json_loads, "hide_parameters": True}
    if url.startswith("sqlite"):
        # isolation_level=None hands transaction control to us (see _begin).
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS, "isolation_level": None},
                               **json_options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # Writers take the lock up front: a deferred transaction that later writes
            # can fail with SQLITE_BUSY without waiting, which busy_timeout cannot fix.
            # Readers stay deferred so that, under WAL, they never wait for a writer.
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # Usage buckets and the daily rollup are UTC days, whatever the server's own time zone.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args={"options": "-c timezone=UTC"}, **json_options)


EXCLUSIVE_WAIT_SECONDS = 120.0


class LockTimeout(TimeoutError):
    """`Database.exclusive` waited its bound for a name another holder kept."""


class _SQLiteLocks:
    """`Database.exclusive` on SQLite: byte-range locks (fcntl) on one file next to the database,
    the byte at the name's 62-bit hash for each name, so two names almost never collide.

    Chosen over a lock row: a row would be a write transaction held across the block's HTTP
    calls, blocking every other writer, and a crashed holder's row would stay until some
    expiry; the kernel drops a dead process's file locks at once. The file lock is independent
    of SQLite's own locks, so a caller inside a write transaction cannot deadlock with it.

    POSIX record locks belong to the process, not to a thread or a file descriptor (closing
    any descriptor of the file drops them all), so there is one registry entry per lock file
    and process, kept open for the life of the process, and threads of the process are kept
    apart first by a striped in-process lock (striped: the set of names ever locked does not
    grow the process).
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._open_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(64)]

    @classmethod
    def of(cls, database: str | None) -> _SQLiteLocks:
        # An in-memory database lives in one process: its in-process locks are the whole story.
        path = None if not database or database == ":memory:" else str(Path(database).resolve()) + "-exclusive"
        with _SQLITE_LOCKS_GUARD:
            locks = _SQLITE_LOCKS.get(path)
            if locks is None:
                locks = _SQLITE_LOCKS[path] = cls(path)
            return locks

    def _descriptor(self) -> int | None:
        with self._open_lock:
            if self._fd is None and self.path is not None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            return self._fd

    @contextmanager
    def hold(self, key: int, name: str, wait: float) -> Iterator[None]:
        deadline = time.monotonic() + wait
        stripe = self._stripes[key % len(self._stripes)]
        if not stripe.acquire(timeout=wait):
            raise LockTimeout(f"{name!r} still held in this process after {wait:g} s")
        try:
            fd = self._descriptor()
            if fd is None:
                yield
                return
            offset = key & ((1 << 62) - 1)
            self._acquire(fd, offset, name, wait, deadline)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
        finally:
            stripe.release()

    @staticmethod
    def _acquire(fd: int, offset: int, name: str, wait: float, deadline: float) -> None:
        # Polled rather than blocking (F_SETLKW): a blocking wait has no timeout, and the kernel's
        # deadlock detection misreports between threads of one process, which share lock ownership.
        pause = 0.005
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
                return
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{name!r} still held by another process after {wait:g} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


# One entry per lock file (None: in-memory databases) for the life of the process (see _SQLiteLocks).
_SQLITE_LOCKS: dict[str | None, _SQLiteLocks] = {}
_SQLITE_LOCKS_GUARD = threading.Lock()


class Database:
    """One engine and its session factory; `transaction()` is the unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        # SQLite has one writer at a time. This process's writers queue here and each starts
        # the moment the last one commits; left to SQLite, a writer that finds the lock taken
        # sleeps in its busy handler (1 ms, 2 ms, ... up to 100 ms) and the lock stands idle.
        # Other processes' writers still meet at SQLite's lock. A plain lock, not an RLock: a
        # request's unit of work may be opened on one thread and closed on another (FastAPI runs
        # a dependency's set-up and teardown on different pool threads).
        self._writers = threading.Lock() if self.engine.dialect.name == "sqlite" else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Commit on success, roll back on any exception: nothing half-written."""
        if self._writers is None:
            with self._sessions() as session, session.begin():
                yield session
            return
        # As long as SQLite's own busy timeout, and failing as it would.
        if not self._writers.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
        try:
            with self._sessions() as session, session.begin():
                yield session
        finally:
            self._writers.release()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it never waits for writers."""
        with self._read_sessions() as session, session.begin():
            yield session

    @contextmanager
    def exclusive(self, name: str, wait: float = EXCLUSIVE_WAIT_SECONDS) -> Iterator[None]:
        """Run the block while no one else, in any process, runs a block of the same name.

        Held across slow outside calls (HTTP), so it must not be a write transaction:
        on PostgreSQL it is a session advisory lock on a connection of its own; on SQLite,
        a byte-range lock on a file next to the database (see `_SQLiteLocks`). Either is
        released by the operating system or the server if its process dies. The wait is
        bounded (`LockTimeout` after `wait` seconds): a stuck holder fails the waiter's work,
        to be retried, instead of piling up workers behind it.
        """
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        if self.dialect != "postgresql":
            with _SQLiteLocks.of(self.engine.url.database).hold(key, name, wait):
                yield
            return
        with self.engine.connect() as conn:
            try:
                # For this transaction only: the pooled connection keeps no lock_timeout afterwards.
                conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(wait * 1000)}ms"})
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            except OperationalError as exc:
                if isinstance(exc.orig, psycopg.errors.LockNotAvailable):
                    raise LockTimeout(f"{name!r} still held by another session after {wait:g} s") from exc
                raise
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


# Values per IN list: well under SQLite's bound-parameter limit, and small enough for an index plan.
IN_LIST_SIZE = 1000


def in_lists(values: Sequence[V]) -> Iterator[Sequence[V]]:
    """`values` in slices of at most IN_LIST_SIZE, one IN list each."""
    for offset in range(0, len(values), IN_LIST_SIZE):
        yield values[offset:offset + IN_LIST_SIZE]


def one_of(session: Session, column: ColumnElement[Any] | QueryableAttribute[Any],
           values: Iterable[str]) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL as `column = ANY(array)`, one parameter whatever the number of
    values, so the statement's text never changes: SQLAlchemy compiles it once and PostgreSQL plans it
    once (a prepared statement), where an IN list is expanded, converted and planned again on every
    execution (ingest's look-up of a batch's hundred account codes: 0.6-0.9 ms of CPU, against 0.3 ms)."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(String)))
    return column.in_(list(values))


def in_bound(dialect: str, column: ColumnElement[Any] | QueryableAttribute[Any], name: str) -> ColumnElement[bool]:
    """`column IN` the values bound to the parameter `name` (given as `bound_values` makes them), for a
    statement built once and run many times: PostgreSQL takes an array (`= ANY`), SQLite a JSON array
    (`IN json_each`). Building a statement costs more than running it: ingest's look-up of a batch's
    meters and accounts took 0.86 ms built per batch with IN lists, 0.25 ms built once."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=postgresql.ARRAY(String)))
    return column.in_(select(func.json_each(bindparam(name, type_=String)).table_valued("value").c.value))


def bound_values(dialect: str, values: Iterable[str]) -> Any:
    """The values of an `in_bound` parameter."""
    return list(values) if dialect == "postgresql" else json.dumps(list(values))


def insert_new(session: Session, table: type[Base], rows: list[dict[str, Any]]) -> None:
    """INSERT the rows but those a stored row already holds a unique key of (`ON CONFLICT DO NOTHING`,
    in each dialect's own syntax). On PostgreSQL a row a concurrent transaction is inserting waits for
    it, then is left out if that one commits: read the keys back to learn whose row stands."""
    dialect_insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(dialect_insert(table).values(rows).on_conflict_do_nothing())


# PostgreSQL's SQLSTATEs for a transaction it aborted so that others can go on: a deadlock it broke,
# or a serialization failure. The transaction wrote nothing, so running it again is safe.
_TRANSIENT_STATES = frozenset({"40P01", "40001"})


def transient(exc: BaseException) -> bool:
    """Whether the database aborted the transaction only because of concurrent ones (try it again)."""
    return isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) in _TRANSIENT_STATES


def rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE or DELETE matched, or an INSERT ... SELECT inserted.

    Session.execute is typed to return a Result, but runs these statements on a cursor and
    returns the CursorResult that carries the count.
    """
    if not isinstance(result, CursorResult):
        raise TypeError(f"a {type(result).__name__} has no row count: only a DML statement's result has one")
    return result.rowcount


def bulk_insert(session: Session, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    """Thousands of new rows of one table in the session's transaction (every row with the same keys).

    On PostgreSQL, COPY: an ORM multi-row insert spends more time binding and processing
    each value in Python than the database spends storing it. Values go to COPY as the
    column types would bind them (JSON as text, UTC datetimes, exact decimals).
    """
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(model), rows)
        return
    table = model.__table__
    names = list(rows[0])
    session.flush()
    driver = session.connection().connection.driver_connection
    if not isinstance(driver, psycopg.Connection):  # None once the connection is closed or invalidated
        raise RuntimeError(f"bulk_insert needs an open psycopg connection, not {driver!r}")
    columns = ", ".join(f'"{name}"' for name in names)  # quoted: "references" is a keyword
    statement = f'COPY "{model.__tablename__}" ({columns}) FROM STDIN'
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for offset in range(0, len(rows), 5000):
                chunk = rows[offset:offset + 5000]
                texts = [_copy_column(isinstance(table.c[name].type, JSONDocument), [row[name] for row in chunk])
                         for name in names]
                copy.write("".join(["\t".join(line) + "\n" for line in zip(*texts, strict=True)]))
    except psycopg.IntegrityError as exc:  # as an ORM insert would raise it
        raise IntegrityError(statement, None, exc) from exc


_COPY_NULL = "\\N"
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_column(json_document: bool, values: list[Any]) -> list[str]:
    """One column's values in COPY's text format, a column at a time: most columns of a bulk
    insert repeat a few values (the job's times and ids) or are ids that need no escaping,
    which one look at the whole column tells (a call per value cost more than the COPY)."""
    if json_document:
        return [_COPY_NULL if value is None else _copy_json(value) for value in values]
    distinct = set(values)
    if len(distinct) * 2 <= len(values):
        texts = {value: _copy_text(value) for value in distinct}
        return [texts[value] for value in values]
    if all(type(value) is str for value in distinct) and not _COPY_SPECIAL.search("".join(distinct)):
        return values
    return [_copy_text(value) for value in values]


def _copy_json(value: Any) -> str:
    # JSON text escapes every control character itself, so only its backslashes need COPY's escape.
    return _json_dumps(value).replace("\\", "\\\\")


def _copy_text(value: Any) -> str:
    """One value in COPY's text format (psycopg's per-value write_row costs several times more)."""
    if value is None:
        return _COPY_NULL
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"no COPY text for {type(value).__name__}")


def alembic_config(url: str) -> AlembicConfig:
    """Our migrations, aimed at the database `url` (for `alembic.command`)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    from alembic import command

    # A missing SQLite folder is the caller's mistake to report (the CLI names it), never created here.
    command.upgrade(alembic_config(url), "head")
