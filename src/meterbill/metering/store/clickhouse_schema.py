"""The ClickHouse measurement store's tables, as versioned migrations (see `clickhouse.ClickHouseStore.migrate`).

One table, `measurements`, one row per measurement:

- Sorted by (organization, meter, account, ts): one account-month is one contiguous key
  range (a few granules of 1024 rows), and a bill run reads one organization's range.
  Not partitioned: an insert is then one part, written and renamed into place in one
  step, so a batch is all or nothing even when it spans months (a partitioned table
  splits an insert into one part per partition, committed one after the other).
- The projection `by_uid` keeps (organization, uid) sorted inside every part, written
  with the part itself: the dedupe check reads a few of its granules instead of the
  table, and it can never disagree with the rows after a crash, as a second table
  filled by a second insert (or a materialized view) could.
- Numeric fields: Map(field → Int64 millionths); the API's largest magnitude is 10^12
  units = 10^18 millionths, inside Int64. Sums are taken as Int128: exact.
  Text fields: Map(field → String). Field names are LowCardinality (a handful per meter).
- `seq`: the ingest order (batch number << 24 | row in the batch), the stable order
  `scan` pages in, so a copy's cursor never passes a row that commits later.
- `fsync_after_insert` and `fsync_part_directory`: an insert returns once its part is
  on disk (an acknowledged batch survives a power cut, not only `kill -9`).
- Codecs: the sort order leaves org, meter and account as long runs (LowCardinality
  and ZSTD store them in almost nothing); times within an account rise, so
  DoubleDelta; uids are random text, ZSTD at level 3.
"""

from __future__ import annotations

# (version, statements): applied in order, each statement idempotent, the version recorded
# last. `{db}` is the store's database, quoted.
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("0001_measurements", [
        """CREATE TABLE IF NOT EXISTS {db}.measurements (
            org LowCardinality(String),
            meter LowCardinality(String),
            account String CODEC(ZSTD(1)),
            ts DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
            ets Nullable(DateTime64(6, 'UTC')) CODEC(ZSTD(1)),
            uid String CODEC(ZSTD(3)),
            seq UInt64 CODEC(T64, ZSTD(1)),
            measures Map(LowCardinality(String), Int64) CODEC(ZSTD(1)),
            dimensions Map(LowCardinality(String), String) CODEC(ZSTD(1)),
            PROJECTION by_uid (SELECT org, uid ORDER BY org, uid)
        ) ENGINE = MergeTree
        ORDER BY (org, meter, account, ts)
        SETTINGS index_granularity = 1024, fsync_after_insert = 1, fsync_part_directory = 1""",
    ]),
]
