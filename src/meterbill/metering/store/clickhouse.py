"""The measurement store in ClickHouse: a server over HTTP, or chDB (the engine in-process).

One client path for both: `clickhouse-connect` drives a server over HTTP and, since 1.13,
chDB in-process through the same `Client` API (queries with server-side parameters,
inserts in Native format), so every statement here runs unchanged on either.

URLs: `chdb:///ABSOLUTE/PATH` (database `meterbill`, or `?database=NAME`),
`clickhouse://USER:PASSWORD@HOST:8123/DATABASE`, `clickhouses://…` (TLS, port 8443 by default).

Units of work. Measurements are not in the main database, so there is no transaction to
join; `bind(session)` instead holds a unit's batches and writes them when the session
commits (`before_commit`: a failed write fails the commit), and forgets them when it
rolls back, so a unit that fails after `ingest` stores nothing. An acknowledged batch is
therefore on disk before the unit's commit returns (inserts are synchronous, never
`async_insert`, and the table fsyncs each part). `bind(None)` writes at `ingest`.

Dedupe: at write time, under a lock held by this process, the batch's uid keys are
looked up in the `uids` table (see clickhouse_schema) and only the new measurements are
inserted: keys first, then rows, each one insert (one part: all or nothing), and a
crash between the two is repaired before the next lookup or write. Exact on every read, with no
FINAL or read-time dedupe to pay (ClickHouse's merges never have to catch up), whenever
one process writes the store: always with chDB (only one process can open its folder),
and with a server as long as one API process ingests. On chDB a Bloom filter of the stored
keys (`_KeyFilter`) answers for the keys it has never seen, so a batch of new uids looks up
only its filter's positives (about 1 %) instead of reading a granule per key in every part
(built by a thread of its own, which a process's first lookup starts: until then keys are looked up).
Several processes writing one server could each find a uid new in the same instant and both store it: a server
deployment keeps ingest in one process until that is lifted. In a unit of work
`ingest` answers from the same lookup made at once, without the lock; the write at
commit decides again (against the keys this process wrote since, or a new lookup), so
under a race for one uid both units may report it stored, and it is stored once.

Writes are grouped: the thread that takes the write lock writes every batch waiting by
then in one lookup and one insert per table (see `ClickHouseStore.write`). A write
costs ClickHouse two parts with their fsyncs whatever its size, so batches of 1000 one
at a time stay far below a bulk insert: first figures (chDB, 2 shared and loaded cores,
benchmarks/clickhouse_store.py, 1M measurements) 16,138 measurements/s from one thread
and 24,087/s from 8, against 346,766/s for one INSERT of the same rows in the same run.

Landing (chDB, the API's path: `land` outside a unit of work): a batch is acknowledged once
its rows are on disk as one JSON document in the store's landing log (`landing_log`: a file
appended and flushed, one flush for the batches landing together), and ClickHouse itself
reads the log, deduplicates and stores landed batches later, 100 at a time, with one
`INSERT … SELECT` per table (`ClickHouseStore._expand`). Python then spends nothing per measurement past validation
(the grouped write above cost more in Python per measurement than the whole request
otherwise, with a GIL that one process shares with HTTP), and ClickHouse writes one part
per table for 100,000 measurements instead of a hundred. Every read, and every other
write, first stores what is landed, so each counts every acknowledged batch, and the first
of a uid still wins in ingest order. A crash leaves landed batches on disk; the next
process stores them (its repair first removes the keys of an expansion cut between its
two inserts, as for a write).

Reads are aggregations over exact integers (Int128 sums). Totals of whole UTC days come from
`days` (see clickhouse_schema), which the insert of the rows feeds in the same statement: no
rollup pass to wait for, and no tail above a mark to add. The rest (a day's part at either end
of a period, hourly buckets, dimensions, LATEST, UNIQUE) comes from the rows, sorted by
(organization, account, ts) so that one account-month is one key range of a few granules.
`run_background_work` has nothing to finish (the conformance suite's opener merges the parts,
to check reads after merges too).

`scan` pages in `seq` order, which is commit order in a process (batch numbers are
taken under the write lock), with (organization, uid) breaking ties; `census` sums in
Int128.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from meterbill.core.grouping import JobT, Waiting, run_grouped
from meterbill.metering.store import (
    MICROS,
    Aggregation,
    EncodedBatch,
    EncodedLanding,
    Group,
    GroupKind,
    IngestOutcome,
    MeasurementStore,
    NewMeasurement,
    SeriesRequest,
    TimeBucket,
    Totals,
    from_micros,
    landing_log,
    split_by_day,
)
from meterbill.metering.store.clickhouse_schema import (
    MIGRATIONS,
    ONE_PART,
    SEQ_BITS,
    STORED_UID,
    fold_days,
    uid_columns,
)
from meterbill.metering.store.landing_log import LandingLog, Segment

log = structlog.get_logger("meterbill.metering.store.clickhouse")

_PENDING = "meterbill.clickhouse_pending"


def _key_sql(uid: str) -> str:
    """A uid's key in SQL, from the SQL of its text: the first 128 bits of SHA-256(organization id ‖ uid), read
    big-endian (as `ingest` computes it)."""
    return f"reinterpretAsUInt128(reverse(substring(SHA256(concat(org, {uid})), 1, 16)))"


# A key's two 64-bit halves, low first, as `_KeyFilter` takes them.
_KEY_HALVES = f"toUInt64(bitAnd(key, toUInt128('{0xFFFFFFFFFFFFFFFF}'))), toUInt64(bitShiftRight(key, 64))"
# How many writes' keys a process keeps, to recheck units that ingested up to that many writes ago
# without a lookup (a few MB at most: a write is a few batches).
_WRITES_REMEMBERED = 64
_COLUMNS = ["org", "meter", "account", "ts", "ets", "uid", "uuid", "seq", "measures", "dimensions"]
# A lowercase canonical UUID's text: stored in `uuid` (see clickhouse_schema's `uid_columns`).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uid_values(uid: str) -> tuple[str, str]:
    """A uid's `uid` and `uuid` columns as clickhouse-connect writes them (a UUID as its text, zero as '')."""
    return ("", uid) if _CANONICAL_UUID.fullmatch(uid) else (uid, "")


# Landed batches the store's expander stores once that many wait (see `ClickHouseStore.land`): an
# expansion of 100,000 measurements is one part per table instead of a hundred.
_EXPAND_AT = 100
# A landed batch's rows as ClickHouse reads them from the log (see `store.EncodedBatch`): objects whose absent
# members read as empty. A row has its text fields in their categories (ingest's typed decoder writes them so)
# or in `dimensions`, and its numbers in their categories, in units, or in `micros` (`_landed_rows` writes those).
_TEXT = "Map(String, String)"
_UNITS = "Map(String, Int64)"
_LANDED_ROWS = (f"Array(Tuple(uid String, meter String, account String, ts String, ets Nullable(String),"
                f" who {_TEXT}, `where` {_TEXT}, what {_TEXT}, other {_TEXT}, metadata {_TEXT}, dimensions {_TEXT},"
                f" measure {_UNITS}, income {_UNITS}, cost {_UNITS}, micros {_UNITS}))")
# How long a server's client waits for a migration's statement, in seconds (a day: see `open`).
_MIGRATION_WAIT = 24 * 3600
# Every client call runs with these: synchronous inserts (acknowledged once on disk) and UTC.
_SETTINGS = {"async_insert": 0, "session_timezone": "UTC"}
# A bucket's start from a time column `{t}` (DateTime64, or a day's Date32: never hourly).
_BUCKET_START = {TimeBucket.HOUR: "toStartOfHour({t})", TimeBucket.DAY: "toStartOfDay({t})",
                 TimeBucket.WEEK: "toStartOfWeek({t}, 1)", TimeBucket.MONTH: "toStartOfMonth({t})"}
# An expansion's rows (`ClickHouseStore._expand`): one epoch's landed batches (`{landed}`, a source of
# (batch, org, rows, meters): the epoch's landing-log file), in landing order, the first of each uid key, less
# the keys stored (looked up for the epoch's keys only: by the primary key, not a read of every key).
# Each row's place in the ingest order is its batch's and its index's. A row's columns are computed before
# the sort, which then moves them and not the landed row's fifteen members.
_STAGE_SQL = f"""INSERT INTO {{staged}}
SELECT * FROM (
    SELECT org, meters[r.meter], r.account, parseDateTime64BestEffort(r.ts, 6, 'UTC'),
           parseDateTime64BestEffortOrNull(r.ets, 6, 'UTC'), r.uid,
           bitOr(bitShiftLeft(batch, {SEQ_BITS}), n - 1) AS seq,
           mapConcat(r.micros,
                     mapApply((field, units) -> (field, units * {MICROS}), mapConcat(r.measure, r.income, r.cost))),
           mapConcat(r.dimensions, r.who, r.`where`, r.what, r.other, r.metadata),
           {_key_sql("r.uid")} AS key
    FROM {{landed}} ARRAY JOIN rows AS r, arrayEnumerate(rows) AS n
    ORDER BY seq
    LIMIT 1 BY key
)
WHERE key NOT IN (
    SELECT key FROM {{uids}}
    WHERE key IN (SELECT {_key_sql("r.uid")} FROM {{landed}} ARRAY JOIN rows AS r))"""
# The staged rows into `measurements` (`{table}`, `{staged}`): each uid into its two columns.
_FROM_STAGED = (f"INSERT INTO {{table}} ({', '.join(_COLUMNS)}) SELECT org, meter, account, ts, ets,"
                f" {', '.join(uid_columns('uid'))}, seq, measures, dimensions FROM {{staged}}")


def _log_source(path: Path) -> str:
    """A landing-log file as the table `_STAGE_SQL` reads (see `landing_log`)."""
    quoted = str(path).replace("\\", "\\\\").replace("'", "\\'")
    return f"file('{quoted}', 'JSONCompactEachRow', 'batch UInt64, org String, rows {_LANDED_ROWS}, meters {_TEXT}')"


def _landed_rows(batch: Sequence[NewMeasurement]) -> tuple[bytes, bytes]:
    """Validated measurements as a landed batch's rows and meters (see `store.EncodedBatch`): ids as they
    are (each meter id its own code), times in UTC, text fields in `dimensions`, numbers in `micros`."""
    rows = orjson.dumps([{"uid": m.uid, "meter": m.meter_id, "account": m.account_id, "ts": m.ts, "ets": m.ets,
                          "dimensions": m.dimensions, "micros": m.micros} for m in batch], option=orjson.OPT_UTC_Z)
    return rows, orjson.dumps({m.meter_id: m.meter_id for m in batch})


def _line_of_today(batch: int, org_id: str, rows: list[Any], meters: dict[str, str] | None) -> bytes:
    """A landing-log line as this version writes it, from one read by `landing_log.read_line`: a line written
    before the meters element came (`meters` None) has rows of (uid, meter id, account id, ts, ets, dimensions,
    micros), times as RFC 3339 text in UTC, which become today's objects, each meter id its own code."""
    if meters is not None:
        return landing_log.line(batch, org_id, orjson.dumps(rows), orjson.dumps(meters))
    # The arrays are NewMeasurement's fields in order (times as text, which orjson writes as they are).
    return landing_log.line(batch, org_id, *_landed_rows([NewMeasurement(*row) for row in rows]))


class _KeyFilter:
    """A Bloom filter of the stored uid keys, for a store that only this process writes (chDB).

    Ingest's usual measurement is new, and proving it new in `uids` costs a lookup that reads a
    granule per key in every part (tens of ms a batch, growing with the parts); a key the filter
    has never seen is new for certain, so only the filter's positives (replays, and about 1 %
    false positives) are looked up. It can only say "maybe" wrongly, never "no": every key goes
    in once its rows are on disk, under the write lock, before the write's generation ends
    (see `ClickHouseStore._write`), and the filter is built from the table, with the keys stored
    while it was built, so a key stored before a restart is in it. Bits are never cleared; a key
    whose rows a crash lost stays a "maybe", which the lookup then answers. Sized for twice the keys
    stored when it is built (at least 2^20), at 10 to 20 bits a key: 2.5 to 5 MB per million keys
    stored. Once that many keys are in, it is built again from the table (the full one answering
    meanwhile).

    Blocked: a key's seven bits are in one 64-bit word, the word chosen by the key's low half and
    the bits by seven 6-bit slices of its high half (keys are uniformly random: SHA-256). One
    memory word per key instead of seven scattered bits: building it for 11 million keys took
    1.2 s instead of 7.3 s, for a false positive rate of 0.1 % at 24 bits a key (measured), about
    1-2 % at 10."""

    _HASHES = 7

    def __init__(self, capacity: int) -> None:
        import numpy  # with chDB always installed (chdb requires pandas)

        self.np = numpy
        self.capacity = capacity
        self.keys = 0
        bits = 1 << max(23, (capacity * 10 - 1).bit_length())
        self.words = numpy.zeros(bits // 64, dtype=numpy.uint64)
        self._word_mask = numpy.uint64(bits // 64 - 1)
        self._slices = numpy.arange(0, 6 * self._HASHES, 6, dtype=numpy.uint64)

    def _words_and_masks(self, halves: Any) -> tuple[Any, Any]:
        """Each key's word and the mask of its bits in it."""
        shifts = (halves[:, 1:] >> self._slices) & self.np.uint64(63)
        return halves[:, 0] & self._word_mask, self.np.bitwise_or.reduce(self.np.uint64(1) << shifts, axis=1)

    def _halves(self, keys: Sequence[int]) -> Any:
        halves = self.np.empty((len(keys), 2), dtype=self.np.uint64)
        halves[:, 0] = [key & 0xFFFFFFFFFFFFFFFF for key in keys]
        halves[:, 1] = [key >> 64 for key in keys]
        return halves

    def add_halves(self, halves: Any) -> None:
        for offset in range(0, len(halves), 1 << 17):  # in steps of about 10 ms: other threads get their turns
            words, masks = self._words_and_masks(halves[offset:offset + (1 << 17)])
            self.np.bitwise_or.at(self.words, words, masks)
        self.keys += len(halves)

    def add(self, keys: Sequence[int]) -> None:
        if keys:
            self.add_halves(self._halves(keys))

    def add_stored(self, keys: list[int] | Any) -> None:
        """Keys as the store notes them: a list of keys, or an array of their halves."""
        if isinstance(keys, list):
            self.add(keys)
        else:
            self.add_halves(keys)

    def maybe_stored(self, keys: Sequence[int]) -> list[int]:
        """The keys that may be stored (the others are not)."""
        if not keys:
            return []
        words, masks = self._words_and_masks(self._halves(keys))
        present = (self.words[words] & masks) == masks
        return [key for key, maybe in zip(keys, present.tolist(), strict=True) if maybe]


class _Pending:
    """Measurements waiting for a write, by uid key (the first of each), and the store's
    generation when they were last all found new, if they were (see `ClickHouseStore.write`)."""

    def __init__(self, rows: dict[int, tuple[str, NewMeasurement]] | None = None, checked: int | None = None) -> None:
        self.rows = rows or {}
        self.checked = checked


class _Job(Waiting):
    """Measurements waiting for a write (`ClickHouseStore.write`), and how many it stored."""

    def __init__(self, pending: _Pending) -> None:
        super().__init__()
        self.pending = pending
        self.stored = 0


class _Landing(Waiting):
    """A batch waiting to land (`ClickHouseStore.land`): its organization, its rows and its meters, as JSON."""

    def __init__(self, org_id: str, rows: bytes, meters: bytes) -> None:
        super().__init__()
        self.org_id = org_id
        self.rows = rows
        self.meters = meters


class ClickHouseStore:
    """Process-wide: safe to use from many threads at once.

    One client writes (under the write lock) and runs DDL; reads take an idle client of their
    own, opened as needed: a chDB client runs one statement at a time, so the lookups of
    batches waiting to be written run beside the write in progress instead of behind it."""

    def __init__(self, connect: Callable[[], Any], database: str, *, landing: LandingLog | None = None,
                 connect_for_migrations: Callable[[], Any] | None = None) -> None:
        self.connect = connect
        # A server's client for `migrate`, which waits as long as a statement takes (None: the write client's).
        self._connect_for_migrations = connect_for_migrations
        # Only this process writes the store (chDB): a filter of the stored keys can stand in for
        # most lookups (see `_KeyFilter`). Built by a thread of its own (`_build_filter`), which the first
        # lookup starts; until it is in place, every key is looked up.
        self.exclusive = landing is not None
        # Where the API's batches land before ClickHouse stores them (see `land`).
        self.landing = landing
        self._filter: _KeyFilter | None = None
        # While a filter is being built: the keys stored since its build began (a list of keys, or an array
        # of their halves each), for it to take before it is put in place (under the write lock).
        self._filter_pending: list[Any] | None = None
        self._filter_builder: threading.Thread | None = None
        self._filter_lock = threading.Lock()  # held to start a build
        self.client = connect()
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._readers: list[Any] = []
        self.database = database
        self.table = f"`{database}`.measurements"
        self.uids = f"`{database}`.uids"
        self.landed = f"`{database}`.landed"
        self.staged = f"`{database}`.staged"
        self.days = f"`{database}`.days"
        # Held around each write's dedupe check and insert, and each expansion of landed batches, so
        # they are one step for this process. Taken before `_land_lock` when both are held.
        self._write_lock = threading.Lock()
        # Held around each landing's insert: batches land while an expansion runs.
        self._land_lock = threading.Lock()
        # Guards the queues and the counters below.
        self._queue_lock = threading.Lock()
        self._queue: list[_Job] = []
        self._landings: list[_Landing] = []
        # The next batch number (landed or written: one sequence, the ingest order); None until the
        # first repair reads it from the tables. A repair is due at first and after a failed write.
        self._next_batch: int | None = None
        self._repair_due = True
        # The epoch landings go to (`landed`'s partition), and how many landed batches no expansion has
        # stored yet: while any, a read expands them first.
        self._epoch = 0
        self._unexpanded = 0
        # Started by the first landing that finds `_EXPAND_AT` batches waiting, woken by each such landing.
        self._expander: threading.Thread | None = None
        self._expansion_due = threading.Event()
        self._closing = False
        # Counts the writes (and repairs) of this process; `_written` holds the keys of the last
        # writes, the newest last, one set per generation up to now (cleared when a write fails).
        self.generation = 0
        self._written: deque[set[int]] = deque(maxlen=_WRITES_REMEMBERED)
        self._inserts: tuple[Any, Any] | None = None

    @classmethod
    def open(cls, url: str) -> ClickHouseStore:
        import clickhouse_connect  # the `clickhouse` extra: only a process that uses this store needs it

        parts = urlsplit(url)
        if parts.scheme == "chdb":
            if parts.netloc or not parts.path.startswith("/"):
                raise ValueError(f"a chDB store is chdb:///ABSOLUTE/PATH, not {url!r}")
            database = _database(parse_qs(parts.query).get("database", ["meterbill"])[0])
            return cls(lambda: clickhouse_connect.get_client(dsn=f"chdb://{parts.path}", settings=_SETTINGS),
                       database, landing=LandingLog(Path(parts.path) / "landing" / database))
        if parts.scheme not in ("clickhouse", "clickhouses"):
            raise ValueError(f"a ClickHouse store's URL starts chdb://, clickhouse:// or clickhouses://, not {url!r}")
        secure = parts.scheme == "clickhouses"
        database = _database(parts.path.strip("/") or "default")

        def connect(send_receive_timeout: int = 300) -> Any:  # clickhouse-connect's default
            return clickhouse_connect.get_client(
                host=parts.hostname or "localhost", port=parts.port or (8443 if secure else 8123),
                username=unquote(parts.username or "default"), password=unquote(parts.password or ""), secure=secure,
                # A session id would make the server refuse a second query while one runs: no sessions.
                autogenerate_session_id=False, settings=_SETTINGS, send_receive_timeout=send_receive_timeout)

        # A migration's statement may rewrite a table (0003's copy, 0005's mutation): about a second per million
        # rows, past clickhouse-connect's 300 s wait for an answer at a few hundred million.
        return cls(connect, database, connect_for_migrations=lambda: connect(send_receive_timeout=_MIGRATION_WAIT))

    def migrate(self) -> list[str]:
        """Create or bring up to date this store's tables; the versions applied now."""
        versions = f"`{self.database}`.schema_versions"
        client = self.client if self._connect_for_migrations is None else self._connect_for_migrations()
        try:
            with self._write_lock:
                client.command(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
                client.command(f"CREATE TABLE IF NOT EXISTS {versions} (version String, applied_at"
                               " DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = MergeTree ORDER BY version")
                done = {row[0] for row in client.query(f"SELECT version FROM {versions}").result_rows}
                applied = []
                for version, statements in MIGRATIONS:
                    if version in done:
                        continue
                    for step in statements:
                        if isinstance(step, str):
                            client.command(step.format(db=f"`{self.database}`"))
                        else:
                            step(client, self.database)
                    client.insert(versions, [[version]], column_names=["version"])
                    applied.append(version)
                return applied
        finally:
            if client is not self.client:
                client.close()

    def bind(self, session: Session | None) -> MeasurementStore:
        return ClickHouseMeasurements(self, session)

    def close(self) -> None:
        self._closing = True
        if self._expander is not None:
            self._expansion_due.set()
            self._expander.join()
        if self._filter_builder is not None:
            self._filter_builder.join()
        for client in [self.client, *self._readers]:
            client.close()
        if self.landing is not None:
            self.landing.close()

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Sequence[Sequence[Any]]:
        """A read's rows, on an idle client."""
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self.connect()
            with self._queue_lock:
                self._readers.append(client)
        try:
            return client.query(sql, parameters=parameters).result_rows
        finally:
            self._idle.put(client)

    # -- writes --------------------------------------------------------------------------------

    def stored_keys(self, keys: Iterable[int]) -> set[int]:
        """Which of these uid keys (see `_key_sql`) are stored."""
        asked = sorted(set(keys))
        key_filter = self._filter
        if key_filter is not None:
            asked = key_filter.maybe_stored(asked)
        elif self.exclusive:
            self._start_filter_build()
        if not asked:
            return set()
        # The array as its text: clickhouse-connect's formatting of a thousand numbers one by one
        # cost more than the lookup itself.
        rows = self.query(f"SELECT key FROM {self.uids} WHERE key IN {{keys:Array(UInt128)}}",
                          {"keys": f"[{','.join(map(str, asked))}]"})
        return {int(row[0]) for row in rows}

    def write(self, pending: _Pending) -> int:
        """Store what is still new of these measurements, in ingest order; how many that was.

        Measurements found new by `ingest` are not looked up again, but compared with the
        keys written since (kept in memory for the last writes): in the API's path a batch
        costs one lookup, not two.

        Group commit: the thread that takes the write lock writes every batch queued by then, in
        one lookup and one insert per table, while the others wait for its answer. Under load a
        write then costs about the same for eight batches as for one."""
        job = _Job(pending)
        self._grouped(job, self._queue, self._write_lock, self._write)
        return job.stored

    def land(self, org_id: str, rows: bytes, meters: bytes) -> None:
        """Acknowledge a batch once it is on disk as it came, for a store only this process writes:
        its rows and meters (see `store.EncodedBatch`) as one line of the landing log, the batches
        waiting at the same time in one append and one flush. Deduplicating and storing them in
        `uids` and `measurements` (`_expand`) is ClickHouse's work, in SQL, later: once `_EXPAND_AT`
        batches wait (by the store's expander thread, which the landing that finds them so wakes: no
        request waits for an expansion), before any read, before any other write, and after a
        restart. The API's answer then costs a flush of a file instead of two parts, and no Python
        per measurement past the validation.

        Landing and expanding take different locks: batches land while an expansion runs. An
        expansion first moves landings on to a new epoch (the log's next file), then stores the
        epochs before it in order, then removes their files."""
        self.repair()
        self._grouped(_Landing(org_id, rows, meters), self._landings, self._land_lock, self._land)
        if self._unexpanded >= _EXPAND_AT:
            self._wake_expander()

    def _wake_expander(self) -> None:
        if self._expander is None:
            with self._queue_lock:
                if self._expander is None:
                    self._expander = threading.Thread(target=self._expand_when_due, name="chdb-expander",
                                                      daemon=True)
                    self._expander.start()
        self._expansion_due.set()

    def _expand_when_due(self) -> None:
        """The expander thread: stores what is landed whenever a landing finds enough waiting, until `close`.
        (In the request that found them, an expansion held its answer for up to a second.)"""
        while True:
            self._expansion_due.wait()
            self._expansion_due.clear()
            if self._closing:
                return
            try:
                with self._write_lock:
                    self._expand()
            except Exception as exc:
                # Landed and on disk: the next landing past the threshold tries again, and the next read or
                # write stores it (and fails in its turn if the expansion still does).
                log.warning("landed_batches_not_yet_stored", error=type(exc).__name__, unexpanded=self._unexpanded)

    def settle(self) -> None:
        """Every batch landed so far stored (before a read: it then counts every acknowledged batch)."""
        self.repair()  # a process's first use learns what an earlier one left landed
        if self._unexpanded:
            with self._write_lock:
                self._expand()

    def _grouped(self, job: JobT, queue: list[JobT], lock: threading.Lock,
                 run: Callable[[list[JobT]], None]) -> None:
        """Group commit (`core.grouping`): under load a step costs about as much for eight jobs as for one."""
        run_grouped(job, queue, lock, self._queue_lock, run)

    def repair(self) -> None:
        """Remove what a write cut between its two inserts left (by a crash, or a failure in this
        process), if a repair is due: before any lookup whose answer is trusted."""
        if self._repair_due:
            with self._write_lock:
                if self._repair_due:
                    self._recover()

    def _take_batches(self, count: int) -> int:
        """The first of `count` new batch numbers (after the first repair)."""
        with self._queue_lock:
            assert self._next_batch is not None
            first = self._next_batch
            self._next_batch += count
            return first

    def _land(self, landings: Sequence[_Landing]) -> None:
        assert self.landing is not None  # `ClickHouseMeasurements.land` lands only in an exclusive store
        first = self._take_batches(len(landings))
        self.landing.append(self._epoch, b"".join(landing_log.line(first + index, each.org_id, each.rows, each.meters)
                                                  for index, each in enumerate(landings)))
        with self._queue_lock:
            self._unexpanded += len(landings)

    def _expand(self) -> None:
        """Store the landed batches (under the write lock), epoch by epoch, each as one write: the first
        of each uid in landing order, less those stored, keys first then rows (as `_write` does, so a
        crash between the two is repaired the same way), through `staged`; then remove the epoch's file."""
        if self._repair_due:
            self._recover()
        if not self._unexpanded:
            return
        assert self.landing is not None  # batches land only in an exclusive store
        with self._land_lock:  # later landings go to the next epoch; these are all that is counted now
            through = self._epoch
            self._epoch += 1
            with self._queue_lock:
                count = self._unexpanded
        try:
            for epoch in self.landing.epochs(through):
                self.client.command(f"TRUNCATE TABLE {self.staged}")
                self.client.command(_STAGE_SQL.format(
                    staged=self.staged, landed=_log_source(self.landing.path(epoch)), uids=self.uids))
                # One part each, as a write's (see `fold_days`, which needs a batch's rows in one part).
                self.client.command(f"INSERT INTO {self.uids} (key) SELECT key FROM {self.staged}", settings=ONE_PART)
                self.client.command(_FROM_STAGED.format(table=self.table, staged=self.staged), settings=ONE_PART)
                if self._filter is not None or self._filter_pending is not None:
                    halves = self.client.query_np(f"SELECT {_KEY_HALVES} FROM {self.staged}")
                    if len(halves):
                        self._note_stored(halves)
                self.landing.remove(epoch)
        except BaseException:
            self._repair_due = True  # whatever half was written, the next write repairs it first
            raise
        finally:
            # Keys went in that no write remembers: a unit's earlier lookup must be made again.
            self.generation += 1
            self._written.clear()
            self.client.command(f"TRUNCATE TABLE {self.staged}")
        with self._queue_lock:
            self._unexpanded -= count

    def _write(self, jobs: Sequence[_Job]) -> None:
        # Landed batches came first: stored before these, so the first of a uid still wins.
        self._expand()
        # A job found new at generation g needs no lookup while the keys written since g are
        # still in memory (`_written`): only this process writes, so they are all that changed.
        stored: set[int] = set()
        unchecked: list[int] = []
        for job in jobs:
            checked = job.pending.checked
            if checked is not None and checked >= self.generation - len(self._written):
                for generation in range(checked, self.generation):
                    stored.update(job.pending.rows.keys() & self._written[generation - self.generation])
            else:
                unchecked.extend(job.pending.rows)
        stored |= self.stored_keys(unchecked)
        keys: list[int] = []
        new: list[tuple[str, NewMeasurement]] = []
        for job in jobs:
            for key, row in job.pending.rows.items():
                if key not in stored:
                    stored.add(key)
                    job.stored += 1
                    keys.append(key)
                    new.append(row)
        if not keys:
            return
        base = self._take_batches(1) << SEQ_BITS
        # Column by column (one comprehension each costs a third of appending row by row).
        # Times as DateTime64(6)'s own ticks: clickhouse-connect writes integers as they are, and converts
        # datetimes through several calls each, which cost more than the rest of a row.
        uids = [uid_values(m.uid) for _, m in new]
        columns = [[org_id for org_id, _ in new], [m.meter_id for _, m in new], [m.account_id for _, m in new],
                   [_ticks(m.ts) for _, m in new], [None if m.ets is None else _ticks(m.ets) for _, m in new],
                   [text for text, _ in uids], [canonical for _, canonical in uids],
                   list(range(base, base + len(new))), [m.micros for _, m in new], [m.dimensions for _, m in new]]
        if self._inserts is None:  # each table's column types, asked once; a write in one part whatever its size
            self._inserts = (
                self.client.create_insert_context(self.uids, column_names=["key"], column_oriented=True,
                                                  settings=ONE_PART),
                self.client.create_insert_context(self.table, column_names=_COLUMNS, column_oriented=True,
                                                  settings=ONE_PART))
        into_uids, into_table = self._inserts
        try:
            # Keys first: a crash between the two inserts leaves keys without rows, which
            # `_recover` removes, never rows without keys, which a replay would store again.
            into_uids.data = [keys]
            self.client.insert(context=into_uids)
            into_table.data = columns
            self.client.insert(context=into_table)
            self._note_stored(keys)
        except BaseException:
            self._repair_due = True  # whatever half was written, the next write repairs it first
            self._written.clear()  # and then only a lookup can say what is stored
            raise
        finally:
            self.generation += 1
        self._written.append(set(keys))

    def _recover(self) -> None:
        """Remove the keys of a batch whose rows never arrived (one key per row otherwise); learn the
        next batch number and, at first, what is landed (under the write lock)."""
        (keys,), (rows, last) = (self.client.query(f"SELECT count() FROM {self.uids}").result_rows[0],
                                 self.client.query(f"SELECT count(), max(seq) FROM {self.table}").result_rows[0])
        segments = [] if self.landing is None else self._recover_landings()
        if keys != rows:
            self.generation += 1
            self._written.clear()
            self.client.command(
                f"ALTER TABLE {self.uids} DELETE WHERE key NOT IN (SELECT {_key_sql(STORED_UID)} FROM {self.table})",
                settings={"mutations_sync": 2})
        with self._land_lock, self._queue_lock:
            if self._next_batch is None:  # landings counted since are in the log too after this
                self._unexpanded = sum(segment.batches for segment in segments)
                self._epoch = max((segment.epoch + 1 for segment in segments), default=0)
            # Never back: a landing may have taken numbers since these were read.
            self._next_batch = max(self._next_batch or 0, (int(last) >> SEQ_BITS) + 1,
                                   *(segment.last_batch + 1 for segment in segments))
        if rows:
            fold_days(self.client, self.database, int(last) >> SEQ_BITS)
        self._repair_due = False

    def _recover_landings(self) -> list[Segment]:
        """The landing log's epochs, each cut back to its whole lines; at first, with the batches an
        earlier version of this store left in its `landed` table (migration 0002) moved into the log."""
        assert self.landing is not None
        segments = self.landing.recover()
        for segment in segments:
            if segment.legacy:
                # Rewritten whole (a crash leaves the old file or the new one): its lines as today's.
                self.landing.replace(segment.epoch, b"".join(
                    _line_of_today(*landing_log.read_line(text)) for text in segment.path.read_bytes().splitlines()))
        if self._next_batch is None:
            legacy = self.client.query(f"SELECT batch, org, rows FROM {self.landed} ORDER BY epoch, batch").result_rows
            if legacy:
                # Before the log's own epochs, in their order. Moved twice if a crash comes before the
                # table is emptied: the expansion stores the first of each uid once anyway.
                epoch = min((segment.epoch for segment in segments), default=1) - 1
                self.landing.append(epoch, b"".join(_line_of_today(batch, org, orjson.loads(rows), None)
                                                    for batch, org, rows in legacy))
                self.landing.close()
                self.client.command(f"TRUNCATE TABLE {self.landed}")
                segments = self.landing.recover()
        return segments

    def _note_stored(self, keys: list[int] | Any) -> None:
        """Keys now stored (a list, or an array of their halves) into the filter, and into the one being built;
        a filter holding as many keys as it was made for is built again (under the write lock)."""
        if self._filter_pending is not None:
            self._filter_pending.append(keys)
        if self._filter is not None:
            self._filter.add_stored(keys)
        if self._filter is not None and self._filter.keys > self._filter.capacity:
            self._start_filter_build()

    def _start_filter_build(self) -> None:
        """Have a filter of every stored key built by a thread of its own, unless one is, or one in place is not
        full. Built in the first repair it held up a new process's first read or write
        (7.9 s at 11 million keys), and reads and landings do not need it; meanwhile keys are looked up (or the
        full filter asked). Keys stored from now on go to `_filter_pending` too: a write in progress notes its
        keys after this, and the build reads the table after this."""
        with self._filter_lock:
            if self._filter_pending is not None or self._closing or (
                    self._filter is not None and self._filter.keys <= self._filter.capacity):
                return
            self._filter_pending = []
            self._filter_builder = threading.Thread(target=self._build_filter, name="chdb-key-filter", daemon=True)
            self._filter_builder.start()

    def _build_filter(self) -> None:
        """The filter builder: every key in `uids`, with room for as many again, then the keys stored since
        the build began, put in place under the write lock. On its own client: the write client is the writes'."""
        built: _KeyFilter | None = None
        try:
            client = self.connect()
            try:
                (count,) = client.query(f"SELECT count() FROM {self.uids}").result_rows[0]
                built = _KeyFilter(max(1 << 20, 2 * int(count)))
                halves = client.query_np(f"SELECT {_KEY_HALVES} FROM {self.uids}")
                built.add_halves(halves)
            finally:
                client.close()
        except Exception as exc:
            # Keys are looked up as before; the next repair, or the old filter's growth, tries again.
            log.warning("key_filter_not_built", error=type(exc).__name__)
            built = None
        with self._write_lock:
            if built is not None:
                for keys in self._filter_pending or []:
                    built.add_stored(keys)
                self._filter = built
            self._filter_pending = None


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    pending: dict[ClickHouseStore, _Pending] | None = session.info.pop(_PENDING, None)
    for store, rows in (pending or {}).items():
        store.write(rows)


@event.listens_for(Session, "after_transaction_end")
def _forget_pending(session: Session, transaction: SessionTransaction) -> None:
    # However the unit ended (committed, rolled back, or the session closed without either),
    # nothing of it waits for a later one; a savepoint's end is not the unit's.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


class ClickHouseMeasurements:
    """The port over one `ClickHouseStore`, for one unit of work (see the module's docstring)."""

    def __init__(self, store: ClickHouseStore, session: Session | None) -> None:
        self.store = store
        self.session = session
        self.table = store.table
        self.days = store.days

    # -- writes --------------------------------------------------------------------------------

    def ingest(self, org_id: str, batch: Sequence[NewMeasurement]) -> IngestOutcome:
        if not batch:
            return IngestOutcome(0, 0)
        # A uid landed but not yet expanded is stored already. (Settling repairs first: keys without
        # rows, from a write cut by kill -9 or failed, would pass for stored in the lookup below, and
        # the batch would be acknowledged as replays and never stored; the crash test on chDB found
        # this when the lookup ran before the first write of a restarted process.)
        self.store.settle()
        keyed: dict[int, tuple[str, NewMeasurement]] = {}
        # A uid's key: `sql.uid_key` as a number (without its hex text, which ingest would pay for).
        prefix, sha256 = org_id.encode(), hashlib.sha256
        for m in batch:
            keyed.setdefault(int.from_bytes(sha256(prefix + m.uid.encode()).digest()[:16], "big"), (org_id, m))
        if self.session is None:
            stored = self.store.write(_Pending(keyed))
            return IngestOutcome(stored, len(batch) - stored)
        # Held until the unit commits, the first of each uid in the unit, less those stored now.
        pending: _Pending = self.session.info.setdefault(_PENDING, {}).setdefault(self.store, _Pending())
        new = {key: row for key, row in keyed.items() if key not in pending.rows}
        generation = self.store.generation  # before the lookup: a write during it makes the answer stale
        known = self.store.stored_keys(new)
        pending.rows.update((key, row) for key, row in new.items() if key not in known)
        pending.checked = generation if pending.checked is None else min(pending.checked, generation)
        return IngestOutcome(len(new) - len(known), len(batch) - len(new) + len(known))

    def land(self, org_id: str, batch: Sequence[NewMeasurement]) -> int | None:
        # Landed whole where only this process writes (chDB) and nothing waits for a unit's commit;
        # otherwise (a server, which other processes may write too) stored at once.
        if self.encoded_landing() is None:
            return self.ingest(org_id, batch).stored
        if batch:
            self.store.land(org_id, *_landed_rows(batch))
        return None

    def encoded_landing(self) -> EncodedLanding | None:
        return self if self.store.exclusive and self.session is None else None

    def land_encoded(self, org_id: str, batch: EncodedBatch) -> None:
        self.store.land(org_id, batch.rows, orjson.dumps(batch.meters))

    # -- reads ---------------------------------------------------------------------------------

    def _rows(self, sql: str, parameters: dict[str, Any]) -> Sequence[Sequence[Any]]:
        self.store.settle()
        return self.store.query(sql, parameters)

    def has_measurements(self, org_id: str, *, meter_id: str | None = None, account_id: str | None = None) -> bool:
        where = ["org = {org:String}"]
        if meter_id is not None:
            where.append("meter = {meter:String}")
        if account_id is not None:
            where.append("account = {account:String}")
        return bool(self._rows(f"SELECT 1 FROM {self.table} WHERE {' AND '.join(where)} LIMIT 1",
                               {"org": org_id, "meter": meter_id, "account": account_id}))

    def period_totals(
        self, org_id: str, *, account_ids: Sequence[str] | None, fields: Sequence[tuple[str, str]],
        start: datetime, end: datetime,
    ) -> dict[tuple[str, str, str], Totals]:
        if account_ids is not None and not account_ids:
            return {}
        found = self.totals_series(org_id, fields=fields, start=start, end=end, account_ids=account_ids,
                                   groups=[Group(GroupKind.ACCOUNT)], limit=None)
        return {(str(keys[0]), meter, name): t for (meter, name), rows in found.items() for keys, t in rows}

    def totals_series(
        self, org_id: str, *, fields: Sequence[tuple[str, str]], start: datetime, end: datetime,
        account_ids: Sequence[str] | None, groups: Sequence[Group], limit: int | None,
    ) -> dict[tuple[str, str], list[tuple[tuple[str, ...], Totals]]]:
        """Whole UTC days from `days`, a day's part at either end from the measurements (all of them from
        the measurements when an hourly bucket needs each one's time)."""
        assert all(g.kind in (GroupKind.ACCOUNT, GroupKind.TIME) for g in groups)
        params = _range(org_id, start, end, account_ids)
        params.update(meters=sorted({meter for meter, _ in fields}), fields=sorted({name for _, name in fields}))
        split = split_by_day(start, end, groups)
        names = "".join(f"g{i}, " for i in range(len(groups)))
        sources = []
        for index, (since, until) in enumerate(split.raw):
            params[f"since{index}"], params[f"until{index}"] = since.astimezone(UTC), until.astimezone(UTC)
            keys = "".join(f"{_group_key(g, i, params, 'ts')} AS g{i}, " for i, g in enumerate(groups))
            sources.append(
                f"SELECT {keys}meter, field, sum(toInt128(value)) AS total, min(value) AS smallest,"
                f" max(value) AS largest, count() AS count"
                f" FROM {self.table} ARRAY JOIN mapKeys(measures) AS field, mapValues(measures) AS value"
                f" WHERE {_where(account_ids, f'since{index}', f'until{index}')}"
                f" AND meter IN {{meters:Array(String)}} AND field IN {{fields:Array(String)}}"
                f" GROUP BY {names}meter, field")
        if split.days is not None:
            params["first_day"], params["last_day"] = split.days[0].date(), split.days[1].date()
            keys = "".join(f"{_group_key(g, i, params, 'day')} AS g{i}, " for i, g in enumerate(groups))
            accounts = "" if account_ids is None else " AND account IN {accounts:Array(String)}"
            sources.append(
                f"SELECT {keys}meter, field, sum(total) AS total, min(smallest) AS smallest, max(largest) AS largest,"
                f" sum(count) AS count FROM {self.days} WHERE org = {{org:String}}{accounts}"
                " AND day >= {first_day:Date32} AND day < {last_day:Date32}"
                " AND meter IN {meters:Array(String)} AND field IN {fields:Array(String)}"
                f" GROUP BY {names}meter, field")
        # Meters and fields are filtered apart: a field of one meter asked may bring the same
        # field of another meter asked, dropped below.
        sql = sources[0] if len(sources) == 1 else (
            f"SELECT {names}meter, field, sum(total), min(smallest), max(largest), sum(count)"
            f" FROM ({' UNION ALL '.join(sources)}) GROUP BY {names}meter, field")
        most = _most_groups(groups, start, end, account_ids)
        if limit is not None and (most is None or most > limit):  # else the limit cannot be reached
            sql += f" ORDER BY {names}meter, field LIMIT {int(limit) + 1} BY meter, field"
        asked = set(fields)
        found: dict[tuple[str, str], list[tuple[tuple[str, ...], Totals]]] = {}
        width = len(groups)
        for row in self._rows(sql, params):
            meter, name = row[width], row[width + 1]
            if (meter, name) in asked:
                total, smallest, largest, count = row[width + 2:]
                found.setdefault((meter, name), []).append(
                    (tuple(row[:width]), Totals(int(total), int(smallest), int(largest), int(count))))
        return found

    def aggregate(
        self, org_id: str, *, account_ids: Sequence[str], meter_id: str, field: str, numeric: bool,
        function: Aggregation, segmented_fields: Sequence[str], start: datetime, end: datetime,
    ) -> dict[str, dict[tuple[str | None, ...], Decimal]]:
        if not account_ids:
            return {}
        groups = [Group(GroupKind.ACCOUNT), *(Group(GroupKind.DIMENSION, name) for name in segmented_fields)]
        request = SeriesRequest(meter_id=meter_id, field=field, numeric=numeric, function=function,
                                start=start, end=end, account_ids=account_ids, groups=groups)
        result: dict[str, dict[tuple[str | None, ...], Decimal]] = {}
        for keys, value in self._series_rows(org_id, request, limit=None):
            result.setdefault(str(keys[0]), {})[tuple(keys[1:])] = value
        return result

    def series(self, org_id: str, request: SeriesRequest) -> list[tuple[tuple[str | None, ...], Decimal]]:
        return self._series_rows(org_id, request, limit=request.limit + 1)

    def _series_rows(self, org_id: str, request: SeriesRequest,
                     limit: int | None) -> list[tuple[tuple[str | None, ...], Decimal]]:
        params = _range(org_id, request.start, request.end, request.account_ids)
        params.update(meter=request.meter_id, field=request.field)
        column = "measures" if request.numeric else "dimensions"
        value = f"{column}[{{field:String}}]"
        where = [_where(request.account_ids), "meter = {meter:String}", f"mapContains({column}, {{field:String}})"]
        for index, (name, values) in enumerate(request.filters):
            params[f"fk{index}"], params[f"fv{index}"] = name, list(values)
            where.append(f"mapContains(dimensions, {{fk{index}:String}})"
                         f" AND dimensions[{{fk{index}:String}}] IN {{fv{index}:Array(String)}}")
        keys = [_group_key(g, index, params) for index, g in enumerate(request.groups)]
        selected = "".join(f"{key} AS g{i}, " for i, key in enumerate(keys))
        grouping = f" GROUP BY {', '.join(f'g{i}' for i in range(len(keys)))}" if keys else ""
        measure = {
            Aggregation.SUM: f"sum(toInt128({value}))", Aggregation.MEAN: f"sum(toInt128({value}))",
            Aggregation.MIN: f"min({value})", Aggregation.MAX: f"max({value})", Aggregation.COUNT: "count()",
            Aggregation.UNIQUE: f"uniqExact({value})",
            # The latest measurement's value, the largest of them at equal times.
            Aggregation.LATEST: f"argMax({value}, (ts, {value}))",
        }[request.function]
        # count() last, always: without groups an aggregate answers one row even over no measurements.
        sql = f"SELECT {selected}{measure}, count() FROM {self.table} WHERE {' AND '.join(where)}{grouping}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = []
        width = len(keys)
        for row in self._rows(sql, params):
            raw, count = row[width], int(row[width + 1])
            if count:
                rows.append((tuple(row[:width]), _value(request.function, request.numeric, raw, count)))
        return rows

    # -- copying a store ----------------------------------------------------------------------------

    def scan(self, *, after: str | None, limit: int) -> tuple[list[tuple[str, NewMeasurement]], str | None]:
        """Every organization's measurements in ingest order, `limit` at a time (see the port)."""
        params: dict[str, Any] = {}
        where = ""
        if after is not None:
            seq, org, uid = after.split(":", 2)
            params.update(seq=int(seq), org=org, uid=uid)
            where = f" WHERE (seq, org, {STORED_UID}) > ({{seq:UInt64}}, {{org:String}}, {{uid:String}})"
        rows = self._rows(f"SELECT seq, org, {STORED_UID} AS text, meter, account, ts, ets, measures, dimensions"
                          f" FROM {self.table}{where} ORDER BY seq, org, text LIMIT {int(limit)}", params)
        found = [(org, NewMeasurement(uid=uid, meter_id=meter, account_id=account, ts=_utc(ts),
                                      ets=None if ets is None else _utc(ets), dimensions=dict(dimensions),
                                      micros={name: int(v) for name, v in measures.items()}))
                 for _, org, uid, meter, account, ts, ets, measures, dimensions in rows]
        if not rows:
            return found, None
        seq, org, uid = rows[-1][:3]
        return found, f"{seq}:{org}:{uid}"

    def census(self) -> dict[str, tuple[int, dict[tuple[str, str], int]]]:
        """Per organization: its number of measurements and the sum in millionths of each numeric (meter, field)."""
        counts = self._rows(f"SELECT org, count() FROM {self.table} GROUP BY org", {})
        result: dict[str, tuple[int, dict[tuple[str, str], int]]] = {org: (int(count), {}) for org, count in counts}
        for org, meter, field, total in self._rows(
                f"SELECT org, meter, field, sum(toInt128(value)) FROM {self.table}"
                " ARRAY JOIN mapKeys(measures) AS field, mapValues(measures) AS value GROUP BY org, meter, field", {}):
            result[org][1][meter, field] = int(total)
        return result


def _range(org_id: str, start: datetime, end: datetime, account_ids: Sequence[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"org": org_id, "start": start.astimezone(UTC), "end": end.astimezone(UTC)}
    if account_ids is not None:
        params["accounts"] = list(account_ids)
    return params


def _where(account_ids: Sequence[str] | None, start: str = "start", end: str = "end") -> str:
    """The organization's measurements (of these accounts) from the parameter `start` to `end`."""
    accounts = "" if account_ids is None else " AND account IN {accounts:Array(String)}"
    return ("org = {org:String}" + accounts +
            f" AND ts >= {{{start}:DateTime64(6, 'UTC')}} AND ts < {{{end}:DateTime64(6, 'UTC')}}")


_BUCKET_LENGTH = {TimeBucket.HOUR: timedelta(hours=1), TimeBucket.DAY: timedelta(days=1),
                  TimeBucket.WEEK: timedelta(days=7), TimeBucket.MONTH: timedelta(days=28)}


def _most_groups(groups: Sequence[Group], start: datetime, end: datetime,
                 account_ids: Sequence[str] | None) -> int | None:
    """At most how many groups (rows per field) `groups` make of the period, or None if unbounded
    (grouped by account, every account of the organization). A bucket started before the period
    and one ending after it count too; a month is taken as 28 days, a bound from above."""
    most = 1
    for group in groups:
        if group.kind == GroupKind.ACCOUNT:
            if account_ids is None:
                return None
            most *= len(account_ids)
        elif group.kind == GroupKind.TIME:
            most *= (end - start) // _BUCKET_LENGTH[group.bucket or TimeBucket.DAY] + 2
        else:
            return None
    return most


def _group_key(group: Group, index: int, params: dict[str, Any], time: str = "ts") -> str:
    """A group's key over rows whose time is the column `time` (`ts`, or a `days` row's `day`)."""
    if group.kind == GroupKind.ACCOUNT:
        return "account"
    if group.kind == GroupKind.TIME:
        start = _BUCKET_START[group.bucket or TimeBucket.DAY].format(t=time)
        return f"formatDateTime(toDateTime({start}, 'UTC'), '%Y-%m-%dT%H:%i:%SZ', 'UTC')"
    params[f"g{index}"] = group.field
    return f"if(mapContains(dimensions, {{g{index}:String}}), dimensions[{{g{index}:String}}], NULL)"


def _value(function: Aggregation, numeric: bool, raw: Any, count: int) -> Decimal:
    if function in (Aggregation.COUNT, Aggregation.UNIQUE) or not numeric:
        return Decimal(int(raw))
    if function == Aggregation.MEAN:
        return Decimal(int(raw)) / (Decimal(count) * MICROS)
    return from_micros(int(raw))


def _database(name: str) -> str:
    """The name, checked: it is written into statements (between backquotes)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"a ClickHouse database name is letters, digits and _, not {name!r}")
    return name


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _ticks(moment: datetime) -> int:
    """Microseconds since the epoch (a naive time is UTC): DateTime64(6)'s value."""
    return ((moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)) - _EPOCH) // _MICROSECOND


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
