"""The ClickHouse measurement store's tables, as versioned migrations (see `clickhouse.ClickHouseStore.migrate`).

Two tables.

`measurements`, one row per measurement:

- Sorted by (organization, meter, account, ts): one account-month is one contiguous key
  range (a few granules of 1024 rows), and a bill run reads one organization's range.
  Not partitioned: an insert is then one part, written and renamed into place in one
  step, so a batch is all or nothing even when it spans months (a partitioned table
  splits an insert into one part per partition, committed one after the other).
- Numeric fields: Map(field → Int64 millionths); the API's largest magnitude is 10^12
  units = 10^18 millionths, inside Int64. Sums are taken as Int128: exact.
  Text fields: Map(field → value). Names and values are LowCardinality (dictionary
  codes: a handful of names per meter, and values that repeat).
- `seq`: the ingest order (batch number << 24 | row in the batch), the order `scan`
  pages in, so a copy's cursor never passes a row that commits later.
- Codecs: the sort order leaves org, meter and account as long runs (LowCardinality
  stores them in almost nothing); times within an account rise, so DoubleDelta; uids
  are random text, ZSTD at level 3.

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

Both: `fsync_after_insert` and `fsync_part_directory`, so an insert returns once its part
is on disk (an acknowledged batch survives a power cut, not only `kill -9`).

Since 0002, for a store only this process writes (chDB): `staged`, a Memory table where an
expansion of landed batches holds the rows it found new between its two inserts (emptied at a
restart, as it should be: the landing log still holds them; see `clickhouse.ClickHouseStore.land`).
And `landed`, where the API's batches landed, one row each, until the landing log
(`landing_log`: files, an append and a flush instead of an insert) took its place; a process
moves what an earlier version left there into the log at its first repair, so it stays empty.
"""

from __future__ import annotations

# (version, statements): applied in order, each statement idempotent, the version recorded
# last. `{db}` is the store's database, quoted.
MIGRATIONS: list[tuple[str, list[str]]] = [
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
]
