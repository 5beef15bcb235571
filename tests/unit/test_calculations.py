"""Tests for safe calculation expressions (meterbill.metering.calculations). Expected values are written by hand."""

from __future__ import annotations

import builtins
import re
import string
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterbill.metering.calculations import (
    MAX_TREE_HEIGHT,
    Binary,
    CalculationError,
    Expression,
    Node,
    Number,
    Reference,
    Unary,
    evaluate,
    parse,
    to_text,
)

FAST = settings(max_examples=150, deadline=None)


def ev(
    text: str,
    values: dict[str, D | None] | None = None,
    *,
    prefix: str | None = None,
    null_as_zero: bool = False,
    max_depth: int = 50,
) -> D | None:
    return evaluate(parse(text, prefix=prefix, max_depth=max_depth), values or {}, null_as_zero=null_as_zero)


# ------------------------------------------------------------------------------------------ arithmetic


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", D(7)),
        ("(1 + 2) * 3", D(9)),
        ("-2 * -3", D(6)),
        ("10 / 4", D("2.5")),
        ("2 - 3 - 4", D(-5)),
        ("8 / 2 / 2", D(2)),
        ("2 * 3 + 4 * 5", D(26)),
        ("2 * (3 + 4) * 5", D(70)),
        ("100 - 10 * 2 / 4", D(95)),
        ("-(1 + 2) * 3", D(-9)),
        ("2 - -3", D(5)),
        ("--4", D(4)),
        ("+4 - +1", D(3)),
        ("-2 * 3", D(-6)),
        ("((((7))))", D(7)),
        ("  1\t+\n2\r", D(3)),
        ("1-1", D(0)),
        ("12", D(12)),
    ],
)
def test_precedence_and_associativity(text: str, expected: D) -> None:
    assert ev(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1 + 0.2", D("0.3")),
        (".5 + .25", D("0.75")),
        ("1e3 + 1", D(1001)),
        ("1E3", D(1000)),
        ("2.5e-1", D("0.25")),
        ("1.e2", D(100)),
        ("1. + 1", D(2)),
        ("3 * 0.1", D("0.3")),
        ("1.10 + 2.20", D("3.30")),
        ("0.3 - 0.1 - 0.2", D(0)),
    ],
)
def test_exact_decimals(text: str, expected: D) -> None:
    result = ev(text)
    assert result == expected
    assert isinstance(result, D)


def test_literals_parse_exactly() -> None:
    assert parse("0.5").tree == Number(D("0.5"))
    assert parse(".5").tree == Number(D("0.5"))
    assert parse("1e3").tree == Number(D("1E+3"))
    assert str(parse("1.10").tree.value) == "1.10"  # type: ignore[union-attr]
    assert str(ev("1.10")) == "1.10"
    many = "1234567890.123456789012345678901234567890123456789"
    assert ev(many) == D(many)  # a lone literal is returned exactly, not rounded


def test_division_rounds_to_40_digits_half_even() -> None:
    assert ev("1 / 3") == D("0." + "3" * 40)
    assert ev("2 / 3") == D("0." + "6" * 39 + "7")
    assert ev("10 / 3") == D("3." + "3" * 39)
    # 1/16 needs no rounding; 40-digit half-even on an exact tie: 1 + 5e-40 has 41 significant digits
    assert ev("1 / 16") == D("0.0625")
    assert ev("1 + 0.0000000000000000000000000000000000000005") == D(1)  # tie -> even (1)
    assert ev("1 + 0.0000000000000000000000000000000000000015") == D("1.000000000000000000000000000000000000002")


def test_negative_zero_is_normalised() -> None:
    result = ev("0 * -1")
    assert result == 0
    assert not result.is_signed()  # type: ignore[union-attr]
    assert str(ev("-0")) == "0"


def test_division_by_zero_raises() -> None:
    with pytest.raises(CalculationError, match="division by zero"):
        ev("1 / 0")
    with pytest.raises(CalculationError, match="division by zero"):
        ev("0 / 0")
    with pytest.raises(CalculationError, match="division by zero"):
        ev("1 / (2 - 2)")
    with pytest.raises(CalculationError, match="division by zero"):
        ev("a / b", {"a": D(1), "b": D("0.00")})


def test_overflow_raises_calculation_error() -> None:
    with pytest.raises(CalculationError, match="overflow"):
        ev("1e999999 * 10")
    with pytest.raises(CalculationError, match="out of range"):
        parse("1e1000000")


# ------------------------------------------------------------------------------------------ references


def test_bare_references() -> None:
    expr = parse("bytes / 1024 / 1024")
    assert expr.references == frozenset({"bytes"})
    assert evaluate(expr, {"bytes": D(3 * 1024 * 1024)}) == D(3)
    expr = parse("price * quantity")
    assert expr.references == frozenset({"price", "quantity"})
    assert evaluate(expr, {"price": D("2.50"), "quantity": D(4)}) == D(10)
    assert parse("_x1 + a_b + Z9").references == frozenset({"_x1", "a_b", "Z9"})


def test_prefixed_references() -> None:
    expr = parse("aggregation.api_calls * 0.5 + aggregation.storage_gb", prefix="aggregation")
    assert expr.references == frozenset({"api_calls", "storage_gb"})
    assert expr.prefix == "aggregation"
    assert evaluate(expr, {"api_calls": D(10), "storage_gb": D("1.5")}) == D("6.5")
    assert to_text(expr) == "aggregation.api_calls * 0.5 + aggregation.storage_gb"
    assert parse("aggregation.a + aggregation.a", prefix="aggregation").references == frozenset({"a"})


def test_extra_values_are_ignored_and_ints_accepted() -> None:
    assert ev("a + 1", {"a": 2, "unused": None}) == D(3)  # type: ignore[dict-item]


def test_none_propagates() -> None:
    assert ev("a + b", {"a": D(1), "b": None}) is None
    assert ev("a + b", {"a": D(1)}) is None
    assert ev("a * 0", {}) is None
    # "no value" wins over an error that would only happen with the value present
    assert ev("a / b", {"a": None, "b": D(0)}) is None
    assert ev("aggregation.x + 1", {}, prefix="aggregation") is None


def test_null_as_zero() -> None:
    assert ev("a + b", {"a": D(1), "b": None}, null_as_zero=True) == D(1)
    assert ev("a + b", {"a": D(1)}, null_as_zero=True) == D(1)
    assert ev("a * 5 + 2", {}, null_as_zero=True) == D(2)
    with pytest.raises(CalculationError, match="division by zero"):
        ev("1 / a", {}, null_as_zero=True)


def test_bad_values() -> None:
    with pytest.raises(CalculationError, match="finite"):
        ev("a + 1", {"a": D("NaN")})
    with pytest.raises(CalculationError, match="finite"):
        ev("a + 1", {"a": D("Infinity")})
    with pytest.raises(TypeError):
        ev("a + 1", {"a": 1.5})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        ev("a + 1", {"a": True})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "prefix", "match"),
    [
        ("__import__('os')", None, "dunder"),
        ("__import__('os').system('x')", None, "dunder"),
        ("a.b", None, "attribute"),
        ("aggregation.x", None, "attribute"),
        ("x", "aggregation", "aggregation.<code>"),
        ("aggregation.x + y", "aggregation", "aggregation.<code>"),
        ("meter.x", "aggregation", "unknown reference"),
        ("aggregation.x.y", "aggregation", "unknown reference"),
        ("aggregation.__class__", "aggregation", "dunder"),
        ("a.__class__", None, "dunder"),
        ("1 ** 2", None, "power"),
        ("2**3", None, "power"),
        ("7 % 2", None, "unexpected character '%'"),
        ("7 // 2", None, "expected"),
        ("open(1)", None, "function calls"),
        ("abs (1)", None, "function calls"),
        ("1 +", None, "end of expression"),
        ("()", None, "found ')'"),
        ("(1", None, "expected ')'"),
        ("1)", None, "found ')'"),
        ("1 2", None, "found '2'"),
        ("2(3)", None, "found '('"),
        ('"s"', None, "unexpected character"),
        ("'s'", None, "unexpected character"),
        ("", None, "empty"),
        ("   ", None, "empty"),
        ("_", None, "underscore"),
        ("___", None, "underscore"),
        ("__x", None, "dunder"),
        ("1e", None, "malformed"),
        ("1e+", None, "malformed"),
        ("1.2.3", None, "malformed"),
        ("12abc", None, "malformed"),
        ("1_000", None, "malformed"),
        ("a.", None, "unexpected character '.'"),
        (".", None, "unexpected character '.'"),
        ("a .b", None, "unexpected character '.'"),
        ("\u0661 + 1", None, "unexpected character"),  # ARABIC-INDIC DIGIT ONE
        ("\uff11", None, "unexpected character"),  # FULLWIDTH DIGIT ONE
        ("1\u00a0+ 1", None, "unexpected character"),  # NO-BREAK SPACE
        ("caf\u00e9", None, "unexpected character"),
        ("x if y else z", None, "found"),
        ("lambda: 1", None, "unexpected character ':'"),
        ("[1]", None, "unexpected character"),
        ("a = 1", None, "unexpected character"),
        ("1e1000000", None, "out of range"),
        ("1e99999999999", None, "out of range"),
        ("NaN", None, None),  # just a reference name: must not become Decimal('NaN')
    ],
)
def test_refusals(text: str, prefix: str | None, match: str | None) -> None:
    if match is None:
        expr = parse(text, prefix=prefix)
        assert expr.tree == Reference(text)
        assert evaluate(expr, {}) is None
        return
    with pytest.raises(CalculationError, match=re.escape(match)):
        parse(text, prefix=prefix)


def test_error_carries_position_and_token() -> None:
    with pytest.raises(CalculationError) as info:
        parse("1 + 2 % 3")
    assert info.value.position == 6
    assert info.value.token == "%"
    assert "position 6" in str(info.value)
    with pytest.raises(CalculationError) as info:
        parse("price * open(1)")
    assert info.value.position == 8
    assert info.value.token == "open("
    assert isinstance(info.value, ValueError)


def test_overlong_input() -> None:
    text = "1 + " * 300 + "1"
    with pytest.raises(CalculationError, match="too long"):
        parse(text)
    assert ev("1+" * 100 + "1") == D(101)
    with pytest.raises(CalculationError, match="too long"):
        parse("1 + 1", max_length=4)


def test_deep_nesting_is_a_calculation_error_not_recursion_error() -> None:
    deep = "(" * 10_000 + "1" + ")" * 10_000
    with pytest.raises(CalculationError, match="nested too deeply"):
        parse(deep, max_length=100_000)
    with pytest.raises(CalculationError, match="nested too deeply"):
        parse("-" * 10_000 + "1", max_length=100_000)
    with pytest.raises(CalculationError, match="nested too deeply"):
        parse("(" * 10_000, max_length=100_000)
    with pytest.raises(CalculationError, match="too long"):
        parse(deep)


def test_depth_limit_is_exact() -> None:
    assert ev("(" * 50 + "1" + ")" * 50) == D(1)
    with pytest.raises(CalculationError, match=r"max depth 50\)"):
        parse("(" * 51 + "1" + ")" * 51)
    assert ev("(" * 100 + "1" + ")" * 100, max_depth=100) == D(1)
    assert ev("-" * 3 + "1", max_depth=3) == D(-1)
    with pytest.raises(CalculationError):
        parse("-(-1)", max_depth=2)


def test_long_chains_are_bounded_by_tree_height() -> None:
    ok = "+".join(["a"] * MAX_TREE_HEIGHT)  # height MAX_TREE_HEIGHT
    assert evaluate(parse(ok, max_length=10_000), {"a": D(1)}) == D(MAX_TREE_HEIGHT)
    too_many = "+".join(["a"] * (MAX_TREE_HEIGHT + 1))
    with pytest.raises(CalculationError, match="too complex"):
        parse(too_many, max_length=10_000)
    deep_tree: Node = Number(D(1))
    for _ in range(5_000):
        deep_tree = Unary("-", deep_tree)
    with pytest.raises(CalculationError, match="too complex"):
        Expression(deep_tree)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="prefix"):
        parse("a", prefix="bad prefix")
    with pytest.raises(ValueError, match="prefix"):
        parse("a", prefix="__class__")
    with pytest.raises(ValueError, match="max_depth"):
        parse("1", max_depth=0)
    with pytest.raises(ValueError, match="max_depth"):
        parse("1", max_depth=10_000)
    with pytest.raises(ValueError, match="max_length"):
        parse("1", max_length=0)
    with pytest.raises(TypeError):
        parse(b"1")  # type: ignore[arg-type]


def test_nodes_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Number(D(-1))
    with pytest.raises(ValueError):
        Number(D("NaN"))
    with pytest.raises(TypeError):
        Number(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Reference("a.b")
    with pytest.raises(ValueError):
        Reference("__dict__")
    with pytest.raises(ValueError):
        Unary("!", Number(D(1)))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Binary("**", Number(D(1)), Number(D(2)))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Binary("+", Number(D(1)), "2")  # type: ignore[arg-type]


def test_never_uses_eval_exec_or_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("eval/exec/compile must not be used")

    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, forbidden)
    expr = parse("aggregation.a * (2 + aggregation.b) / 4", prefix="aggregation")
    assert evaluate(expr, {"a": D(2), "b": D(2)}) == D(2)
    assert to_text(expr) == "aggregation.a * (2 + aggregation.b) / 4"


# ------------------------------------------------------------------------------------------ rendering


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1+2*3", "1 + 2 * 3"),
        ("(1+2)*3", "(1 + 2) * 3"),
        ("1-(2-3)", "1 - (2 - 3)"),
        ("(1-2)-3", "1 - 2 - 3"),
        ("1/(2*3)", "1 / (2 * 3)"),
        ("(1*2)/3", "1 * 2 / 3"),
        ("1+(2+3)", "1 + (2 + 3)"),
        ("-(a)", "-a"),
        ("-(a*b)", "-(a * b)"),
        ("-a*b", "-a * b"),
        ("- - 1", "--1"),
        ("2*-3", "2 * -3"),
        ("1e3", "1E+3"),
        (".5", "0.5"),
        ("0.000001", "0.000001"),
        ("0.0000001", "1E-7"),
    ],
)
def test_to_text_canonical(text: str, canonical: str) -> None:
    expr = parse(text)
    assert to_text(expr) == canonical
    assert str(expr) == canonical
    assert parse(canonical) == expr


def test_to_text_of_bare_node() -> None:
    node = Binary("+", Reference("a"), Number(D(1)))
    assert to_text(node) == "a + 1"
    assert to_text(node, prefix="aggregation") == "aggregation.a + 1"


# ----------------------------------------------------------------------------------------- properties

NAMES = ["a", "b", "api_calls", "_x", "Z9"]
VALUES = {"a": D("1.5"), "b": D(-3), "api_calls": D(1000), "_x": D(0), "Z9": D("0.001")}

numbers = st.decimals(allow_nan=False, allow_infinity=False, min_value=0, max_value=D("1e12"), places=6).filter(
    lambda d: not d.is_signed()
) | st.sampled_from([D("1E+3"), D("0.10"), D("5E-7"), D(0), D("123456789012345678901234567890.5")])
leaves = st.one_of(numbers.map(Number), st.sampled_from(NAMES).map(Reference))


def _extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(Unary, st.sampled_from(["+", "-"]), children),
        st.builds(Binary, st.sampled_from(["+", "-", "*", "/"]), children, children),
    )


trees = st.recursive(leaves, _extend, max_leaves=25)


def _outcome(expr: Expression, values: dict[str, D | None], null_as_zero: bool = False) -> object:
    try:
        return evaluate(expr, values, null_as_zero=null_as_zero)
    except CalculationError as exc:
        return ("error", str(exc))


@FAST
@given(tree=trees, prefix=st.sampled_from([None, "aggregation", "meter"]), missing=st.sets(st.sampled_from(NAMES)))
def test_round_trip_through_text(tree: Node, prefix: str | None, missing: set[str]) -> None:
    expr = Expression(tree, prefix)
    text = to_text(expr)
    again = parse(text, prefix=prefix, max_length=100_000)
    assert again == expr
    assert again.references == expr.references
    assert to_text(again) == text
    values: dict[str, D | None] = {k: (None if k in missing else v) for k, v in VALUES.items()}
    assert _outcome(again, values) == _outcome(expr, values)
    assert _outcome(again, values, True) == _outcome(expr, values, True)


small_ints = st.integers(min_value=0, max_value=999)
int_trees = st.recursive(
    small_ints.map(lambda i: Number(D(i))) | st.sampled_from(["a", "b"]).map(Reference),
    lambda children: st.one_of(
        st.builds(Unary, st.sampled_from(["+", "-"]), children),
        st.builds(Binary, st.sampled_from(["+", "-", "*"]), children, children),
    ),
    max_leaves=10,
)


def _int_oracle(node: Node, env: dict[str, int]) -> int:
    if isinstance(node, Number):
        return int(node.value)
    if isinstance(node, Reference):
        return env[node.name]
    if isinstance(node, Unary):
        value = _int_oracle(node.operand, env)
        return -value if node.op == "-" else value
    left, right = _int_oracle(node.left, env), _int_oracle(node.right, env)
    return {"+": left + right, "-": left - right, "*": left * right}[node.op]


@FAST
@given(tree=int_trees, a=st.integers(-999, 999), b=st.integers(-999, 999))
def test_integer_arithmetic_matches_python_ints(tree: Node, a: int, b: int) -> None:
    # at most 10 leaves below 1000 in magnitude: every result fits in 40 digits, so it must be exact
    expr = parse(to_text(Expression(tree)))
    assert evaluate(expr, {"a": D(a), "b": D(b)}) == _int_oracle(tree, {"a": a, "b": b})


grammar_soup = st.text(alphabet="0123456789.eE+-*/() \tab_x%,'\"[]:aggregation", max_size=60)
printable = st.text(alphabet=string.printable, max_size=80)
anything = st.text(max_size=60)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(grammar_soup, printable, anything), prefix=st.sampled_from([None, "aggregation"]))
def test_random_input_only_ever_raises_calculation_error(text: str, prefix: str | None) -> None:
    try:
        expr = parse(text, prefix=prefix)
    except CalculationError:
        return
    values = dict.fromkeys(expr.references, D("2.5"))
    for null_as_zero in (False, True):
        try:
            result = evaluate(expr, values, null_as_zero=null_as_zero)
        except CalculationError:
            continue
        assert isinstance(result, D)
    assert parse(to_text(expr), prefix=prefix, max_length=100_000) == expr
    if expr.references:
        assert evaluate(expr, {}) is None
