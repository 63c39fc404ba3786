"""The small, safe expression language of a question's ``when`` (skip logic).

A condition such as ``ease in ['fairly_hard', 'very_hard'] and used_online == 'yes'`` is
parsed with :func:`ast.parse` and then checked against a strict whitelist: comparisons
(``== != < <= > >=``, chained), ``in`` / ``not in``, ``and`` / ``or`` / ``not``,
parentheses, number and string literals, lists or tuples of literals, and names (the ids of
earlier questions). Anything else is rejected when the survey is loaded. The text is never
handed to :func:`eval` or :func:`compile`: it is turned into a small tree of our own nodes,
and only that tree is ever evaluated.

Evaluation never raises. A name with no answer (not reached, or skipped) is ``None``; an
ordering comparison between different kinds of value (``None < 3``, ``'a' < 1``) is false;
``x in None`` is false, so ``x not in None`` is true.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Literal = str | int | float

MAX_LENGTH = 1000  # a condition longer than this is surely a mistake, and keeps parsing cheap
MAX_DEPTH = 32  # nesting of and/or/not/parentheses; deeper is unreadable and risks recursion

_COMPARE_OPS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}

# What a survey author most likely tried, said in their terms rather than the AST's.
_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Call: "function calls are not allowed",
    ast.Attribute: "attribute access (.) is not allowed",
    ast.Subscript: "subscripts ([...]) are not allowed",
    ast.Slice: "slices are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.IfExp: "conditional expressions (... if ... else ...) are not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed; use a list [...]",
    ast.Starred: "starred expressions are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}

_OPERATOR_SYMBOLS: dict[type[ast.AST], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.MatMult: "@",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.USub: "-",
    ast.UAdd: "+",
}


class ExpressionError(ValueError):
    """A ``when`` condition that does not parse or uses something not allowed."""

    def __init__(self, message: str, *, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


class Comparison(NamedTuple):
    """A question compared with literal values, as written; the loader checks these.

    ``ease in ['a', 'b']`` gives ``Comparison("ease", "in", ("a", "b"), True)`` and
    ``'cost' in why_hard`` gives ``Comparison("why_hard", "in", ("cost",), False)``.
    """

    name: str
    op: str
    values: tuple[Literal, ...]
    name_first: bool


# --- the evaluated tree -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Const:
    value: Literal | tuple[Literal, ...]

    def get(self, answers: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class _Name:
    name: str

    def get(self, answers: Mapping[str, Any]) -> Any:
        return answers.get(self.name)


_Value = _Const | _Name


@dataclass(frozen=True, slots=True)
class _Compare:
    left: _Value
    ops: tuple[str, ...]
    rights: tuple[_Value, ...]

    def test(self, answers: Mapping[str, Any]) -> bool:
        left = self.left.get(answers)
        for op, node in zip(self.ops, self.rights, strict=True):
            right = node.get(answers)
            if not _compare(op, left, right):
                return False
            left = right
        return True


@dataclass(frozen=True, slots=True)
class _All:
    parts: tuple[_Condition, ...]

    def test(self, answers: Mapping[str, Any]) -> bool:
        return all(part.test(answers) for part in self.parts)


@dataclass(frozen=True, slots=True)
class _Any:
    parts: tuple[_Condition, ...]

    def test(self, answers: Mapping[str, Any]) -> bool:
        return any(part.test(answers) for part in self.parts)


@dataclass(frozen=True, slots=True)
class _Not:
    part: _Condition

    def test(self, answers: Mapping[str, Any]) -> bool:
        return not self.part.test(answers)


_Condition = _Compare | _All | _Any | _Not


def _is_number(value: Any) -> bool:
    # bool is an int to Python, but never a numeric answer.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    # Multi answers arrive as lists, list literals are tuples: compare them alike.
    return tuple(value) if isinstance(value, list | tuple) else value


def _equal(a: Any, b: Any) -> bool:
    return bool(_plain(a) == _plain(b))


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list | tuple | set | frozenset):
        return any(_equal(item, element) for element in container)
    return False  # None (unanswered), numbers, anything else: contains nothing


def _compare(op: str, a: Any, b: Any) -> bool:
    try:
        if op == "==":
            return _equal(a, b)
        if op == "!=":
            return not _equal(a, b)
        if op == "in":
            return _contains(b, a)
        if op == "not in":
            return not _contains(b, a)
        if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
            return False
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    except Exception:
        # Answers come from storage, not from us: whatever odd value turns up, a condition
        # must never crash a panellist's conversation. It is simply not met.
        return False


# --- the public expression ----------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A compiled ``when`` condition. Build one with :func:`compile_expression`."""

    text: str
    names: frozenset[str]
    string_literals: frozenset[str]
    comparisons: tuple[Comparison, ...] = field(repr=False)
    _root: _Condition = field(repr=False, compare=False)

    def evaluate(self, answers: Mapping[str, Any]) -> bool:
        """True when the condition holds for these answers (question id -> stored value)."""
        return self._root.test(answers)

    def __str__(self) -> str:
        return self.text


def compile_expression(text: str) -> Expression:
    """Parse and check a ``when`` condition; raises :class:`ExpressionError` with the reason."""
    if not isinstance(text, str):
        raise ExpressionError(f"must be a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"is too long ({len(text)} characters; at most {MAX_LENGTH})")
    if "\x00" in text:
        raise ExpressionError("contains a null character")
    # Line breaks (a TOML multi-line string) become spaces of the same width, so that the
    # whole condition is one logical line and columns still point at the right character.
    flat = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    source = flat.strip()
    if not source:
        raise ExpressionError("is empty")
    lead = len(flat) - len(flat.lstrip())
    try:
        with warnings.catch_warnings():
            # "1and" or "'\d'" parse with a SyntaxWarning printed to stderr; the author
            # needs none of that noise, only our message if the condition is wrong.
            warnings.simplefilter("ignore")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        offset = exc.offset or 0
        if exc.lineno not in (None, 1) or not 1 <= offset <= len(source):
            where, column = "at the end", None
        else:
            column = offset + lead
            where = f"at column {column}"
        raise ExpressionError(f"syntax error {where}: {exc.msg}", column=column) from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("cannot be parsed (null bytes or too deeply nested)") from None
    builder = _Builder(source, lead)
    root = builder.condition(tree.body, 0)
    return Expression(
        text=text,
        names=frozenset(builder.names),
        string_literals=frozenset(builder.strings),
        comparisons=tuple(builder.comparisons),
        _root=root,
    )


class _Builder:
    """Walks the AST, accepting only whitelisted nodes, and builds the evaluated tree."""

    def __init__(self, source: str, lead: int) -> None:
        self.source = source
        self.lead = lead
        self.names: set[str] = set()
        self.strings: set[str] = set()
        self.comparisons: list[Comparison] = []

    def _where(self, node: ast.AST) -> str:
        snippet = ast.get_source_segment(self.source, node) or type(node).__name__
        if len(snippet) > 40:
            snippet = snippet[:37] + "..."
        column = getattr(node, "col_offset", 0) + 1 + self.lead
        return f"at column {column}: {snippet}"

    def _fail(self, what: str, node: ast.AST) -> ExpressionError:
        column = getattr(node, "col_offset", 0) + 1 + self.lead
        return ExpressionError(f"{what} ({self._where(node)})", column=column)

    def _reject(self, node: ast.AST) -> ExpressionError:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self._fail("'not' may only stand before a condition", node)
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
            bitwise = symbol in ("~", "|", "&", "^", "<<", ">>")
            what = f"bitwise operators ({symbol}) are" if bitwise else f"arithmetic ({symbol}) is"
            return self._fail(f"{what} not allowed", node)
        what = _FORBIDDEN.get(type(node), f"{type(node).__name__} is not allowed")
        return self._fail(what, node)

    def condition(self, node: ast.expr, depth: int) -> _Condition:
        """Something true or false: a comparison, or and/or/not of conditions."""
        if depth > MAX_DEPTH:
            raise self._fail("the condition is nested too deeply", node)
        if isinstance(node, ast.BoolOp):
            parts = tuple(self.condition(value, depth + 1) for value in node.values)
            return _All(parts) if isinstance(node.op, ast.And) else _Any(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _Not(self.condition(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name | ast.Constant | ast.List | ast.Tuple):
            # A bare `used_online` would be true for "no" as well as "yes": insist on a
            # comparison so that the author says which answer they mean.
            raise self._fail(
                "a bare value is not a condition; compare it, e.g. used_online == 'yes'", node
            )
        raise self._reject(node)

    def compare(self, node: ast.Compare) -> _Compare:
        ops: list[str] = []
        for op in node.ops:
            if isinstance(op, ast.Is | ast.IsNot):
                raise self._fail("'is' is not allowed; use == or !=", node)
            ops.append(_COMPARE_OPS[type(op)])
        operands = [node.left, *node.comparators]
        values = [self.value(operand) for operand in operands]
        for op, left, right in zip(ops, values, values[1:], strict=False):
            if isinstance(left, _Name) and isinstance(right, _Const):
                self.comparisons.append(Comparison(left.name, op, _items(right.value), True))
            elif isinstance(left, _Const) and isinstance(right, _Name):
                self.comparisons.append(Comparison(right.name, op, _items(left.value), False))
        return _Compare(values[0], tuple(ops), tuple(values[1:]))

    def value(self, node: ast.expr) -> _Value:
        """Something compared: a question id, a literal or a list of literals."""
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise self._fail("names starting with __ are not allowed", node)
            self.names.add(node.id)
            return _Name(node.id)
        if isinstance(node, ast.List | ast.Tuple):
            return _Const(tuple(self.literal(element) for element in node.elts))
        if isinstance(node, ast.Compare | ast.BoolOp) or (
            isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        ):
            raise self._fail("a condition cannot be compared; compare a question instead", node)
        return _Const(self.literal(node))

    def literal(self, node: ast.expr) -> Literal:
        """A string or number; a leading minus sign is allowed on a number."""
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = node.operand
            if isinstance(operand, ast.Constant) and _is_number(operand.value):
                return -operand.value if isinstance(node.op, ast.USub) else operand.value
            raise self._reject(node)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, str):
                self.strings.add(value)
                return value
            if _is_number(value):
                return value
            if isinstance(value, bool):
                raise self._fail(f"{value} is not allowed; yes/no answers are 'yes' and 'no'", node)
            if value is None:
                raise self._fail(
                    "None is not allowed; an unanswered question is never equal to any value", node
                )
            raise self._fail(f"{type(value).__name__} literals are not allowed", node)
        if isinstance(node, ast.List | ast.Tuple):
            raise self._fail("lists may hold only strings and numbers", node)
        if isinstance(node, ast.Name):
            raise self._fail("lists may hold only strings and numbers, not question ids", node)
        raise self._reject(node)


def _items(value: Literal | tuple[Literal, ...]) -> tuple[Literal, ...]:
    return value if isinstance(value, tuple) else (value,)
