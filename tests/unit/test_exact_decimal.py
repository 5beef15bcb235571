"""Decimals in the database read back the same from SQLite and PostgreSQL: 12 places at most."""

from decimal import Decimal

from meterbill.core.db import ExactDecimal


def test_values_within_the_scale_are_kept_as_they_are() -> None:
    for text in ("0", "112.50", "-3.000000000001", "123456789012345678901234.5"):
        assert str(ExactDecimal.fit(Decimal(text))) == text


def test_more_places_round_half_away_from_zero_as_postgresqls_numeric_does() -> None:
    assert ExactDecimal.fit(Decimal(101) / Decimal(1920)) == Decimal("0.052604166667")
    assert ExactDecimal.fit(Decimal("0.0000000000005")) == Decimal("0.000000000001")
    assert ExactDecimal.fit(Decimal("-0.0000000000005")) == Decimal("-0.000000000001")
    assert ExactDecimal.fit(Decimal("0.00000000000049")) == Decimal("0.000000000000")
