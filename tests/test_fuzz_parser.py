"""Fuzzing the expression parser: any text gives a SymPy expression or a one-line ModelError, nothing else.

300 examples per test keep CI fast; set SYMBACKPROP_FUZZ_EXAMPLES for a longer run.
"""
import os

import pytest
import sympy as sp

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from symbackprop.graph import ModelError, TensorSymbol  # noqa: E402
from symbackprop.modelfile import parse_expression, parse_model  # noqa: E402

EXAMPLES = int(os.environ.get("SYMBACKPROP_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
NAMES = {n: TensorSymbol(n) for n in ("x", "y", "w", "b", "v", "W")}
WHERE = "fuzz.toml: [nodes] z"

TOKENS = ["x", "y", "w", "b", "v", "W", "q", "__import__", "os", "system", "T", "real", "lambda", "if", "else",
          "for", "in", "and", "not", "sigmoid", "sum", "matmul", "transpose", "softmax", "log", "sqrt", "exp", "relu", "step", "abs",
          "0", "1", "2", "9", "0.5", "1e12", "1e999", "10", "64", "65", "1_0", "0x1f", "1j", "True", "None",
          "+", "-", "*", "/", "**", "@", "%", "//", "<", "==", ":=", ",", ".", ":", "(", ")", "[", "]", "{", "}",
          "'", '"', "f'", "#", "\\", " ", "\n", "\t", "\x00", "\uff57", "\u0430", "\u202e", "\u00e9", "..."]


def check(text):
    try:
        result = parse_expression(text, NAMES, WHERE)
    except ModelError as e:
        message = str(e)
        assert message.startswith(WHERE + ": ") and len(message.splitlines()) == 1, message
    else:
        assert isinstance(result, sp.Expr)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("xywbvWTq_0123456789.eE+-*/@()[]{}'\",:=<>!%&|^~ #\\\n\t")
                                         + ["\uff57", "\u0430", "\u2028", "\x00", "\u00e9"]), max_size=80))
def test_random_characters(text):
    check(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_random_token_sequences(tokens):
    check("".join(tokens))


def expressions():
    """Well-formed and ill-formed expression trees, written out as text."""
    leaves = st.sampled_from(["x", "y", "w", "b", "v", "W", "q", "0", "1", "2", "0.5", "10", "64", "1e12",
                              "9", "'s'", "True", "__class__"])
    unary = ["-{}", "+{}", "({})", "{}.T", "{}.real", "{}[0]", "not {}", "~{}"]
    functions = ["sigmoid", "tanh", "relu", "step", "softplus", "exp", "log", "sqrt", "abs", "sum", "mean",
                 "softmax", "logsumexp", "matmul", "transpose", "foo", "__import__", "w"]
    binary = ["+", "-", "*", "/", "**", "@", "%", "<", " and ", " if x else "]

    def extend(inner):
        return st.one_of(
            st.tuples(st.sampled_from(unary), inner).map(lambda t: t[0].format(t[1])),
            st.tuples(st.sampled_from(functions), inner).map(lambda t: f"{t[0]}({t[1]})"),
            st.tuples(st.sampled_from(functions), st.lists(inner, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"),  # any number of arguments
            st.tuples(inner, st.sampled_from(binary), inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
            st.tuples(inner, inner).map(lambda t: f"[{t[0]} for q in {t[1]}]"),
        )

    return st.recursive(leaves, extend, max_leaves=30)


@FUZZ
@given(expressions())
def test_random_expression_trees(text):
    check(text)


@FUZZ
@given(st.lists(st.sampled_from(["x", "w", "2", "9", "10", "0.5", "-1", "(-8)", "(1/3)", "1e12", "64"]),
                min_size=2, max_size=6))
def test_power_towers_are_bounded(operands):
    check("**".join(operands))


@FUZZ
@given(st.dictionaries(st.sampled_from(["a", "c", "d", "e", "z"]),
                       st.lists(st.sampled_from(["a", "c", "d", "e", "z", "w", "x", "+", "*", "(", ")"]),
                                max_size=8).map("".join), max_size=5))
def test_random_node_tables(nodes):
    """Node tables with forward references, cycles and broken text: a graph or a one-line error."""
    body = "".join(f'{k} = "{v}"\n' for k, v in nodes.items())
    text = f'[inputs]\nx = {{}}\n[params]\nw = {{}}\n[nodes]\n{body}[loss]\nL = "w*x"\n'
    try:
        parse_model(text, "fuzz.toml")
    except ModelError as e:
        assert str(e).startswith("fuzz.toml: ") and len(str(e).splitlines()) == 1
