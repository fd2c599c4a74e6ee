"""Generated code checks how it is called, and, in the shape-checked mode, every array it makes.

Called with a missing or unknown name, a wrong shape, no batch axis or inputs of different N, the compiled
callable and the module codegen writes raise ValueError naming the array, the shape it has and the shape
expected. In the shape-checked mode (``check_shapes=True``; on for the whole test suite through
SYMBACKPROP_CHECK_SHAPES=1 in conftest.py) every assignment checks that its array has the shape the
derivation inferred, and a wrong one stops the code at that line.
"""
from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

import symbackprop.codegen
from conftest import ROOT
from helpers import generated_module
from symbackprop import Graph, compile_gradient
from symbackprop.cli import main
from symbackprop.codeprint import NumPyBatchPrinter
from symbackprop.tensor import sum_


def layer() -> Graph:
    """A tanh layer with a declared column parameter and a scalar input: x (3,), s (), W (2, 3), c (2, 1)."""
    g = Graph("layer")
    x, s, y = g.input("x", (3,)), g.input("s"), g.input("y", (2,))
    W, c = g.param("W", (2, 3)), g.param("c", (2, 1))
    g.node("h", sp.tanh(W @ x) * s + c)
    g.loss("L", sum_((g.symbol("h") - y) ** 2) / 2)
    return g


PARAMS = {"W": np.ones((2, 3)), "c": np.zeros((2, 1))}
DATA = {"x": np.ones((4, 3)), "s": np.ones(4), "y": np.zeros((4, 2))}


def without(d: dict, name: str) -> dict:
    return {k: v for k, v in d.items() if k != name}


CALLS = {  # what is wrong -> (params, data, the message expected)
    "a missing parameter": (without(PARAMS, "c"), DATA, "parameter 'c' is missing (expected an array of shape (2, 1))"),
    "an unknown parameter": ({**PARAMS, "V": 1.0}, DATA, "unknown parameter 'V' (the model's parameters: W, c)"),
    "a parameter of the wrong shape": ({**PARAMS, "W": np.ones((3, 2))}, DATA,
                                       "parameter 'W' has shape (3, 2), expected (2, 3)"),
    "a column parameter given as a vector": ({**PARAMS, "c": np.zeros(2)}, DATA,
                                             "parameter 'c' has shape (2,), expected (2, 1)"),
    "a missing input": (PARAMS, without(DATA, "y"), "input 'y' is missing (expected an array of shape (N, 2))"),
    "an unknown input": (PARAMS, {**DATA, "z": np.ones(4)}, "unknown input 'z' (the model's inputs: x, s, y)"),
    "an input without its batch axis": (PARAMS, {**DATA, "x": np.ones(3)}, "input 'x' has shape (3,), expected (N, 3)"),
    "a scalar input with an extra axis": (PARAMS, {**DATA, "s": np.ones((4, 1))},
                                          "input 's' has shape (4, 1), expected (N,)"),
    "inputs of different batch sizes": (PARAMS, {**DATA, "y": np.zeros((5, 2))},
                                        "input 'y' has 5 samples but input 'x' has 4"),
    "an empty batch": (PARAMS, {"x": np.ones((0, 3)), "s": np.ones(0), "y": np.zeros((0, 2))},
                       "input 'x' has no samples (N = 0)"),
    "text instead of numbers": ({**PARAMS, "W": "ones"}, DATA, "parameter 'W' is not an array of numbers"),
    "a list instead of a dict": (PARAMS, [DATA], "the inputs must be a dict from name to array, got list"),
}


@pytest.fixture(scope="module")
def compiled():
    return compile_gradient(layer())


@pytest.fixture(scope="module")
def module_file(tmp_path_factory):
    """The module `symbackprop codegen` writes for the same network, imported from its file."""
    path = tmp_path_factory.mktemp("module") / "layer_grad.py"
    path.write_text(symbackprop.codegen.generate_module(compile_gradient(layer()).derivation.program()))
    spec = importlib.util.spec_from_file_location("layer_grad_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("wrong", sorted(CALLS))
def test_a_wrong_call_is_a_value_error_naming_the_array_and_both_shapes(compiled, module_file, wrong):
    params, data, message = CALLS[wrong]
    for function in (compiled.loss_and_grad, compiled.forward, module_file.loss_and_grad, module_file.forward):
        with pytest.raises(ValueError, match=re.escape(message)):
            function(params, data)


def test_a_right_call_takes_scalars_as_floats_zero_d_arrays_or_lists(compiled):
    loss, grads = compiled.loss_and_grad(PARAMS, DATA)
    again, same = compiled.loss_and_grad({"W": np.ones((2, 3)).tolist(), "c": [[0.0], [0.0]]},
                                         {**DATA, "s": list(np.ones(4))})
    assert again == loss and all(np.array_equal(same[k], grads[k]) for k in grads)
    assert {k: np.shape(v) for k, v in grads.items()} == {"W": (2, 3), "c": (2, 1)}


# ---- the shape-checked mode ----------------------------------------------------------------------------
def assigned(source: str) -> list[str]:
    """The variables the generated loss_and_grad assigns, in order."""
    body = source.split("def loss_and_grad", 1)[1]
    return re.findall(r"^    (\w+) = (?!arrays)", body, re.MULTILINE)


def test_the_shape_checked_mode_checks_every_assignment_with_its_inferred_shape():
    source = compile_gradient(layer(), check_shapes=True, blocked=False).source  # blocked: tests/test_blocked.py
    names = [n for n in assigned(source) if n not in ("loss", "grads")]
    assert names and all(f'_check_shape("{n}", {n}, ' in source for n in names)
    assert '_check_shape("h", h, (2,), N)' in source          # a value per sample: (N, 2)
    assert '_check_shape("dL_dW", dL_dW, (2, 3))' in source   # a gradient: the parameter's shape
    assert '_check_shape("dL_dc", dL_dc, (2,))' in source     # (computed as a vector, returned as (2, 1))


def test_without_the_mode_the_code_has_no_checks(monkeypatch):
    assert "_check_shape" not in compile_gradient(layer(), check_shapes=False).source
    monkeypatch.setenv("SYMBACKPROP_CHECK_SHAPES", "0")
    assert "_check_shape" not in compile_gradient(layer()).source
    monkeypatch.setenv("SYMBACKPROP_CHECK_SHAPES", "1")
    assert "_check_shape" in compile_gradient(layer()).source


class BatchSummingPrinter(NumPyBatchPrinter):
    """A printer with a bug: sum(v) also sums over the batch axis (np.sum(v) for np.sum(v, axis=1))."""

    def _print_sum_(self, expr):
        return self.call("np.sum", self._print(expr.args[0]))


def test_a_wrong_shape_stops_the_checked_code_at_its_line_naming_both_shapes(monkeypatch):
    monkeypatch.setattr(symbackprop.codegen, "NumPyBatchPrinter", BatchSummingPrinter)
    unchecked = compile_gradient(layer(), check_shapes=False, blocked=False)
    loss, _ = unchecked.loss_and_grad(PARAMS, DATA)   # broadcasts silently: a number, 4 times too large
    assert np.isfinite(loss)
    checked = compile_gradient(layer(), check_shapes=True, blocked=False)  # blocked: tests/test_blocked.py
    with pytest.raises(AssertionError) as failure:
        checked.loss_and_grad(PARAMS, DATA)
    lines = checked.source.splitlines()
    line = max(i for i, text in enumerate(lines, 1) if text.startswith("    L = "))  # in loss_and_grad
    assert str(failure.value) == (
        f"shape check failed at line {line} of <symbackprop generated: layer> ({lines[line - 1].strip()}): "
        "L has shape (), but the derivation inferred (N,) with N = 4")
    assert lines[line] == '    _check_shape("L", L, (), N)'


def test_codegen_check_shapes_writes_the_checks_and_no_check_shapes_leaves_them_out(tmp_path, monkeypatch):
    model = ROOT / "examples" / "rms_norm.toml"
    monkeypatch.setenv("SYMBACKPROP_CHECK_SHAPES", "1")
    for option, expected in (("--check-shapes", True), ("--no-check-shapes", False)):
        path = tmp_path / f"grad{expected}.py"
        result = CliRunner().invoke(main, ["codegen", str(model), "-o", str(path), option])
        assert result.exit_code == 0, result.output
        assert ("_check_shape(" in path.read_text()) is expected
    monkeypatch.setenv("SYMBACKPROP_CHECK_SHAPES", "0")
    assert "_check_shape(" not in generated_module(model, tmp_path, "default.py").read_text()
