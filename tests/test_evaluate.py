"""The derivation evaluated at a point: every printed number against an independent evaluation.

Independent means not from symbackprop's derivation or generated code: the seed and the textbook
networks computed here with NumPy by hand, gradients by central finite differences of a NumPy forward
pass, and two published worked examples reproduced to the digits they print.
"""
import re
from math import isclose
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

from symbackprop import Graph, derive, sigmoid
from symbackprop.cli import main
from symbackprop.compile import compile_gradient, compile_trace
from symbackprop.evaluate import PointError, parse_assignments, shown_local_derivatives
from symbackprop.modelfile import load_model
from symbackprop.render import RENDERERS
from symbackprop.tensor import sum_
from symbackprop.valueprint import number_parts
from test_derive import seed_graph, shared_weight_graph, two_layer_graph

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "neuron.toml"
SEED_POINT = {"x": 1.5, "y": 1.0, "w": 0.5, "b": 0.0}


def g9(v: float) -> str:
    """A number as the text format prints it with the default 9 significant digits."""
    return f"{v:.9g}"


def seed_by_hand(x=1.5, y=1.0, w=0.5, b=0.0, lr=2.0) -> dict:
    """The seed's forward pass, backward pass and update, computed directly with NumPy."""
    z = w * x + b
    a = 1 / (1 + np.exp(-z))
    L = (a - y) ** 2 / 2
    dL_da = a - y
    da_dz = a * (1 - a)
    dL_dz = dL_da * da_dz
    return {"z": z, "a": a, "L": L, "dL/da": dL_da, "da/dz": da_dz, "dL/dz": dL_dz, "dL/dw": dL_dz * x,
            "dL/db": dL_dz, "w_new": w - lr * dL_dz * x, "b_new": b - lr * dL_dz}


# ---- the seed, number by number -----------------------------------------------------------------------------------
def test_the_seed_at_the_textbook_point_prints_every_number_of_an_independent_evaluation():
    """x = 1.5, y = 1, w = 0.5, b = 0 and the model's lr 2: each line, its numbers written out by hand."""
    result = CliRunner().invoke(main, ["derive", str(SEED), "--format", "text", "--at", "x=1.5", "--at", "y=1"])
    assert result.exit_code == 0, result.output
    v = seed_by_hand()
    a, dL_da, dL_dz = g9(v["a"]), g9(v["dL/da"]), g9(v["dL/dz"])
    expected = [
        "input                    x = 1.5",
        "input                    y = 1",
        "parameter                w = 0.5",
        "parameter                b = 0",
        "forward pass             z = w * x + b = 0.5 * 1.5 + 0 = 0.75",
        f"forward pass             a = sigmoid(z) = sigmoid(0.75) = {a}",
        f"value of the loss        L = (a - y)**2 / 2 = ({a} - 1)**2 / 2 = {g9(v['L'])}",
        "derivative of the loss   dL/da = a - y",
        f"                               = {a} - 1 = {dL_da}",
        "local derivative         da/dz = sigmoid'(z) = sigmoid(z) * (1 - sigmoid(z))",
        f"                               = {a} * (1 - {a}) = {g9(v['da/dz'])}",
        "chain rule               dL/dz = dL/da * da/dz = (a - y) * sigmoid(z) * (1 - sigmoid(z))",
        f"                               = ({dL_da}) * {g9(v['da/dz'])} = {dL_dz}",
        "gradient of a parameter  dL/dw = dL/dz * dz/dw = dL/dz * x",
        f"                               = ({dL_dz}) * 1.5 = {g9(v['dL/dw'])}",
        "gradient of a parameter  dL/db = dL/dz * dz/db = dL/dz",
        f"                               = {dL_dz}",
        "gradient-descent update  w_new = w_old - eta * dL/dw",
        f"                               = 0.5 - 2 * ({g9(v['dL/dw'])}) = {g9(v['w_new'])}",
        "gradient-descent update  b_new = b_old - eta * dL/db",
        f"                               = 0 - 2 * ({dL_dz}) = {g9(v['b_new'])}",
    ]
    assert result.output.splitlines() == expected
    assert a == "0.679178699" and dL_da == "-0.320821301"  # the example line


def test_the_seed_gradients_agree_with_central_differences_of_the_loss():
    ev = derive(seed_graph()).at(SEED_POINT)

    def loss(w, b):
        return seed_by_hand(w=w, b=b)["L"]
    h = 1e-6
    fd = {"w": (loss(0.5 + h, 0) - loss(0.5 - h, 0)) / (2 * h), "b": (loss(0.5, h) - loss(0.5, -h)) / (2 * h)}
    for name, value in ev.gradients.items():
        assert isclose(float(value), fd[name], rel_tol=1e-8), name
    assert isclose(ev.loss, seed_by_hand()["L"], rel_tol=1e-15)


def test_the_api_returns_the_numbers_and_renders_them():
    ev = derive(seed_graph()).at({"x": 1.5, "y": 1}, lr=0.1)
    v = seed_by_hand(lr=0.1)
    assert ev.value("a") == pytest.approx(v["a"], rel=1e-15)
    assert ev.value("dL/dz") == pytest.approx(v["dL/dz"], rel=1e-15)
    assert ev.value("da/dz") == pytest.approx(v["da/dz"], rel=1e-15)
    assert ev.updated["w"] == pytest.approx(v["w_new"], rel=1e-15)
    assert ev.point["w"] == 0.5  # the parameter's init
    assert g9(v["w_new"]) in str(ev) and g9(v["w_new"]) in ev.to("latex") and g9(v["w_new"]) in ev._repr_html_()


def test_without_a_learning_rate_the_update_stays_symbolic():
    text = derive(seed_graph()).at(SEED_POINT).to("text").splitlines()
    assert text[-2:] == ["gradient-descent update  w_new = w_old - eta * dL/dw",
                         "gradient-descent update  b_new = b_old - eta * dL/db"]


def test_digits_sets_the_significant_digits_everywhere():
    text = derive(seed_graph()).at(SEED_POINT, digits=4).to("text")
    assert "sigmoid(0.75) = 0.6792" in text and "= -0.3208" in text


# ---- the same numbers in every format ---------------------------------------------------------------------------
NUMBER = r"\d+(?:\.\d+)?"


def numbers_in(fmt: str, text: str) -> list[float]:
    """The numbers of one format's output, in order, with their signs and exponents."""
    if fmt in ("latex", "markdown"):
        found = re.findall(rf"(-)?({NUMBER})(?: \\times 10\^{{(-?\d+)}})?", text)
    elif fmt in ("mathml", "html"):
        text = re.sub(r"<mrow><mo>&#8722;</mo>(<mrow>)?<mn>", r"<mrow>\1<mn>-", text)  # a sign, not a binary minus
        found = re.findall(rf"<mn>(-)?({NUMBER})</mn>(?:<mo>&#215;</mo><msup><mn>10</mn>(?:<mn>|<mrow><mn>)"
                           rf"(-?\d+)</mn>)?", text)
    else:
        found = re.findall(rf"(-)?({NUMBER})(?:e([+-]\d+))?", text)
    return [float(f"{sign}{m}e{e or 0}") for sign, m, e in found]


def numeric_parts(fmt: str, ev) -> list[list[float]]:
    """For each step, the numbers of its form with values and of its value, as ``fmt`` prints them."""
    renderer = RENDERERS[fmt](ev.derivation, evaluation=ev)
    return [numbers_in(fmt, " ; ".join(renderer.numbers_of(s))) for s in renderer.all_steps]


def mazur_graph():
    g = Graph("Mazur's 2-2-2 network")
    x, y = g.input("x", shape=(2,)), g.input("y", shape=(2,))
    W1, b1 = g.param("W1", shape=(2, 2)), g.param("b1")
    W2, b2 = g.param("W2", shape=(2, 2)), g.param("b2")
    h = g.node("h", sigmoid(g.node("net_h", W1 @ x + b1)))
    o = g.node("o", sigmoid(g.node("net_o", W2 @ h + b2)))
    g.loss("L", sum_((o - y) ** 2) / 2)
    return g


MAZUR_POINT = {"x": [0.05, 0.10], "y": [0.01, 0.99], "W1": [[0.15, 0.20], [0.25, 0.30]], "b1": 0.35,
               "W2": [[0.40, 0.45], [0.50, 0.55]], "b2": 0.60}


@pytest.mark.parametrize("case", ["seed", "mazur", "tiny and huge", "seed adam", "mazur sgd nesterov step",
                                  "mazur rmsprop centered cosine"])
def test_every_format_prints_the_same_numbers(case):
    from symbackprop.optim import make_optimizer, make_schedule
    if case == "seed":
        ev = derive(seed_graph()).at(SEED_POINT, lr=2.0)
    elif case == "mazur":
        ev = derive(mazur_graph()).at(MAZUR_POINT, lr=0.5)
    elif case == "seed adam":  # the first update of each optimizer: settings, state, bias correction
        ev = derive(seed_graph(), optimizer=make_optimizer("adam", amsgrad=True, weight_decay=0.1)).at(SEED_POINT)
    elif case == "mazur sgd nesterov step":
        ev = derive(mazur_graph(), optimizer=make_optimizer("sgd", momentum=0.9, nesterov=True, weight_decay=0.01),
                    schedule=make_schedule("step", step_size=2)).at(MAZUR_POINT, lr=0.5)
    elif case == "mazur rmsprop centered cosine":
        ev = derive(mazur_graph(), optimizer=make_optimizer("rmsprop", centered=True, momentum=0.5),
                    schedule=make_schedule("cosine", T_max=5)).at(MAZUR_POINT)
    else:  # exponents: 3e-12 and 4.5e+20 in every format
        ev = derive(seed_graph()).at({"x": 3e-12, "y": 4.5e20, "w": 1e-3, "b": -2.5e-7}, lr=0.1)
    reference = numeric_parts("text", ev)
    assert sum(len(n) for n in reference) > 20
    for fmt in ("latex", "markdown", "mathml", "html"):
        assert numeric_parts(fmt, ev) == reference, fmt


def test_exponents_are_written_as_each_format_writes_them():
    ev = derive(seed_graph()).at({"x": 3e-12, "y": 1, "w": 0.5, "b": 0})
    assert "3e-12" in ev.to("text") and r"3 \times 10^{-12}" in ev.to("latex")
    assert "<mn>3</mn><mo>&#215;</mo><msup><mn>10</mn><mrow><mo>&#8722;</mo><mn>12</mn></mrow></msup>" in ev.to("mathml")
    assert number_parts(-0.0) == (False, "0", None)


# ---- published worked examples ------------------------------------------------------------------------------------
def printed_value(text: str, lhs: str) -> str:
    """The value after the last ``=`` of the step whose left-hand side is ``lhs`` (text format)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.search(rf"\s{re.escape(lhs)} = ", line):
            rows = [line] + [next_line for next_line in lines[i + 1:i + 2] if next_line.startswith(" ")]
            return rows[-1].rsplit(" = ", 1)[1]
    raise AssertionError(f"no step for {lhs}")


def to_published_digits(printed: str, published: str) -> str:
    """``printed`` (a number or a bracketed array) rounded to the decimals each ``published`` number has."""
    ours = [float(n) for n in re.findall(r"-?\d+\.?\d*(?:e[+-]\d+)?", printed)]
    theirs = re.findall(r"-?\d+\.?\d*", published)
    assert len(ours) == len(theirs), (printed, published)
    out = []
    for a, b in zip(ours, theirs):
        decimals = len(b.split(".")[1]) if "." in b else 0
        out.append(f"{a:.{decimals}f}")
    return ", ".join(out)


def test_mazur_step_by_step_example_is_reproduced_to_the_digits_it_prints():
    """Matt Mazur, "A Step by Step Backpropagation Example" (2015,
    https://mattmazur.com/2015/03/17/a-step-by-step-backpropagation-example/): inputs 0.05, 0.10, targets
    0.01, 0.99, logistic hidden and output layers with one shared bias each, E = sum 1/2 (target - out)^2,
    learning rate 0.5. The published numbers below (out_h1, out_h2, out_o1, out_o2, E_total, dE/dw5 and
    the eight updated weights) were checked against independent reproductions of the post.
    """
    text = derive(mazur_graph()).at(MAZUR_POINT, lr=0.5).to("text")
    published = {
        "h": "0.593269992, 0.596884378",
        "o": "0.75136507, 0.772928465",
        "L": "0.298371109",
        "W2_new": "0.35891648, 0.408666186, 0.511301270, 0.561370121",
        "W1_new": "0.149780716, 0.19956143, 0.24975114, 0.29950229",
    }
    for lhs, numbers in published.items():
        assert to_published_digits(printed_value(text, lhs), numbers) == numbers, lhs
    dE_dW2 = printed_value(text, "dL/dW2")
    assert to_published_digits(dE_dW2, "0.082167041, 0, 0, 0").startswith("0.082167041")  # dE_total/dw5
    assert "= [0.74136507, -0.217071535]" in text          # dE/dout_o1 = 0.74136507
    assert "[0.186815602, 0.175510053]" in text            # dout_o1/dnet_o1 = 0.186815602


def hagan_graph():
    g = Graph("Hagan's 1-2-1 network")
    p, t = g.inputs("p t")
    W1, b1 = g.param("W1", shape=(2, 1)), g.param("b1", shape=(2,))
    W2, b2 = g.param("W2", shape=(1, 2)), g.param("b2")
    a1 = g.node("a1", sigmoid(g.node("n1", W1 @ p + b1)))
    a2 = g.node("a2", W2 @ a1 + b2)
    g.loss("F", (t - a2) ** 2)
    return g


def test_hagan_neural_network_design_example_is_reproduced_to_the_digits_it_prints():
    """Hagan, Demuth, Beale & De Jesus, "Neural Network Design" (2nd ed.), chapter 11, the worked
    backpropagation example: a 1-2-1 network, logsig hidden layer, linear output, p = 1, target
    t = 1 + sin(pi/4 p), F = e^2, alpha = 0.1, printed to three significant digits. The updated weights and
    biases below were checked against an independent reproduction of the example.
    """
    point = {"p": 1, "t": 1 + np.sin(np.pi / 4), "W1": [[-0.27], [-0.41]], "b1": [-0.48, -0.13],
             "W2": [[0.09, -0.17]], "b2": 0.48}
    text = derive(hagan_graph()).at(point, lr=0.1, digits=3).to("text")
    published = {"a1": "0.321, 0.368", "a2": "0.446", "dF/dn1": "-0.0495, 0.0997",
                 "W2_new": "0.171, -0.0772", "b2_new": "0.732", "W1_new": "-0.265, -0.420", "b1_new": "-0.475, -0.140"}
    for lhs, numbers in published.items():
        assert to_published_digits(printed_value(text, lhs), numbers) == numbers, lhs
    assert printed_value(text, "dF/da2") == "-2.52"  # s2 = -2 e = -2.522, at three significant digits


# ---- every example: numbers against finite differences, valid markup ------------------------------------------------
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


def example_point(path: Path):
    """A reproducible point for an example: inputs N(0, 1) (one-hot targets as a class), init parameters."""
    g = load_model(path).graph
    rng = np.random.default_rng(0)
    point = {}
    for q in g.input_list:
        if q.onehot:
            point[q.name] = np.eye(q.shape[0])[1].reshape(q.shape)
        else:
            point[q.name] = rng.normal(size=q.shape)
    return g, point


def forward_loss(graph):
    """The loss of one sample from the generated *forward* pass only (no backward code, no derivation)."""
    forward = compile_gradient(graph).forward

    def loss(values: dict) -> float:
        params = {p.name: values[p.name] for p in graph.params}
        data = {q.name: np.asarray(values[q.name])[None] for q in graph.input_list}
        return float(forward(params, data)[graph.loss_name][0])
    return loss


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_evaluated_at_a_point_has_gradients_equal_to_finite_differences(path):
    g, point = example_point(path)
    ev = derive(g).at(point, lr=0.1)
    values = dict(ev.point)
    loss = forward_loss(g)
    h = 1e-6
    for p in g.params:
        grad = ev.gradients[p.name]
        flat = np.array(values[p.name], dtype=float).reshape(-1)
        for i in np.random.default_rng(1).choice(flat.size, size=min(flat.size, 6), replace=False):
            up, down = flat.copy(), flat.copy()
            up[i] += h
            down[i] -= h
            fd = (loss({**values, p.name: up.reshape(g[p.name].shape)})
                  - loss({**values, p.name: down.reshape(g[p.name].shape)})) / (2 * h)
            assert abs(grad.reshape(-1)[i] - fd) <= 1e-7 + 1e-5 * abs(fd), (p.name, i)
        np.testing.assert_allclose(ev.updated[p.name], values[p.name] - 0.1 * grad, rtol=1e-15, atol=1e-300)


def test_the_trace_is_the_compiled_program_per_sample():
    """trace() of a batch: per-sample gradients whose mean is loss_and_grad's, nodes as forward() gives them."""
    g = load_model(ROOT / "examples" / "mlp_sigmoid.toml").graph
    d = derive(g)
    compiled = compile_gradient(d)
    trace = compile_trace(d, shown_local_derivatives(d))
    rng = np.random.default_rng(2)
    from symbackprop.initializers import initial_params
    params = initial_params(g, 0)
    data = {"x": rng.normal(size=(5, 3)), "y": rng.normal(size=(5, 2))}
    loss, grads = compiled.loss_and_grad(params, data)
    traced = trace(params, data)
    for name, grad in grads.items():
        np.testing.assert_allclose(traced[f"dL/d{name}"].mean(axis=0), grad, rtol=1e-13, atol=1e-15)
    assert traced["L"].mean() == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(traced["a1"], compiled.forward(params, data)["a1"], rtol=1e-15)
    np.testing.assert_allclose(traced["da1/dz1"], traced["a1"] * (1 - traced["a1"]), rtol=1e-15)
    assert traced["dL/dW1"].shape == (5, 4, 3) and traced["dL/dz1"].shape == (5, 4)


# ---- KaTeX-valid LaTeX and well-formed MathML at a point --------------------------------------------------------------
LATEX_CELL = re.compile(r"-?\d+(\.\d+)?( \\times 10\^\{-?\d+\})?|\\[vcd]dots|\\infty|\\mathrm\{NaN\}")


def without_matrices(line: str) -> str:
    """matplotlib's mathtext has no bmatrix: each matrix becomes one letter, its cells checked to be numbers."""
    for body in re.findall(r"\\begin\{bmatrix\}(.*?)\\end\{bmatrix\}", line):
        rows = [row.split(" & ") for row in body.split(r" \\ ")]
        assert len({len(r) for r in rows}) == 1, body
        assert all(LATEX_CELL.fullmatch(cell) for row in rows for cell in row), body
    return re.sub(r"\\begin\{bmatrix\}.*?\\end\{bmatrix\}", "M", line)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_at_a_point_gives_well_formed_latex_and_mathml(path):
    from xml.etree import ElementTree
    from test_render import parse_latex
    g, point = example_point(path)
    ev = derive(g).at(point, lr=0.1)
    for line in ev.to("latex", shapes=True).splitlines():
        parse_latex(without_matrices(line))
    assert r"\begin{bmatrix}" in ev.to("latex") or not any(q.shape for q in g.quantities.values())
    for line in ev.to("mathml").splitlines():
        if line.startswith("<math"):
            ElementTree.fromstring(line)


def test_vectors_and_matrices_are_elided_past_six_rows_or_columns():
    g = load_model(ROOT / "examples" / "digits.toml").graph
    point = {"x": np.linspace(-1, 1, 64), "y": np.eye(10)[3]}
    ev = derive(g).at(point)
    text = ev.to("text")
    assert "x = [-1, -0.968253968, -0.936507937, ..., 0.968253968, 1]" in text
    latex = ev.to("latex")
    assert r"\vdots" in latex and r"\cdots" in latex and r"\ddots" in latex
    assert "&#8942;" in ev.to("mathml")  # the vertical ellipsis


# ---- reading a point -------------------------------------------------------------------------------------------
def test_assignments_are_read_as_numbers_and_lists_without_eval():
    assert parse_assignments(["x=1.5", "v = [0.05, 0.1]", "M=[[1, 2], [3, 4]]", "n=-2e-3"]) == {
        "x": 1.5, "v": [0.05, 0.1], "M": [[1, 2], [3, 4]], "n": -2e-3}
    for bad in ["x=__import__('os')", "x=abc", "x=[1, 2", "x", "=1"]:
        with pytest.raises(PointError):
            parse_assignments([bad])


@pytest.mark.parametrize("args, message", [
    (["--at", "x=1.5"], "Error: --at: no value for input 'y' (give --at y=VALUE)"),
    (["--at", "x=1.5", "--at", "y=1", "--at", "q=2"],
     "Error: --at q: 'q' is not an input or parameter (choose from: x, y, w, b)"),
    (["--at", "x=1.5", "--at", "y=1", "--at", "z=2"],
     "Error: --at z: 'z' is a node, not an input or parameter (choose from: x, y, w, b)"),
    (["--at", "x=[1.5, 2]", "--at", "y=1"], "Error: --at x: the value has shape [2], but input 'x' is a scalar"),
    (["--at", "x=1.5", "--at", "y=one"], "Error: --at y: cannot read 'one' as a number or a list of numbers "
                                         "(write 1.5, or [0.05, 0.1], or [[1, 2], [3, 4]])"),
    (["--at", "x=__import__('os').system('true')", "--at", "y=1"], "Error: --at x: cannot read"),
    (["--at", "x=True", "--at", "y=1"], "Error: --at x: expected a number or a rectangular list of numbers"),
    (["--at", "x=1e999", "--at", "y=1"], "Error: --at x: values must be finite numbers"),
    (["--at", "x=1", "--at", "x=2"], "Error: --at x: given twice"),
    (["--sample", "256"], "Error: --sample 256: the data has 256 samples (give 0 to 255)"),
    (["--data", "d.csv"], "Error: --data gives the data of --sample K: give --sample too"),
    (["--lr", "0.1"], "Error: --lr gives the numbers of the updates: use it with --at or --sample"),
    (["--at", "x=1", "--at", "y=1", "--lr", "0"], "Error: Invalid value for '--lr'"),
])
def test_bad_points_are_one_line_errors(args, message):
    result = CliRunner().invoke(main, ["derive", str(SEED), *args])
    assert result.exit_code != 0 and result.exit_code in (1, 2)
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(message) and "Traceback" not in result.output


def test_a_matrix_of_the_wrong_shape_names_both_shapes():
    result = CliRunner().invoke(main, ["derive", str(ROOT / "examples" / "mlp_sigmoid.toml"), "--at", "x=[1, 2, 3]",
                                       "--at", "y=[0, 1]", "--at", "W1=[[1, 2], [3, 4]]"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --at W1: the value has shape [2, 2], but parameter 'W1' has shape [4, 3]")


def test_sample_k_takes_the_inputs_of_the_models_data_and_at_replaces_them():
    from symbackprop.data import model_data
    m = load_model(SEED)
    data = model_data(m.graph, m.data, source=str(SEED)).train
    result = CliRunner().invoke(main, ["derive", str(SEED), "--format", "text", "--sample", "7", "--at", "w=1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:3] == [f"input                    x = {g9(data['x'][7])}",
                         f"input                    y = {g9(data['y'][7])}", "parameter                w = 1"]
    v = seed_by_hand(x=data["x"][7], y=data["y"][7], w=1.0)
    assert printed_value(result.output, "dL/dw") == g9(v["dL/dw"])


def test_scalar_graphs_from_the_api_evaluate_like_sympy_at_high_precision():
    """Every node and gradient of three scalar graphs against SymPy's own evaluation (30 digits)."""
    for make, point in [(seed_graph, {"x": 0.3, "y": -0.2, "w": -1.1, "b": 0.4}),
                        (two_layer_graph, {"x": 0.7, "y": 0.1, "w1": 0.2, "b1": -0.3, "w2": 1.3, "b2": 0.5}),
                        (shared_weight_graph, {"x": -0.4, "y": 0.9, "w": 0.8, "b": 0.1})]:
        g = make()
        ev = derive(g).at(point)
        subs = {g.symbol(n): sp.Float(v, 30) for n, v in point.items()}
        flat = g.flattened()
        for q in g.computed:
            exact = flat[q.symbol].subs(subs).rewrite(sp.exp).evalf(30)
            assert ev.value(q.name) == pytest.approx(float(exact), rel=1e-13, abs=1e-15), q.name
        loss = flat[g.symbol(g.loss_name)]
        for p in g.params:
            exact = sp.diff(loss.rewrite(sp.exp), p.symbol).subs(subs).evalf(30)
            assert float(ev.gradients[p.name]) == pytest.approx(float(exact), rel=1e-12, abs=1e-15), p.name


# ---- real KaTeX (optional: needs node and the katex package) ----------------------------------------------------
KATEX_SCRIPT = """
const katex = require('katex');
const items = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const failures = [];
for (const [where, tex] of items) {
  try { katex.renderToString(tex, {throwOnError: true, displayMode: true, strict: 'error'}); }
  catch (e) { failures.push([where, String(e.message).slice(0, 300)]); }
}
console.log(JSON.stringify(failures));
"""


def katex_node_path() -> str | None:
    """NODE_PATH under which ``require('katex')`` works (NODE_PATH as set, or npm's global modules), or None."""
    import os
    import shutil
    import subprocess
    if shutil.which("node") is None:
        return None
    paths = [os.environ.get("NODE_PATH", "")]
    if shutil.which("npm"):
        root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True, timeout=60)
        paths.append(root.stdout.strip())
    node_path = os.pathsep.join(p for p in paths if p)
    found = subprocess.run(["node", "-e", "require.resolve('katex')"], capture_output=True, timeout=60,
                           env={**os.environ, "NODE_PATH": node_path})
    return node_path if found.returncode == 0 else None


def test_every_example_with_and_without_a_point_renders_in_katex():
    """Each LaTeX line and each aligned block, through KaTeX itself with strict errors (as a notebook or a
    Markdown viewer would render it). Skips without node and katex (`npm install -g katex`; .ci/run does)."""
    import json
    import os
    import subprocess
    node_path = katex_node_path()
    if node_path is None:
        pytest.skip("KaTeX check needs node and the katex package (npm install -g katex, or NODE_PATH)")
    items = []
    for path in EXAMPLES:
        g, point = example_point(path)
        d = derive(g)
        ev = d.at(point, lr=0.1)
        for label, text in [("plain", d.to("latex", shapes=True)), ("at", ev.to("latex", shapes=True))]:
            items += [(f"{path.stem} {label}: {line[:60]}", line) for line in text.splitlines()]
        items.append((f"{path.stem} aligned", d._repr_latex_().strip("$")))
        items.append((f"{path.stem} aligned at", ev._repr_latex_().strip("$")))
        blocks = ev.to("markdown").split("$$")[1::2]
        items += [(f"{path.stem} markdown block", b.strip()) for b in blocks]
    result = subprocess.run(["node", "-e", KATEX_SCRIPT], input=json.dumps(items), capture_output=True, text=True,
                            timeout=300, env={**os.environ, "NODE_PATH": node_path})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [] and len(items) > 300
