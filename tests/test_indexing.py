"""Indexing, slicing and joining vectors (``h[0]``, ``h[-1]``, ``h[1:3]``, ``W[0]``, ``concat(a, b)``): shapes,
gradients against finite differences and PyTorch at batch sizes 1, a side and a prime (shape-checked code), the
printed forms (LaTeX, MathML, text, NumPy) and the model file's one-line errors."""
from __future__ import annotations

import re
from xml.etree import ElementTree

import numpy as np
import pytest
import sympy as sp

from network_checks import assert_matches_reference_and_torch, spec_of
from strategies import smallest_prime_above
from symbackprop.codegen import generate_module
from symbackprop.compile import compile_gradient
from symbackprop.derive import derive
from symbackprop.graph import Graph, ModelError
from symbackprop.indexing import concat, index, scatter, slice_
from symbackprop.modelfile import parse_model
from symbackprop.printing import NetworkLatexPrinter, NetworkTextPrinter
from symbackprop.functions import FUNCTIONS
from symbackprop.tensor import TENSOR_FUNCTIONS, matmul, ones, sum_
from test_render import parse_latex

#: the names the hand-written networks below use (as model files do, with index and slice_ spelled out)
NAMESPACE = {**FUNCTIONS, **TENSOR_FUNCTIONS, "matmul": matmul, "index": index, "slice_": slice_, "concat": concat}


def vector_graph() -> Graph:
    """h = tanh(W @ x) of 4; the loss uses h[0], h[-1], h[1:3] and concat(h[2], s, h[:2])."""
    g = Graph("indexed")
    x, s, y = g.input("x", (3,)), g.input("s"), g.input("y", (4,))
    W, v = g.param("W", (4, 3)), g.param("v", (4,))
    h = g.node("h", sp.tanh(W @ x))
    c = g.node("c", concat(h[2], s, h[:2]))
    g.node("first", h[0] * h[-1])
    g.loss("L", sum_((c - y) ** 2) / 2 + g.symbol("first") + sum_(h[1:3] * v[1:3]) + v.T @ h)
    return g


# ---- shapes and positions ------------------------------------------------------------------------------------------
def test_positions_follow_python_and_are_resolved_when_a_node_is_defined():
    g = Graph()
    h = g.input("h", (5,))
    W = g.param("W", (3, 4))
    cases = {"a": (h[-1], index(h, 4), ()), "b": (h[1:3], slice_(h, 1, 3), (2,)),
             "c": (h[3:], slice_(h, 3, 5), (2,)), "d": (h[-2:10], slice_(h, 3, 5), (2,)),
             "e": (h[2:3], index(h, 2), ()),  # a slice of one element of a vector is that element
             "f": (W[0], index(W, 0), (4,)),  # a row of a matrix, as a vector
             "g": (W[1:], slice_(W, 1, 3), (2, 4)), "k": (W[-1:], slice_(W, 2, 3), (1, 4)),
             "m": (W[2][-1], index(index(W, 2), 3), ()),
             "n": (concat(h, W[0], h[0]), concat(h, index(W, 0), index(h, 0)), (10,))}
    for name, (written, resolved, shape) in cases.items():
        g.node(name, written)
        assert g[name].expr == resolved, name
        assert g[name].shape == shape, name


def test_wrong_positions_are_one_line_errors_naming_the_node_and_the_shape():
    g = Graph()
    h, s, W = g.input("h", (3,)), g.input("s"), g.param("W", (2, 4))
    for expr, message in [(h[3], "node 'a': index 3 is out of range for h of shape (3,) (0 to 2, or -3 to -1"),
                          (h[-4], "index -4 is out of range for h of shape (3,)"),
                          (W[2], "index 2 is out of range for W of shape (2, 4)"),
                          (s[0], "node 'a': cannot index s: it is a scalar (shape ())"),
                          (h[2:1], "the slice h[2:1] of shape (3,) is empty"),
                          (concat(h, W), "concat joins vectors and scalars, but W is a matrix of shape (2, 4)")]:
        with pytest.raises(ModelError) as e:
            g.node("a", expr)
        assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TypeError, match=r"a slice with a step .* is not supported"):
        h[::2]
    with pytest.raises(TypeError, match="an index must be a whole number, got 1.5"):
        h[1.5]
    with pytest.raises(TypeError, match="one position only"):
        W[0, 1]
    with pytest.raises(TypeError):
        iter(h)  # an index does not make a quantity a sequence


def test_backward_rules_scatter_into_zeros_and_split():
    g = vector_graph()
    d = derive(g)
    dc = d.adjoint("c")
    # h feeds c = concat(h[2], s, h[:2]): its adjoint picks dL/dc's parts back into the positions they came from
    assert scatter(index(dc, 0), 2, 4) in sp.Add.make_args(d.adjoint_value("h"))
    assert scatter(slice_(dc, 2, 4), 0, 4) in sp.Add.make_args(d.adjoint_value("h"))
    assert index(ones(4), 1) == 1 and slice_(ones(5), 1, 3) == ones(2) and scatter(0, 1, 3) == 0


# ---- numbers: finite differences, PyTorch, the independent reference ------------------------------------------------
HAND_WRITTEN = {
    "element, from the end, slice": (
        [("input", "x", (3,)), ("param", "W", (4, 3)), ("param", "v", (4,)), ("input", "y", ())],
        [("h", "tanh(matmul(W, x))"), ("e", "index(h, 0) * index(h, -1) + sum(slice_(h, 1, 3) * slice_(v, 1, 3))")],
        "(e - y)**2 / 2"),
    "rows of a matrix": (
        [("input", "x", (3,)), ("param", "W", (4, 3)), ("param", "b", (3,)), ("input", "y", ())],
        [("r", "index(W, 1) + b"), ("M", "slice_(W, 2, 4)"), ("e", "sum(r * x) + sum(tanh(matmul(M, x)))")],
        "(e - y)**2 / 2"),
    "concat of vectors, scalars and parameters": (
        [("input", "x", (2,)), ("input", "s", ()), ("param", "b", (2,)), ("param", "w", ()), ("param", "V", (1, 6)),
         ("input", "y", ())],
        [("c", "concat(x * b, s, w, index(b, 0) + s, w * s)"), ("o", "sigmoid(matmul(V, c))")],
        "(o - y)**2 / 2"),
    "slice of a slice and an index of a concat": (
        [("input", "x", (5,)), ("param", "a", (5,)), ("param", "w", ()), ("input", "y", ())],
        [("u", "slice_(slice_(x * a, 1, 5), -3, 10)"), ("k", "index(concat(u, w * index(a, 4)), -1)")],
        "(k + sum(u) - y)**2 / 2"),
}


@pytest.mark.parametrize("case", sorted(HAND_WRITTEN))
def test_gradients_equal_finite_differences_and_pytorch_at_batch_sizes_1_a_side_and_a_prime(case):
    decls, nodes, loss = HAND_WRITTEN[case]
    symbols = {name: sp.Symbol(name, real=True) for _, name, _ in decls} | {
        name: sp.Symbol(name, real=True) for name, _ in nodes}
    spec = spec_of(decls, [(n, sp.sympify(t, locals={**NAMESPACE, **symbols})) for n, t in nodes], loss)
    side = max(spec.sides)
    spec.batches = (1, side, smallest_prime_above(side))  # 1, the longest side, a prime above every side
    assert_matches_reference_and_torch(spec)


def test_the_api_graph_matches_pytorch_with_shape_checks():
    pytest.importorskip("torch")
    from symbackprop.torch_eval import torch_loss_and_grad
    g = vector_graph()
    compiled = compile_gradient(g)
    rng = np.random.default_rng(4)
    params = {"W": rng.normal(size=(4, 3)), "v": rng.normal(size=4)}
    for n in (1, 4, 5):
        data = {"x": rng.normal(size=(n, 3)), "s": rng.normal(size=n), "y": rng.normal(size=(n, 4))}
        loss, grads = compiled(params, data)
        torch_loss, torch_grads = torch_loss_and_grad(g, params, data)
        assert loss == pytest.approx(torch_loss, rel=1e-12)
        for name in params:
            np.testing.assert_allclose(grads[name], torch_grads[name], rtol=1e-10, atol=1e-12)


# ---- printed forms ----------------------------------------------------------------------------------------------
def test_latex_writes_subscripts_0_based_and_stacks_concat_and_scatter():
    g = vector_graph()
    latex = derive(g).to("latex")
    # first = h[0] * h[-1]: dL/dh gets dL/dfirst h[-1] (resolved to h[3]) at position 0 and dL/dfirst h[0] at 3
    assert (r"\begin{bmatrix} \frac{\partial L}{\partial \mathrm{first}} {\mathbf{h}}_{3} \\ \mathbf{0}_{3} "
            r"\end{bmatrix}") in latex
    assert r"\begin{bmatrix} 0 \\ {\mathbf{h}}_{1:3} \\ 0 \end{bmatrix}" in latex  # dL/dv from sum(h[1:3] * v[1:3])
    printer = NetworkLatexPrinter({n: q.shape for n, q in g.quantities.items()})
    assert printer.doprint(g["c"].expr) == r"\begin{bmatrix} {\mathbf{h}}_{2} \\ s \\ {\mathbf{h}}_{0:2} \end{bmatrix}"
    # dL/dh gets dL/dc's element 0 back at position 2 of 4: zeros above and below
    assert (r"\begin{bmatrix} \mathbf{0}_{2} \\ {\frac{\partial L}{\partial \mathbf{c}}}_{0} \\ 0 \end{bmatrix}"
            in latex)
    g2 = Graph()
    W, x = g2.param("W", (3, 2)), g2.input("x", (2,))
    g2.loss("L", sum_(W[1] * x))
    latex2 = derive(g2).to("latex")
    shapes = {"W": (3, 2), "x": (2,)}
    assert NetworkLatexPrinter(shapes).doprint(W[1]) == r"{\mathbf{W}}_{1,:}"  # a row of a matrix
    assert r"\mathbf{0}_{1 \times 2} \\ \mathbf{x}^{\top} \\ \mathbf{0}_{1 \times 2}" in latex2


def _entries(line: str) -> list[str]:
    """A LaTeX line with every (innermost) bmatrix taken apart: its entries, and the line with each replaced by M."""
    parts = []
    pattern = re.compile(r"\\begin\{bmatrix\}((?:(?!\\begin\{bmatrix\}).)*?)\\end\{bmatrix\}")
    while pattern.search(line):
        parts += [e.strip() for m in pattern.finditer(line) for e in m.group(1).split(r" \\ ")]
        line = pattern.sub("M", line)
    return parts + [line]


def test_every_latex_line_is_well_formed_and_mathml_parses():
    g = vector_graph()
    d = derive(g)
    for line in d.to("latex", shapes=True).splitlines():
        for part in _entries(line):
            parse_latex(part)
    for line in d.to("mathml").splitlines():
        if line.startswith("<math"):
            ElementTree.fromstring(line)
    assert "<msub>" in d.to("mathml") and "<mtable>" in d.to("mathml")


def test_katex_renders_every_line_when_installed():
    from test_evaluate import katex_node_path
    import json
    import os
    import subprocess
    from test_evaluate import KATEX_SCRIPT
    node_path = katex_node_path()
    if node_path is None:
        pytest.skip("KaTeX check needs node and the katex package (npm install -g katex, or NODE_PATH)")
    g = vector_graph()
    d = derive(g)
    items = [(line[:60], line) for line in d.to("latex", shapes=True).splitlines()]
    result = subprocess.run(["node", "-e", KATEX_SCRIPT], input=json.dumps(items), capture_output=True, text=True,
                            timeout=300, env={**os.environ, "NODE_PATH": node_path})
    assert result.returncode == 0 and json.loads(result.stdout) == []


def test_text_writes_positions_as_the_model_does():
    g = vector_graph()
    text = derive(g).to("text")
    assert "[zeros(3); dL/dfirst * h[0]] + [dL/dfirst * h[3]; zeros(3)]" in text
    assert "[zeros(2); dL/dc[0]; zeros(1)]" in text and "[zeros(1); h[1:3]; zeros(1)]" in text
    assert NetworkTextPrinter().doprint(g["c"].expr) == "concat(h[2], s, h[0:2])"
    assert str(g.symbol("h")[1:]) == "h[1:]" and str(index(g.symbol("h") * 2, 0)) == "(2 * h)[0]"


def test_generated_code_indexes_after_the_batch_axis_and_concatenates_along_it():
    g = vector_graph()
    source = generate_module(derive(g).program(), check_shapes=True, blocked=False)  # the whole-array form, as printed
    assert "h[:, 0]" in source and "h[:, 3]" in source and "h[:, 1:3]" in source
    assert "np.concatenate((h[:, 2][:, None], s[:, None], h[:, 0:2]), axis=1)" in source
    assert "_scatter(dL_dc[:, 0], 2, (4,), True)" in source and "def _scatter(" in source
    assert "v[1:3]" in source  # a parameter has no batch axis
    # a parameter's gradient sums the scattered adjoints over the batch first: no (N, 4) array of zeros
    assert "dL_dv = (np.sum(h, axis=0) + _scatter(np.sum(t3, axis=0), 1, (4,), False))/N" in source


def test_a_concat_of_fixed_values_is_broadcast_over_the_batch():
    g = Graph()
    x, b, w = g.input("x", (3,)), g.param("b", (2,)), g.param("w")
    g.node("c", concat(b, w))  # the same for every sample
    g.loss("L", sum_(concat(b, w) * x) + sum_(g.symbol("c")))
    source = generate_module(derive(g).program(), check_shapes=True)
    assert "np.concatenate((b, [w]))" in source
    assert "np.concatenate((np.broadcast_to(b, (N, 2)), np.full((N, 1), w, dtype=DTYPE)), axis=1)" in source or \
        "np.concatenate((b, [w]))" in source
    loss, grads = compile_gradient(g)({"b": np.array([1.0, 2.0]), "w": 3.0}, {"x": np.ones((2, 3))})
    assert loss == pytest.approx(12.0)
    np.testing.assert_allclose(grads["b"], [2.0, 2.0])
    assert grads["w"] == pytest.approx(2.0)


# ---- model files -----------------------------------------------------------------------------------------------
MODEL = '''\
[inputs]
x = {{ shape = [3] }}
s = {{}}
[params]
W = {{ shape = [4, 3], init = "glorot" }}
[nodes]
h = "tanh(W @ x)"
{node}
[loss]
L = "sum(z)"
'''


def test_model_files_read_subscripts_slices_and_concat_like_the_api():
    model = parse_model(MODEL.format(node='z = "concat(h[0] * h[-1], h[1:3], W[2].T @ x, s, h[2:])"'), "m.toml")
    g = model.graph
    h, W, x, s = (g.symbol(n) for n in "hWxs")
    assert g["z"].expr == concat(index(h, 0) * index(h, 3), slice_(h, 1, 3), index(W, 2).T @ x, s, slice_(h, 2, 4))
    assert g["z"].shape == (7,)


@pytest.mark.parametrize("node, message", [
    ('z = "h[4]"', "m.toml: [nodes] z: index 4 is out of range for h of shape (4,) (0 to 3, or -4 to -1 from the end)"),
    ('z = "h[-5]"', "m.toml: [nodes] z: index -5 is out of range for h of shape (4,)"),
    ('z = "s[0]"', "m.toml: [nodes] z: cannot index s: it is a scalar (shape ()), not a vector or matrix"),
    ('z = "h[1.5]"', "m.toml: [nodes] z: an index must be a whole number such as 0 or -1, got 1.5"),
    ('z = "h[s]"', "m.toml: [nodes] z: an index must be a whole number such as 0 or -1, got s"),
    ('z = "h[1:x]"', "m.toml: [nodes] z: the end of a slice must be a whole number such as 0 or -1, got x"),
    ('z = "h[True]"', "m.toml: [nodes] z: an index must be a whole number such as 0 or -1, got True"),
    ('z = "h[::2]"', "m.toml: [nodes] z: a slice with a step is not supported in (h)[...] (use concat of indices)"),
    ('z = "W[0, 1]"', "m.toml: [nodes] z: (W)[...] takes one position (W[i] is row i of a matrix; an element is "
                      "W[i][j])"),
    ('z = "h[3:1]"', "m.toml: [nodes] z: the slice h[3:1] of shape (4,) is empty"),
    ('z = "concat(h, W)"', "m.toml: [nodes] z: concat joins vectors and scalars, but W is a matrix of shape (4, 3)"),
    ('z = "concat(h)"', "m.toml: [nodes] z: concat(...) takes 2 to 64 arguments, got 1"),
    ('z = "W[1] @ x"', "m.toml: [nodes] z: matrix product matmul(W[1], x): shapes (3,) and (3,) do not fit "
                       "(inner sizes 1 and 3); for the dot product of two vectors write W[1].T @ x"),
])
def test_model_file_errors_are_one_line_naming_the_file_the_node_and_the_shape(node, message):
    with pytest.raises(ModelError) as e:
        parse_model(MODEL.format(node=node), "m.toml")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_an_index_binds_to_the_whole_operand_it_is_appended_to():
    g = Graph()
    x, a, W = g.input("x", (5,)), g.param("a", (5,)), g.param("W", (2, 5))
    g.node("u", slice_(x * a + 1, 1, 5))
    g.node("k", (W @ x)[1])
    g.loss("L", sum_(g.symbol("u")) + g.symbol("k"))
    source = generate_module(derive(g).program(), check_shapes=True, blocked=False)  # the whole-array form, as printed
    assert "u = (a*x + 1)[:, 1:5]" in source and "k = (x @ W.T)[:, 1]" in source
    params = {"a": np.arange(5.0), "W": np.ones((2, 5))}
    loss, grads = compile_gradient(g)(params, {"x": np.ones((1, 5))})
    assert loss == pytest.approx(1 + 2 + 3 + 4 + 4 + 5)
    np.testing.assert_allclose(grads["a"], [0, 1, 1, 1, 1])
    np.testing.assert_allclose(grads["W"], [[0] * 5, [1] * 5])
