"""float32 generated code and training (``--dtype float32``; float64 stays the default everywhere).

A float32 module must compute in float32 throughout: one float64 array (a parameter not converted, an
``np.zeros`` without a dtype, an ``np.float64`` constant such as ``np.sqrt(2)``, ``np.full((N,), 1)``'s
int64) upcasts every array it meets and silently gives float64 speed. The suite's shape-checked mode
(tests/conftest.py) checks the dtype of every assignment too, so every float32 test here also checks
every intermediate value; the tests also look at every array the functions return.

Tolerance of float32 against float64: ``|g32 - g64| <= RTOL * max|g64|``, the largest element of the whole
float64 gradient (its scale: a tiny element next to large ones, or a gradient that is exactly 0 and comes
out as rounding noise, as the scale of a normalised vector does, is not held to a relative bound float32
cannot give).
float32 rounds at 6e-8; the examples' gradients agree to about 1e-6 of their scale (worst 7e-7), so
RTOL = 1e-4 leaves a margin of 100. Random networks include ill-conditioned compositions (normalising a
small vector, powers of sums that cancel): in 600 drawn networks the worst was 3e-5 of the scale, so
they are held to RANDOM_RTOL = 1e-3, with a scale of at least 1 (as tests/network_checks.py's tolerances):
their values are of order 1, and a gradient that is exactly 0 (a loss invariant to a scalar weight, as
that of a normalised vector is) comes out as float32 rounding noise of such terms, 5e-7.
"""
from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner
from hypothesis import given, settings

from conftest import EXAMPLES, ROOT
from strategies import scalar_graphs, tensor_graphs
from symbackprop.cli import main
from symbackprop.codegen import generate_module
from symbackprop.codeprint import HELPERS
from symbackprop.compile import compile_gradient, compile_trace, load_source
from symbackprop.derive import derive
from symbackprop.functions import FUNCTIONS
from symbackprop.graph import Graph, UserError
from symbackprop.initializers import initial_params
from symbackprop.modelfile import load_model
from symbackprop.tensor import matmul, ones, sum_
from symbackprop.train import train

RTOL = 1e-4
RANDOM_RTOL = 1e-3
NEURON = ROOT / "examples" / "neuron.toml"


def random_data(graph: Graph, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {q.name: rng.normal(size=(n, *q.shape)) for q in graph.input_list}


def assert_all_float32(values: dict, what: str) -> None:
    """Every array (or NumPy scalar) is float32; a Python float is allowed (the contract's scalar gradients)."""
    for name, value in values.items():
        if type(value) is float:
            continue
        assert isinstance(value, (np.ndarray, np.generic)) and value.dtype == np.float32, \
            f"{what} {name!r} is {type(value).__name__} {getattr(value, 'dtype', '')}, expected a float32 array"


def assert_agree(g32: dict, g64: dict, rtol: float, floor: float = 0.0) -> None:
    """|g32 - g64| <= rtol * max(floor, the float64 gradient's largest element over every parameter)."""
    assert g32.keys() == g64.keys()
    scale = max([np.max(np.abs(np.asarray(g, dtype=np.float64)), initial=0.0) for g in g64.values()] + [floor])
    for name in g64:
        exact = np.asarray(g64[name], dtype=np.float64)
        got = np.asarray(g32[name], dtype=np.float64)
        assert got.shape == exact.shape
        error = np.max(np.abs(got - exact), initial=0.0)
        assert error <= rtol * scale or error == 0.0, \
            f"dL/d{name}: float32 differs from float64 by {error:.3g}, more than {rtol:g} x {scale:.3g}"


# ---- every example --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_computes_in_float32_and_agrees_with_float64(path):
    graph = load_model(path).graph
    derivation = derive(graph)
    c32, c64 = compile_gradient(derivation, dtype="float32"), compile_gradient(derivation)
    assert c32.dtype == "float32" and c64.dtype == "float64"
    params = initial_params(graph, 0)
    for n in (1, 13):
        data = random_data(graph, n)
        loss32, grads32 = c32(params, data)  # shape- and dtype-checked at every assignment (conftest)
        loss64, grads64 = c64(params, data)
        assert isinstance(loss32, float) and loss32 == pytest.approx(loss64, rel=10 * RTOL)
        assert_all_float32(grads32, "gradient")
        assert_agree(grads32, grads64, RTOL)
        assert_all_float32(c32.forward(params, data), "forward value")
        assert_all_float32(compile_trace(derivation, dtype="float32")(params, data), "traced value")


def test_float64_stays_the_default_of_generated_code_and_of_compiled_gradients():
    program = derive(load_model(NEURON).graph).program()
    assert "\nDTYPE = np.float64\n" in generate_module(program, check_shapes=False)
    assert "\nDTYPE = np.float32\n" in generate_module(program, check_shapes=False, dtype="float32")
    compiled = compile_gradient(load_model(NEURON).graph)
    _, grads = compiled({"w": 0.5, "b": 0.0}, {"x": np.ones(3, dtype=np.float32), "y": np.ones(3)})
    assert compiled.dtype == "float64" and isinstance(grads["w"], float)
    assert compiled.forward({"w": 0.5, "b": 0.0}, {"x": np.ones(3, dtype=np.float32), "y": np.ones(3)})["a"].dtype == np.float64


def test_numpy_spellings_of_the_dtype_are_accepted():
    graph = load_model(NEURON).graph
    for spelling in (np.float32, np.dtype("float32"), "float32"):
        assert compile_gradient(graph, dtype=spelling).dtype == "float32"


def test_a_dtype_other_than_float32_or_float64_is_a_one_line_error():
    with pytest.raises(UserError, match=r"^dtype 'float16' is not supported \(use float64 or float32\)$"):
        compile_gradient(load_model(NEURON).graph, dtype="float16")


# ---- what could upcast ----------------------------------------------------------------------------------
def test_the_helpers_and_function_templates_keep_float32():
    x = np.linspace(-800, 800, 12, dtype=np.float32).reshape(3, 4)
    namespace = {"np": np}
    for cls in FUNCTIONS.values():
        for helper in (getattr(cls, "helper", None), getattr(cls, "helper_into", None)):
            if helper:
                exec(helper, namespace)
    for source in HELPERS.values():
        exec(source, namespace)
    for name in ("_softmax", "_logsumexp", "_sigmoid"):
        with np.errstate(over="ignore"):
            assert namespace[name](x).dtype == np.float32, name
    batch = np.ones((2, 3, 4), dtype=np.float32)
    assert namespace["_matmul"](batch, batch[:, 0, :], False, True, (3,)).dtype == np.float32
    templates = {name: cls.numpy.format(**{a: "x" for a in cls.arguments})  # every argument the same x
                 for name, cls in FUNCTIONS.items() if getattr(cls, "numpy", "")}
    assert templates, "no NumPy templates found"
    for name, template in templates.items():
        with np.errstate(all="ignore"):
            value = eval(template, {**namespace, "x": x})
        assert value.dtype == np.float32, f"{name}: {template} gives {value.dtype}"


def test_numbers_that_print_as_numpy_calls_do_not_upcast():
    """sqrt(2), log(3), exp(-1) would print as np.float64 scalars; they are written as Python floats."""
    g = Graph("constants")
    x, y = g.inputs("x y")
    w = g.param("w", (2,))
    z = g.node("z", sp.sqrt(2) * x * w + sp.log(3) + sp.sqrt(2) / 2)
    g.loss("L", sum_((z - y) ** 2) * sp.exp(-1))
    c32, c64 = compile_gradient(g, dtype="float32"), compile_gradient(g)
    assert "float(np.sqrt(2))" in c32.source and "float(np.log(3))" in c32.source
    params, data = {"w": np.array([0.3, -0.7])}, random_data(g, 5)
    loss32, grads32 = c32(params, data)
    loss64, grads64 = c64(params, data)
    assert_all_float32(grads32, "gradient")
    assert_agree(grads32, grads64, RTOL)
    assert loss32 == pytest.approx(loss64, rel=1e-6)


def test_constant_arrays_are_made_in_the_modules_dtype():
    """A folded product of per-sample scalars (np.full((N,), 1)), a vector of ones and a zero gradient
    of a parameter declared (1,) that the loss does not use (it came back float64 before)."""
    g = Graph("constants in arrays")
    s, y = g.inputs("s y")
    v = g.input("v", (3,))
    u = g.param("u", (1,))
    one = g.node("one", matmul(sp.exp(-sp.tanh(s)), sp.exp(sp.tanh(s))))
    h = g.node("h", sum_(v * ones(3)) * one)
    g.node("unused", u * s)
    g.loss("L", (h - y) ** 2)
    compiled = compile_gradient(g, dtype="float32")
    assert "dtype=DTYPE" in compiled.source
    loss, grads = compiled({"u": np.array([0.5])}, random_data(g, 4))
    assert_all_float32(grads, "gradient")
    assert grads["u"].shape == (1,) and grads["u"][0] == 0
    assert_all_float32(compiled.forward({"u": np.array([0.5])}, random_data(g, 4)), "forward value")


@pytest.mark.parametrize("blocked", [False, True], ids=["whole-array", "blocked"])
def test_the_shape_checked_mode_stops_at_a_float64_value_in_a_float32_module(blocked):
    compiled = compile_gradient(load_model(NEURON).graph, dtype="float32", check_shapes=True, blocked=blocked)
    assert "_check_shape(" in compiled.source
    head, body = compiled.source.split("def loss_and_grad", 1)  # edit loss_and_grad's z, not forward's
    z = "minus_z" if blocked else "z"  # (blocked code computes -z, which only the sigmoid reads)
    line = next(l for l in body.splitlines() if l.strip().startswith(f"{z} = "))
    edited = head + "def loss_and_grad" + body.replace(line, line.replace(f"{z} = ", f"{z} = np.float64(1.0)*"))
    module = load_source(edited, "edited")
    with pytest.raises(AssertionError, match=r"dtype check failed at line \d+ .*: "
                                             rf"{z} is float64, but the module computes in float32"):
        module.loss_and_grad({"w": 0.5, "b": 0.0}, {"x": np.ones(3), "y": np.ones(3)})


# ---- random networks ------------------------------------------------------------------------------------
@settings(max_examples=15)
@given(spec=scalar_graphs() | tensor_graphs())
def test_random_networks_compute_in_float32_and_agree_with_float64(spec):
    derivation = derive(spec.build())
    c32, c64 = compile_gradient(derivation, dtype="float32"), compile_gradient(derivation)
    for n in spec.batches:
        params, data = spec.point(n)
        with np.errstate(all="ignore"):
            loss64, grads64 = c64(params, data)
            loss32, grads32 = c32(params, data)  # every assignment shape- and dtype-checked
        assert_all_float32(grads32, "gradient")
        finite = np.isfinite(loss64) and all(np.all(np.abs(g) < 1e3) for g in grads64.values())
        if finite:  # (large values: float32's range is not the point here)
            assert_agree(grads32, grads64, RANDOM_RTOL, floor=1.0)


# ---- the command line -----------------------------------------------------------------------------------
def import_file(path):
    spec = importlib.util.spec_from_file_location("float32_grad", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_codegen_dtype_float32_writes_a_float32_module_whose_optimizer_keeps_float32(tmp_path):
    path = tmp_path / "grad32.py"
    result = CliRunner().invoke(main, ["codegen", str(ROOT / "examples" / "two_layer.toml"), "-o", str(path),
                                       "--dtype", "float32", "--optimizer", "adam"])
    assert result.exit_code == 0, result.output
    module = import_file(path)
    assert module.DTYPE is np.float32 and "Computes in float32" in module.__doc__
    graph = load_model(ROOT / "examples" / "two_layer.toml").graph
    params, data = initial_params(graph, 0), random_data(graph, 9)
    loss, grads = module.loss_and_grad(params, data)
    assert isinstance(loss, float)
    assert_all_float32(grads, "gradient")
    trained = module.train({k: np.asarray(v, dtype=np.float32) for k, v in params.items()}, data, epochs=3)
    assert_all_float32(trained, "trained parameter")
    assert module.loss_and_grad(trained, data)[0] < loss


def test_a_dtype_option_other_than_float32_or_float64_is_a_usage_error():
    result = CliRunner().invoke(main, ["codegen", str(NEURON), "-o", "x.py", "--dtype", "float16"])
    assert result.exit_code == 2
    assert "'float16' is not one of 'float64', 'float32'" in result.output


def test_train_dtype_float32_lowers_the_loss_and_saves_float32_parameters_and_checkpoints(tmp_path):
    params, checkpoint = tmp_path / "p.npz", tmp_path / "c.npz"
    args = ["train", str(NEURON), "--epochs", "30", "--optimizer", "adam", "--lr", "0.05", "--quiet",
            "--save-params", str(params), "--checkpoint", str(checkpoint)]
    result = CliRunner().invoke(main, args + ["--dtype", "float32"])
    assert result.exit_code == 0, result.output
    first, last = map(float, re.search(r"loss (\S+) \(epoch 0\) -> (\S+) \(epoch 30\)", result.output).groups())
    assert last < 0.5 * first
    saved = np.load(params)
    assert {saved[k].dtype for k in saved.files} == {np.dtype(np.float32)}
    with np.load(checkpoint) as f:
        assert '"dtype": "float32"' in str(f["config"])
        assert {f[k].dtype for k in f.files if k.startswith(("param/", "optim/")) and not k.endswith("/step")} \
            == {np.dtype(np.float32)}
    resumed = CliRunner().invoke(main, args[:3] + ["40"] + args[4:] + ["--resume", "--force"])  # float64
    assert resumed.exit_code == 1
    assert "the checkpoint's dtype is 'float32', this run's is 'float64'" in resumed.output


def test_train_dtype_float32_with_the_dask_engine_is_refused_in_one_line():
    result = CliRunner().invoke(main, ["train", str(NEURON), "--engine", "dask", "--dtype", "float32"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --dtype float32: the Dask engine computes in float64 (it adds up its blocks' gradients in "
        "float64); use the numpy engine for float32"]


# ---- training from Python ---------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "momentum": 0.9, "nesterov": True},
    {"name": "rmsprop", "momentum": 0.5, "centered": True},
    {"name": "adam", "amsgrad": True},
    {"name": "adamw"},
], ids=lambda o: o["name"])
def test_every_optimizer_trains_in_float32_close_to_float64(optimizer):
    from symbackprop.optim import make_optimizer
    graph = load_model(NEURON).graph
    rng = np.random.default_rng(1)
    x = rng.normal(size=64)
    data = {"x": x, "y": 1 / (1 + np.exp(-(2 * x - 1)))}
    settings_ = {k: v for k, v in optimizer.items() if k != "name"}
    runs = {dtype: train(graph, data, epochs=25, dtype=dtype,
                         optimizer=make_optimizer(optimizer["name"], lr=0.05, **settings_))
            for dtype in ("float32", "float64")}
    assert_all_float32(runs["float32"].params, "trained parameter")
    assert runs["float32"].losses[-1] < runs["float32"].initial_loss
    for name, value in runs["float64"].params.items():
        assert runs["float32"].params[name] == pytest.approx(value, rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("blocked", [False, True], ids=["whole-array", "blocked"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_node_that_is_a_number_is_a_scalar_of_the_modules_dtype(dtype, blocked):
    """h = 0 printed as a Python 0 made np.abs(h) an int64 (in forward's results) and _sigmoid(h) a float64
    (upcasting a float32 module); found by the random networks. It is DTYPE(0)."""
    from symbackprop.functions import sigmoid
    g = Graph()
    x, w, y = g.input("x"), g.param("w"), g.input("y")
    g.node("h", sp.Integer(0))
    g.node("k", sp.Abs(g.symbol("h")) + sigmoid(g.symbol("h")))
    g.loss("L", (w * x + g.symbol("k") - y) ** 2)
    compiled = compile_gradient(g, dtype=dtype, blocked=blocked, check_shapes=True)  # every value dtype-checked
    assert "h = DTYPE(0)" in compiled.source
    data = {"x": np.ones(3), "y": np.zeros(3)}
    loss, grads = compiled(dict(w=0.5), data)
    assert loss == pytest.approx(1.0) and grads["w"] == pytest.approx(2.0)  # (0.5 + 0 + 1/2)**2, 2 * 1 * 1
    values = compiled.forward(dict(w=0.5), data)
    assert {k: v.dtype for k, v in values.items()} == {k: np.dtype(dtype) for k in ("h", "k", "L")}
    assert values["k"].tolist() == [0.5, 0.5, 0.5]
