"""The ClickHouse measurement store's tables, as versioned migrations (see `clickhouse.ClickHouseStore.migrate`).

Three tables.

`measurements`, one row per measurement:

- Sorted by (organization, account, ts) since 0003 (by organization, meter, account, ts before):
  one account-month, all its meters, is one contiguous key range (a few granules of 1024 rows)
  that the primary index finds by binary search, and a bill run reads one organization's range.
  Not partitioned: an insert is then one part, written and renamed into place in one
  step, so a batch is all or nothing even when it spans months (a partitioned table
  splits an insert into one part per partition, committed one after the other).
- Numeric fields: Map(field → Int64 millionths); the API's largest magnitude is 10^12
  units = 10^18 millionths, inside Int64. Sums are taken as Int128: exact.
  Text fields: Map(field → value). Names and values are LowCardinality (dictionary
  codes: a handful of names per meter, and values that repeat).
- `seq`: the ingest order (batch number << 24 | row in the batch), the order `scan`
  pages in, so a copy's cursor never passes a row that commits later.
- Codecs: the sort order leaves org and account as long runs (org LowCardinality, account
  text that ZSTD stores in almost nothing), meter a dictionary code of a handful of values;
  times within an account rise, so DoubleDelta; uids are random text, ZSTD at level 3.
- Since 0005 a uid that is a UUID in its canonical text (lowercase, hyphens: what UUID libraries
  write and most clients send) is stored as its 16 bytes in `uuid`, `uid` left empty (a uid is
  never empty); any other uid is text in `uid`, `uuid` zero. As text a random UUID took 18.6 bytes
  after ZSTD. `STORED_UID` reads either back as the text that came.

`uids`, the dedupe index: one 128-bit key per stored measurement, the first 128 bits of
SHA-256(organization id ‖ uid), the same key as the SQL store's `uid_key` (two uids of one
organization collide with probability 2^-128 per pair). Sorted by key in granules of 128
(a batch's 1000 lookups read at most 1000 small granules, not the table), uncompressed
(random bits do not compress). A separate table, not a projection of `measurements`:
ClickHouse reads a projection only when it estimates fewer marks than the table, and
for 1000 scattered uids it chose the table (55 ms a batch at 1M measurements, against
4–9 ms here). Its keys go in before the batch's rows, so after a crash between the two
it holds keys of rows that never arrived (a batch never acknowledged), never the
reverse; the store repairs that before its first write (see `ClickHouseStore._recover`).

`days` (since 0004), each numeric field's totals per account, meter and UTC day (sum, min, max,
count), which answer a usage query or a bill run over whole days without reading the measurements
(see `ClickHouseMeasurements.totals_series`). An AggregatingMergeTree: a write adds rows, merges
combine them, and every read sums them again, so it is exact before any merge. Fed by the view
`days_of_measurements` in the statement that inserts the rows, as an insert of its own; each row
carries the largest batch number it holds, the mark below which every batch is folded, and a
crash between the two inserts is repaired by folding what is above it (`fold_days`).

All three: `fsync_after_insert` and `fsync_part_directory`, so an insert returns once its part
is on disk (an acknowledged batch survives a power cut, not only `kill -9`).

Since 0002, for a store only this process writes (chDB): `staged`, a Memory table where an
expansion of landed batches holds the rows it found new between its two inserts (emptied at a
restart, as it should be: the landing log still holds them; see `clickhouse.ClickHouseStore.land`).
And `landed`, where the API's batches landed, one row each, until the landing log
(`landing_log`: files, an append and a flush instead of an insert) took its place; a process
moves what an earlier version left there into the log at its first repair, so it stays empty.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The sort key since 0003, as `system.tables` spells it.
SORTING_KEY = "org, account, ts"
# `measurements` since 0003; `{table}` is its quoted name.
_MEASUREMENTS = """CREATE TABLE IF NOT EXISTS {table} (
    org LowCardinality(String),
    meter LowCardinality(String),
    account String CODEC(ZSTD(3)),
    ts DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    ets Nullable(DateTime64(6, 'UTC')) CODEC(ZSTD(1)),
    uid String CODEC(ZSTD(3)),
    seq UInt64 CODEC(T64, ZSTD(1)),
    measures Map(LowCardinality(String), Int64) CODEC(ZSTD(3)),
    dimensions Map(LowCardinality(String), LowCardinality(String)) CODEC(ZSTD(1))
) ENGINE = MergeTree
ORDER BY ({key})
SETTINGS index_granularity = 1024, fsync_after_insert = 1, fsync_part_directory = 1"""


def _sort_by_account(client: Any, database: str) -> None:
    """Rebuild `measurements` sorted by (org, account, ts), its account a plain `String`.

    Sorted by (org, meter, account, ts), one account-month was one key range per meter, and
    the meter left unnamed by a query of several meters made ClickHouse's primary-key analysis
    fall back from a binary search to its generic exclusion search: 31 granules in 6 parts,
    12 ms for one account-month's `count()` at 10M measurements. Sorted by account, then time,
    the account-month is one range found by binary search (about 4 ms). A `LowCardinality`
    account cost a dictionary read per granule range for a column of unbounded cardinality.

    Rewrites the table: a copy of every row sorted anew (about a second per million rows),
    swapped in by `EXCHANGE TABLES`. Rows a writer stores during the copy (a server's API
    process left running) have a larger `seq` than every row copied (one process writes and
    numbers them in order), and are copied again once the tables are swapped. Each step can be
    run again: a copy cut before the swap is dropped and made again; after the swap, the
    rows stored since the copy are taken over from the old table before it is dropped."""
    db = f"`{database}`"
    new, old = f"{db}.measurements", f"{db}.measurements_0003"
    (key,) = client.query("SELECT sorting_key FROM system.tables WHERE database = {d:String}"
                          " AND name = 'measurements'", parameters={"d": database}).result_rows[0]
    if key != SORTING_KEY:
        client.command(f"DROP TABLE IF EXISTS {old}")  # a copy cut before the swap
        client.command(_MEASUREMENTS.format(table=old, key=SORTING_KEY))
        (through,) = client.query(f"SELECT max(seq) FROM {new}").result_rows[0]
        client.command(f"INSERT INTO {old} SELECT * FROM {new} WHERE seq <= {int(through)}")
        client.command(f"EXCHANGE TABLES {new} AND {old}")
    elif not client.query("SELECT count() FROM system.tables WHERE database = {d:String}"
                          " AND name = 'measurements_0003'", parameters={"d": database}).result_rows[0][0]:
        return  # sorted, and no copy cut after the swap left rows behind
    client.command(f"INSERT INTO {new} SELECT * FROM {old}"
                   f" WHERE (SELECT count() FROM {new}) = 0 OR seq > (SELECT max(seq) FROM {new})")
    client.command(f"DROP TABLE {old}")


# A measurement's uid as it came, from the row's `uid` and `uuid` (since 0005; see the module's docstring).
STORED_UID = "if(uid = '', toString(uuid), uid)"


def uid_columns(uid: str) -> tuple[str, str]:
    """The SQL of a uid's `uid` and `uuid` columns, from the SQL `uid` of its text: the UUID's 16 bytes
    only when its text is canonical (`toString` gives it back unchanged), the text otherwise."""
    canonical = f"toString(toUUIDOrZero({uid})) = {uid}"
    return f"if({canonical}, '', {uid})", f"if({canonical}, toUUIDOrZero({uid}), toUUIDOrZero(''))"


# A row's `seq` is its batch's number above these bits, its index in the batch below.
SEQ_BITS = 24
# A stored measurement's numeric fields, one row each, summed into its UTC day: what `days` holds (see
# `fold_days`); `{source}` is a table of measurements' rows.
DAY_TOTALS = ("SELECT org, account, toDate32(ts) AS day, meter, field, sum(toInt128(value)) AS total,"
              " min(value) AS smallest, max(value) AS largest, count() AS count,"
              f" max(bitShiftRight(seq, {SEQ_BITS})) AS batch"
              " FROM {source} ARRAY JOIN mapKeys(measures) AS field, mapValues(measures) AS value"
              " GROUP BY org, account, day, meter, field")
# Measurements folded into `days` per statement by `fold_days`: its insert is one part (all or nothing).
_FOLD_STEP = 5_000_000
# An INSERT … SELECT's settings that make it one part whatever its size (by default ClickHouse cuts one of
# more than about a million rows into parts, each written as it fills: not all or nothing).
ONE_PART = {"min_insert_block_size_rows": 1 << 62, "min_insert_block_size_bytes": 1 << 62,
            "max_insert_block_size": 1 << 62}


def fold_days(client: Any, database: str, last_batch: int | None = None) -> None:
    """Fold the measurements of batches above the mark into `days` (the mark: the largest `batch` there);
    nothing to do if the mark is `last_batch`, the last batch stored, when the caller knows it (finding
    the batches above the mark reads every row's `seq`: seconds at a billion measurements).

    A write's rows reach `days` through the view on `measurements`, in the same statement but as
    an insert of its own after the rows' part: a crash (or a failure) between the two leaves rows the
    days lack, always those of the last batches written (a batch's rows are written together, batches
    in order). Each step here is one insert of the measurements of whole batches, about `_FOLD_STEP`
    of them, squashed into one part, so the mark never passes a batch not folded."""
    db = f"`{database}`"
    batch = f"bitShiftRight(seq, {SEQ_BITS})"
    (days, mark) = client.query(f"SELECT count(), max(batch) FROM {db}.days").result_rows[0]
    after = int(mark) if days else -1
    if last_batch is not None and after >= last_batch:
        return
    while True:
        (count, through) = client.query(
            f"SELECT count(), max(b) FROM (SELECT {batch} AS b FROM {db}.measurements WHERE {batch} > {after}"
            f" ORDER BY b LIMIT {_FOLD_STEP})").result_rows[0]
        if not count:
            return
        client.command(f"INSERT INTO {db}.days " + DAY_TOTALS.format(
            source=f"(SELECT * FROM {db}.measurements WHERE {batch} > {after} AND {batch} <= {int(through)})"),
            settings=ONE_PART)
        if count < _FOLD_STEP:
            return
        after = int(through)


# (version, steps): applied in order, each step idempotent, the version recorded last. A step is a
# statement (`{db}` is the store's database, quoted) or a function of the client and the database's name.
Step = str | Callable[[Any, str], None]
MIGRATIONS: list[tuple[str, list[Step]]] = [
    ("0001_measurements", [
        """CREATE TABLE IF NOT EXISTS {db}.measurements (
            org LowCardinality(String),
            meter LowCardinality(String),
            account LowCardinality(String),
            ts DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
            ets Nullable(DateTime64(6, 'UTC')) CODEC(ZSTD(1)),
            uid String CODEC(ZSTD(3)),
            seq UInt64 CODEC(T64, ZSTD(1)),
            measures Map(LowCardinality(String), Int64) CODEC(ZSTD(1)),
            dimensions Map(LowCardinality(String), LowCardinality(String)) CODEC(ZSTD(1))
        ) ENGINE = MergeTree
        ORDER BY (org, meter, account, ts)
        SETTINGS index_granularity = 1024, fsync_after_insert = 1, fsync_part_directory = 1""",
        """CREATE TABLE IF NOT EXISTS {db}.uids (key UInt128 CODEC(NONE))
        ENGINE = MergeTree ORDER BY key
        SETTINGS index_granularity = 128, fsync_after_insert = 1, fsync_part_directory = 1""",
    ]),
    ("0002_landed", [
        """CREATE TABLE IF NOT EXISTS {db}.landed (
            epoch UInt64,
            batch UInt64,
            org String,
            rows String CODEC(NONE)
        ) ENGINE = MergeTree
        PARTITION BY epoch ORDER BY batch
        SETTINGS fsync_after_insert = 1, fsync_part_directory = 1""",
        """CREATE TABLE IF NOT EXISTS {db}.staged (
            org String, meter String, account String, ts DateTime64(6, 'UTC'), ets Nullable(DateTime64(6, 'UTC')),
            uid String, seq UInt64, measures Map(String, Int64), dimensions Map(String, String), key UInt128
        ) ENGINE = Memory""",
    ]),
    ("0003_sorted_by_account", [_sort_by_account]),
    ("0004_days", [
        """CREATE TABLE IF NOT EXISTS {db}.days (
            org LowCardinality(String),
            account String CODEC(ZSTD(3)),
            day Date32 CODEC(DoubleDelta, ZSTD(1)),
            meter LowCardinality(String),
            field LowCardinality(String),
            total SimpleAggregateFunction(sum, Int128) CODEC(ZSTD(3)),
            smallest SimpleAggregateFunction(min, Int64) CODEC(ZSTD(3)),
            largest SimpleAggregateFunction(max, Int64) CODEC(ZSTD(3)),
            count SimpleAggregateFunction(sum, UInt64) CODEC(T64, ZSTD(1)),
            batch SimpleAggregateFunction(max, UInt64) CODEC(T64, ZSTD(1))
        ) ENGINE = AggregatingMergeTree
        ORDER BY (org, account, day, meter, field)
        SETTINGS index_granularity = 1024, fsync_after_insert = 1, fsync_part_directory = 1""",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.days_of_measurements TO {db}.days AS "
        + DAY_TOTALS.replace("{source}", "{db}.measurements"),
        fold_days,
    ]),
    ("0005_uuid_uids", [
        "ALTER TABLE {db}.measurements ADD COLUMN IF NOT EXISTS uuid UUID CODEC(ZSTD(1)) AFTER uid",
        # Idempotent: a row already moved has an empty `uid`, which no UUID's text is. (Each assignment reads
        # the row as it was.) Each part's two columns are rewritten, once; rows written meanwhile by a process
        # of an earlier version keep their text, which reads the same.
        "ALTER TABLE {db}.measurements UPDATE uuid = toUUID(uid), uid = ''"
        " WHERE uid != '' AND toString(toUUIDOrZero(uid)) = uid SETTINGS mutations_sync = 2",
    ]),
]
