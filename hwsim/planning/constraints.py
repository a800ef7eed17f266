"""The constraint language of sweep files: arithmetic, comparisons and logic over the field paths
of a point's scenario (docs/sweeps.md "Constraints").

Constraints are parsed with :mod:`ast` and evaluated by a small interpreter that knows numbers,
strings, booleans, ``+ - * / // % **``, comparisons, ``and``/``or``/``not`` and names; nothing is
ever passed to :func:`eval`. Sizes are bounded so a constraint cannot burn CPU or memory: at most
1,000 characters and 50 levels of nesting, no integer beyond 2**1024, no text or list longer than
1,000, no text formatting with ``%``; an operation beyond them is refused before it is computed.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

from hwsim.scenario.loader import short_repr

__all__ = ["parse_constraint", "evaluate", "TooLarge"]

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge}
_MAX_TEXT = 1000
"""The longest constraint, and the longest text or list an expression may make."""
_MAX_DEPTH = 50
"""The deepest nesting of operations in a constraint."""
_MAX_BITS = 1024
"""The largest integer an expression may make, in bits (about 1e308, the largest float)."""
_ALLOWED = ("numbers, strings, true/false, field paths (workload.parallelism.tp, or its end when "
            "that is unique: parallelism.tp, tp), + - * / // % **, comparisons (== != < <= > >=), "
            "and, or, not, parentheses")


def parse_constraint(text: str, inputs: list[str] | None = None
                     ) -> tuple[ast.Expression, list[str]]:
    """Parse a constraint; return its tree (names rewritten to full field paths) and the paths it
    reads. A shorter name (``tp``) stands for the one path in *inputs* ending in ``.tp``.

    Raises ValueError naming what is not allowed (calls, attributes of values, subscripts other
    than ``[int]``, lambdas, comprehensions, ...).
    """
    if len(text) > _MAX_TEXT:
        raise ValueError(f"{short_repr(text)} is {len(text):,} characters long; a constraint "
                         f"has at most {_MAX_TEXT:,}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"{text!r} is not an expression ({err.msg}); allowed: "
                         f"{_ALLOWED}") from None
    except (RecursionError, MemoryError):
        tree = None
    if tree is None or _depth(tree) > _MAX_DEPTH:
        raise ValueError(f"{short_repr(text)} nests operations more than {_MAX_DEPTH} deep; "
                         "split it into several constraints")
    names: list[str] = []

    def visit(node: ast.AST) -> ast.AST:
        if isinstance(node, ast.Expression):
            return ast.Expression(visit(node.body))
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
            try:
                return ast.Constant(_bounded(node.value))
            except ValueError as err:
                raise ValueError(f"{short_repr(text)}: {err}") from None
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
            path = _dotted(node, text)
            if "." not in path and "[" not in path and path in ("true", "false"):
                return ast.Constant(path == "true")
            path = _resolve_name(path, inputs or [], text)
            names.append(path)
            return ast.Name(id=path, ctx=ast.Load())
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return ast.BinOp(visit(node.left), node.op, visit(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
            return ast.UnaryOp(node.op, visit(node.operand))
        if isinstance(node, ast.BoolOp):
            return ast.BoolOp(node.op, [visit(v) for v in node.values])
        if isinstance(node, ast.Compare) and all(type(o) in _CMPOPS for o in node.ops):
            return ast.Compare(visit(node.left), node.ops, [visit(c) for c in node.comparators])
        what = type(node).__name__
        raise ValueError(f"{text!r}: {what} ({ast.unparse(node)!r}) is not allowed in a "
                         f"constraint; allowed: {_ALLOWED}")

    return visit(tree), list(dict.fromkeys(names))


def _depth(tree: ast.AST) -> int:
    """How deep *tree* nests (without recursion: a long chain must not overflow the stack)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d <= _MAX_DEPTH:
            stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return deepest


class TooLarge(ValueError):
    """A constraint that would make a value beyond the limits (refused before computing it)."""


def _bounded(value: Any) -> Any:
    """*value*, or ValueError when it is an integer beyond :data:`_MAX_BITS` or a text or list
    longer than :data:`_MAX_TEXT` (a constraint compares sizes and counts; nothing needs more)."""
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise TooLarge(f"a number beyond 2**{_MAX_BITS} (about 1e308) in a constraint")
    if isinstance(value, (str, list, tuple)) and len(value) > _MAX_TEXT:
        raise TooLarge(f"a text or list longer than {_MAX_TEXT:,} in a constraint")
    return value


def _binop(op: ast.operator, left: Any, right: Any) -> Any:
    """``left op right``, refused (ValueError) before it is computed when the result would be
    beyond :func:`_bounded`'s limits, or when it would format text (``'%d' % x``)."""
    ints = all(isinstance(v, int) for v in (left, right))
    seqs = (str, list, tuple)
    if isinstance(op, ast.Mod) and isinstance(left, seqs):
        raise TooLarge("text formatting (%) is not allowed in a constraint")
    if isinstance(op, ast.Pow) and ints and right > 0 and \
            max(left.bit_length() - 1, 0) * right > _MAX_BITS:
        raise TooLarge(f"{short_repr(left, 30)} ** {short_repr(right, 30)} is beyond "
                         f"2**{_MAX_BITS} (about 1e308)")
    if isinstance(op, ast.Pow) and abs(right) > 10 ** 6:
        raise TooLarge(f"exponent {short_repr(right, 30)} is too large")
    if isinstance(op, ast.Mult) and ints and left.bit_length() + right.bit_length() > _MAX_BITS:
        raise TooLarge(f"a product beyond 2**{_MAX_BITS} (about 1e308)")
    if isinstance(op, ast.Mult) and isinstance(left, seqs) != isinstance(right, seqs):
        seq, n = (left, right) if isinstance(left, seqs) else (right, left)
        if isinstance(n, int) and len(seq) * n > _MAX_TEXT:
            raise TooLarge(f"repeating a text or list beyond {_MAX_TEXT:,} items")
    return _bounded(_BINOPS[type(op)](left, right))


def _dotted(node: ast.AST, text: str) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value, text)}.{node.attr}"
    if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
            and type(node.slice.value) is int):
        return f"{_dotted(node.value, text)}[{node.slice.value}]"
    raise ValueError(f"{text!r}: {ast.unparse(node)!r} is not a field path; allowed: {_ALLOWED}")


def _resolve_name(path: str, inputs: list[str], text: str) -> str:
    """A full field path as it is; a shorter name (``tp``, ``model.layers``): the one axis input
    ending in it, else the one other field ending in it (*inputs* lists the axes' columns first,
    then ``|``, then the base's other fields)."""
    if path in inputs or not inputs:
        return path
    cut = inputs.index("|") if "|" in inputs else len(inputs)
    for group in (inputs[:cut], inputs[cut + 1:]):
        matches = [p for p in group if p.endswith("." + path)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"{text!r}: {path!r} could be any of {', '.join(matches)}; write "
                             "the full path")
    return path


def evaluate(tree: ast.Expression, values: dict[str, Any]) -> Any:
    """Evaluate a tree from :func:`parse_constraint`; names are looked up in *values*."""
    return _eval(tree.body, values)


def _eval(node: ast.AST, values: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in values:
            raise ValueError(f"{node.id!r} has no value in this point")
        return values[node.id]
    if isinstance(node, ast.BinOp):
        return _binop(node.op, _eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, values)
        return (not v) if isinstance(node.op, ast.Not) else (-v if isinstance(node.op, ast.USub)
                                                             else +v)
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, values) for v in node.values)
        return any(_eval(v, values) for v in node.values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, values)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    raise ValueError(f"{type(node).__name__} is not allowed")  # parse_constraint rejects it first
