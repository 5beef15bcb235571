"""Exact money helpers: currency exponents, parsing, rounding and minor units.

Money never touches float here. Every Decimal operation passes ``_CONTEXT``
explicitly, so a caller's thread-local decimal context (precision, rounding,
traps) cannot change a billed amount.

Every rounding of money and every conversion between major and minor units in
meterbill goes through this module. The rounding rule is :data:`MONEY_ROUNDING`:
half-up (ties away from zero), applied once per line when the line is issued
(a bill line by ``metering.rating``, an invoice line by ``billing.invoices``),
never to intermediate amounts.
"""

from __future__ import annotations

import decimal
import functools
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

__all__ = [
    "CURRENCY_EXPONENTS",
    "MONEY_ROUNDING",
    "InvalidAmount",
    "UnknownCurrency",
    "exact_minor_units",
    "exponent",
    "format_decimal",
    "from_minor_units",
    "is_known_currency",
    "parse_decimal",
    "round_places",
    "round_to_minor",
    "to_minor_units",
    "whole_minor_units",
]

#: The one rounding rule for money: ties away from zero (2.345 -> 2.35, -2.345 -> -2.35), as m3ter
#: and Chargebee round a line. Half-even would drift less over many roundings, but each line is
#: rounded exactly once, and what the customer sees must match the SaaS it stands in for.
MONEY_ROUNDING = ROUND_HALF_UP

# 40 digits covers the largest accepted magnitude (10**30) at the finest
# exponent (4) with room to spare, so quantizing an accepted amount is exact.
_PRECISION = 40
_MAX_ADJUSTED_EXPONENT = 30

_CONTEXT = decimal.Context(
    prec=_PRECISION,
    rounding=decimal.ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

# ISO 4217 list one (active codes) as of 2025, code -> minor-unit exponent.
# Codes whose minor unit ISO lists as "N.A." (precious metals XAU/XAG/XPT/XPD,
# bond-market units XBA-XBD, XDR, XSU, XUA, and the XTS/XXX placeholders) are
# left out on purpose: there is no exponent to round to, so billing in them
# must fail loudly rather than silently round to whole units.
# ANG stays alongside its successor XCG while invoices issued in it still exist;
# ZWL is gone, replaced by ZWG in 2024.
CURRENCY_EXPONENTS: Mapping[str, int] = MappingProxyType(
    {
        "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2,
        "AWG": 2, "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0,
        "BMD": 2, "BND": 2, "BOB": 2, "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2,
        "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CLF": 4,
        "CLP": 0, "CNY": 2, "COP": 2, "COU": 2, "CRC": 2, "CUC": 2, "CUP": 2, "CVE": 2,
        "CZK": 2, "DJF": 0, "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2,
        "EUR": 2, "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2,
        "GNF": 0, "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2,
        "ILS": 2, "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0,
        "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2,
        "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3, "MAD": 2,
        "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
        "MVR": 2, "MWK": 2, "MXN": 2, "MXV": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2,
        "NIO": 2, "NOK": 2, "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2,
        "PHP": 2, "PKR": 2, "PLN": 2, "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2,
        "RWF": 0, "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2,
        "SLE": 2, "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2,
        "THB": 2, "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2,
        "TZS": 2, "UAH": 2, "UGX": 0, "USD": 2, "USN": 2, "UYI": 0, "UYU": 2, "UYW": 4,
        "UZS": 2, "VED": 2, "VES": 2, "VND": 0, "VUV": 0, "WST": 2, "XAF": 0, "XCD": 2,
        "XCG": 2, "XOF": 0, "XPF": 0, "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
    }
)  # fmt: skip

# Decimal() alone would also accept whitespace, underscores ("1_000") and
# non-ASCII digits; wire amounts must be plain ASCII decimal notation.
_DECIMAL_STRING = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class UnknownCurrency(ValueError):
    def __init__(self, code: object) -> None:
        super().__init__(f"unknown ISO 4217 currency code: {code!r}")
        self.code = code


class InvalidAmount(ValueError):
    pass


def _normalize_code(code: object) -> str | None:
    # The isascii guard matters: str.upper() maps some non-ASCII letters to
    # ASCII ("ſ".upper() == "S"), which would let look-alike codes through.
    if not isinstance(code, str) or not code.isascii():
        return None
    return code.upper()


def is_known_currency(code: object) -> bool:
    normalized = _normalize_code(code)
    return normalized is not None and normalized in CURRENCY_EXPONENTS


def exponent(currency: str) -> int:
    normalized = _normalize_code(currency)
    if normalized is None or normalized not in CURRENCY_EXPONENTS:
        raise UnknownCurrency(currency)
    return CURRENCY_EXPONENTS[normalized]


def _checked(amount: Decimal) -> Decimal:
    if not amount.is_finite():
        raise InvalidAmount(f"amount must be a finite number, got {amount}")
    # For zero, adjusted() is the exponent, so "0E-50" is refused like "1E-50".
    if abs(amount.adjusted()) > _MAX_ADJUSTED_EXPONENT:
        raise InvalidAmount(
            f"amount magnitude out of range (10**-{_MAX_ADJUSTED_EXPONENT}"
            f" .. 10**{_MAX_ADJUSTED_EXPONENT}): {amount}"
        )
    # More digits than the working precision would be silently rounded by
    # later arithmetic; refuse instead of losing money quietly.
    if len(amount.as_tuple().digits) > _PRECISION:
        raise InvalidAmount(f"amount has more than {_PRECISION} significant digits: {amount}")
    return amount


def parse_decimal(value: str | int | Decimal) -> Decimal:
    """Turn an int, Decimal or decimal string into a checked, exact Decimal."""
    # bool is an int subclass and float is inexact; both are bugs upstream.
    if isinstance(value, bool):
        raise InvalidAmount("amount must not be a bool")
    if isinstance(value, Decimal):
        return _checked(value)
    if isinstance(value, int):
        if value.bit_length() > 128:  # avoid converting a gigantic int only to refuse it
            raise InvalidAmount("amount magnitude out of range")
        return _checked(Decimal(value))
    if isinstance(value, str):
        if not _DECIMAL_STRING.fullmatch(value):
            raise InvalidAmount(f"not a finite decimal number: {value[:64]!r}")
        return _checked(Decimal(value))
    raise InvalidAmount(f"amount must be str, int or Decimal, not {type(value).__name__}")


def _as_decimal(amount: Decimal | int) -> Decimal:
    if isinstance(amount, str):
        # Strings belong at the boundary; inside, only already-parsed values.
        raise InvalidAmount("amount must be a Decimal or int; parse strings with parse_decimal()")
    return parse_decimal(amount)


def _drop_negative_zero(amount: Decimal) -> Decimal:
    # -0.004 USD rounds to "-0.00"; a customer-facing zero has no sign.
    return amount.copy_abs() if amount.is_zero() else amount


def _roundable(amount: Decimal | int) -> Decimal:
    """A finite Decimal (or int) of accepted magnitude. Unlike parse_decimal this takes any number
    of digits: an exact amount from rating (a 40-digit proration times a price) is what rounding is for."""
    if type(amount) is not Decimal:
        if isinstance(amount, bool) or not isinstance(amount, int):
            if isinstance(amount, str):
                raise InvalidAmount("amount must be a Decimal or int; parse strings with parse_decimal()")
            raise InvalidAmount(f"amount must be a Decimal or int, not {type(amount).__name__}")
        amount = Decimal(amount)
    if not amount.is_finite():
        raise InvalidAmount(f"amount must be a finite number, got {amount}")
    if amount.adjusted() > _MAX_ADJUSTED_EXPONENT:
        raise InvalidAmount(f"amount magnitude out of range (up to 10**{_MAX_ADJUSTED_EXPONENT}): {amount}")
    return amount


@functools.cache
def _quantum(places: int) -> Decimal:
    return Decimal((0, (1,), -places))


def round_places(amount: Decimal | int, places: int, rounding: str = MONEY_ROUNDING) -> Decimal:
    """``amount`` rounded to ``places`` decimals (0: whole units) - the primitive every rounding of
    money goes through. Never a negative zero."""
    rounded = _roundable(amount).quantize(_quantum(places), rounding=rounding, context=_CONTEXT)
    return _drop_negative_zero(rounded)


def round_to_minor(amount: Decimal | int, currency: str, rounding: str = MONEY_ROUNDING) -> Decimal:
    """Quantize to the currency's minor unit (USD 0.01, JPY 1, KWD 0.001).

    ROUND_HALF_UP rounds .5 away from zero for negatives too: -1.005 -> -1.01.
    """
    return round_places(amount, exponent(currency), rounding)


def to_minor_units(amount: Decimal | int, currency: str, rounding: str = MONEY_ROUNDING) -> int:
    """Round to the minor unit, then count minor units: 12.345 USD -> 1235."""
    rounded = round_to_minor(amount, currency, rounding)
    return int(rounded.scaleb(exponent(currency), context=_CONTEXT))


def whole_minor_units(minor: Decimal | int, rounding: str = MONEY_ROUNDING) -> int:
    """An amount counted in minor units, with fractions of one (a 0.15-cent unit price times a
    quantity), rounded to a whole number of them: Decimal('1234.5') -> 1235."""
    return int(round_places(minor, 0, rounding))


def exact_minor_units(amount: Decimal | int, currency: str) -> Decimal:
    """Major units to minor units without rounding, fractions of a minor unit kept:
    12.345 USD -> Decimal('1234.5'); 1.2345 KWD -> Decimal('1234.5'); 12 JPY -> Decimal('12')."""
    return _checked(_as_decimal(amount).scaleb(exponent(currency), context=_CONTEXT))


def from_minor_units(minor: int | Decimal, currency: str) -> Decimal:
    """Minor units to major units, exactly, shown with the currency's places and more only where
    the amount has them: 1234 USD -> Decimal('12.34'); 1200 USD -> Decimal('12.00');
    1234 JPY -> Decimal('1234'); 1234 KWD -> Decimal('1.234'); Decimal('0.15') USD -> Decimal('0.0015').
    The same value gives the same digits whatever scale it was stored at ('1234.000' -> '12.34')."""
    if isinstance(minor, bool) or not isinstance(minor, (int, Decimal)):
        raise InvalidAmount(f"minor units must be an int or a Decimal, not {type(minor).__name__}")
    places = exponent(currency)
    major = parse_decimal(minor).scaleb(-places, context=_CONTEXT)
    if isinstance(minor, Decimal):
        major = major.normalize(context=_CONTEXT)
        if major.as_tuple().exponent > -places:  # type: ignore[operator]  # finite: an int exponent
            major = major.quantize(_quantum(places), context=_CONTEXT)  # fewer places than the currency's
    return _checked(major)


def format_decimal(amount: Decimal) -> str:
    """Plain notation for ``*_in_decimal`` wire strings: never an exponent.

    The value's own scale is kept, not trimmed: Decimal('12.50') -> '12.50',
    because an amount already rounded to cents should read as cents.
    Exponent forms expand: Decimal('1E+3') -> '1000'. Negative zero -> '0...'.
    """
    return format(_drop_negative_zero(_as_decimal(amount)), "f")
