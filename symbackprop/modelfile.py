"""The TOML model file, parsed into a :class:`~symbackprop.graph.Graph` without ``eval``.

A model file comes from anywhere (a course page, a colleague, a bug report), so reading it must never run
code and must cost bounded time and memory whatever it holds:

* expressions are read by Python's ``ast`` module, which only parses, and turned into SymPy objects by
  :class:`ExpressionReader`, which accepts numbers, declared names, ``+ - * / ** @``, unary ``-`` and
  ``+``, parentheses, ``.T``, subscripts with whole-number positions (``h[0]``, ``h[-1]``, ``h[1:3]``) and
  calls of the known functions (each with the number of arguments :data:`ARITY` gives it), and nothing else. ``sympify`` and
  ``parse_expr`` are never used: they call ``eval``;
* limits on length, characters and bracket nesting are checked before ``ast.parse`` sees the text, and
  limits on numbers (literals, exponents, folded constants) before SymPy computes with them, so
  ``9**9**9**9`` is refused instead of filling the memory;
* every string that reaches an error message or another module is checked first, so every error is one
  line.

Every error is a :class:`~symbackprop.graph.ModelError` whose text is ``FILE: ENTRY: message``, where
ENTRY is ``[nodes] z``, ``[params] w``, ``[loss] L``, ``[loss]``, ``name``, ``toml`` or ``file``.
docs/model-files.md lists the messages.
"""
from __future__ import annotations

import ast
import math
import tomllib
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy as sp

from .functions import FUNCTIONS
from .graph import Graph, ModelError, TensorSymbol
from .indexing import OPEN_END, concat, index, slice_
from .initializers import check_init
from .tensor import TENSOR_FUNCTIONS, ShapeError, infer_shape, keep_shape, matmul, transpose

MAX_FILE_BYTES = 1_000_000
MAX_EXPRESSION_LENGTH = 2000
MAX_NESTING = 32  # brackets, counted on the text before it is parsed
MAX_DEPTH = 100  # operations nested inside each other, in the parsed tree and in the SymPy result
MAX_LITERAL = 1e12
MAX_EXPONENT = 64
MAX_DIGITS = 300  # a constant folded from literals (10**300 is still a float64)
MAX_ENTRIES = 10_000  # per section
MAX_ELEMENTS = 10_000_000  # per input or parameter
MAX_MODEL_NAME = 200
#: Every function a model file may call, by name (the same functions as in the Python API).
CALLABLE: dict[str, Any] = {**FUNCTIONS, **TENSOR_FUNCTIONS, "matmul": matmul, "transpose": transpose,
                             "concat": concat}
#: How many arguments a function takes, (fewest, most), for those that do not take exactly one. A function
#: with an optional argument, such as leaky_relu(z, slope), is (1, 2); clip(z, lo, hi) is (3, 3).
ARITY: dict[str, tuple[int, int]] = {"matmul": (2, 2), "concat": (2, 64), "leaky_relu": (1, 2), "maximum": (2, 2),
                                     "minimum": (2, 2), "clip": (3, 3)}

TOP_LEVEL = ("name", "inputs", "params", "constants", "nodes", "loss", "data", "train")
INPUT_KEYS = ("shape", "onehot")
PARAM_KEYS = ("shape", "init")

_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@",
              ast.Mod: "%", ast.FloorDiv: "//", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
              ast.BitXor: "^", ast.BitAnd: "&", ast.Invert: "~", ast.Not: "not", ast.USub: "-", ast.UAdd: "+"}
_CONSTRUCTS = {ast.Lambda: "lambda", ast.ListComp: "a list comprehension", ast.SetComp: "a set comprehension",
               ast.DictComp: "a dict comprehension", ast.GeneratorExp: "a generator expression",
               ast.JoinedStr: "an f-string", ast.FormattedValue: "an f-string", ast.Subscript: "a subscript",
               ast.IfExp: "a conditional expression", ast.NamedExpr: "an assignment expression (:=)",
               ast.Compare: "a comparison", ast.BoolOp: "and/or", ast.Starred: "a starred expression",
               ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set",
               ast.Slice: "a slice", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
               ast.Call: "a call", ast.Attribute: "an attribute"}
_NOT_FINITE = (sp.nan, sp.zoo, sp.oo, sp.S.NegativeInfinity, sp.I)


# ---- checks on plain text --------------------------------------------------------------------------
def _describe(node: ast.AST) -> str:
    return _CONSTRUCTS.get(type(node), type(node).__name__)


def _show_char(ch: str) -> str:
    """A character for an error message: itself when printable, always its code point (one line)."""
    code = f"U+{ord(ch):04X}"
    return f"'{ch}' ({code})" if ch.isprintable() and not ch.isspace() else code


def _show(value: Any, limit: int = 40) -> str:
    """Any user-given text for an error message: short, and on one line (non-ASCII escaped)."""
    text = value if isinstance(value, str) else repr(value)
    if text.isascii() and text.isprintable() and len(text) <= limit:
        return text
    shown = ascii(text[:limit])[1:-1]
    return shown + ("..." if len(text) > limit else "")


def _short(expr: sp.Basic) -> str:
    """An expression for an error message: at most 40 characters (printing is cut off, not just the text)."""
    try:
        return _show(sp.sstr(expr) if _tree_depth(expr) <= MAX_DEPTH else "...", 40)
    except RecursionError:
        return "..."


def check_text(text: str, where: str) -> None:
    """Length, characters and bracket nesting, checked before the text is parsed at all.

    Non-ASCII is refused outright because Python's parser NFKC-normalises identifiers: a fullwidth
    ``ｗ`` would silently become ``w``, and a Cyrillic ``а`` looks like ``a`` but is another name.
    """
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ModelError(where, f"expression is {len(text)} characters long (limit {MAX_EXPRESSION_LENGTH})")
    depth = 0
    for column, ch in enumerate(text, 1):
        if not ch.isascii():
            raise ModelError(where, f"character {_show_char(ch)} at column {column} is not allowed "
                                    "(plain ASCII only, so look-alike letters cannot hide)")
        if not (ch.isprintable() or ch in " \t\r\n") or ch in "#\\":
            raise ModelError(where, f"character {_show_char(ch)} at column {column} is not allowed "
                                    "in an expression")
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth > MAX_NESTING:
            raise ModelError(where, f"brackets nested deeper than {MAX_NESTING} levels (column {column})")
    if not text.strip():
        raise ModelError(where, "the expression is empty")


def _parse_tree(text: str, where: str) -> ast.Expression:
    """``ast.parse`` of checked text: whitespace (newlines too) counts as a space; one-line errors."""
    flat = text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
    stripped = flat.lstrip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings such as "'int' object is not callable"
            return ast.parse(stripped.rstrip(), mode="eval")
    except SyntaxError as e:
        column = f" at column {(e.offset or 0) + len(flat) - len(stripped)}" if e.offset else ""
        raise ModelError(where, f"not a valid expression ({_show(e.msg, 80)}{column})") from None
    except (MemoryError, RecursionError, ValueError):
        raise ModelError(where, "expression is too complex to parse") from None


def _count_arguments(fewest: int, most: int) -> str:
    """'exactly one argument', 'exactly 2 arguments', '1 or 2 arguments', '1 to 3 arguments'."""
    if fewest == most:
        return "exactly one argument" if most == 1 else f"exactly {most} arguments"
    return f"{fewest} {'or' if most == fewest + 1 else 'to'} {most} arguments"


def _tree_depth(expr: sp.Basic) -> int:
    """Depth of a SymPy tree, without recursion (the tree may be the deep one we want to refuse)."""
    deepest, stack = 0, [(expr, 1)]
    while stack:
        e, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > MAX_DEPTH:
            break
        stack.extend((a, d + 1) for a in e.args)
    return deepest


def _log10_abs(n: sp.Number) -> float:
    """log10 |n| for any SymPy number, also for integers too large for a float."""
    if n.is_zero:
        return -math.inf
    if n.is_Rational:
        return math.log10(abs(int(n.p))) - math.log10(int(n.q))
    return float(sp.log(abs(n), 10).evalf(15))


# ---- expressions -----------------------------------------------------------------------------------
class ExpressionReader:
    """Build a SymPy expression from an ``ast`` tree, accepting only the math a network needs.

    ``read_<NodeType>`` methods are the whitelist: a node type without one is refused by name.
    ``later`` maps names that are defined further down the file to the message to give for them.
    """

    def __init__(self, names: Mapping[str, sp.Symbol], where: str, later: Mapping[str, str] | None = None,
                 shapes: Mapping[sp.Symbol, tuple] | None = None):
        self.names = names
        self.where = where
        self.later = later if later is not None else {}
        self.shapes = shapes
        self.shape_memo: dict = {}
        self.depth = 0

    def fail(self, message: str):
        raise ModelError(self.where, message)

    def read(self, node: ast.AST) -> sp.Expr:
        method = getattr(self, f"read_{type(node).__name__}", None)
        if method is None:
            self.fail(f"{_describe(node)} is not allowed in an expression")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"expression is nested too deeply (limit {MAX_DEPTH} levels)")
        try:
            return method(node)
        finally:
            self.depth -= 1

    def compute(self, what: Callable[[], str], operation: Callable[[], sp.Expr],
                may_leave_reals: bool = False) -> sp.Expr:
        """Run one SymPy operation; a SymPy error or a non-finite constant becomes a ModelError.

        ``what`` describes the operation, only when an error needs it (printing costs). Only powers
        and functions can turn finite real numbers into nan, zoo or I (log(0), sqrt(-1)):
        ``may_leave_reals`` asks for that check.
        """
        try:
            result = operation()
        except (TypeError, ValueError, ArithmeticError, NotImplementedError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.fail(f"cannot compute {what()}: {_show(first, 80)}")
        if result.is_Number:
            self.check_number(result, what)
        elif may_leave_reals and result.is_number and result.has(*_NOT_FINITE):
            self.fail(f"{what()} is not a finite real number")
        return result

    def check_number(self, n: sp.Number, what: Callable[[], str]) -> None:
        """A constant SymPy folded: finite, and at most MAX_DIGITS digits (so later powers stay cheap)."""
        if n in _NOT_FINITE or not n.is_finite:
            self.fail(f"{what()} is not a finite real number (it is {n})")
        if n.is_Rational and max(abs(int(n.p)), int(n.q)).bit_length() > MAX_DIGITS * 3.33:
            self.fail(f"{what()} is a number with more than {MAX_DIGITS} digits")
        if n.is_Float and abs(n) > 10 ** MAX_DIGITS:
            self.fail(f"{what()} is too large (about 1e{int(_log10_abs(n))}, limit 1e{MAX_DIGITS})")

    def read_Expression(self, node):
        return self.read(node.body)

    def read_Constant(self, node):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{type(value).__name__} literal '{_show(value, 20)}' is not allowed (numbers only)")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(f"the number {value} is not finite")
        if abs(value) > MAX_LITERAL:
            self.fail(f"the number {_show(str(value), 24)} is too large (limit {MAX_LITERAL:g})")
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value)

    def read_Name(self, node):
        name = node.id
        if name in self.names:
            return self.names[name]
        if "__" in name:
            self.fail(f"name '{name}' is not allowed (double underscores)")
        if name in self.later:
            self.fail(self.later[name])
        if name in CALLABLE:
            self.fail(f"'{name}' is a function; call it, as in {name}(...)")
        self.fail(f"undefined name '{name}'")

    def read_UnaryOp(self, node):
        if isinstance(node.op, ast.USub):
            operand = self.read(node.operand)
            return self.compute(lambda: f"-({_short(operand)})", lambda: -operand)
        if isinstance(node.op, ast.UAdd):
            return self.read(node.operand)
        self.fail(f"operator '{_OPERATORS.get(type(node.op), '?')}' is not allowed (use + - * / ** @)")

    def read_BinOp(self, node):
        """A left-leaning chain ``a + b - c * ...`` is read in a loop, so long sums do not count as depth."""
        chain = []
        while isinstance(node, ast.BinOp):
            chain.append(node)
            node = node.left
        result = self.read(node)
        for op_node in reversed(chain):
            result = self.binary(op_node.op, result, self.read(op_node.right))
        return result

    def binary(self, op: ast.operator, left: sp.Expr, right: sp.Expr) -> sp.Expr:
        symbol = _OPERATORS.get(type(op), "?")

        def what() -> str:
            return f"({_short(left)}) {symbol} ({_short(right)})"

        if isinstance(op, ast.Pow):
            return self.power(left, right, what)
        if isinstance(op, ast.Div) and right.is_Number and right.is_zero:
            self.fail("division by zero")
        operation = {ast.Add: sp.Add, ast.Sub: lambda a, b: a - b, ast.Mult: sp.Mul,
                     ast.Div: lambda a, b: a / b, ast.MatMult: matmul}.get(type(op))
        if operation is None:
            self.fail(f"operator '{symbol}' is not allowed (use + - * / ** @)")
        result = self.compute(what, lambda: operation(left, right))
        return result if operation is matmul else self.keep_elementwise_shape(result, left, right)

    def keep_elementwise_shape(self, result: sp.Expr, *operands: sp.Expr) -> sp.Expr:
        """``(x + b) - x`` is the vector b * ones, as written, not the scalar b SymPy makes of it
        (:func:`~symbackprop.tensor.keep_shape`). Shape errors are left for the graph to report."""
        if self.shapes is None:
            return result
        try:
            tensors = {infer_shape(o, self.shapes, self.shape_memo) for o in operands} - {()}
        except ShapeError:
            return result
        return keep_shape(result, tensors.pop(), self.shapes, self.shape_memo) if len(tensors) == 1 else result

    def power(self, base: sp.Expr, exponent: sp.Expr, what: Callable[[], str]) -> sp.Expr:
        """``base ** exponent`` with bounded numbers: ``x**10**10`` and ``9**9**9**9`` are refused."""
        if exponent.is_Number:
            if base.is_Number:
                self.check_constant_power(base, exponent)
            elif abs(exponent) > MAX_EXPONENT:
                self.fail(f"exponent {_show(str(exponent), 24)} is too large (limit {MAX_EXPONENT})")
        result = self.compute(what, lambda: sp.Pow(base, exponent), may_leave_reals=True)
        if result.is_Pow and result.exp.is_Number and abs(result.exp) > MAX_EXPONENT and not result.is_number:
            self.fail(f"exponent {_show(str(result.exp), 24)} is too large (limit {MAX_EXPONENT})")
        return result

    def check_constant_power(self, base: sp.Number, exponent: sp.Number) -> None:
        """Refuse a power of two numbers before SymPy computes it, if its result is out of range."""
        if base.is_zero and exponent.is_negative:
            self.fail("division by zero (0 to a negative power)")
        if base.is_negative and not exponent.is_Integer:
            self.fail(f"({_short(base)})**({_short(exponent)}) is not a real number")
        if abs(base) == 1 or base.is_zero:
            return
        digits = abs(float(exponent)) * abs(_log10_abs(base))  # both bounded by check_number: no overflow
        if digits > MAX_DIGITS:
            self.fail(f"the number ({_short(base)})**({_short(exponent)}) is out of range "
                      f"(about {int(digits)} digits, limit {MAX_DIGITS})")

    def read_Call(self, node):
        if isinstance(node.func, ast.Attribute) and node.func.attr != "T":
            self.read_Attribute(node.func)  # names the attribute in its error
        if not isinstance(node.func, ast.Name):
            self.fail(f"only known functions can be called, not {_describe(node.func)}")
        name = node.func.id
        func = CALLABLE.get(name)
        if func is None:
            if name in self.names:
                self.fail(f"'{name}' is not a function (it is declared in the model), so it cannot be called")
            if "__" in name:
                self.fail(f"name '{name}' is not allowed (double underscores)")
            self.fail(f"unknown function '{name}' (known: {', '.join(sorted(CALLABLE))})")
        if node.keywords:
            self.fail(f"{name}(...) takes no keyword arguments (got '{node.keywords[0].arg or '**'}=')")
        fewest, most = ARITY.get(name, (1, 1))
        if not fewest <= len(node.args) <= most:
            self.fail(f"{name}(...) takes {_count_arguments(fewest, most)}, got {len(node.args)}")
        args = [self.read(a) for a in node.args]
        return self.compute(lambda: f"{name}({', '.join(_short(a) for a in args)})", lambda: func(*args),
                            may_leave_reals=True)

    def read_Subscript(self, node):
        """``h[i]`` or ``h[start:stop]``: positions are whole numbers written in the expression (no step)."""
        value = self.read(node.value)
        key = node.slice
        if isinstance(key, ast.Tuple):
            self.fail(f"({_short(value)})[...] takes one position (W[i] is row i of a matrix; an element "
                      "is W[i][j])")
        if isinstance(key, ast.Slice):
            if key.step is not None:
                self.fail(f"a slice with a step is not supported in ({_short(value)})[...] (use concat of "
                          "indices)")
            start = 0 if key.lower is None else self.position(key.lower, "the start of a slice")
            stop = OPEN_END if key.upper is None else self.position(key.upper, "the end of a slice")
            return self.compute(lambda: f"({_short(value)})[{start}:{stop}]", lambda: slice_(value, start, stop))
        i = self.position(key, "an index")
        return self.compute(lambda: f"({_short(value)})[{i}]", lambda: index(value, i))

    def position(self, node: ast.AST, what: str) -> int:
        """A whole number written as such (``2``, ``-1``): positions are fixed when the model is read."""
        negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
        literal = node.operand if negative else node
        if not (isinstance(literal, ast.Constant) and type(literal.value) is int):
            shown = ast.unparse(node) if len(ast.unparse(node)) <= 30 else ast.unparse(node)[:27] + "..."
            self.fail(f"{what} must be a whole number such as 0 or -1, got {_show(shown)}")
        if literal.value > MAX_LITERAL:
            self.fail(f"{what} {_show(str(literal.value), 24)} is too large")
        return -literal.value if negative else literal.value

    def read_Attribute(self, node):
        if node.attr != "T":
            self.fail(f"attribute access '.{node.attr}' is not allowed (only .T, the transpose)")
        value = self.read(node.value)
        return self.compute(lambda: f"({_short(value)}).T", lambda: transpose(value))


def parse_expression(text: str, names: Mapping[str, sp.Symbol], where: str,
                     later: Mapping[str, str] | None = None,
                     shapes: Mapping[sp.Symbol, tuple] | None = None) -> sp.Expr:
    """Parse one expression of a model file into SymPy, safely; errors are ModelErrors at ``where``.

    ``names`` maps each name the expression may use to its symbol. ``later`` (optional) maps names that
    exist but may not be used here (defined further down) to the message to give for them. ``shapes``
    (optional) gives each symbol's shape, so that a sum whose tensor terms cancel keeps its shape.
    """
    if not isinstance(text, str):
        raise ModelError(where, f"expected an expression in quotes, got {_toml_type(text)}")
    check_text(text, where)
    tree = _parse_tree(text, where)
    try:
        expr = ExpressionReader(names, where, later, shapes).read(tree)
    except RecursionError:
        raise ModelError(where, f"expression is nested too deeply (limit {MAX_DEPTH} levels)") from None
    if _tree_depth(expr) > MAX_DEPTH:
        raise ModelError(where, f"expression is nested too deeply (limit {MAX_DEPTH} levels)")
    return expr


# ---- the order of nodes: 'used before it is defined' and cycles ------------------------------------
class _Order:
    """The names each entry of [nodes] and [loss] uses, read from its text only when an error needs it."""

    def __init__(self, texts: dict[str, Any], loss_name: str):
        self.texts = texts
        self.loss_name = loss_name
        self.order = list(texts)
        self._uses: dict[str, list[str]] = {}

    def uses(self, name: str) -> list[str]:
        if name not in self._uses:
            found: list[str] = []
            text = self.texts.get(name)
            try:
                check_text(text, "")
                found = sorted({n.id for n in ast.walk(_parse_tree(text, "")) if isinstance(n, ast.Name)})
            except (ModelError, TypeError, RecursionError):
                pass
            self._uses[name] = [n for n in found if n in self.texts]
        return self._uses[name]

    def cycle(self, start: str, goal: str) -> list[str] | None:
        """The shortest path of uses from ``start`` back to ``goal`` (breadth first: no recursion)."""
        parent: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            name = queue.popleft()
            for used in self.uses(name):
                if used == goal:
                    path = [name]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return [goal] + path[::-1] + [goal]
                if used not in parent:
                    parent[used] = name
                    queue.append(used)
        return None

    def message(self, name: str, current: str) -> str:
        path = self.cycle(name, current) if name != current else [current, current]
        if path is not None:
            return "cycle: " + " -> ".join(path)
        if name == self.loss_name:
            return f"'{name}' is the loss; nothing can use it"
        return f"'{name}' is used before it is defined (nodes are read in order)"

    def later(self, position: int) -> Mapping[str, str]:
        return _LaterNames(self, position)


class _LaterNames(Mapping):
    """The names at or after ``position``, each mapped (lazily) to the error for using it there."""

    def __init__(self, order: _Order, position: int):
        self.order, self.position = order, position
        self.names = set(order.order[position:])

    def __getitem__(self, name: str) -> str:
        if name not in self.names:
            raise KeyError(name)
        return self.order.message(name, self.order.order[self.position])

    def __iter__(self) -> Iterator[str]:
        return iter(self.order.order[self.position:])

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names


# ---- the model file --------------------------------------------------------------------------------
@dataclass
class Model:
    """A parsed model file: the graph, and the optional ``[data]`` and ``[train]`` tables as written."""

    graph: Graph
    path: str | None = None
    data: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


def _toml_type(value: Any) -> str:
    """The TOML name of a value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    names = {int: "an integer", float: "a float", str: "a string", list: "an array", dict: "a table"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a date/time" if value is not None else "nothing"


def _read_toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"{source}: toml", _show(" ".join(str(e).split()), 200)) from None
    except RecursionError:
        raise ModelError(f"{source}: toml", "arrays or tables nested too deeply") from None
    except ValueError as e:  # e.g. an integer with more than 4300 digits
        raise ModelError(f"{source}: toml", f"invalid value ({_show(str(e), 80)})") from None


def _section(doc: dict, key: str, source: str, required: bool) -> dict:
    value = doc.get(key)
    where = f"{source}: [{key}]"
    if value is None:
        if required:
            raise ModelError(where, "missing section (every model needs [params] and a [loss] with one entry)")
        return {}
    if not isinstance(value, dict):
        raise ModelError(where, f"must be a table ([{key}] ...), got {_toml_type(value)}")
    if len(value) > MAX_ENTRIES:
        raise ModelError(where, f"{len(value)} entries (limit {MAX_ENTRIES})")
    return value


def _model_name(doc: dict, source: str) -> str:
    """The model's name: it is printed into generated code and documents, so one plain line of text."""
    name = doc.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise ModelError(f"{source}: name", f"must be a string, got {_toml_type(name)}")
    if len(name) > MAX_MODEL_NAME:
        raise ModelError(f"{source}: name", f"is {len(name)} characters long (limit {MAX_MODEL_NAME})")
    bad = next((ch for ch in name if not ch.isprintable() or ch in '"\\'), None)
    if bad is not None:
        raise ModelError(f"{source}: name", f"character {_show_char(bad)} is not allowed in the name "
                                            "(one line of text, without quotes or backslashes)")
    return name


def _entry(source: str, section: str, key: str) -> str:
    """``FILE: [section] key``, with the key checked to be plain printable ASCII (one line, no look-alikes)."""
    where = f"{source}: [{section}] {_show(key)}"
    if not (key.isascii() and key.isprintable()) or len(key) > 64:
        raise ModelError(where, f"'{_show(key)}' is not a valid name (letters, digits and single "
                                "underscores, starting with a letter, plain ASCII)")
    return where


def _options(spec: Any, allowed: tuple[str, ...], where: str) -> dict:
    if not isinstance(spec, dict):
        raise ModelError(where, f"expected a table such as {{ shape = [3] }}, got {_toml_type(spec)}")
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        raise ModelError(where, f"unknown key '{_show(unknown[0])}' (allowed: {', '.join(allowed)})")
    return spec


def _shape(spec: dict, where: str) -> tuple[int, ...]:
    shape = spec.get("shape", [])
    if not isinstance(shape, list) or len(shape) > 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
        raise ModelError(where, f"shape must be [], [n] or [m, n] with positive whole numbers, "
                                f"got {_show(repr(shape), 40)}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ModelError(where, f"shape {shape} has {math.prod(shape)} elements (limit {MAX_ELEMENTS})")
    return tuple(shape)


def _check_init(init: Any, where: str, depth: int = 0) -> None:
    """The init spec's TOML types: finite numbers, short plain names, arrays and tables of those.

    Its meaning (known names, shapes, options) is checked by :mod:`symbackprop.initializers`; here only
    what could break that check or its one-line messages: NaN/inf, odd strings, deep nesting.
    """
    if depth > 3:
        raise ModelError(where, "init is nested too deeply")
    if isinstance(init, bool):
        raise ModelError(where, "init must be a number, a list, a name or a table, not true/false")
    if isinstance(init, float) and not math.isfinite(init):
        raise ModelError(where, f"init must be a finite number, got {init}")
    if isinstance(init, (int, float)):
        if abs(init) > MAX_LITERAL:
            raise ModelError(where, f"init number {_show(str(init), 24)} is too large (limit {MAX_LITERAL:g})")
    elif isinstance(init, str):
        if not (init.isascii() and init.replace("_", "a").isalnum() and len(init) <= 40):
            raise ModelError(where, f"init '{_show(init)}' is not a name such as \"glorot\" or \"zeros\"")
    elif isinstance(init, list):
        for value in init:
            if isinstance(value, (str, dict)):
                raise ModelError(where, "init list must hold finite numbers only")
            _check_init(value, where, depth + 1)
    elif isinstance(init, dict):
        for key, value in init.items():
            if not (key.isascii() and key.replace("_", "a").isalnum() and len(key) <= 40):
                raise ModelError(where, f"unknown init option '{_show(key)}'")
            _check_init(value, where, depth + 1)
    else:
        raise ModelError(where, f"init must be a number, a list, a name or a table, got {_toml_type(init)}")


def _declare(graph: Graph, source: str, inputs: dict, params: dict) -> None:
    for key, spec in inputs.items():
        where = _entry(source, "inputs", key)
        spec = _options(spec, INPUT_KEYS, where)
        onehot = spec.get("onehot", False)
        if not isinstance(onehot, bool):
            raise ModelError(where, f"onehot must be true or false, got {_toml_type(onehot)}")
        graph.input(key, _shape(spec, where), onehot=onehot, where=where)
    for key, spec in params.items():
        where = _entry(source, "params", key)
        spec = _options(spec, PARAM_KEYS, where)
        init, shape = spec.get("init", 0.0), _shape(spec, where)
        _check_init(init, where)
        check_init(init, shape, where)
        graph.param(key, shape, init=init, where=where)


def _constants(graph: Graph, source: str, constants: dict) -> None:
    """``[constants]``: ``name = number`` each; a name taken by an input, parameter or function is an error."""
    for key, value in constants.items():
        where = _entry(source, "constants", key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelError(where, f"a constant must be a number, got {_toml_type(value)}")
        if not math.isfinite(value) or abs(value) > MAX_LITERAL:
            raise ModelError(where, f"a constant must be a finite number of at most {MAX_LITERAL:g}, "
                                    f"got {_show(str(value), 24)}")
        graph.constant(key, value, where=where)


def _define(graph: Graph, source: str, nodes: dict, loss: dict) -> None:
    """Parse [nodes] in order, then the loss; a name used too early gets 'used before' or 'cycle'."""
    if len(loss) != 1:
        raise ModelError(f"{source}: [loss]", f"needs exactly one entry (the loss), got {len(loss)}")
    (loss_name,) = loss
    entries = [("nodes", k, v) for k, v in nodes.items()] + [("loss", loss_name, loss[loss_name])]
    order = _Order({k: v for _, k, v in entries}, loss_name)
    for position, (section, key, text) in enumerate(entries):
        where = _entry(source, section, key)
        if not isinstance(text, str):
            raise ModelError(where, f"expected an expression in quotes, got {_toml_type(text)}")
        symbols: dict[str, TensorSymbol] = {n: q.symbol for n, q in graph.quantities.items()}
        expr = parse_expression(text, symbols, where, order.later(position), graph.shapes)
        declare = graph.loss if section == "loss" else graph.node
        try:
            declare(key, expr, where=where)
        except RecursionError:
            raise ModelError(where, f"expression is nested too deeply (limit {MAX_DEPTH} levels)") from None


def parse_model(text: str, source: str = "<model>") -> Model:
    """Parse model-file text into a :class:`Model`; ``source`` names the file in error messages."""
    doc = _read_toml(text, source)
    if not doc:
        raise ModelError(f"{source}: file", "is empty (a model needs at least [params] and [loss])")
    unknown = [k for k in doc if k not in TOP_LEVEL]
    if unknown:
        raise ModelError(f"{source}: {_show(unknown[0])}",
                         f"unknown top-level key or section (allowed: {', '.join(TOP_LEVEL)})")
    inputs = _section(doc, "inputs", source, required=False)
    params = _section(doc, "params", source, required=True)
    constants = _section(doc, "constants", source, required=False)
    nodes = _section(doc, "nodes", source, required=False)
    loss = _section(doc, "loss", source, required=True)
    data = _section(doc, "data", source, required=False)
    train = _section(doc, "train", source, required=False)
    graph = Graph(_model_name(doc, source))
    _declare(graph, source, inputs, params)
    _constants(graph, source, constants)
    _define(graph, source, nodes, loss)
    return Model(graph, None, data, train)


def _read_text(path: Path, source: str) -> str:
    """The file's text: at most MAX_FILE_BYTES read (never trusting the size a special file reports)."""
    where = f"{source}: file"
    try:
        regular, exists = path.is_file(), path.exists()
    except ValueError:  # an embedded NUL character
        raise ModelError(where, "not a usable file name") from None
    if not regular:
        raise ModelError(where, "not a regular file" if exists else "no such file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ModelError(where, f"cannot be read ({_show(e.strerror or type(e).__name__, 60)})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ModelError(where, f"larger than {MAX_FILE_BYTES} bytes (a model file is small text)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ModelError(where, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def load_model(path: str | Path) -> Model:
    """Read and parse a model file; every problem is a one-line ModelError starting with the path."""
    path = Path(path)
    source = str(path)
    model = parse_model(_read_text(path, source), source)
    model.path = source
    return model
