"""Blocked, in-place generated code (symbackprop.blocked): the same numbers as the whole-array code.

``loss_and_grad`` runs a batch in blocks of ``BLOCK`` samples and writes each value in place into a
buffer; the loss and the gradients are sums added up block by block. Here the block is small
(:data:`BLOCK` samples), so that every batch size that matters stays a few samples: below one block,
exactly one block, a multiple of the block, and above one block but not a multiple of it (the last block
is shorter, and its buffers are views of their first rows). All of it shape-checked (tests/conftest.py
sets SYMBACKPROP_CHECK_SHAPES=1: in blocked code every value of a block is checked as (_n, *shape)).

Tolerance: the sums are added in another order (block by block, einsum), and products are multiplied
in another order, so the results agree to float rounding, not bit for bit:
``|blocked - whole| <= BLOCKED_TOL * max(1, |whole|)`` per element, with BLOCKED_TOL = 1e-12. On 550 random
networks (150 scalar, 400 tensor, at the batch sizes below) the largest such difference was 2.4e-15.
"""
from __future__ import annotations

import importlib.util
import re
import threading
from unittest import mock

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

import symbackprop.blocked
import symbackprop.codegen
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLES
from helpers import load_example
from strategies import scalar_graphs, tensor_graphs
from test_generated_code_checks import BatchSummingPrinter, layer
from symbackprop import Graph, concat, maximum
from symbackprop.cli import main
from symbackprop.codegen import _elementwise_classes, generate_module
from symbackprop.compile import compile_gradient, load_source
from symbackprop.derive import derive
from symbackprop.tensor import softmax, sum_
from symbackprop.verify import check_point

#: samples per block in these tests (prime, larger than every side of the random networks)
BLOCK = 5
#: below one block, exactly one, a multiple of it, and above one block but not a multiple
BATCHES = (3, BLOCK, 2 * BLOCK, 2 * BLOCK + 2)
#: |blocked - whole| <= BLOCKED_TOL * max(1, |whole|) per element (float rounding of reordered sums)
BLOCKED_TOL = 1e-12


def assert_same_to_rounding(blocked: tuple, whole: tuple, what: str) -> None:
    (loss_b, grads_b), (loss_w, grads_w) = blocked, whole
    assert type(loss_b) is float
    assert abs(loss_b - loss_w) <= BLOCKED_TOL * max(1.0, abs(loss_w)), f"{what}: loss {loss_b} != {loss_w}"
    assert grads_b.keys() == grads_w.keys()
    for name, w in grads_w.items():
        b = grads_b[name]
        assert type(b) is type(w) and np.shape(b) == np.shape(w), f"{what}: dL/d{name} {type(b)} {np.shape(b)}"
        error = np.abs(np.asarray(b) - np.asarray(w)) / np.maximum(1.0, np.abs(w))
        assert np.all(error <= BLOCKED_TOL), f"{what}: dL/d{name} {b} != {w} (scaled error {error.max():.1e})"


def blocked_and_whole(graph):
    derivation = derive(graph)
    return (compile_gradient(derivation, block=BLOCK), compile_gradient(derivation, blocked=False))


# ---- every example ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_blocked_code_equals_whole_array_code_on_every_example(example):
    model = load_example(example)
    blocked, whole = blocked_and_whole(model.graph)
    assert "_check_shape(" in blocked.source and "for _start in range(0, N, _rows):" in blocked.source
    for n in BATCHES:
        params, data = check_point(model.graph, model.data, samples=n)
        assert_same_to_rounding(blocked(params, data), whole(params, data), f"{example.name} at N={n}")


def test_the_module_codegen_writes_is_blocked_and_gives_the_compiled_callables_floats(tmp_path):
    example = next(p for p in EXAMPLES if p.stem == "two_layer")
    model = load_example(example)
    path = tmp_path / "grad.py"
    result = CliRunner().invoke(main, ["codegen", str(example), "-o", str(path), "--block", str(BLOCK)])
    assert result.exit_code == 0, result.output
    assert f"BLOCK = {BLOCK} " in path.read_text()
    spec = importlib.util.spec_from_file_location("blocked_grad", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    blocked = compile_gradient(model.graph, block=BLOCK)
    whole = compile_gradient(model.graph, blocked=False)
    for n in BATCHES:
        params, data = check_point(model.graph, model.data, samples=n)
        from_file = module.loss_and_grad(params, data)
        from_compiled = blocked(params, data)
        assert from_file[0] == from_compiled[0]  # the same source: the same floats
        for k, g in from_compiled[1].items():
            assert np.array_equal(from_file[1][k], g), k
        assert_same_to_rounding(from_file, whole(params, data), f"module at N={n}")


# ---- random networks -------------------------------------------------------------------------------------
def check_random_network(spec) -> None:
    blocked, whole = blocked_and_whole(spec.build())
    for n in BATCHES:
        params, data = spec.point(n)
        with np.errstate(all="ignore"):
            expected = whole(params, data)
        assume(np.isfinite(expected[0]) and all(np.all(np.isfinite(g)) for g in expected[1].values()))
        assert_same_to_rounding(blocked(params, data), expected, f"{spec!r}\nat N={n}")


def test_a_slice_keeps_the_buffer_it_views_until_its_own_last_use():
    """t0 = h2[:, 0:5] is a view of h2's buffer, read again for dL/dh2 after h2's last use: found by the random
    tensor networks (h3 took h2's buffer and overwrote the values t0 shows, and dL/dw0 came out 1.8x too big)."""
    from symbackprop.functions import sigmoid
    from symbackprop.indexing import concat, slice_
    g = Graph("slice of a buffer")
    x0, y = g.input("x0", (4,)), g.input("y", (5,))
    w0 = g.param("w0")
    h1 = g.node("h1", sigmoid(x0))
    h2 = g.node("h2", 2 * w0 + concat(4 * w0, h1))
    h3 = g.node("h3", slice_(h2, 0, 5) ** 2)
    g.loss("L", sum_((h3 - y) ** 2) / 2)
    blocked, whole = blocked_and_whole(g)
    rng = np.random.default_rng(0)
    for n in BATCHES:
        params, data = {"w0": 0.3}, {"x0": rng.normal(size=(n, 4)), "y": rng.normal(size=(n, 5))}
        assert_same_to_rounding(blocked(params, data), whole(params, data), f"at N={n}")


@settings(max_examples=12)
@given(spec=scalar_graphs())
def test_blocked_code_equals_whole_array_code_on_random_scalar_networks(spec):
    check_random_network(spec)


@settings(max_examples=25)
@given(spec=tensor_graphs())
def test_blocked_code_equals_whole_array_code_on_random_tensor_networks(spec):
    check_random_network(spec)


def test_a_value_that_is_a_view_of_a_buffer_keeps_that_buffer_from_reuse():
    """t = dL_dh1[:, 0] is a NumPy view of dL_dh1's buffer: the buffer is not handed to another value while t
    is still read (found by the random networks of issue 12: wrong gradients, 0.12 for -0.0014)."""
    g = Graph()
    s0, y = g.input("s0"), g.input("y", (2,))
    b0, b1, w0 = g.param("b0", (2,)), g.param("b1", (2,)), g.param("w0")
    cosine = sum_((b0 + w0) * (b1 + w0)) / sp.sqrt(sum_((b0 + w0) ** 2) * sum_((b1 + w0) ** 2))
    g.node("h1", s0 + concat(cosine, s0))
    g.loss("L", sum_((sp.tanh(g.symbol("h1")) - y) ** 2) / 2)
    blocked, whole = blocked_and_whole(g)
    assert re.search(r"^ +t\d+ = dL_dh1\[:, 0\]$", blocked.source, re.MULTILINE)  # the view this is about
    rng = np.random.default_rng(0)
    params = {"b0": rng.normal(size=2), "b1": rng.normal(size=2), "w0": 0.3}
    for n in BATCHES:
        data = {"s0": rng.normal(size=n), "y": rng.normal(size=(n, 2))}
        assert_same_to_rounding(blocked(params, data), whole(params, data), f"N={n}")
        loss, grads = compile_gradient(g)(params, data)  # codegen's default block: one block
        assert_same_to_rounding((loss, grads), whole(params, data), f"default block, N={n}")


def test_a_sum_over_a_per_sample_scalar_is_the_same_array_and_keeps_its_buffer():
    """t1 = sum_(t0) of a per-sample scalar prints as t0 itself: t0's buffer is not reused while t1 is read
    (found by the random networks: the loss was 3.75 for 229.98)."""
    g = Graph()
    x0, s0, W0, w0 = g.input("x0", (2,)), g.input("s0"), g.param("W0", (1, 2)), g.param("w0")
    x1, y = g.input("x1", (2, 2)), g.input("y", (1, 2))
    g.node("h1", maximum(s0 ** 2, x1[0:1]) @ x0)
    g.node("h2", g.symbol("h1") @ (W0 + 3 * w0))
    g.node("h4", 2 * g.symbol("h2") * w0 * sum_(s0 ** 2) / sp.Abs(sum_(s0 ** 2)))
    g.loss("L", sum_((g.symbol("h4") - y) ** 2) / 2)
    blocked, whole = blocked_and_whole(g)
    assert re.search(r"^ +t\d+ = t\d+$", blocked.source, re.MULTILINE)  # the sum over a scalar this is about
    rng = np.random.default_rng(0)
    params = {"W0": rng.normal(size=(1, 2)), "w0": 0.3}
    for n in BATCHES:
        data = {"x0": rng.normal(size=(n, 2)), "x1": rng.normal(size=(n, 2, 2)), "s0": rng.normal(size=n),
                "y": rng.normal(size=(n, 1, 2))}
        assert_same_to_rounding(blocked(params, data), whole(params, data), f"N={n}")
        assert_same_to_rounding(compile_gradient(g)(params, data), whole(params, data), f"default block, N={n}")


# ---- 1/N folded into the loss's adjoint seed -------------------------------------------------------------
def folding_always():
    """Fold 1/N wherever it is right, however small the gradients (the default folds only where it saves work)."""
    return mock.patch.object(symbackprop.blocked, "FOLD_SAMPLES", 0)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_folding_1_over_n_into_the_seed_gives_the_whole_array_codes_loss_and_gradients_on_every_example(example):
    model = load_example(example)
    with folding_always():
        blocked, whole = blocked_and_whole(model.graph)
    if example.stem in ("two_layer", "mlp_sigmoid", "iris", "neuron"):
        assert "_inv_N = 1/N" in blocked.source and "/= N" not in blocked.source
    for n in BATCHES:
        params, data = check_point(model.graph, model.data, samples=n)
        assert_same_to_rounding(blocked(params, data), whole(params, data), f"{example.name} at N={n}")


@settings(max_examples=12)
@given(spec=scalar_graphs())
def test_folding_1_over_n_gives_the_whole_array_codes_results_on_random_scalar_networks(spec):
    with folding_always():
        check_random_network(spec)


@settings(max_examples=25)
@given(spec=tensor_graphs())
def test_folding_1_over_n_gives_the_whole_array_codes_results_on_random_tensor_networks(spec):
    with folding_always():
        check_random_network(spec)


def test_the_seed_divides_its_two_gradients_by_n_and_a_784_128_10_net_folds_1_over_n_into_its_output_error():
    seed = seed_source()
    assert "_inv_N" not in seed and "dL_dw /= N" in seed and "dL_db /= N" in seed
    g = Graph("784-128-10")
    x, y = g.input("x", (784,)), g.input("y", (10,), onehot=True)
    W1, b1 = g.param("W1", (128, 784)), g.param("b1", (128,))
    W2, b2 = g.param("W2", (10, 128)), g.param("b2", (10,))
    a1 = g.node("a1", sp.tanh(g.node("z1", W1 @ x + b1)))
    p = g.node("p", softmax(g.node("z2", W2 @ a1 + b2)))
    g.loss("L", -sum_(y * sp.log(p)))
    source = generate_module(derive(g).program(), check_shapes=False)
    lines = loop_lines(source)
    assert "_inv_N = 1/N" in source and "/= N" not in source
    # the output error, once: (p - y)/N, and no gradient divided after the blocks
    assert lines[lines.index("np.subtract(p, y, out=dL_dz2)") + 1] == "np.multiply(dL_dz2, _inv_N, out=dL_dz2)"
    assert "# dL/dz2 = p - y   (times 1/N: the mean's derivative)" in source


# ---- what the blocked code is made of --------------------------------------------------------------------
def seed_source(**options) -> str:
    model = load_example(next(p for p in EXAMPLES if p.stem == "neuron"))
    return generate_module(derive(model.graph).program(), check_shapes=False, **options)


def loop_lines(source: str) -> list[str]:
    body = source.split("def loss_and_grad", 1)[1].split("    for _start in", 1)[1].split("\n    loss = ", 1)[0]
    return [line.strip() for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_seeds_block_is_written_in_place_into_buffers_allocated_before_the_loop():
    source = seed_source()
    lines = loop_lines(source)
    # z is read only by sigmoid(z): computed negated, the sign on the scalar w, and the sigmoid takes -z
    assert "np.multiply(-w, x, out=minus_z)" in lines and "np.subtract(minus_z, b, out=minus_z)" in lines
    assert "_sigmoid_of_negative_into(minus_z, a)" in lines  # the sigmoid without a new array
    assert "np.subtract(1, a, out=dL_dz)" in lines           # dL/dz = (a - y) a (1 - a), in its buffer
    assert not [line for line in lines if "np.empty" in line]  # every buffer allocated once per call
    assert "BLOCK = 65536" in source and "_rows = min(N, BLOCK)" in source   # 65,536 values per buffer


def test_a_scalar_gradient_is_summed_per_block_without_multithreaded_blas():
    """``dL_dz @ x`` of more than 10,000 samples runs on every core in OpenBLAS, and a busy core stalls it
    (benchmarks/README.md): the dot product is an einsum, which NumPy never threads."""
    lines = loop_lines(seed_source())
    assert 'dL_dw = _add_block(dL_dw, np.einsum("i,i->", dL_dz, x))' in lines
    assert not [line for line in lines if " @ " in line]
    assert 'dL_dw = np.einsum("i,i->", dL_dz, x)/N' not in seed_source()  # (the mean comes after the loop)
    assert "    dL_dw /= N" in seed_source()


def test_values_whose_lifetimes_do_not_overlap_share_a_buffer():
    source = seed_source()
    buffers = re.findall(r"^    (_b\d+) = np\.empty\(_rows, dtype=DTYPE\)$", source, re.MULTILINE)
    assigned = re.findall(r"^        (\w+) = (_b\d+)$", source, re.MULTILINE)
    assert len(buffers) == 3 < len(assigned)  # z, a, t0, L, dL_dz in three buffers
    assert dict(assigned)["t0"] == dict(assigned)["minus_z"]   # -z is dead once a is computed


def test_the_seeds_block_makes_as_many_passes_over_its_samples_as_the_best_hand_written_numpy():
    """12 NumPy calls per block, as bench_seed.reference_blocked: z = w x + b negated (2), the sigmoid of -z
    (3), a - y and the sum of its squares (2), dL/dz (3), and the sums for dL/dw and dL/db (2)."""
    lines = loop_lines(seed_source())
    passes = [line for line in lines if re.match(r"(\w+ = )?(_add_block\(\w+, )?(np\.|_sigmoid)", line)
              or line.startswith("_loss += ")]
    helper_calls = {"_sigmoid_of_negative_into": 3}  # exp, add, divide
    calls = sum(next((n for f, n in helper_calls.items() if line.startswith(f)), 1) for line in passes)
    assert calls == 12, passes


def test_the_sigmoid_of_minus_x_gives_the_sigmoids_floats_and_saturates_without_a_warning():
    namespace = {"np": np}
    from symbackprop.functions import sigmoid
    exec(sigmoid.helper_into, namespace)
    exec(sigmoid.helper_into_negative, namespace)
    x = np.array([-1000.0, -709.8, -30.0, -1.5, 0.0, 1e-300, 2.5, 40.0, 1000.0])
    expected, got = np.empty_like(x), np.empty_like(x)
    namespace["_sigmoid_into"](x, expected)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # (exp(-1000) underflows to 0, as in NumPy)
        namespace["_sigmoid_of_negative_into"](-x, got)
    assert np.array_equal(got, expected)
    assert got[0] == 0.0 and got[-1] == 1.0 and got[4] == 0.5


def test_no_block_gives_the_whole_array_form(tmp_path):
    source = seed_source(blocked=False)
    assert "BLOCK" not in source and "_add_block" not in source and "out=" not in source
    assert "    dL_dz = dL_da*a*(1 - a)" in source
    example = str(next(p for p in EXAMPLES if p.stem == "neuron"))
    result = CliRunner().invoke(main, ["codegen", example, "-o", str(tmp_path / "g.py"), "--no-block", "--no-check-shapes"])
    assert result.exit_code == 0, result.output
    written = (tmp_path / "g.py").read_text()
    assert written.split("def loss_and_grad", 1)[1] == source.split("def loss_and_grad", 1)[1]


def test_codegen_refuses_a_block_of_no_samples_and_block_with_no_block(tmp_path):
    example = str(next(p for p in EXAMPLES if p.stem == "neuron"))
    for args in (["--block", "0"], ["--block", "4", "--no-block"]):
        result = CliRunner().invoke(main, ["codegen", example, "-o", str(tmp_path / "g.py"), *args])
        assert result.exit_code != 0
        assert "Traceback" not in result.output
    with pytest.raises(ValueError, match="block must be a whole number of samples"):
        seed_source(block=0)


def test_a_wrong_shape_in_a_block_fails_at_its_line_in_the_shape_checked_mode():
    """The shape-checked mode checks each value of a block as (_n, *shape), here in the first block. (A
    value written in place cannot take a wrong shape: the ufunc refuses an ``out`` of another shape.)"""
    g = Graph("softmax layer")
    x, y = g.input("x", (3,)), g.input("y", (4,), onehot=True)
    p = g.node("p", softmax(g.node("z", g.param("W", (4, 3)) @ x)))
    g.loss("L", sum_((p - y) ** 2))  # (with cross-entropy, p = exp(z - logsumexp(z)) is written in place)
    source = generate_module(derive(g).program(), check_shapes=True, block=BLOCK)
    assert '        _check_shape("p", p, (4,), _n)' in source
    broken = source.replace("        p = _softmax(z)\n", "        p = _softmax(z)[:, None, :]\n")
    assert broken != source
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(2 * BLOCK + 2, 3)), "y": np.eye(4)[rng.integers(0, 4, 2 * BLOCK + 2)]}
    with pytest.raises(AssertionError, match=r"p has shape \(5, 1, 4\), but the derivation inferred \(N, 4\)"):
        load_source(broken, "broken").loss_and_grad({"W": rng.normal(size=(4, 3))}, data)


def test_the_shape_checked_mode_checks_every_value_of_a_block_and_every_gradient():
    source = compile_gradient(layer(), check_shapes=True, block=BLOCK).source
    loop = source.split("    for _start in", 1)[1].split("\n    loss = ", 1)[0]
    values = [n for n in re.findall(r"^        (\w+) = (?!arrays)", loop, re.MULTILINE) if not n.startswith("_")]
    values = [n for n in values if not n.startswith("dL_dW") and not n.startswith("dL_dc")]  # block sums
    assert values and all(f'_check_shape("{n}", {n}, ' in loop for n in values)
    assert '_check_shape("h", h, (2,), _n)' in loop                # a value per sample of the block: (_n, 2)
    after = source.split("\n    loss = ", 1)[1]
    assert '_check_shape("dL_dW", dL_dW, (2, 3))' in after         # a gradient, once the blocks are summed
    assert '_check_shape("dL_dc", dL_dc, (2,))' in after


def gate() -> Graph:
    """A node that is an elementwise expression of a per-sample sum: m = s * sum(h*h) + 1."""
    g = Graph("gate")
    x, s, t = g.input("x", (3,)), g.input("s"), g.input("t")
    h = g.node("h", sp.tanh(g.param("W", (2, 3)) @ x))
    m = g.node("m", s * sum_(h * h) + 1)
    g.loss("L", (m - t) ** 2 / 2)
    return g


def test_a_wrong_shape_stops_the_checked_blocked_code_even_where_a_ufunc_would_broadcast_it(monkeypatch):
    """A ufunc writing into a buffer broadcasts its operands to the buffer's shape: with the batch-summing bug of
    tests/test_generated_code_checks.py, m's buffer would get the right shape and wrong numbers. So the
    shape-checked mode names and checks every operand the printer writes as a new array before a ufunc uses it."""
    monkeypatch.setattr(symbackprop.codegen, "NumPyBatchPrinter", BatchSummingPrinter)
    params = {"W": np.ones((2, 3))}
    data = {"x": np.ones((4, 3)), "s": np.ones(4), "t": np.zeros(4)}
    unchecked = compile_gradient(gate(), check_shapes=False, block=BLOCK)
    assert "np.multiply(s, np.sum(t0), out=m)" in unchecked.source   # t0 = h**2
    assert np.isfinite(unchecked.loss_and_grad(params, data)[0])   # broadcasts silently
    checked = compile_gradient(gate(), check_shapes=True, block=BLOCK)
    with pytest.raises(AssertionError, match=r"_operand0 has shape \(\), but the derivation inferred \(N,\) "
                                             r"with N = 4"):
        checked.loss_and_grad(params, data)


def test_the_per_sample_loss_is_summed_straight_from_its_expression():
    """Nothing in loss_and_grad reads the per-sample loss but its sum: no buffer, one pass (einsum of t0)."""
    lines = loop_lines(seed_source())
    assert '_loss += 0.5*np.einsum("i,i->", t0, t0)' in lines
    assert not [line for line in lines if line.startswith("L = ")]


@pytest.mark.parametrize("function", [c for c in _elementwise_classes() if c.numpy_into], ids=lambda c: c.__name__)
def test_an_activation_written_in_place_gives_the_floats_of_its_numpy_form(function):
    """``numpy_into`` into another array and into its own argument: the same operations as ``numpy``."""
    namespace = {"np": np}
    for helper in (function.helper, function.helper_into):
        if helper:
            exec(helper, namespace)  # the helpers' source, as the generated module defines them
    x = np.concatenate([np.linspace(-1000.0, 1000.0, 201), [0.0, -0.0, 1e-300]])
    expected = eval(function.numpy.format(x="x"), {**namespace, "x": x})
    out, same = np.empty_like(x), x.copy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # silent, as the numpy form is
        eval(function.numpy_into.format(x="x", out="out"), {**namespace, "x": x, "out": out})
        eval(function.numpy_into.format(x="same", out="same"), {**namespace, "same": same})
    assert np.array_equal(out, expected) and np.array_equal(same, expected)


# ---- threads ---------------------------------------------------------------------------------------------
def test_two_threads_calling_one_module_at_once_get_their_own_results():
    """Every buffer is a local of the call: two threads running the same module at once, each on its own
    data over many blocks, get exactly what each gets alone."""
    model = load_example(next(p for p in EXAMPLES if p.stem == "neuron"))
    module = load_source(generate_module(derive(model.graph).program(), block=64), "threads")
    rng = np.random.default_rng(0)
    params = {"w": 0.7, "b": -0.2}
    batches = [{"x": rng.normal(size=1000 + k), "y": rng.uniform(size=1000 + k)} for k in range(2)]
    alone = [module.loss_and_grad(params, data) for data in batches]
    results: list[list] = [[], []]
    start = threading.Barrier(2)

    def run(k: int) -> None:
        start.wait()
        for _ in range(40):
            results[k].append(module.loss_and_grad(params, batches[k]))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        assert len(results[k]) == 40
        assert all(r == alone[k] for r in results[k])
    assert alone[0] != alone[1]


# ---- memory layout ---------------------------------------------------------------------------------------
def unaligned(value: np.ndarray) -> np.ndarray:
    """A C-ordered copy of ``value`` at an address that is not a multiple of its item size (as arrays
    unpickled by Dask often lie): NumPy marks it not aligned."""
    raw = np.empty(value.nbytes + 16, dtype=np.uint8)
    start = (-raw.ctypes.data) % 8 + 2
    copy = raw[start:start + value.nbytes].view(value.dtype).reshape(value.shape)
    copy[...] = value
    assert not copy.flags.aligned
    return copy


def strided(value: np.ndarray) -> np.ndarray:
    """``value`` as every other element of a wider array: neither C- nor Fortran-contiguous."""
    if value.ndim == 0:
        return value.copy()
    wide = np.zeros(value.shape[:-1] + (2 * value.shape[-1],))
    wide[..., ::2] = value
    return wide[..., ::2]


LAYOUTS = {"unaligned": unaligned, "Fortran-ordered": np.asfortranarray, "strided": strided}


@pytest.mark.parametrize("blocked", [True, False], ids=["blocked", "whole-array"])
def test_the_numbers_depend_on_the_values_alone_not_on_where_or_in_what_order_the_arrays_lie(blocked):
    """Bit for bit the numbers of C-ordered, aligned arrays, whatever the parameters' or inputs' layout.
    (At N = 1, an unaligned or Fortran-ordered W reached BLAS as another layout of W.T, another kernel,
    and gave results 1 ulp apart: a Dask run resumed from a checkpoint differed from a straight one.)"""
    model = load_example(next(p for p in EXAMPLES if p.stem == "mlp_sigmoid"))
    gradient = compile_gradient(model.graph, blocked=blocked, block=BLOCK if blocked else None)
    rng = np.random.default_rng(5)
    for n in (1, 2, BLOCK + 2):
        for _ in range(8):
            params = {p.name: rng.normal(size=p.shape) for p in model.graph.params}
            data = {"x": rng.normal(size=(n, 3)), "y": rng.uniform(size=(n, 2))}
            expected = gradient.loss_and_grad(params, data)
            for layout, arrange in LAYOUTS.items():
                for name in [*params, *data]:
                    moved = ({**params, name: arrange(params[name])}, data) if name in params else \
                        (params, {**data, name: arrange(data[name])})
                    loss, grads = gradient.loss_and_grad(*moved)
                    assert loss == expected[0], f"{layout} {name} at N={n}: loss"
                    for k, g in grads.items():
                        assert np.array_equal(g, expected[1][k]), f"{layout} {name} at N={n}: dL/d{k}"
