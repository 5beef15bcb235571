"""Safe arithmetic expressions for m3ter-compatible calculations.

Two m3ter features carry a user-written ``calculation``:

* compound aggregations, whose expression combines simple aggregations referenced as
  ``aggregation.<code>`` (``parse(text, prefix="aggregation")``);
* meter derived fields, whose expression combines the same measurement's data fields referenced
  by bare code (``parse(text)``).

The text is never handed to ``eval``/``exec``/``compile``: it goes through a small tokenizer and a
recursive-descent (precedence climbing) parser into a tree of four node types, and that tree is
evaluated with :mod:`decimal` arithmetic.

Grammar (whitespace = space, tab, CR, LF; everything is ASCII)::

    expression := term (("+" | "-") term)*          -- left associative
    term       := unary (("*" | "/") unary)*         -- left associative
    unary      := ("+" | "-") unary | primary        -- binds tighter than * and /
    primary    := NUMBER | REFERENCE | "(" expression ")"
    NUMBER     := digits ["." digits*] [exponent] | "." digits [exponent]
    exponent   := ("e" | "E") ["+" | "-"] digits
    REFERENCE  := identifier                         -- when no prefix is configured
                | prefix "." identifier              -- when a prefix is configured
    identifier := [A-Za-z_][A-Za-z0-9_]*, not only underscores, not starting with "__"

Limits: ``max_length`` characters of input, ``max_depth`` levels of nesting (each parenthesis and
each unary operator is one level) and :data:`MAX_TREE_HEIGHT` levels in the resulting tree, so a
hostile input fails with :class:`CalculationError`, never with ``RecursionError``.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, TypeAlias

__all__ = [
    "MAX_TREE_HEIGHT",
    "PRECISION",
    "Binary",
    "CalculationError",
    "Expression",
    "Node",
    "Number",
    "Reference",
    "Unary",
    "evaluate",
    "is_identifier",
    "parse",
    "to_text",
]

PRECISION = 40
"""Significant digits kept by every binary operation (division rounds ROUND_HALF_EVEN)."""

MAX_TREE_HEIGHT = 256
"""Hard limit on the height of an expression tree (a chain ``a + b + ...`` adds one level per operator)."""

_MAX_DEPTH_LIMIT = 100  # the parser uses up to four stack frames per nesting level
_EMAX = 999_999
_EMIN = -999_999
_MAX_EXPONENT_DIGITS = 7

_DIGITS = frozenset("0123456789")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | _DIGITS
_WHITESPACE = frozenset(" \t\r\n")
_OPERATOR_CHARS = frozenset("+-*/()")

UnaryOp: TypeAlias = Literal["+", "-"]
BinaryOp: TypeAlias = Literal["+", "-", "*", "/"]

_BINARY_PRECEDENCE: dict[str, int] = {"+": 1, "-": 1, "*": 2, "/": 2}
_UNARY_PRECEDENCE = 3
_ATOM_PRECEDENCE = 4


class CalculationError(ValueError):
    """A calculation could not be parsed or evaluated.

    ``position`` is the 0-based character offset in the source text and ``token`` the offending text,
    when they are known (both are ``None`` for evaluation errors such as division by zero).
    """

    def __init__(self, message: str, *, position: int | None = None, token: str | None = None) -> None:
        self.reason = message
        self.position = position
        self.token = token
        if position is not None:
            message = f"{message} at position {position}"
        super().__init__(message)


def is_identifier(name: object) -> bool:
    """True for an ASCII code usable in a calculation: ``[A-Za-z_][A-Za-z0-9_]*``, not only underscores,
    not starting with ``__`` (no dunder names)."""
    return (
        isinstance(name, str)
        and name != ""
        and name[0] in _IDENT_START
        and all(c in _IDENT_CHARS for c in name)
        and name.strip("_") != ""
        and not name.startswith("__")
    )


def _literal_in_range(value: Decimal) -> bool:
    """A finite literal whose exponent and magnitude fit the evaluation context."""
    if not value.is_finite():
        return False
    exponent = value.as_tuple().exponent
    return isinstance(exponent, int) and exponent >= _EMIN and value.adjusted() <= _EMAX


# --------------------------------------------------------------------------------------------- nodes


@dataclass(frozen=True, slots=True)
class Number:
    """A non-negative decimal literal, kept exactly as written (``1e3`` stays ``Decimal('1E+3')``)."""

    value: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.value, Decimal):
            raise TypeError(f"Number needs a Decimal, got {type(self.value).__name__}")
        if not self.value.is_finite() or self.value.is_signed():
            raise ValueError(f"Number literal must be finite and unsigned, got {self.value!r}")
        if not _literal_in_range(self.value):
            raise ValueError(f"Number literal out of range: {self.value!r}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference to a named value (an aggregation code or a data field code), without any prefix."""

    name: str

    def __post_init__(self) -> None:
        if not is_identifier(self.name):
            raise ValueError(f"invalid reference name {self.name!r}")


@dataclass(frozen=True, slots=True)
class Unary:
    op: UnaryOp
    operand: Node

    def __post_init__(self) -> None:
        if self.op not in ("+", "-"):
            raise ValueError(f"invalid unary operator {self.op!r}")
        if not isinstance(self.operand, _NODE_TYPES):
            raise TypeError(f"invalid operand {self.operand!r}")


@dataclass(frozen=True, slots=True)
class Binary:
    op: BinaryOp
    left: Node
    right: Node

    def __post_init__(self) -> None:
        if self.op not in _BINARY_PRECEDENCE:
            raise ValueError(f"invalid binary operator {self.op!r}")
        if not isinstance(self.left, _NODE_TYPES) or not isinstance(self.right, _NODE_TYPES):
            raise TypeError("invalid operand")


Node: TypeAlias = Number | Reference | Unary | Binary
_NODE_TYPES = (Number, Reference, Unary, Binary)


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Unary):
        return (node.operand,)
    return ()


def _walk(tree: Node) -> Iterator[tuple[Node, int]]:
    """Every node with its depth (root = 1), without recursion."""
    stack: list[tuple[Node, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        stack.extend((child, depth + 1) for child in _children(node))


@dataclass(frozen=True)
class Expression:
    """A parsed and validated calculation.

    ``references`` holds the referenced names without prefix (``aggregation.api_calls`` -> ``api_calls``
    when ``prefix="aggregation"``). Two expressions are equal when their trees and prefixes are equal.
    """

    tree: Node
    prefix: str | None = None
    references: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.prefix is not None and not is_identifier(self.prefix):
            raise ValueError(f"invalid reference prefix {self.prefix!r}")
        if not isinstance(self.tree, _NODE_TYPES):
            raise TypeError(f"invalid expression tree {self.tree!r}")
        names: set[str] = set()
        for node, depth in _walk(self.tree):
            if depth > MAX_TREE_HEIGHT:
                raise CalculationError(f"expression too complex (more than {MAX_TREE_HEIGHT} levels)")
            if isinstance(node, Reference):
                names.add(node.name)
        object.__setattr__(self, "references", frozenset(names))

    def __str__(self) -> str:
        return to_text(self)


# ----------------------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["number", "name", "op", "end"]
    text: str
    position: int
    number: Decimal | None = None
    parts: tuple[str, ...] = ()


def _describe(token: _Token) -> str:
    return "end of expression" if token.kind == "end" else repr(token.text)


def _scan_digits(text: str, i: int) -> int:
    while i < len(text) and text[i] in _DIGITS:
        i += 1
    return i


def _scan_number(text: str, start: int) -> _Token:
    n = len(text)
    i = _scan_digits(text, start)
    if i < n and text[i] == ".":
        i = _scan_digits(text, i + 1)
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        exp_end = _scan_digits(text, j)
        if exp_end == j:
            raise CalculationError("malformed number (exponent without digits)", position=start, token=text[start:j])
        if exp_end - j > _MAX_EXPONENT_DIGITS:
            raise CalculationError("number out of range", position=start, token=text[start:exp_end])
        i = exp_end
    if i < n and (text[i] in _IDENT_CHARS or text[i] == "."):
        raise CalculationError("malformed number", position=start, token=text[start : i + 1])
    literal = text[start:i]
    try:
        value = Decimal(literal)
    except decimal.DecimalException as exc:  # pragma: no cover - the scanner only lets valid literals through
        raise CalculationError("malformed number", position=start, token=literal) from exc
    if not _literal_in_range(value):
        raise CalculationError("number out of range", position=start, token=literal)
    return _Token("number", literal, start, number=value)


def _scan_name(text: str, start: int) -> _Token:
    n = len(text)
    parts: list[str] = []
    i = start
    while True:
        j = i + 1
        while j < n and text[j] in _IDENT_CHARS:
            j += 1
        part = text[i:j]
        if not is_identifier(part):
            raise CalculationError(
                "invalid name (dunder or underscore-only names are not allowed)", position=i, token=part
            )
        parts.append(part)
        i = j
        if i + 1 < n and text[i] == "." and text[i + 1] in _IDENT_START:
            i += 1
            continue
        break
    return _Token("name", text[start:i], start, parts=tuple(parts))


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _WHITESPACE:
            i += 1
        elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            token = _scan_number(text, i)
            tokens.append(token)
            i += len(token.text)
        elif c in _IDENT_START:
            token = _scan_name(text, i)
            tokens.append(token)
            i += len(token.text)
        elif c == "*" and i + 1 < n and text[i + 1] == "*":
            raise CalculationError("the power operator '**' is not supported", position=i, token=text[i : i + 2])
        elif c in _OPERATOR_CHARS:
            tokens.append(_Token("op", c, i))
            i += 1
        else:
            raise CalculationError(f"unexpected character {c!r}", position=i, token=c)
    tokens.append(_Token("end", "", n))
    return tokens


# -------------------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, tokens: list[_Token], prefix: str | None, max_depth: int) -> None:
        self._tokens = tokens
        self._index = 0
        self._prefix = prefix
        self._max_depth = max_depth

    @property
    def _current(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind != "end":
            self._index += 1
        return token

    def _unexpected(self, token: _Token, expected: str) -> CalculationError:
        return CalculationError(
            f"expected {expected}, found {_describe(token)}", position=token.position, token=token.text or None
        )

    def _enter(self, depth: int, token: _Token) -> int:
        if depth + 1 > self._max_depth:
            raise CalculationError(
                f"expression nested too deeply (max depth {self._max_depth})", position=token.position, token=token.text
            )
        return depth + 1

    def parse(self) -> Node:
        if self._current.kind == "end":
            raise CalculationError("empty expression", position=0)
        tree = self._binary(1, 0)
        if self._current.kind != "end":
            raise self._unexpected(self._current, "an operator or end of expression")
        return tree

    def _binary(self, min_precedence: int, depth: int) -> Node:
        """Precedence climbing over the left-associative binary operators."""
        left = self._operand(depth)
        while True:
            token = self._current
            if token.kind != "op" or token.text not in _BINARY_PRECEDENCE:
                return left
            precedence = _BINARY_PRECEDENCE[token.text]
            if precedence < min_precedence:
                return left
            self._advance()
            right = self._binary(precedence + 1, depth) if precedence < 2 else self._operand(depth)
            left = Binary(token.text, left, right)  # type: ignore[arg-type]

    def _operand(self, depth: int) -> Node:
        """Unary operators (iteratively) followed by a primary; one stack frame per nesting level."""
        operators: list[_Token] = []
        while self._current.kind == "op" and self._current.text in ("+", "-"):
            depth = self._enter(depth, self._current)
            operators.append(self._advance())
        node = self._primary(depth)
        for token in reversed(operators):
            node = Unary(token.text, node)  # type: ignore[arg-type]
        return node

    def _primary(self, depth: int) -> Node:
        token = self._current
        if token.kind == "number":
            self._advance()
            assert token.number is not None
            return Number(token.number)
        if token.kind == "name":
            self._advance()
            if self._current.kind == "op" and self._current.text == "(":
                raise CalculationError(
                    "function calls are not supported", position=token.position, token=token.text + "("
                )
            return Reference(self._reference_name(token))
        if token.kind == "op" and token.text == "(":
            inner_depth = self._enter(depth, token)
            self._advance()
            node = self._binary(1, inner_depth)
            if self._current.kind != "op" or self._current.text != ")":
                raise self._unexpected(self._current, "')'")
            self._advance()
            return node
        raise self._unexpected(token, "a number, a reference or '('")

    def _reference_name(self, token: _Token) -> str:
        parts = token.parts
        if self._prefix is None:
            if len(parts) != 1:
                raise CalculationError("attribute access is not supported", position=token.position, token=token.text)
            return parts[0]
        if len(parts) == 1:
            raise CalculationError(
                f"references must be written as {self._prefix}.<code>", position=token.position, token=token.text
            )
        if len(parts) != 2 or parts[0] != self._prefix:
            raise CalculationError(
                f"unknown reference (expected {self._prefix}.<code>)", position=token.position, token=token.text
            )
        return parts[1]


def parse(text: str, *, prefix: str | None = None, max_length: int = 1000, max_depth: int = 50) -> Expression:
    """Parse and validate a calculation.

    With ``prefix`` (e.g. ``"aggregation"``) references must be written ``prefix.<code>`` and bare names
    are refused; without it references are bare codes and dotted names are refused. Raises
    :class:`CalculationError` for anything outside the grammar, for input longer than ``max_length``
    characters, for nesting deeper than ``max_depth`` (parentheses and unary operators; at most 100)
    and for trees higher than :data:`MAX_TREE_HEIGHT`; raises ``ValueError`` for bad arguments.
    """
    if not isinstance(text, str):
        raise TypeError(f"calculation must be a str, got {type(text).__name__}")
    if prefix is not None and not is_identifier(prefix):
        raise ValueError(f"invalid reference prefix {prefix!r}")
    if max_length < 1:
        raise ValueError("max_length must be positive")
    if not 1 <= max_depth <= _MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {_MAX_DEPTH_LIMIT}")
    if len(text) > max_length:
        raise CalculationError(f"expression too long ({len(text)} characters, max {max_length})")
    tree = _Parser(_tokenize(text), prefix, max_depth).parse()
    return Expression(tree, prefix)


# ----------------------------------------------------------------------------------------- rendering


def _precedence(node: Node) -> int:
    if isinstance(node, Binary):
        return _BINARY_PRECEDENCE[node.op]
    if isinstance(node, Unary):
        return _UNARY_PRECEDENCE
    return _ATOM_PRECEDENCE


def _render(node: Node, prefix: str | None) -> str:
    if isinstance(node, Number):
        return str(node.value)
    if isinstance(node, Reference):
        return node.name if prefix is None else f"{prefix}.{node.name}"
    if isinstance(node, Unary):
        operand = _render(node.operand, prefix)
        if _precedence(node.operand) < _UNARY_PRECEDENCE:
            operand = f"({operand})"
        return f"{node.op}{operand}"
    own = _BINARY_PRECEDENCE[node.op]
    left = _render(node.left, prefix)
    if _precedence(node.left) < own:
        left = f"({left})"
    right = _render(node.right, prefix)
    if _precedence(node.right) <= own:  # left associative: a - (b - c) keeps its parentheses
        right = f"({right})"
    return f"{left} {node.op} {right}"


def to_text(expr: Expression | Node, *, prefix: str | None = None) -> str:
    """Canonical text of an expression, with the minimal parentheses; ``parse(to_text(e), prefix=e.prefix) == e``.

    For a bare node, ``prefix`` says how to write references; for an :class:`Expression` its own prefix is used.
    """
    if isinstance(expr, Expression):
        return _render(expr.tree, expr.prefix)
    if not isinstance(expr, _NODE_TYPES):
        raise TypeError(f"cannot render {expr!r}")
    return _render(expr, prefix)


# ---------------------------------------------------------------------------------------- evaluation


def _context() -> decimal.Context:
    return decimal.Context(
        prec=PRECISION,
        rounding=decimal.ROUND_HALF_EVEN,
        Emax=_EMAX,
        Emin=_EMIN,
        traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
    )


def _lookup(name: str, values: Mapping[str, Decimal | None], null_as_zero: bool) -> Decimal | None:
    value = values.get(name)
    if value is None:
        return Decimal(0) if null_as_zero else None
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise TypeError(f"value of {name!r} must be a Decimal or None, got {type(value).__name__}")
    value = Decimal(value)
    if not value.is_finite():
        raise CalculationError(f"value of {name!r} is not a finite number: {value}")
    return value


def _eval(node: Node, resolved: Mapping[str, Decimal], ctx: decimal.Context) -> Decimal:
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Reference):
        return resolved[node.name]
    if isinstance(node, Unary):
        operand = _eval(node.operand, resolved, ctx)
        return operand.copy_negate() if node.op == "-" else operand
    left = _eval(node.left, resolved, ctx)
    right = _eval(node.right, resolved, ctx)
    if node.op == "+":
        return ctx.add(left, right)
    if node.op == "-":
        return ctx.subtract(left, right)
    if node.op == "*":
        return ctx.multiply(left, right)
    if right.is_zero():
        raise CalculationError("division by zero")
    return ctx.divide(left, right)


def evaluate(expr: Expression, values: Mapping[str, Decimal | None], *, null_as_zero: bool = False) -> Decimal | None:
    """Evaluate ``expr`` with ``values`` (keyed by reference name, without prefix).

    * Each ``+ - * /`` is a Decimal operation with :data:`PRECISION` significant digits, ROUND_HALF_EVEN;
      literals, values and unary ``+``/``-`` are exact. ``0.1 + 0.2 == Decimal("0.3")``.
    * A referenced name missing from ``values`` or mapped to ``None`` makes the whole result ``None``
      ("no value"), checked before any arithmetic, unless ``null_as_zero`` (m3ter's
      ``evaluateNullAggregations=true``), in which case it counts as 0.
    * Division by zero (including ``0 / 0``) raises ``CalculationError("division by zero")``; overflow of
      the exponent range raises ``CalculationError("arithmetic overflow")``. Callers decide what that means.
    * Values must be ``Decimal`` (``int`` accepted) or ``None``: other types raise ``TypeError``, NaN and
      infinities raise ``CalculationError``.
    * A negative-zero result is returned as positive zero.
    """
    if not isinstance(expr, Expression):
        raise TypeError(f"evaluate needs an Expression, got {type(expr).__name__}")
    resolved: dict[str, Decimal] = {}
    missing = False
    for name in sorted(expr.references):
        value = _lookup(name, values, null_as_zero)
        if value is None:
            missing = True
        else:
            resolved[name] = value
    if missing:
        return None
    ctx = _context()
    try:
        result = _eval(expr.tree, resolved, ctx)
    except decimal.DivisionByZero as exc:  # pragma: no cover - zero divisors are caught before dividing
        raise CalculationError("division by zero") from exc
    except decimal.Overflow as exc:
        raise CalculationError("arithmetic overflow") from exc
    except decimal.InvalidOperation as exc:  # pragma: no cover - operands are always finite
        raise CalculationError("invalid arithmetic operation") from exc
    if result.is_zero() and result.is_signed():
        result = result.copy_abs()
    return result
