"""The TOML model file: what it builds, the one-line errors it gives, and that hostile files run nothing.

Expressions are compared with ones built through the Graph API, so the parser is checked against the
Python declaration rather than against its own idea of the result.
"""
import ast
import builtins
import os
import subprocess
import types
from pathlib import Path

import pytest
import sympy as sp

from symbackprop.functions import sigmoid
from symbackprop.graph import Graph, ModelError, TensorSymbol
from symbackprop.modelfile import MAX_FILE_BYTES, Model, load_model, parse_expression, parse_model
from symbackprop.tensor import logsumexp, matmul, softmax, sum_, transpose

HOSTILE = sorted((Path(__file__).parent / "hostile").glob("*.toml"))

SEED = '''\
name = "single sigmoid neuron"

[inputs]
x = {}
y = {}

[params]
w = { init = 0.5 }
b = { init = 0.0 }

[nodes]
z = "w*x + b"
a = "sigmoid(z)"

[loss]
L = "(a - y)**2 / 2"

[data.synthetic]
samples = 8

[train]
lr = 2.0
'''

MLP = '''\
[inputs]
x = { shape = [4] }
y = { shape = [3], onehot = true }

[params]
W1 = { shape = [16, 4], init = "glorot" }
b1 = { shape = [16], init = 0.0 }
W2 = { shape = [3, 16], init = { kind = "normal", scale = 0.1 } }
b2 = { shape = [3], init = [0.0, 0.0, 0.0] }

[nodes]
z1 = "W1 @ x + b1"
a1 = "tanh(z1)"
z2 = "W2 @ a1 + b2"
p = "softmax(z2)"
r = "x.T @ x"

[loss]
L = "-sum(y * log(p)) + r/2"
'''


def names(*ns):
    return {n: TensorSymbol(n) for n in ns}


def error(text, source="m.toml"):
    with pytest.raises(ModelError) as e:
        parse_model(text, source)
    message = str(e.value)
    assert "\n" not in message and "\r" not in message
    return message


# ---- what a model file builds ----------------------------------------------------------------------
def test_the_seed_builds_the_same_graph_as_the_python_api():
    model = parse_model(SEED, "seed.toml")
    g = Graph("single sigmoid neuron")
    x, y = g.input("x"), g.input("y")
    w, b = g.param("w", init=0.5), g.param("b", init=0.0)
    z = g.node("z", w * x + b)
    a = g.node("a", sigmoid(z))
    g.loss("L", (a - y) ** 2 / 2)
    parsed = model.graph
    assert parsed.name == "single sigmoid neuron" and parsed.loss_name == "L"
    assert list(parsed.quantities) == list(g.quantities)
    for name, q in g.quantities.items():
        p = parsed[name]
        assert (p.kind, p.shape, p.init, p.onehot) == (q.kind, q.shape, q.init, q.onehot)
        assert p.expr == q.expr, name
    assert parsed["L"].expr.has(sp.Rational(1, 2))  # exact: "/ 2" is not 0.5


def test_the_tables_pass_through_and_parse_model_has_no_path():
    model = parse_model(SEED, "seed.toml")
    assert isinstance(model, Model) and model.path is None
    assert model.data == {"synthetic": {"samples": 8}} and model.train == {"lr": 2.0}


def test_vectors_matrices_and_tensor_functions():
    g = parse_model(MLP, "mlp.toml").graph
    W1, W2, b1, b2, x, y = (g.symbol(n) for n in ("W1", "W2", "b1", "b2", "x", "y"))
    z1, a1, z2, p, r = (g.symbol(n) for n in ("z1", "a1", "z2", "p", "r"))
    assert g["z1"].expr == matmul(W1, x) + b1 and g["z1"].shape == (16,)
    assert g["a1"].expr == sp.tanh(z1)
    assert g["z2"].expr == matmul(W2, a1) + b2 and g["z2"].shape == (3,)
    assert g["p"].expr == softmax(z2)
    assert g["r"].expr == matmul(transpose(x), x) and g["r"].shape == ()
    assert g["y"].onehot and g["W1"].shape == (16, 4)
    assert g["W2"].init == {"kind": "normal", "scale": 0.1} and g["b2"].init == [0.0, 0.0, 0.0]
    assert g["L"].shape == ()
    # the Graph rewrites log(softmax(z2)) stably, exactly as for the same declaration in Python
    assert g["L"].expr == -sum_(y * (z2 - logsumexp(z2))) + r / 2


@pytest.mark.parametrize("text, expected", [
    ("x/2", lambda x, v: x * sp.Rational(1, 2)),
    ("2**-1 * x", lambda x, v: x / 2),
    ("0.5*x", lambda x, v: sp.Float(0.5) * x),
    ("-x + +x", lambda x, v: sp.Integer(0)),
    ("x**2", lambda x, v: x ** 2),
    ("v.T", lambda x, v: transpose(v)),
    ("sum(v)", lambda x, v: sum_(v)),
    ("softmax(v)", lambda x, v: softmax(v)),
    ("(x\n + 1)", lambda x, v: x + 1),  # a multi-line TOML string
    ("  x\t* 3 ", lambda x, v: 3 * x),
])
def test_parse_expression_builds_sympy_directly(text, expected):
    ns = names("x", "v")
    result = parse_expression(text, ns, "here")
    assert result == expected(ns["x"], ns["v"])


@pytest.mark.parametrize("call, operator", [
    ("matmul(W, x)", "W @ x"),
    ("transpose(v)", "v.T"),
    ("matmul(V, tanh(W @ x))", "V @ tanh(W @ x)"),
    ("matmul(transpose(tanh(matmul(W, x))), V)", "tanh(W @ x).T @ V"),
    ("transpose(matmul(W, x))", "(W @ x).T"),
    ("matmul(matmul(W, W), x) + matmul(W, matmul(W, x))", "(W @ W) @ x + W @ (W @ x)"),
    ("sum(matmul(2*W + V.T, transpose(transpose(x))))", "sum((2*W + V.T) @ x)"),
])
def test_matmul_and_transpose_calls_mean_the_same_as_the_operators(call, operator):
    ns = names("W", "V", "x", "v")
    assert parse_expression(call, ns, "here") == parse_expression(operator, ns, "here")


def test_matmul_and_transpose_calls_build_the_python_api_expressions():
    ns = names("W", "V", "x")
    W, V, x = ns["W"], ns["V"], ns["x"]
    assert parse_expression("matmul(V, tanh(matmul(W, x)))", ns, "") == matmul(V, sp.tanh(matmul(W, x)))
    assert parse_expression("transpose(tanh(W @ x))", ns, "") == transpose(sp.tanh(matmul(W, x)))


def test_a_model_written_with_matmul_computes_what_its_operator_spelling_computes():
    """The same network in both spellings: equal graphs, equal loss and gradients."""
    import numpy as np
    from symbackprop.compile import compile_gradient
    head = ('[inputs]\nx = { shape = [3] }\ny = { shape = [2] }\n[params]\nW = { shape = [4, 3], init = "glorot" }\n'
            'V = { shape = [4, 2], init = "glorot" }\n')
    spelled = {"calls": 'h = "tanh(matmul(W, x))"\n[loss]\nL = "sum((matmul(transpose(V), h) - y)**2)"',
               "operators": 'h = "tanh(W @ x)"\n[loss]\nL = "sum((V.T @ h - y)**2)"'}
    graphs = {k: parse_model(f"{head}[nodes]\n{v}\n", "m.toml").graph for k, v in spelled.items()}
    assert graphs["calls"]["L"].expr == graphs["operators"]["L"].expr
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(4, 3)), "V": rng.normal(size=(4, 2))}
    data = {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 2))}
    results = {k: compile_gradient(g).loss_and_grad(params, data) for k, g in graphs.items()}
    assert results["calls"][0] == results["operators"][0]
    for name in params:
        np.testing.assert_array_equal(results["calls"][1][name], results["operators"][1][name])


@pytest.mark.parametrize("arity, message", [
    ((2, 2), "sum(...) takes exactly 2 arguments, got 1"),
    ((2, 3), "sum(...) takes 2 or 3 arguments, got 1"),
    ((2, 4), "sum(...) takes 2 to 4 arguments, got 1"),
])
def test_the_arity_table_gives_each_function_its_number_of_arguments(monkeypatch, arity, message):
    """One entry per function: a fixed count, or a range for optional arguments (leaky_relu(z, slope))."""
    from symbackprop import modelfile
    monkeypatch.setitem(modelfile.ARITY, "sum", arity)
    with pytest.raises(ModelError) as e:
        parse_expression("sum(x)", names("x"), "here")
    assert str(e.value) == f"here: {message}"


def test_integer_literals_stay_exact():
    x = TensorSymbol("x")
    assert parse_expression("x*3", {"x": x}, "") == 3 * x
    assert isinstance(parse_expression("3", {}, ""), sp.Integer)
    assert parse_expression("10**12 * 1000", {}, "") == sp.Integer(10) ** 15


def test_multi_line_strings_and_comments_in_toml_are_fine():
    text = SEED.replace('z = "w*x + b"', 'z = """w*x\n    + b"""   # a comment outside the string')
    assert parse_model(text, "m.toml").graph["z"].expr == parse_model(SEED, "m.toml").graph["z"].expr


def test_load_model_reads_a_file_with_or_without_bom(tmp_path):
    (tmp_path / "m.toml").write_bytes(b"\xef\xbb\xbf" + SEED.encode())
    model = load_model(tmp_path / "m.toml")
    assert model.path == str(tmp_path / "m.toml") and model.graph.loss_name == "L"


def test_inputs_may_be_absent():
    model = parse_model('[params]\nw = {}\n[loss]\nL = "(w - 3)**2"\n', "m.toml")
    assert model.graph.input_list == [] and model.graph.name == "m"


# ---- errors: one line, naming the file, the entry and the offending name ---------------------------
HEAD = '[inputs]\nx = {}\ny = {}\n[params]\nw = {}\nb = {}\n'


def with_nodes(nodes, loss='L = "(z - y)**2"', head=HEAD):
    return f"{head}[nodes]\n{nodes}\n[loss]\n{loss}\n"


ERRORS = [
    # TOML and sections
    ("[inputs\n", "m.toml: toml: Expected ']' at the end of a table declaration (at line 1, column 8)"),
    ("", "m.toml: file: is empty"),
    ("# nothing but a comment\n", "m.toml: file: is empty"),
    ('[params]\nw = {}\n', "m.toml: [loss]: missing section"),
    ('[inputs]\nx = {}\n[loss]\nL = "x"\n', "m.toml: [params]: missing section"),
    ('loss = "x"\n[params]\nw = {}\n', "m.toml: [loss]: must be a table ([loss] ...), got a string"),
    (HEAD + '[loss]\n', "m.toml: [loss]: needs exactly one entry (the loss), got 0"),
    (HEAD + '[loss]\nL = "w"\nM = "b"\n', "m.toml: [loss]: needs exactly one entry (the loss), got 2"),
    (HEAD + '[loss]\nL = "w"\n[optimizer]\nlr = 1\n', "m.toml: optimizer: unknown top-level key or section"),
    ('title = "x"\n' + HEAD + '[loss]\nL = "w"\n', "m.toml: title: unknown top-level key or section (allowed: name,"),
    (HEAD + '[loss]\nL = "w"\n[train]\n', None),  # an empty [train] is fine (checked below: no error)
    (HEAD + 'train = 3\n[loss]\nL = "w"\n', "m.toml: [params] train: expected a table"),
    ('train = 3\n' + HEAD + '[loss]\nL = "w"\n', "m.toml: [train]: must be a table ([train] ...), got an integer"),
    ('name = 3\n' + HEAD + '[loss]\nL = "w"\n', "m.toml: name: must be a string, got an integer"),
    ('name = "a\\nb"\n' + HEAD + '[loss]\nL = "w"\n', "m.toml: name: character U+000A is not allowed in the name"),
    ('name = "x\\"\\"\\""\n' + HEAD + '[loss]\nL = "w"\n', "m.toml: name: character '\"' (U+0022) is not allowed"),
    # inputs and params
    ('[inputs]\nx = 3\n[params]\nw = {}\n[loss]\nL = "w"\n',
     "m.toml: [inputs] x: expected a table such as { shape = [3] }, got an integer"),
    ('[inputs]\nx = { size = 3 }\n[params]\nw = {}\n[loss]\nL = "w"\n',
     "m.toml: [inputs] x: unknown key 'size' (allowed: shape, onehot)"),
    ('[inputs]\nx = { shape = [0] }\n[params]\nw = {}\n[loss]\nL = "w"\n',
     "m.toml: [inputs] x: shape must be [], [n] or [m, n] with positive whole numbers, got [0]"),
    ('[inputs]\nx = { shape = [2, 2, 2] }\n[params]\nw = {}\n[loss]\nL = "w"\n',
     "m.toml: [inputs] x: shape must be [], [n] or [m, n] with positive whole numbers, got [2, 2, 2]"),
    ('[inputs]\nx = { shape = "3" }\n[params]\nw = {}\n[loss]\nL = "w"\n',
     "m.toml: [inputs] x: shape must be [], [n] or [m, n] with positive whole numbers, got '3'"),
    ('[inputs]\nx = { shape = [true] }\n[params]\nw = {}\n[loss]\nL = "w"\n',
     "m.toml: [inputs] x: shape must be [], [n] or [m, n] with positive whole numbers, got [True]"),
    ('[inputs]\nx = { onehot = 1 }\n[params]\nw = {}\n[loss]\nL = "w"\n',
     "m.toml: [inputs] x: onehot must be true or false, got an integer"),
    ('[params]\nw = { init = 1, lr = 2 }\n[loss]\nL = "w"\n', "m.toml: [params] w: unknown key 'lr' (allowed: shape, init)"),
    ('[params]\nw = { init = nan }\n[loss]\nL = "w"\n', "m.toml: [params] w: init must be a finite number, got nan"),
    ('[params]\nw = { init = inf }\n[loss]\nL = "w"\n', "m.toml: [params] w: init must be a finite number, got inf"),
    ('[params]\nw = { shape = [2], init = [1, -inf] }\n[loss]\nL = "sum(w)"\n',
     "m.toml: [params] w: init must be a finite number, got -inf"),
    ('[params]\nw = { init = { kind = "normal", scale = nan } }\n[loss]\nL = "w"\n',
     "m.toml: [params] w: init must be a finite number, got nan"),
    ('[params]\nw = { init = "glorot()" }\n[loss]\nL = "w"\n',
     "m.toml: [params] w: init 'glorot()' is not a name such as \"glorot\" or \"zeros\""),
    ('[params]\nw = { init = 1e13 }\n[loss]\nL = "w"\n', "m.toml: [params] w: init number 10000000000000.0 is too large (limit 1e+12)"),
    ('[params]\nw = { init = true }\n[loss]\nL = "w"\n', "m.toml: [params] w: init must be a number, a list, a name or a table, not true/false"),
    ('[params]\nw = { init = 1979-05-27 }\n[loss]\nL = "w"\n', "m.toml: [params] w: init must be a number, a list, a name or a table, got a date/time"),
    ('[params]\nw = { shape = [3000, 4000] }\n[loss]\nL = "sum(w)"\n',
     "m.toml: [params] w: shape [3000, 4000] has 12000000 elements (limit 10000000)"),
    # names
    ('[inputs]\nw = {}\n[params]\nw = {}\n[loss]\nL = "w"\n', "m.toml: [params] w: 'w' is defined twice (already an input)"),
    (with_nodes('x = "w"'), "m.toml: [nodes] x: 'x' is defined twice"),
    (with_nodes('z = "w"', loss='w = "z"'), "m.toml: [loss] w: 'w' is defined twice"),
    (with_nodes('exp = "w*x"'), "m.toml: [nodes] exp: 'exp' is reserved"),
    (with_nodes('"2z" = "w*x"'), "m.toml: [nodes] 2z: '2z' is not a valid name"),
    (with_nodes('"a__b" = "w*x"'), "m.toml: [nodes] a__b: 'a__b' is not a valid name"),
    (with_nodes('"\u0430" = "w*x"'), "m.toml: [nodes] \\u0430: '\\u0430' is not a valid name"),
    (with_nodes('"a\\nb" = "w*x"'), "m.toml: [nodes] a\\nb: 'a\\nb' is not a valid name"),
    # expressions
    (with_nodes('z = "w*q"'), "m.toml: [nodes] z: undefined name 'q'"),
    (with_nodes('z = 3'), "m.toml: [nodes] z: expected an expression in quotes, got an integer"),
    (with_nodes('z = "w*x"', loss='L = ["z"]'), "m.toml: [loss] L: expected an expression in quotes, got an array"),
    (with_nodes('z = "sinh(w*x)"'), "m.toml: [nodes] z: unknown function 'sinh'"),
    (with_nodes('z = "w(x)"'), "m.toml: [nodes] z: 'w' is not a function"),
    (with_nodes('z = "sigmoid"'), "m.toml: [nodes] z: 'sigmoid' is a function; call it, as in sigmoid(...)"),
    (with_nodes('z = "sum(x, w)"'), "m.toml: [nodes] z: sum(...) takes exactly one argument, got 2"),
    (with_nodes('z = "sigmoid()"'), "m.toml: [nodes] z: sigmoid(...) takes exactly one argument, got 0"),
    (with_nodes('z = "matmul(w)"'), "m.toml: [nodes] z: matmul(...) takes exactly 2 arguments, got 1"),
    (with_nodes('z = "matmul(w, x, b)"'), "m.toml: [nodes] z: matmul(...) takes exactly 2 arguments, got 3"),
    (with_nodes('z = "transpose(w, x)"'), "m.toml: [nodes] z: transpose(...) takes exactly one argument, got 2"),
    (with_nodes('z = "matmul(w, b=x)"'), "m.toml: [nodes] z: matmul(...) takes no keyword arguments (got 'b=')"),
    (with_nodes('z = "matmul(*x, w)"'), "m.toml: [nodes] z: a starred expression is not allowed"),
    (with_nodes('z = "matmul"'), "m.toml: [nodes] z: 'matmul' is a function; call it, as in matmul(...)"),
    (with_nodes('z = "matmul(w, q)"'), "m.toml: [nodes] z: undefined name 'q'"),
    (with_nodes('z = "w*x"', loss='L = "z.shape"'), "m.toml: [loss] L: attribute access '.shape' is not allowed (only .T"),
    (with_nodes('z = "w*x +"'), "m.toml: [nodes] z: not a valid expression (invalid syntax"),
    (with_nodes('z = "w % x"'), "m.toml: [nodes] z: operator '%' is not allowed (use + - * / ** @)"),
    (with_nodes('z = "w / 0"'), "m.toml: [nodes] z: division by zero"),
    (with_nodes('z = "w / (x - x)"'), "m.toml: [nodes] z: division by zero"),
    (with_nodes('z = "w * 0**-1"'), "m.toml: [nodes] z: division by zero (0 to a negative power)"),
    (with_nodes('z = "w * log(0)"'), "m.toml: [nodes] z: log(0) is not a finite real number"),
    (with_nodes('z = "w * (-8)**(1/3)"'), "m.toml: [nodes] z: (-8)**(1/3) is not a real number"),
    (with_nodes('z = "w * 1e13"'), "m.toml: [nodes] z: the number 10000000000000.0 is too large (limit 1e+12)"),
    (with_nodes('z = "w * 1e999"'), "m.toml: [nodes] z: the number inf is not finite"),
    (with_nodes('z = "x**10**10"'), "m.toml: [nodes] z: exponent 10000000000 is too large (limit 64)"),
    (with_nodes('z = "x**-65"'), "m.toml: [nodes] z: exponent -65 is too large (limit 64)"),
    (with_nodes('z = "(x**8)**9"'), "m.toml: [nodes] z: exponent 72 is too large (limit 64)"),
    (with_nodes('z = "w*9**9**9**9"'), "m.toml: [nodes] z: the number (9)**(387420489) is out of range"),
    (with_nodes('z = "w*' + "1" * 100 + '"'), "m.toml: [nodes] z: the number 111111111111111111111111... is too large"),
    (with_nodes('z = "w*(' + "1e12*" * 30 + '1)"'), "m.toml: [nodes] z: (1.00000000000000e+288) * (1000000000000.00) is too large (about 1e300"),
    (with_nodes('z = "w*x"', loss='L = "' + "(" * 40 + "z" + ")" * 40 + '"'),
     "m.toml: [loss] L: brackets nested deeper than 32 levels (column 33)"),
    (with_nodes('z = "' + "-" * 150 + 'w"'), "m.toml: [nodes] z: expression is nested too deeply (limit 100 levels)"),
    (with_nodes('z = "' + "w+" * 1500 + 'w"'), "m.toml: [nodes] z: expression is 3001 characters long (limit 2000)"),
    (with_nodes('z = "  "'), "m.toml: [nodes] z: the expression is empty"),
    (with_nodes('z = "\uff57*x"'), "m.toml: [nodes] z: character 'ｗ' (U+FF57) at column 1 is not allowed (plain ASCII"),
    (with_nodes('z = "w*\u0430"'), "m.toml: [nodes] z: character 'а' (U+0430) at column 3 is not allowed"),
    (with_nodes('z = "w*x\u2028+b"'), "m.toml: [nodes] z: character U+2028 at column 4 is not allowed"),
    (with_nodes('z = "w*x # b"'), "m.toml: [nodes] z: character '#' (U+0023) at column 5 is not allowed"),
    # order of definition
    (with_nodes('z = "w*a"\na = "x"'), "m.toml: [nodes] z: 'a' is used before it is defined (nodes are read in order)"),
    (with_nodes('z = "w*z"'), "m.toml: [nodes] z: cycle: z -> z"),
    (with_nodes('a = "c*w"\nc = "a*x"\nz = "a"'), "m.toml: [nodes] a: cycle: a -> c -> a"),
    (with_nodes('z = "c + x"\na = "z*w"\nc = "a + b"'), "m.toml: [nodes] z: cycle: z -> c -> a -> z"),
    (with_nodes('z = "L*w"', loss='L = "(w*x - y)**2"'), "m.toml: [nodes] z: 'L' is the loss; nothing can use it"),
    # shapes
    ('[inputs]\nx = { shape = [3] }\n[params]\nw = {}\n[loss]\nL = "w*x"\n',
     "m.toml: [loss] L: the loss must be a scalar per sample"),
    ('[inputs]\nx = { shape = [3] }\n[params]\nW = { shape = [2, 4] }\n[loss]\nL = "sum(W @ x)"\n',
     "m.toml: [loss] L: matrix product"),
    ('[inputs]\nx = { shape = [3] }\n[params]\nv = { shape = [2] }\n[loss]\nL = "sum(v + x)"\n',
     "m.toml: [loss] L: shape mismatch"),
]


@pytest.mark.parametrize("text, message", ERRORS, ids=[(m or "fine")[8:60] for _, m in ERRORS])
def test_errors_are_one_line_with_file_entry_and_name(text, message):
    if message is None:
        parse_model(text, "m.toml")
        return
    assert error(text).startswith(message)


def test_too_many_entries():
    nodes = "\n".join(f'n{i} = "w"' for i in range(10_001))
    assert error(with_nodes(nodes)) == "m.toml: [nodes]: 10001 entries (limit 10000)"


def test_a_long_chain_of_nodes_is_fine_and_the_order_check_is_lazy():
    nodes = "\n".join(['n0 = "w*x"'] + [f'n{i} = "tanh(n{i - 1})"' for i in range(1, 2000)])
    g = parse_model(with_nodes(nodes, loss='L = "(n1999 - y)**2"'), "m.toml").graph
    assert len(g.computed) == 2001


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "none.toml", "file: no such file"),
    (lambda d: d, "file: not a regular file"),
    (lambda d: (d / "big.toml").write_text("#" * (MAX_FILE_BYTES + 1)) and d / "big.toml",
     f"file: larger than {MAX_FILE_BYTES} bytes (a model file is small text)"),
    (lambda d: (d / "latin.toml").write_bytes(b"name = '\xe9'\n") and d / "latin.toml",
     "file: not UTF-8 text (byte 0xe9 at offset 8)"),
])
def test_file_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ModelError) as e:
        load_model(path)
    assert str(e.value) == f"{path}: {message}"


def test_graph_errors_keep_the_file_and_entry():
    with pytest.raises(ModelError) as e:
        parse_model(with_nodes('z = "w*x"', loss='L = "sum(z) + q"'), "dir/net.toml")
    assert e.value.where == "dir/net.toml: [loss] L" and e.value.message == "undefined name 'q'"


# ---- hostile files: an error, nothing run, nothing written -----------------------------------------
DENIED_MODULES = {"os", "subprocess", "shutil", "socket", "pty", "ctypes", "posix", "nt", "importlib", "pickle",
                  "marshal", "code", "codeop", "runpy", "webbrowser", "urllib", "http", "multiprocessing"}


@pytest.fixture(scope="module")
def loader_imported():
    """Every example loaded once before any guard: the loader imports some modules on first use (the
    utf-8-sig codec, numpy.random, hashlib), and their import runs code the guard would refuse."""
    for example in sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.toml")):
        load_model(example)


@pytest.fixture
def guarded(monkeypatch, loader_imported):
    """Make every way to run code or a program raise, and record the modules imported meanwhile."""
    imported = []
    real_import, real_compile, real_open = builtins.__import__, builtins.compile, builtins.open

    def refuse(*args, **kwargs):
        raise AssertionError(f"a hostile model file ran something: {args!r:.200}")

    def record_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0:
            imported.append(name)
        return real_import(name, globals, locals, fromlist, level)

    def ast_only_compile(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:
            refuse(source)
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            refuse(file, mode)
        return real_open(file, mode, *args, **kwargs)

    for name in ("system", "popen", "execv", "execve", "execvp", "spawnv", "fork", "remove", "unlink"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    real_exec = builtins.exec

    def module_only_exec(source, *args, **kwargs):
        # the import system runs a module's code object from its file (a lazily imported codec or NumPy
        # submodule, when this test runs alone); anything else is refused
        if isinstance(source, types.CodeType) and source.co_name == "<module>" and Path(source.co_filename).is_file():
            return real_exec(source, *args, **kwargs)
        refuse(source)

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", module_only_exec)
    monkeypatch.setattr(builtins, "compile", ast_only_compile)
    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setattr(builtins, "__import__", record_import)
    return imported


def test_the_hostile_corpus_is_large_enough():
    assert len(HOSTILE) >= 30


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.stem)
def test_hostile_files_give_one_line_errors_and_run_nothing(path, tmp_path, monkeypatch, guarded):
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parent.parent
    before = {p.name for p in root.iterdir()}
    with pytest.raises(ModelError) as e:
        load_model(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and len(message.splitlines()) == 1 and message.isprintable()
    assert list(tmp_path.iterdir()) == []
    assert not (root / "PWNED").exists() and {p.name for p in root.iterdir()} <= before | {".pytest_cache"}
    assert not {name.split(".")[0] for name in guarded} & DENIED_MODULES, guarded


def test_a_hostile_model_name_cannot_reach_generated_code():
    """Quotes and newlines are refused in the name, which other modules print into code and documents."""
    for name in ['\\"\\"\\"', "a\\nb", "a\\\\"]:
        assert error(f'name = "{name}"\n' + HEAD + '[loss]\nL = "w"\n').startswith("m.toml: name: character")
