"""The ClickHouse store's filter of stored uid keys (a Bloom filter): never a false "not stored",
and few false "maybe"s. Pure: no store."""

from __future__ import annotations

import hashlib
import random

from meterbill.metering.store.clickhouse import _KeyFilter


def keys(count: int, seed: str) -> list[int]:
    return [int.from_bytes(hashlib.sha256(f"{seed}-{i}".encode()).digest()[:16], "big") for i in range(count)]


def test_every_key_added_is_a_maybe() -> None:
    key_filter = _KeyFilter(1 << 20)
    added = keys(50_000, "stored")
    for offset in range(0, len(added), 1000):  # as writes add them, a batch at a time
        key_filter.add(added[offset:offset + 1000])
    assert key_filter.keys == 50_000
    assert key_filter.maybe_stored(added) == added
    assert key_filter.maybe_stored([]) == []


def test_keys_never_added_are_mostly_not_stored_even_full() -> None:
    # Filled to its capacity, the false positive rate stays under 1 % (10 or more bits a key, 7 hashes).
    key_filter = _KeyFilter(1 << 20)
    key_filter.add(keys(1 << 20, "stored"))
    others = keys(100_000, "new")
    assert len(key_filter.maybe_stored(others)) < 1_000


def test_the_extremes_of_128_bits_are_handled() -> None:
    key_filter = _KeyFilter(1 << 20)
    extremes = [0, 1, (1 << 64) - 1, 1 << 64, (1 << 128) - 1]
    key_filter.add(extremes)
    assert key_filter.maybe_stored(extremes) == extremes
    assert key_filter.maybe_stored(sorted(random.Random(3).sample(range(2, 1 << 60), 10))) == []
