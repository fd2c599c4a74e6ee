"""The update evaluated at a point, for every optimizer and schedule: the optimizer's first step (t = 1,
epoch e = 0) from its initial state, with numbers on every update step.

Independent means torch.optim: the gradients by torch's autograd of an independent forward pass, then one
``optimizer.step()``; the state torch keeps (``exp_avg``, ``square_avg``, ``momentum_buffer``, ...) gives
each shown state value, the parameter after the step gives w_new, and the few shown quantities torch
keeps no state for (the bias-corrected moments, a Nesterov direction) are computed here from that state.
The same numbers in every format: tests/test_evaluate.py.
"""
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from symbackprop import Graph, derive, sigmoid
from symbackprop.cli import main
from symbackprop.optim import SGD, make_optimizer, make_schedule
from symbackprop.tensor import sum_
from test_evaluate import SEED_POINT, g9, seed_by_hand
from test_optim import LR, TORCH, TORCH_SCHEDULES, VARIANTS, ids

torch = pytest.importorskip("torch")
from symbackprop.torch_eval import TorchEvaluator  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "neuron.toml"
SCHEDULES = [None, ("step", {"step_size": 3, "gamma": 0.5}), ("exponential", {"gamma": 0.9}),
             ("cosine", {"T_max": 4, "eta_min": 0.001})]


def layer_graph():
    """A matrix, a vector and a scalar parameter: every kind of value an update shows."""
    g = Graph("one layer")
    x, y = g.input("x", shape=(3,)), g.input("y", shape=(2,))
    W, b, s = g.param("W", shape=(2, 3)), g.param("b", shape=(2,)), g.param("s")
    h = g.node("h", sigmoid(W @ x + b))
    g.loss("L", sum_((s * h - y) ** 2) / 2)
    return g


LAYER_POINT = {"x": [0.5, -1.2, 2.0], "y": [0.3, 0.9], "W": [[0.1, -0.4, 0.25], [0.7, 0.05, -0.3]],
               "b": [0.2, -0.1], "s": 1.3}


def torch_first_step(graph, point, name, settings, lr, schedule=None):
    """One torch.optim step at ``point`` (every input one sample): the parameters after it, torch's state
    per parameter, the gradients autograd gave and the learning rate it used."""
    params = {p.name: np.array(point[p.name], dtype=np.float64).reshape(p.shape) for p in graph.params}
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    inputs = {q.name: torch.tensor(np.array(point[q.name], dtype=np.float64)[None]) for q in graph.input_list}
    optimizer = TORCH[name](list(leaves.values()), lr=lr, **settings)
    if schedule is not None:
        TORCH_SCHEDULES[schedule[0]](optimizer, **schedule[1])
    used_lr = optimizer.param_groups[0]["lr"]
    TorchEvaluator(torch, graph).loss(leaves, inputs).backward()
    grads = {k: v.grad.detach().numpy().copy() for k, v in leaves.items()}
    optimizer.step()
    state = {k: {key: (v.numpy().copy() if torch.is_tensor(v) else v) for key, v in optimizer.state[leaf].items()}
             for k, leaf in leaves.items()}
    return {k: v.detach().numpy() for k, v in leaves.items()}, state, grads, used_lr


def expected_first_step(name, settings, params, grads, state):
    """Every quantity the shown rule names, at t = 1, from torch's state after its first step."""
    hyper = make_optimizer(name, **settings).values
    out = {}
    for p, w in params.items():
        decayed = grads[p] + hyper["weight_decay"] * w if name != "adamw" else grads[p]
        st = state[p]
        plain = name == "sgd" and not hyper["momentum"] and not hyper["weight_decay"]
        q = {} if plain else {"g": decayed}  # plain SGD shows the seed's rule alone
        if name == "sgd" and hyper["momentum"]:
            q["b"] = st["momentum_buffer"]
            if hyper["nesterov"]:
                q["d"] = decayed + hyper["momentum"] * st["momentum_buffer"]
        if name == "rmsprop":
            q["v"] = st["square_avg"]
            if hyper["centered"]:
                q["gbar"] = st["grad_avg"]
            if hyper["momentum"]:
                q["b"] = st["momentum_buffer"]
        if name in ("adam", "adamw"):
            beta1, beta2 = hyper["betas"]
            q["m"], q["v"] = st["exp_avg"], st["exp_avg_sq"]
            second = st["max_exp_avg_sq"] if hyper["amsgrad"] else st["exp_avg_sq"]
            if hyper["amsgrad"]:
                q["vmax"] = st["max_exp_avg_sq"]
            q["mhat"], q["vhat"] = st["exp_avg"] / (1 - beta1), second / (1 - beta2)
            if name == "adamw" and hyper["weight_decay"]:
                q["d"] = hyper["weight_decay"] * params[p] + q["mhat"] / (np.sqrt(q["vhat"]) + hyper["eps"])
        out.update({f"{base}_{p},t": v for base, v in q.items()})
    return out


CASES = [(variant, SCHEDULES[i % len(SCHEDULES)]) for i, variant in enumerate(VARIANTS)]
CASES += [(("adam", {}), SCHEDULES[1]), (("sgd", {"momentum": 0.9}), SCHEDULES[2]), (("sgd", {}), SCHEDULES[3])]


@pytest.mark.parametrize("variant, schedule", CASES,
                         ids=[ids(v) + (f"-{s[0]}" if s else "") for v, s in CASES])
def test_every_number_of_the_first_update_is_torch_optims_first_step(variant, schedule):
    name, settings = variant
    graph = layer_graph()
    optimizer = make_optimizer(name, lr=LR[name], **settings)
    chosen = make_schedule(schedule[0], **schedule[1]) if schedule else None
    plain = optimizer.is_plain and chosen is None  # the seed's rule shows no settings: give its lr
    ev = derive(graph, optimizer=optimizer, schedule=chosen).at(LAYER_POINT, lr=LR[name] if plain else None)
    params = {p.name: np.array(LAYER_POINT[p.name], dtype=np.float64).reshape(p.shape) for p in graph.params}
    after, state, grads, lr = torch_first_step(graph, LAYER_POINT, name, settings, LR[name], schedule)
    for p, grad in grads.items():
        np.testing.assert_allclose(ev.gradients[p], grad, rtol=1e-12, atol=1e-15)
    shape = {p.name: p.shape for p in graph.params}
    for key, value in expected_first_step(name, settings, params, grads, state).items():
        shown = np.reshape(ev.value(key), shape[key.split("_", 1)[1].split(",")[0]])
        np.testing.assert_allclose(shown, value, rtol=1e-12, atol=1e-15, err_msg=key)
    assert ev.lr == lr and ev.value("eta") == pytest.approx(lr, rel=1e-15)
    for p in after:
        np.testing.assert_allclose(ev.updated[p], after[p], rtol=1e-12, atol=1e-15, err_msg=p)
        assert ev.updated[p].shape == shape[p]
    numeric = optimizer.step(params, ev.gradients, optimizer.init_state(params), optimizer.lr)
    for p in after:  # exactly the numeric optimizer's first step, as training makes it
        np.testing.assert_array_equal(ev.updated[p], numeric[p])
    assert ev.values.get("update:t") == (None if optimizer.is_plain else 1)  # shown as t = 1
    assert ev.values.get("update:e") == (None if schedule is None else 0)  # and e = 0


def update_lines(output: str) -> list[str]:
    lines = output.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("gradient-descent update"))
    return lines[first:]


def test_the_seed_with_adam_shows_adams_first_step_and_not_sgds_numbers():
    """The issue's example: derive --optimizer adam on the seed, whose [train] lr 2.0 belongs to SGD."""
    result = CliRunner().invoke(main, ["derive", str(SEED), "--at", "x=1.5", "--at", "y=1", "--optimizer", "adam",
                                       "--format", "text"])
    assert result.exit_code == 0, result.output
    assert "Warning: " in result.stderr and "[train] lr: not used" in result.stderr
    v = seed_by_hand()
    params, grads = {"w": 0.5, "b": 0.0}, {"w": v["dL/dw"], "b": v["dL/db"]}
    after, state = torch_first_step_of(params, grads, "adam", lr=1e-3)
    expected = ["gradient-descent update  (eta, beta_1, beta_2, epsilon) = (0.001, 0.9, 0.999, 1.0e-8)",
                "gradient-descent update  t = 1"]
    for p in ("w", "b"):
        m, s = state[p]["exp_avg"], state[p]["exp_avg_sq"]
        g, mhat, vhat = g9(grads[p]), m / (1 - 0.9), s / (1 - 0.999)
        expected += [
            f"gradient-descent update  (m_{p},0, v_{p},0) = (0, 0)",
            *step_lines(f"g_{p},t", f"dL/d{p}", g),
            *step_lines(f"m_{p},t", f"beta_1 * m_{p},t-1 + g_{p},t * (1 - beta_1)", f"0.9 * 0 + ({g}) * (1 - 0.9) = {g9(m)}"),
            *step_lines(f"v_{p},t", f"beta_2 * v_{p},t-1 + g_{p},t**2 * (1 - beta_2)",
                        f"0.999 * 0 + ({g})**2 * (1 - 0.999) = {g9(s)}"),
            *step_lines(f"mhat_{p},t", f"m_{p},t / (1 - beta_1**t)", f"({g9(m)}) / (1 - 0.9**1) = {g9(mhat)}"),
            *step_lines(f"vhat_{p},t", f"v_{p},t / (1 - beta_2**t)", f"{g9(s)} / (1 - 0.999**1) = {g9(vhat)}"),
            *step_lines(f"{p}_new", f"{p}_old - eta * mhat_{p},t / (sqrt(vhat_{p},t) + epsilon)",
                        f"{g9(params[p])} - 0.001 * (({g9(mhat)}) / (sqrt({g9(vhat)}) + 1e-08)) = {g9(after[p])}"),
        ]
    assert update_lines(result.stdout) == expected
    assert "0.709716066" not in result.stdout  # SGD's w_new with the model's lr 2.0


def step_lines(lhs: str, form: str, numbers: str) -> list[str]:
    """A text-format update step and its numbers, on the next line under its first ``=``."""
    head = f"gradient-descent update  {lhs}"
    return [f"{head} = {form}", f"{' ' * len(head)} = {numbers}"]


def torch_first_step_of(params, grads, name, lr, **settings):
    """torch.optim's first step of scalar parameters with the given gradients."""
    leaves = {k: torch.tensor(float(v), dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    optimizer = TORCH[name](list(leaves.values()), lr=lr, **settings)
    for k, leaf in leaves.items():
        leaf.grad = torch.tensor(float(grads[k]), dtype=torch.float64)
    optimizer.step()
    state = {k: {key: (v.item() if torch.is_tensor(v) else v) for key, v in optimizer.state[leaf].items()}
             for k, leaf in leaves.items()}
    return {k: v.item() for k, v in leaves.items()}, state


def last_value(output: str, lhs: str) -> float:
    lines = output.splitlines()
    i = next(i for i, line in enumerate(lines) if re.search(rf"\s{re.escape(lhs)} = ", line))
    return float(lines[i + 1].rsplit(" = ", 1)[1])


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw"])
def test_lr_replaces_every_optimizers_learning_rate_in_the_settings_and_the_numbers(name, tmp_path):
    settings = {"momentum": 0.5} if name == "sgd" else {}
    model = tmp_path / "m.toml"
    model.write_text(SEED.read_text().replace("lr = 2.0", f'optimizer = "{name}"\nlr = 0.02'
                                              + ("\nmomentum = 0.5" if name == "sgd" else "")))
    v = seed_by_hand()
    grads = {"w": v["dL/dw"], "b": v["dL/db"]}
    for option, lr in (([], 0.02), (["--lr", "0.3"], 0.3)):  # the model's [train] lr, then --lr in its place
        result = CliRunner().invoke(main, ["derive", str(model), "--at", "x=1.5", "--at", "y=1", "--format", "text",
                                           *option])
        assert result.exit_code == 0, result.output
        assert re.search(rf"update  \(eta, [^)]*\) = \({lr:g}, ", result.stdout), result.stdout
        after, _ = torch_first_step_of({"w": 0.5, "b": 0.0}, grads, name, lr, **settings)
        for p in ("w", "b"):
            assert last_value(result.stdout, f"{p}_new") == float(g9(after[p])), (option, p)
    ev = derive(load_seed(), optimizer=make_optimizer(name, **settings)).at(SEED_POINT, lr=0.3)
    assert ev.lr == 0.3 and ev.derivation.optimizer.lr == 0.3 and "(0.3, " in ev.to("text")


def load_seed():
    from symbackprop.modelfile import load_model
    return load_model(SEED).graph


def test_the_table_lr_of_another_optimizer_is_not_used_and_plain_sgd_keeps_the_seeds_numbers():
    for optimizer, expected in (("adam", 0.001), ("rmsprop", 0.01)):  # torch's defaults, as train uses them
        result = CliRunner().invoke(main, ["derive", str(SEED), "--at", "x=1.5", "--at", "y=1", "--format", "text",
                                           "--optimizer", optimizer])
        assert "(eta, " in result.stdout and re.search(rf"\) = \({expected:g}, ", result.stdout)
    plain = CliRunner().invoke(main, ["derive", str(SEED), "--at", "x=1.5", "--at", "y=1", "--format", "text",
                                      "--optimizer", "sgd"])
    assert update_lines(plain.stdout) == ["gradient-descent update  w_new = w_old - eta * dL/dw",
                                          "                               = 0.5 - 2 * (-0.104858033) = 0.709716066",
                                          "gradient-descent update  b_new = b_old - eta * dL/db",
                                          "                               = 0 - 2 * (-0.0699053553) = 0.139810711"]


def test_plain_sgd_with_a_schedule_shows_the_rate_of_epoch_zero_without_lr():
    """The settings step shows eta_0, so the numbers follow even without lr (plain SGD alone stays symbolic)."""
    ev = derive(load_seed(), optimizer=make_optimizer("sgd", lr=0.4),
                schedule=make_schedule("exponential", gamma=0.5)).at(SEED_POINT)
    text = ev.to("text")
    assert "(eta_0, gamma) = (0.4, 0.5)" in text and "e = 0" in text
    assert "= 0.4 * 0.5**0 = 0.4" in text
    assert ev.updated["w"] == 0.5 - 0.4 * ev.gradients["w"]


def test_sgds_momentum_buffer_starts_as_the_first_gradient_and_its_general_step_has_no_numbers():
    ev = derive(load_seed(), optimizer=make_optimizer("sgd", lr=0.1, momentum=0.9, dampening=0.2)).at(SEED_POINT)
    lines = ev.to("text").splitlines()
    g = g9(ev.gradients["w"])
    start = lines.index("gradient-descent update  b_w,1 = g_w,1")
    assert lines[start + 1].strip() == f"= {g}"
    assert lines[start + 2] == "gradient-descent update  b_w,t = b_w,t-1 * mu + g_w,t * (1 - tau)"
    assert lines[start + 3] == "gradient-descent update  w_new = w_old - eta * b_w,t"
    assert lines[start + 4].strip() == f"= 0.5 - 0.1 * ({g}) = {g9(0.5 - 0.1 * ev.gradients['w'])}"
    assert lines[-1] == ("note: the update is shown at its first step (t = 1), where b_w,t and b_b,t are b_w,1 and "
                         "b_b,1 (as torch.optim.SGD starts them); their general steps hold from t = 2 on, so they "
                         "have no numbers")
    for fmt in ("latex", "markdown", "mathml", "html"):
        assert "their general steps hold from t = 2 on" in ev.to(fmt), fmt


def test_a_model_input_named_t_and_a_parameter_named_alpha_keep_their_own_values():
    """The step count t and RMSprop's alpha are the rule's own symbols, not the model's quantities."""
    g = Graph("clashing names")
    x, t = g.inputs("x t")
    alpha = g.param("alpha", init=0.4)
    g.loss("L", (alpha * x - t) ** 2)
    point = {"x": 2.0, "t": 7.0, "alpha": 0.4}
    ev = derive(g, optimizer=make_optimizer("rmsprop", lr=0.05, alpha=0.9)).at(point)
    after, state = torch_first_step_of({"alpha": 0.4}, {"alpha": ev.gradients["alpha"]}, "rmsprop", 0.05,
                                             alpha=0.9)
    assert ev.value("t") == 7.0 and ev.value("alpha") == 0.4  # the model's quantities
    assert ev.values["update:t"] == 1 and ev.values["update:alpha"] == 0.9  # the rule's
    assert ev.value("v_alpha,t") == pytest.approx(state["alpha"]["square_avg"], rel=1e-14)
    assert ev.updated["alpha"] == pytest.approx(after["alpha"], rel=1e-14)
    assert f"= 0.9 * 0 + ({g9(ev.gradients['alpha'])})**2 * (1 - 0.9)" in ev.to("text")
    adam = derive(g, optimizer=make_optimizer("adam", lr=0.05)).at(point)
    after, _ = torch_first_step_of({"alpha": 0.4}, {"alpha": adam.gradients["alpha"]}, "adam", 0.05)
    assert adam.updated["alpha"] == pytest.approx(after["alpha"], rel=1e-14)
    assert "/ (1 - 0.9**1)" in adam.to("text")  # the bias correction at t = 1, not at the input's 7


class ForgetfulSGD(SGD):
    """Shows SGD's rule without its weight decay: a wrong worked example."""

    def rule(self, param, symbol, gradient):
        return SGD(lr=self.lr, momentum=self["momentum"]).rule(param, symbol, gradient)


def test_a_shown_rule_that_computes_something_else_than_the_optimizer_is_refused():
    optimizer = ForgetfulSGD(lr=0.1, momentum=0.9, weight_decay=0.5)
    with pytest.raises(RuntimeError, match="the shown update of w gives .* torch.optim.SGD's step gives"):
        derive(load_seed(), optimizer=optimizer).at(SEED_POINT)


def test_the_report_shows_the_first_update_of_the_models_optimizer(tmp_path):
    model = tmp_path / "m.toml"
    model.write_text(SEED.read_text().replace("lr = 2.0", 'optimizer = "adam"\nlr = 0.01'))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", str(model), "-o", str(out), "--at", "x=1.5", "--at", "y=1",
                                       "--no-torch"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    v = seed_by_hand()
    after, state = torch_first_step_of({"w": 0.5, "b": 0.0}, {"w": v["dL/dw"], "b": v["dL/db"]}, "adam", 0.01)
    assert "the first update of torch.optim.Adam (t = 1, from its initial state) with \u03b7 = 0.01" in page
    for number in (state["w"]["exp_avg"], state["w"]["exp_avg_sq"], after["w"], after["b"]):
        mantissa = g9(number).split("e")[0].lstrip("-")
        assert f"<mn>{mantissa}</mn>" in page, number


RENDERED = [("sgd", {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}, SCHEDULES[1]),
            ("rmsprop", {"centered": True, "momentum": 0.5}, SCHEDULES[3]),
            ("adam", {"amsgrad": True, "weight_decay": 0.1}, SCHEDULES[2]), ("adamw", {}, None)]


def rendered_evaluations():
    for name, settings, schedule in RENDERED:
        chosen = make_schedule(schedule[0], **schedule[1]) if schedule else None
        yield name, derive(layer_graph(), optimizer=make_optimizer(name, **settings), schedule=chosen).at(LAYER_POINT)


def test_every_optimizers_update_with_numbers_is_well_formed_mathml():
    from xml.etree import ElementTree
    for name, ev in rendered_evaluations():
        lines = [line for line in ev.to("mathml").splitlines() if line.startswith("<math")]
        assert any("&#946;" in line or "&#956;" in line or "&#945;" in line for line in lines), name
        for line in lines:
            ElementTree.fromstring(line)


def test_every_optimizers_update_with_numbers_renders_in_katex():
    """Each LaTeX line, aligned block and Markdown block through KaTeX with strict errors (skips without it)."""
    import json
    import os
    import subprocess
    from test_evaluate import KATEX_SCRIPT, katex_node_path
    node_path = katex_node_path()
    if node_path is None:
        pytest.skip("KaTeX check needs node and the katex package (npm install -g katex, or NODE_PATH)")
    items = []
    for name, ev in rendered_evaluations():
        items += [(f"{name}: {line[:60]}", line) for line in ev.to("latex", shapes=True).splitlines()]
        items.append((f"{name} aligned", ev._repr_latex_().strip("$")))
        items += [(f"{name} markdown block", b.strip()) for b in ev.to("markdown").split("$$")[1::2]]
    result = subprocess.run(["node", "-e", KATEX_SCRIPT], input=json.dumps(items), capture_output=True, text=True,
                            timeout=300, env={**os.environ, "NODE_PATH": node_path})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [] and len(items) > 100
