from __future__ import annotations

import decimal
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbill.core.money import (
    CURRENCY_EXPONENTS,
    MONEY_ROUNDING,
    InvalidAmount,
    UnknownCurrency,
    exact_minor_units,
    exponent,
    format_decimal,
    from_minor_units,
    is_known_currency,
    parse_decimal,
    round_places,
    round_to_minor,
    to_minor_units,
    whole_minor_units,
)

# --- currency table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("USD", 2), ("EUR", 2), ("GBP", 2), ("CHF", 2), ("INR", 2), ("IDR", 2), ("HUF", 2),
        ("JPY", 0), ("KRW", 0), ("ISK", 0), ("VND", 0), ("CLP", 0), ("PYG", 0), ("UGX", 0),
        ("XAF", 0), ("XOF", 0), ("XPF", 0), ("UYI", 0),
        ("KWD", 3), ("BHD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3), ("LYD", 3), ("IQD", 3),
        ("CLF", 4), ("UYW", 4),
        ("ZWG", 2), ("XCG", 2), ("SLE", 2), ("VES", 2), ("MRU", 2), ("STN", 2),
    ],
)  # fmt: skip
def test_known_exponents(code: str, expected: int) -> None:
    assert exponent(code) == expected
    assert CURRENCY_EXPONENTS[code] == expected


def test_table_shape() -> None:
    assert 150 <= len(CURRENCY_EXPONENTS) <= 180
    for code, places in CURRENCY_EXPONENTS.items():
        assert len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()
        assert places in (0, 2, 3, 4)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        CURRENCY_EXPONENTS["USD"] = 3  # type: ignore[index]


def test_table_omits_units_without_minor_unit_and_withdrawn_codes() -> None:
    for code in ("XAU", "XAG", "XPT", "XPD", "XDR", "XTS", "XXX", "ZWL", "HRK", "SLL", "VEF", "MRO"):
        assert not is_known_currency(code)


def test_exponent_is_case_insensitive() -> None:
    assert exponent("usd") == 2
    assert exponent("Jpy") == 0
    assert exponent("kwd") == 3


@pytest.mark.parametrize("code", ["ABC", "US", "USDD", "", " USD", "uſd", None, 840])
def test_unknown_currency(code: object) -> None:
    assert not is_known_currency(code)
    with pytest.raises(UnknownCurrency) as excinfo:
        exponent(code)  # type: ignore[arg-type]
    assert repr(code) in str(excinfo.value)
    assert excinfo.value.code == code
    assert isinstance(excinfo.value, ValueError)


def test_unknown_currency_message_names_code() -> None:
    with pytest.raises(UnknownCurrency, match="'ZZZ'"):
        round_to_minor(Decimal("1"), "ZZZ")


# --- parse_decimal --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12.5", Decimal("12.5")),
        ("-3", Decimal("-3")),
        ("+3", Decimal("3")),
        ("1e3", Decimal("1000")),
        ("1E-3", Decimal("0.001")),
        ("0.00", Decimal("0")),
        (".5", Decimal("0.5")),
        ("5.", Decimal("5")),
        (42, Decimal("42")),
        (-7, Decimal("-7")),
        (Decimal("1.005"), Decimal("1.005")),
        ("123456789012345678901234567890", Decimal("123456789012345678901234567890")),
    ],
)
def test_parse_decimal_accepts(value: object, expected: Decimal) -> None:
    parsed = parse_decimal(value)  # type: ignore[arg-type]
    assert isinstance(parsed, Decimal)
    assert parsed == expected


def test_parse_decimal_keeps_scale() -> None:
    assert str(parse_decimal("12.50")) == "12.50"


@pytest.mark.parametrize(
    "value",
    [
        "NaN", "nan", "sNaN", "-NaN", "Infinity", "-Infinity", "inf", "Inf",
        Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"),
        1.5, 0.0, True, False, None, [1], b"1",
        "", " ", "abc", "1.2.3", "1e", "e3", "--1", "1_000", " 12", "12 ", "1,5", "0x10", "١٢",
        "1e400", "1e-400", "1e31", "1e-31", "0E-50", Decimal("1E+31"), 10**31, -(10**31), 10**400,
        "1." + "0" * 45,
    ],
)  # fmt: skip
def test_parse_decimal_refuses(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_decimal(value)  # type: ignore[arg-type]


def test_invalid_amount_is_value_error_with_clear_message() -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_decimal("NaN")
    with pytest.raises(ValueError, match="float"):
        parse_decimal(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bool"):
        parse_decimal(True)
    with pytest.raises(ValueError, match="range"):
        parse_decimal("1e400")
    with pytest.raises(ValueError, match="not a finite decimal number"):
        parse_decimal("abc")


def test_parse_decimal_edges_of_magnitude_range() -> None:
    assert parse_decimal("1e30") == Decimal("1000000000000000000000000000000")
    assert parse_decimal("-1e30") == Decimal("-1000000000000000000000000000000")
    assert parse_decimal("1e-30") == Decimal("0.000000000000000000000000000001")


# --- round_to_minor -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("1.005", "USD", "1.01"),
        ("1.004", "USD", "1.00"),
        ("-1.005", "USD", "-1.01"),
        ("-1.004", "USD", "-1.00"),
        ("2.675", "USD", "2.68"),
        ("0.125", "EUR", "0.13"),
        ("7", "USD", "7.00"),
        ("1E+3", "USD", "1000.00"),
        ("0.5", "JPY", "1"),
        ("-0.5", "JPY", "-1"),
        ("0.4", "JPY", "0"),
        ("1234.5", "JPY", "1235"),
        ("1234.49", "JPY", "1234"),
        ("1.0005", "KWD", "1.001"),
        ("1.0004", "KWD", "1.000"),
        ("-1.0005", "KWD", "-1.001"),
        ("0.00005", "CLF", "0.0001"),
        ("12.34565", "UYW", "12.3457"),
    ],
)
def test_round_to_minor(amount: str, currency: str, expected: str) -> None:
    rounded = round_to_minor(Decimal(amount), currency)
    assert rounded == Decimal(expected)
    # Same scale too, not just the same value: "1.00", not "1".
    assert str(rounded) == expected


def test_round_to_minor_lowercase_currency() -> None:
    assert str(round_to_minor(Decimal("1.005"), "usd")) == "1.01"


def test_round_to_minor_accepts_int() -> None:
    assert str(round_to_minor(5, "KWD")) == "5.000"  # type: ignore[arg-type]


def test_round_to_minor_other_rounding_modes() -> None:
    assert str(round_to_minor(Decimal("1.005"), "USD", ROUND_HALF_EVEN)) == "1.00"
    assert str(round_to_minor(Decimal("1.015"), "USD", ROUND_HALF_EVEN)) == "1.02"
    assert str(round_to_minor(Decimal("1.009"), "USD", ROUND_DOWN)) == "1.00"
    assert str(round_to_minor(Decimal("-1.009"), "USD", ROUND_DOWN)) == "-1.00"


def test_round_to_minor_never_returns_negative_zero() -> None:
    assert str(round_to_minor(Decimal("-0.004"), "USD")) == "0.00"
    assert str(round_to_minor(Decimal("-0.4"), "JPY")) == "0"


@pytest.mark.parametrize(
    "amount", [Decimal("NaN"), Decimal("Infinity"), Decimal("1E+40"), 1.005, True, "1.005"]
)
def test_round_to_minor_refuses(amount: object) -> None:
    with pytest.raises(InvalidAmount):
        round_to_minor(amount, "USD")  # type: ignore[arg-type]


def test_caller_decimal_context_does_not_matter() -> None:
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = ROUND_DOWN
        ctx.traps[decimal.Inexact] = True
        ctx.traps[decimal.Rounded] = True
        assert str(round_to_minor(Decimal("123456.785"), "USD")) == "123456.79"
        assert to_minor_units(Decimal("123456.785"), "USD") == 12345679
        assert str(from_minor_units(123456789, "KWD")) == "123456.789"


# --- minor units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (1234, "USD", "12.34"),
        (1200, "USD", "12.00"),
        (5, "USD", "0.05"),
        (-5, "USD", "-0.05"),
        (0, "USD", "0.00"),
        (1234, "JPY", "1234"),
        (1234, "KWD", "1.234"),
        (1, "CLF", "0.0001"),
    ],
)
def test_from_minor_units(minor: int, currency: str, expected: str) -> None:
    assert str(from_minor_units(minor, currency)) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("12.34", "USD", 1234),
        ("12.345", "USD", 1235),
        ("-12.345", "USD", -1235),
        ("0.001", "USD", 0),
        ("1234.5", "JPY", 1235),
        ("1.2345", "KWD", 1235),
        ("1", "CLF", 10000),
    ],
)
def test_to_minor_units(amount: str, currency: str, expected: int) -> None:
    minor = to_minor_units(Decimal(amount), currency)
    assert type(minor) is int
    assert minor == expected


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (Decimal("1234"), "USD", "12.34"),
        (Decimal("1200"), "USD", "12.00"),  # the currency's places, even where the value has none
        (Decimal("1234.000000000000"), "USD", "12.34"),  # PostgreSQL's NUMERIC(38, 12) scale does not show
        (Decimal("0.15"), "USD", "0.0015"),  # fractions of a cent: more places, exactly
        (Decimal("0.500"), "USD", "0.005"),
        (Decimal("1E+3"), "USD", "10.00"),
        (Decimal("12.5"), "JPY", "12.5"),
        (Decimal("1234.5"), "KWD", "1.2345"),
        (Decimal("-5"), "BHD", "-0.005"),
    ],
)
def test_from_minor_units_of_a_decimal(minor: Decimal, currency: str, expected: str) -> None:
    # Prices are kept in minor units with decimals (Chargebee's price_in_decimal).
    assert str(from_minor_units(minor, currency)) == expected


@pytest.mark.parametrize("minor", [True, False, 12.0, "12", None, Decimal("NaN")])
def test_from_minor_units_refuses_non_int(minor: object) -> None:
    with pytest.raises(InvalidAmount):
        from_minor_units(minor, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("12.34", "USD", "1234"),
        ("12.345", "USD", "1234.5"),  # never rounded
        ("0.0015", "USD", "0.15"),
        ("-2.5", "EUR", "-250"),
        ("12", "JPY", "12"),
        ("12.5", "JPY", "12.5"),
        ("1.2345", "KWD", "1234.5"),
        ("0.001", "BHD", "1"),
    ],
)
def test_exact_minor_units(amount: str, currency: str, expected: str) -> None:
    minor = exact_minor_units(Decimal(amount), currency)
    assert minor == Decimal(expected)
    assert from_minor_units(minor, currency) == Decimal(amount)


def test_exact_minor_units_refuses() -> None:
    with pytest.raises(InvalidAmount):
        exact_minor_units("12.34", "USD")  # type: ignore[arg-type]
    with pytest.raises(UnknownCurrency):
        exact_minor_units(Decimal(1), "XXX")


@pytest.mark.parametrize(
    ("minor", "expected"),
    [
        ("1234.5", 1235),
        ("1234.4999", 1234),
        ("-1234.5", -1235),  # away from zero
        ("0.5", 1),
        ("2.5", 3),  # half-even would give 2
        ("7", 7),
        ("-0.4", 0),
    ],
)
def test_whole_minor_units(minor: str, expected: int) -> None:
    whole = whole_minor_units(Decimal(minor))
    assert type(whole) is int
    assert whole == expected


def test_whole_minor_units_other_rounding_modes() -> None:
    assert whole_minor_units(Decimal("2.5"), ROUND_HALF_EVEN) == 2
    assert whole_minor_units(Decimal("2.9"), ROUND_DOWN) == 2


@pytest.mark.parametrize(
    ("amount", "places", "expected"),
    [
        ("0.0013774048", 7, "0.0013774"),
        ("0.00137745", 7, "0.0013775"),
        ("2.5", 0, "3"),
        ("-2.5", 0, "-3"),
        ("1234.5", -1, "1.23E+3"),
        ("-0.0004", 3, "0.000"),
    ],
)
def test_round_places(amount: str, places: int, expected: str) -> None:
    assert str(round_places(Decimal(amount), places)) == expected


def test_rounding_takes_exact_amounts_of_any_length() -> None:
    # An exact amount from rating (a 40-digit proration times a price) has more digits than an
    # amount accepted at the boundary: rounding is what brings it back to cents.
    long = decimal.Context(prec=100).multiply(Decimal("4.838709677419354838709677419354838709677"), Decimal("1.15"))
    assert long == Decimal("5.56451612903225806451612903225806451612855")  # 43 digits
    assert str(round_to_minor(long, "USD")) == "5.56"  # 5.5645...
    assert to_minor_units(long, "KWD") == 5565  # 5.5645... -> 5.565


def test_the_money_rounding_is_half_up() -> None:
    assert MONEY_ROUNDING == ROUND_HALF_UP


def test_from_minor_units_unknown_currency() -> None:
    with pytest.raises(UnknownCurrency):
        from_minor_units(1, "XXX")


currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
minor_amounts = st.integers(min_value=-(10**30), max_value=10**30)


@given(minor=minor_amounts, currency=currencies)
def test_minor_units_round_trip(minor: int, currency: str) -> None:
    amount = from_minor_units(minor, currency)
    assert amount.as_tuple().exponent == -CURRENCY_EXPONENTS[currency]
    assert round_to_minor(amount, currency) == amount
    assert to_minor_units(amount, currency) == minor


@given(millionths=st.integers(min_value=-(10**30), max_value=10**30), currency=currencies)
def test_to_minor_units_matches_integer_half_up(millionths: int, currency: str) -> None:
    # The amount is `millionths` millionths of a minor unit; the expected result is
    # computed with plain integer arithmetic: round half away from zero.
    amount = Decimal(millionths).scaleb(-(CURRENCY_EXPONENTS[currency] + 6))
    magnitude = (abs(millionths) + 500_000) // 1_000_000
    expected = -magnitude if millionths < 0 else magnitude
    assert to_minor_units(amount, currency) == expected


# --- format_decimal -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("1E+3"), "1000"),
        (Decimal("12.50"), "12.50"),
        (Decimal("12.5"), "12.5"),
        (Decimal("-3"), "-3"),
        (Decimal("1.5E-7"), "0.00000015"),
        (Decimal("-0.00"), "0.00"),
        (Decimal("0"), "0"),
        (Decimal("1E+30"), "1000000000000000000000000000000"),
    ],
)
def test_format_decimal(amount: Decimal, expected: str) -> None:
    assert format_decimal(amount) == expected


@pytest.mark.parametrize("amount", [Decimal("NaN"), Decimal("-Infinity"), Decimal("1E+400"), 1.0])
def test_format_decimal_refuses(amount: object) -> None:
    with pytest.raises(InvalidAmount):
        format_decimal(amount)  # type: ignore[arg-type]


@given(minor=minor_amounts, currency=currencies)
def test_format_then_parse_round_trip(minor: int, currency: str) -> None:
    amount = from_minor_units(minor, currency)
    text = format_decimal(amount)
    assert "E" not in text and "e" not in text
    assert parse_decimal(text) == amount
