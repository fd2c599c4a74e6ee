"""The TOML model file, parsed into a :class:`~symbackprop.graph.Graph` without ``eval``.

Expressions are read by Python's ``ast`` module (which only parses) and turned into SymPy objects by
:class:`ExpressionReader`, which accepts numbers, declared names, ``+ - * / ** @``, unary minus,
parentheses, ``.T`` and calls of the known functions, and nothing else. Limits on length, nesting and
exponent size are checked before SymPy sees anything, so a hostile file costs bounded time and memory.
``sympify``/``parse_expr`` are never used: they call ``eval``.

Every error is a one-line :class:`~symbackprop.graph.ModelError`: ``FILE: [section] entry: message``.
"""
from __future__ import annotations

import ast
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sympy as sp

from .functions import FUNCTIONS
from .graph import Graph, ModelError
from .tensor import TENSOR_FUNCTIONS, matmul, transpose

MAX_FILE_BYTES = 1_000_000
MAX_EXPRESSION_LENGTH = 2000
MAX_NESTING = 32
MAX_LITERAL = 1e12
MAX_EXPONENT = 64
MAX_ENTRIES = 10_000
CALLABLE = {**FUNCTIONS, **TENSOR_FUNCTIONS}

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.MatMult: matmul,
}


def _describe(node: ast.AST) -> str:
    names = {ast.Lambda: "lambda", ast.ListComp: "a list comprehension", ast.SetComp: "a set comprehension",
             ast.DictComp: "a dict comprehension", ast.GeneratorExp: "a generator expression",
             ast.JoinedStr: "an f-string", ast.Subscript: "a subscript", ast.IfExp: "a conditional expression",
             ast.NamedExpr: "an assignment expression", ast.Compare: "a comparison", ast.BoolOp: "and/or",
             ast.Starred: "a starred expression", ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict",
             ast.Set: "a set", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield"}
    return names.get(type(node), type(node).__name__)


def check_text(text: str, where: str) -> None:
    """Length, characters and bracket nesting, checked before the text is parsed at all."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ModelError(where, f"expression is {len(text)} characters long (limit {MAX_EXPRESSION_LENGTH})")
    depth = 0
    for column, ch in enumerate(text, 1):
        if not (ch.isascii() and (ch.isprintable() or ch in " \t")):
            raise ModelError(where, f"character {ch!r} at column {column} is not allowed (plain ASCII only)")
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth > MAX_NESTING:
            raise ModelError(where, f"brackets nested deeper than {MAX_NESTING} levels")
    if not text.strip():
        raise ModelError(where, "the expression is empty")


class ExpressionReader:
    """Build a SymPy expression from an ``ast`` tree, accepting only the math a network needs."""

    def __init__(self, names: Mapping[str, sp.Symbol], where: str, later: Mapping[str, str] | None = None):
        self.names = names
        self.where = where
        self.later = later or {}

    def fail(self, message: str):
        raise ModelError(self.where, message)

    def read(self, node: ast.AST) -> sp.Expr:
        method = getattr(self, f"read_{type(node).__name__}", None)
        if method is None:
            self.fail(f"{_describe(node)} is not allowed in an expression")
        return method(node)

    def read_Expression(self, node):
        return self.read(node.body)

    def read_Constant(self, node):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{type(value).__name__} literal {str(value)[:20]!r} is not allowed (numbers only)")
        if not math.isfinite(value) or abs(value) > MAX_LITERAL:
            self.fail(f"the number {str(value)[:24]} is too large (limit {MAX_LITERAL:g})")
        return sp.Integer(value) if isinstance(value, int) else sp.Float(value)

    def read_Name(self, node):
        name = node.id
        if name in self.names:
            return self.names[name]
        if name in self.later:
            self.fail(self.later[name])
        if name in CALLABLE:
            self.fail(f"'{name}' is a function; call it, as in {name}(...)")
        self.fail(f"undefined name '{name}'")

    def read_UnaryOp(self, node):
        if isinstance(node.op, ast.USub):
            return -self.read(node.operand)
        if isinstance(node.op, ast.UAdd):
            return self.read(node.operand)
        self.fail(f"operator {type(node.op).__name__} is not allowed")

    def read_BinOp(self, node):
        left, right = self.read(node.left), self.read(node.right)
        if isinstance(node.op, ast.Pow):
            return self.power(left, right)
        op = _BINARY.get(type(node.op))
        if op is None:
            self.fail(f"operator {type(node.op).__name__} is not allowed (use + - * / ** @)")
        if isinstance(node.op, ast.Div) and right.is_zero:
            self.fail("division by zero")
        return op(left, right)

    def power(self, base: sp.Expr, exponent: sp.Expr) -> sp.Expr:
        """``base ** exponent`` with bounded numbers: no 10**10**10 that would exhaust memory."""
        if exponent.is_Number:
            if base.is_Number:
                if base.is_zero and exponent.is_negative:
                    self.fail("division by zero (0 to a negative power)")
                size = abs(float(exponent)) * math.log10(max(abs(float(base)), 1e-300))
                if abs(size) > 300:
                    self.fail(f"the number {base}**{exponent} is too large")
            elif abs(exponent) > MAX_EXPONENT:
                self.fail(f"exponent {exponent} is too large (limit {MAX_EXPONENT})")
        return sp.Pow(base, exponent)

    def read_Call(self, node):
        if isinstance(node.func, ast.Attribute) and node.func.attr != "T":
            self.read_Attribute(node.func)  # names the attribute in its error
        if not isinstance(node.func, ast.Name):
            self.fail(f"only known functions can be called, not {_describe(node.func)}")
        name = node.func.id
        func = CALLABLE.get(name)
        if func is None:
            self.fail(f"unknown function '{name}' (known: {', '.join(sorted(CALLABLE))})")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            self.fail(f"{name}(...) takes exactly one argument")
        return func(self.read(node.args[0]))

    def read_Attribute(self, node):
        if node.attr != "T":
            self.fail(f"attribute access '.{node.attr}' is not allowed (only .T, the transpose)")
        return transpose(self.read(node.value))


def parse_expression(text: Any, names: Mapping[str, sp.Symbol], where: str,
                     later: Mapping[str, str] | None = None) -> sp.Expr:
    """Parse one expression of a model file; ``later`` maps names defined later to the error to give."""
    if not isinstance(text, str):
        raise ModelError(where, f"expected an expression in quotes, got {type(text).__name__}")
    check_text(text, where)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ModelError(where, f"not a valid expression ({e.msg} at column {e.offset})") from None
    except (MemoryError, RecursionError, ValueError):
        raise ModelError(where, "expression is too complex to parse") from None
    try:
        return ExpressionReader(names, where, later).read(tree)
    except RecursionError:
        raise ModelError(where, "expression is too deeply nested") from None


@dataclass
class Model:
    """A parsed model file: the graph, and the optional ``[data]`` and ``[train]`` tables."""

    graph: Graph
    path: str | None = None
    data: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


TOP_LEVEL = {"name", "inputs", "params", "nodes", "loss", "data", "train"}
INPUT_KEYS = {"shape", "onehot"}
PARAM_KEYS = {"shape", "init"}


def _table(doc: dict, key: str, source: str, required: bool) -> dict:
    value = doc.get(key, None)
    if value is None:
        if required:
            raise ModelError(source, f"missing section [{key}]")
        return {}
    if not isinstance(value, dict):
        raise ModelError(source, f"'{key}' must be a table ([{key}]), got {type(value).__name__}")
    if len(value) > MAX_ENTRIES:
        raise ModelError(f"{source}: [{key}]", f"{len(value)} entries (limit {MAX_ENTRIES})")
    return value


def _options(spec: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(spec, dict):
        raise ModelError(where, f"expected a table such as {{ shape = [3] }}, got {type(spec).__name__}")
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ModelError(where, f"unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")
    return spec


def _check_init(init: Any, where: str) -> None:
    def ok_number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if isinstance(init, (int, float)) and not ok_number(init):
        raise ModelError(where, f"init must be a finite number, got {init!r}")
    if isinstance(init, list):
        flat = init if not init or not isinstance(init[0], list) else [v for row in init for v in row]
        if not all(ok_number(v) for v in flat):
            raise ModelError(where, "init list must hold finite numbers only")
    if not isinstance(init, (int, float, str, list, dict)) or isinstance(init, bool):
        raise ModelError(where, f"init must be a number, a list, a name or a table, got {type(init).__name__}")


def _order_errors(nodes: dict[str, Any], position: int, names: list[str]) -> dict[str, str]:
    """Messages for names defined after entry ``position``: a cycle if they lead back, else 'used before'."""
    current = names[position]
    later = {}
    for name in names[position:]:
        path = _path_back(nodes, name, current, set())
        if path is not None:
            later[name] = "cycle: " + " -> ".join([current] + path)
        else:
            later[name] = f"'{name}' is used before it is defined (nodes are read in order)"
    return later


def _path_back(nodes: dict[str, Any], start: str, goal: str, seen: set[str]) -> list[str] | None:
    """Names from ``start`` following uses until ``goal``, by a cheap scan of identifiers in the text."""
    if start == goal and seen:
        return [goal]
    if start in seen or not isinstance(nodes.get(start), str):
        return None
    seen.add(start)
    try:
        used = {n.id for n in ast.walk(ast.parse(nodes[start][:MAX_EXPRESSION_LENGTH], mode="eval"))
                if isinstance(n, ast.Name)}
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for u in sorted(used):
        if u in nodes:
            rest = _path_back(nodes, u, goal, seen)
            if rest is not None:
                return [start] + rest if start != goal else rest
    return None


def parse_model(text: str, source: str = "<model>") -> Model:
    """Parse model-file text; ``source`` names the file in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"{source}: toml", " ".join(str(e).split())) from None
    except RecursionError:
        raise ModelError(f"{source}: toml", "nested too deeply") from None
    unknown = sorted(set(doc) - TOP_LEVEL)
    if unknown:
        raise ModelError(source, f"unknown section or key '{unknown[0]}' (allowed: {', '.join(sorted(TOP_LEVEL))})")
    name = doc.get("name", Path(source).stem)
    if not isinstance(name, str) or len(name) > 200:
        raise ModelError(f"{source}: name", "name must be text of at most 200 characters")
    graph = Graph(name)
    for key, spec in _table(doc, "inputs", source, required=False).items():
        where = f"{source}: [inputs] {key}"
        spec = _options(spec, INPUT_KEYS, where)
        onehot = spec.get("onehot", False)
        if not isinstance(onehot, bool):
            raise ModelError(where, "onehot must be true or false")
        graph.input(key, spec.get("shape", ()), onehot=onehot, where=where)
    for key, spec in _table(doc, "params", source, required=True).items():
        where = f"{source}: [params] {key}"
        spec = _options(spec, PARAM_KEYS, where)
        init = spec.get("init", 0.0)
        _check_init(init, where)
        graph.param(key, spec.get("shape", ()), init=init, where=where)
    nodes = _table(doc, "nodes", source, required=False)
    loss = _table(doc, "loss", source, required=True)
    if len(loss) != 1:
        raise ModelError(f"{source}: [loss]", f"needs exactly one entry (the loss), got {len(loss)}")
    entries = [("nodes", k, v) for k, v in nodes.items()] + [("loss", k, v) for k, v in loss.items()]
    order = [k for _, k, _ in entries]
    texts = {k: v for _, k, v in entries}
    for i, (section, key, text) in enumerate(entries):
        where = f"{source}: [{section}] {key}"
        symbols = {n: q.symbol for n, q in graph.quantities.items()}
        expr = parse_expression(text, symbols, where, _order_errors(texts, i, order))
        (graph.loss if section == "loss" else graph.node)(key, expr, where=where)
    return Model(graph, source, _table(doc, "data", source, False), _table(doc, "train", source, False))


def load_model(path: str | Path) -> Model:
    """Read and parse a model file."""
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelError(source, f"file is {size} bytes (limit {MAX_FILE_BYTES})")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelError(source, f"not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ModelError(source, e.strerror or "cannot be read") from None
    model = parse_model(text, source)
    model.path = source
    return model
