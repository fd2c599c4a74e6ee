"""Optimizers and schedules: the same numbers as torch.optim, exact resume, early stopping, and the update
rule the derivation shows computes what the numeric update computes."""
import numpy as np
import pytest

from conftest import ROOT
from symbackprop.data import model_data
from symbackprop.derive import derive
from symbackprop.graph import ModelError, UserError
from symbackprop.initializers import initial_params
from symbackprop.modelfile import load_model, parse_model
from symbackprop.optim import (ETA, OPTIMIZERS, SCHEDULES, follow_rule, make_optimizer, make_schedule,
                               module_source, update_steps)
from symbackprop.steps import Adjoint, NewValue, UpdateRule
from symbackprop.train import load_checkpoint, train, train_settings

torch = pytest.importorskip("torch")
from symbackprop.torch_eval import TorchEvaluator  # noqa: E402

MLP = load_model(ROOT / "examples" / "mlp_sigmoid.toml")
MLP_DATA = {k: v[:48] for k, v in model_data(MLP.graph, MLP.data).train.items()}
LR = {"sgd": 0.5, "rmsprop": 0.01, "adam": 0.05, "adamw": 0.05}
TORCH = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
TORCH_SCHEDULES = {"step": torch.optim.lr_scheduler.StepLR, "exponential": torch.optim.lr_scheduler.ExponentialLR,
                   "cosine": torch.optim.lr_scheduler.CosineAnnealingLR}
VARIANTS = [
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.8, "dampening": 0.3}),
    ("sgd", {"momentum": 0.9, "nesterov": True}), ("sgd", {"weight_decay": 0.05}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    ("rmsprop", {}), ("rmsprop", {"centered": True}), ("rmsprop", {"momentum": 0.9}),
    ("rmsprop", {"weight_decay": 0.05, "centered": True, "momentum": 0.5, "alpha": 0.9, "eps": 1e-6}),
    ("adam", {}), ("adam", {"amsgrad": True}), ("adam", {"weight_decay": 0.05}),
    ("adam", {"betas": [0.5, 0.9], "eps": 1e-6, "amsgrad": True, "weight_decay": 0.01}),
    ("adamw", {}), ("adamw", {"amsgrad": True}), ("adamw", {"weight_decay": 0.3, "betas": [0.8, 0.95]}),
]
STEPS = 50


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small tensors: torch's thread pool only costs time (20x on a busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ids(variant):
    name, settings = variant
    return name + "".join(f"-{k}={v}" for k, v in settings.items())


def start():
    return {k: v + 0.3 for k, v in initial_params(MLP.graph, seed=1).items()}  # no zero weights


def torch_run(name, settings, params, data, epochs, schedule=None):
    """The same training with torch: autograd of an independent forward pass, torch.optim, torch's scheduler."""
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    inputs = {k: torch.tensor(v) for k, v in data.items()}
    opt = TORCH[name](list(leaves.values()), **{"lr": LR[name], **settings})
    scheduler = TORCH_SCHEDULES[schedule[0]](opt, **schedule[1]) if schedule else None
    evaluator = TorchEvaluator(torch, MLP.graph)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        evaluator.loss(leaves, inputs).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
    return {k: v.detach().numpy() for k, v in leaves.items()}, lrs


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_fifty_full_batch_steps_give_torch_optims_parameters(variant):
    name, settings = variant
    ours = train(MLP.graph, MLP_DATA, epochs=STEPS, params=start(),
                 optimizer=make_optimizer(name, lr=LR[name], **settings))
    theirs, _ = torch_run(name, settings, start(), MLP_DATA, STEPS)
    moved = max(np.max(np.abs(ours.params[k] - start()[k])) for k in theirs)
    assert moved > 0.05  # the parameters really moved
    for k in theirs:
        np.testing.assert_allclose(ours.params[k], theirs[k], rtol=0, atol=1e-10)


@pytest.mark.parametrize("schedule", [("step", {"step_size": 7, "gamma": 0.5}), ("exponential", {"gamma": 0.95}),
                                      ("cosine", {"T_max": 20, "eta_min": 0.01})], ids=lambda s: s[0])
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_schedules_train_as_torchs_schedulers_do(name, schedule):
    ours = train(MLP.graph, MLP_DATA, epochs=STEPS, params=start(), optimizer=make_optimizer(name, lr=LR[name]),
                 schedule=make_schedule(schedule[0], **schedule[1]))
    theirs, lrs = torch_run(name, {}, start(), MLP_DATA, STEPS, schedule)
    for k in theirs:
        np.testing.assert_allclose(ours.params[k], theirs[k], rtol=0, atol=1e-10)
    assert [row["lr"] for row in ours.history] == lrs  # the rate used in each epoch, in the history


@pytest.mark.parametrize("schedule", [("step", {"step_size": 3}), ("step", {"step_size": 4, "gamma": 0.7}),
                                      ("exponential", {"gamma": 0.9}), ("cosine", {"T_max": 10}),
                                      ("cosine", {"T_max": 7, "eta_min": 0.001})], ids=lambda s: f"{s[0]}{s[1]}")
def test_schedules_give_torchs_learning_rates_bit_for_bit_over_three_cosine_periods(schedule):
    ours = make_schedule(schedule[0], **schedule[1])
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    theirs = TORCH_SCHEDULES[schedule[0]](opt, **schedule[1])
    lr = 0.1
    for epoch in range(1, 61):
        opt.step()
        theirs.step()
        lr = ours.advance(lr, epoch, 0.1)
        assert lr == opt.param_groups[0]["lr"], epoch


@pytest.mark.parametrize("variant", [("sgd", {"momentum": 0.9, "nesterov": True}), ("rmsprop", {"centered": True}),
                                     ("adam", {"amsgrad": True}), ("adamw", {})], ids=ids)
def test_resuming_in_the_middle_ends_bit_identical_to_an_uninterrupted_run(variant, tmp_path):
    name, settings = variant
    kwargs = dict(params=start(), batch_size=16, seed=4, optimizer=make_optimizer(name, lr=LR[name], **settings),
                  schedule=make_schedule("cosine", T_max=12))
    whole = train(MLP.graph, MLP_DATA, epochs=20, **kwargs)
    ckpt = tmp_path / "run.npz"
    train(MLP.graph, MLP_DATA, epochs=9, checkpoint=ckpt, **kwargs)
    state = load_checkpoint(ckpt, MLP.graph)["run"]
    assert state.epoch == 9 and state.optimizer_state["W1"]  # the optimizer's state is in the checkpoint
    resumed = train(MLP.graph, MLP_DATA, epochs=20, checkpoint=ckpt, resume=True, **kwargs)
    assert resumed.resumed_from == 9 and resumed.history == whole.history
    for k in whole.params:
        assert np.array_equal(resumed.params[k], whole.params[k]), k


def test_resume_refuses_another_optimizer_or_fewer_epochs_than_done(tmp_path):
    ckpt = tmp_path / "run.npz"
    train(MLP.graph, MLP_DATA, epochs=6, checkpoint=ckpt, optimizer=make_optimizer("adam"))
    with pytest.raises(UserError, match=r"cannot resume: the checkpoint's optimizer is \{'name': 'adam'"):
        train(MLP.graph, MLP_DATA, epochs=8, checkpoint=ckpt, resume=True, optimizer=make_optimizer("adam", eps=1e-6))
    with pytest.raises(UserError) as e:
        train(MLP.graph, MLP_DATA, epochs=4, checkpoint=ckpt, resume=True, optimizer=make_optimizer("adam"))
    assert str(e.value) == (f"{ckpt}: cannot resume: the checkpoint is already at epoch 6, past the 4 epochs asked "
                            "for (ask for 6 or more epochs)")


# ---- early stopping ---------------------------------------------------------------------------------------
NEURON = load_model(ROOT / "examples" / "neuron.toml")


def drifting_sets():
    """Training data from the teacher (2, -1); held-out data from (1, 0): on the way from the start (0.5, 0)
    to (2, -1) the held-out loss first falls, then rises."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=64), rng.normal(size=32)
    sig = lambda z: 1 / (1 + np.exp(-z))
    return {"x": x1, "y": sig(2 * x1 - 1)}, {"x": x2, "y": sig(x2)}


def test_early_stopping_keeps_the_parameters_of_the_best_held_out_epoch(tmp_path):
    data, held = drifting_sets()
    result = train(NEURON.graph, data, held_out=held, lr=2.0, epochs=400, patience=5)
    losses = [row["held_out_loss"] for row in [result.initial] + result.history]
    best = int(np.argmin(losses))
    assert result.stopped_early and 0 < result.best_epoch == best < len(losses) - 1
    assert len(result.history) == best + 5  # five epochs without a better held-out loss, then stop
    assert result.kept["epoch"] == best and result.final_loss == result.history[best - 1]["loss"]
    straight = train(NEURON.graph, data, held_out=held, lr=2.0, epochs=best)
    assert all(np.array_equal(result.params[k], straight.params[k]) for k in straight.params)


def test_early_stopping_resumes_exactly_and_needs_held_out_data(tmp_path):
    data, held = drifting_sets()
    whole = train(NEURON.graph, data, held_out=held, lr=2.0, epochs=400, patience=5)
    ckpt = tmp_path / "run.npz"
    train(NEURON.graph, data, held_out=held, lr=2.0, epochs=whole.best_epoch + 2, patience=5, checkpoint=ckpt)
    resumed = train(NEURON.graph, data, held_out=held, lr=2.0, epochs=400, patience=5, checkpoint=ckpt, resume=True)
    assert (resumed.best_epoch, resumed.stopped_early, resumed.history) == (whole.best_epoch, True, whole.history)
    assert all(np.array_equal(resumed.params[k], whole.params[k]) for k in whole.params)
    with pytest.raises(UserError, match="early stopping watches the held-out loss, but there is no held-out data"):
        train(NEURON.graph, data, lr=2.0, epochs=3, patience=5)


# ---- settings -----------------------------------------------------------------------------------------------
def test_defaults_are_torchs():
    assert make_optimizer("sgd").values == {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
                                            "nesterov": False}
    assert make_optimizer("rmsprop").values == {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0,
                                                "momentum": 0.0, "centered": False}
    assert make_optimizer("adam").values == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                             "amsgrad": False}
    assert make_optimizer("adamw")["weight_decay"] == 1e-2
    assert make_schedule("step", step_size=5)["gamma"] == 0.1 and make_schedule("cosine", T_max=5)["eta_min"] == 0
    assert sorted(OPTIMIZERS) == ["adam", "adamw", "rmsprop", "sgd"]
    assert sorted(SCHEDULES) == ["cosine", "exponential", "step"]


@pytest.mark.parametrize("table, message", [
    ({"optimizer": "adagrad"}, "m.toml: [train] optimizer: unknown optimizer 'adagrad' (choose from sgd, rmsprop, "
                               "adam, adamw)"),
    ({"optimizer": "adam", "momentum": 0.9}, "m.toml: [train] momentum: not a setting of adam (its settings: lr, "
                                             "betas, eps, weight_decay, amsgrad)"),
    ({"optimizer": "adam", "betas": [0.9]}, "m.toml: [train] betas: must be two numbers from 0 up to (not including) "
                                            "1, such as [0.9, 0.999], got [0.9]"),
    ({"optimizer": "adam", "betas": [0.9, 1.0]}, "m.toml: [train] betas: must be two numbers"),
    ({"optimizer": "adam", "amsgrad": 1}, "m.toml: [train] amsgrad: must be true or false, got 1"),
    ({"optimizer": "rmsprop", "alpha": 1.5}, "m.toml: [train] alpha: must be a number from 0 up to (not including) 1"),
    ({"momentum": -0.1}, "m.toml: [train] momentum: must be a number >= 0, got -0.1"),
    ({"momentum": "high"}, "m.toml: [train] momentum: must be a finite number, got 'high'"),
    ({"nesterov": True}, "m.toml: [train] nesterov: Nesterov momentum needs momentum > 0 and dampening = 0"),
    ({"dampening": 2}, "m.toml: [train] dampening: must be a number from 0 to 1, got 2"),
    ({"schedule": "linear"}, "m.toml: [train] schedule: unknown schedule 'linear' (choose from step, exponential, "
                             "cosine)"),
    ({"schedule": "cosine"}, "m.toml: [train] schedule: cosine needs T_max (torch's "
                             "torch.optim.lr_scheduler.CosineAnnealingLR has no default for it)"),
    ({"schedule": "step", "step_size": 0}, "m.toml: [train] step_size: must be a whole number >= 1, got 0"),
    ({"schedule": "step", "step_size": 2, "T_max": 3}, "m.toml: [train] T_max: not a setting of step"),
    ({"gamma": 0.5}, "m.toml: [train] gamma: a schedule setting, but no schedule is chosen"),
    ({"patience": 0}, "m.toml: [train] patience: must be a whole number >= 1, got 0"),
    ({"lr": True}, "m.toml: [train] lr: must be a finite number, got True"),
])
def test_every_train_key_and_value_is_checked_with_the_file_and_key(table, message):
    with pytest.raises(ModelError) as e:
        train_settings(table, NEURON.graph, "m.toml")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_an_option_is_blamed_for_its_own_bad_value_not_the_model_file():
    table = {"lr": 2.0, "optimizer": "sgd", "momentum": 0.9}
    with pytest.raises(ModelError, match=r"^--lr: must be a positive number, got -1.0$"):
        train_settings(table, NEURON.graph, "m.toml", lr=-1.0)
    with pytest.raises(ModelError, match=r"^--set momentum: must be a number >= 0, got -2$"):
        train_settings(table, NEURON.graph, "m.toml", {"momentum": -2})
    with pytest.raises(ModelError, match=r"^--set betas: not a setting of sgd"):
        train_settings(table, NEURON.graph, "m.toml", {"betas": [0.9, 0.99]})
    with pytest.raises(ModelError, match=r"^--set colour: unknown setting"):
        train_settings(table, NEURON.graph, "m.toml", {"colour": 1})


def test_another_optimizer_on_the_command_line_leaves_the_tables_settings_unused_with_a_warning():
    s = train_settings({"optimizer": "sgd", "lr": 2.0, "momentum": 0.9}, NEURON.graph, "m.toml", optimizer="adam")
    assert s["optimizer"] == make_optimizer("adam") and s["lr"] == 1e-3
    assert s["ignored"] == ["m.toml: [train] lr, momentum: not used, the table sets them for sgd and this run "
                            "uses adam (--optimizer)"]
    s = train_settings({"optimizer": "adam", "betas": [0.8, 0.9]}, NEURON.graph, "m.toml", {"eps": 1e-6}, lr=0.1)
    assert s["optimizer"] == make_optimizer("adam", lr=0.1, betas=(0.8, 0.9), eps=1e-6) and s["ignored"] == []


# ---- the update rule in the derivation ------------------------------------------------------------------
def scalar_graph():
    return parse_model('[inputs]\nx = {}\n[params]\nw = { init = 0.3 }\n[loss]\nL = "(w*x - 1)**2"\n', "s.toml").graph


def follow_shown_rule(steps, gradients, w, graph, lrs=None):
    """The shown steps of one scalar parameter evaluated as written (``follow_rule``), one gradient after
    another, step t in epoch t - 1; ``lrs`` the rate of each epoch for plain SGD, whose rule shows none."""
    previous = None
    for t, g in enumerate(gradients, 1):
        known = {graph.symbol("w"): w, Adjoint("L", "w"): g, ETA: lrs[t - 1] if lrs else None}
        followed = follow_rule(steps, known, t=t, epoch=t - 1, previous=previous)
        w, previous = followed.new["w"], followed.values
    return w


GRADIENTS = [0.7, -0.2, 1.3, 0.05, -0.9, 0.4]


@pytest.mark.parametrize("variant", VARIANTS, ids=ids)
def test_the_shown_update_rule_computes_what_the_numeric_update_computes(variant):
    name, settings = variant
    optimizer = make_optimizer(name, lr=LR[name], **settings)
    graph = scalar_graph()
    steps = [s for s in derive(graph, optimizer=optimizer).steps if s.kind == "update"]
    w, state = np.float64(0.3), {}
    for g in GRADIENTS:
        w = optimizer.update(w, np.float64(g), state, optimizer.lr, **optimizer.hyper())
    lrs = [optimizer.lr] * len(GRADIENTS)
    assert follow_shown_rule(steps, GRADIENTS, 0.3, graph, lrs) == pytest.approx(float(w), rel=1e-12)


@pytest.mark.parametrize("schedule", [("step", {"step_size": 2, "gamma": 0.5}), ("exponential", {"gamma": 0.8}),
                                      ("cosine", {"T_max": 3, "eta_min": 0.001})], ids=lambda s: s[0])
@pytest.mark.parametrize("variant", [("sgd", {}), ("sgd", {"momentum": 0.9}), ("adam", {"amsgrad": True})], ids=ids)
def test_the_shown_rule_with_a_schedule_computes_what_training_computes_epoch_by_epoch(variant, schedule):
    """One step per epoch: the shown eta of epoch e (a closed formula) is the rate torch's recursion gives."""
    name, settings = variant
    optimizer, chosen = make_optimizer(name, lr=LR[name], **settings), make_schedule(schedule[0], **schedule[1])
    graph = scalar_graph()
    steps = [s for s in derive(graph, optimizer=optimizer, schedule=chosen).steps if s.kind == "update"]
    w, state, lr, lrs = np.float64(0.3), {}, optimizer.lr, []
    for epoch, g in enumerate(GRADIENTS, 1):
        lrs.append(lr)
        w = optimizer.update(w, np.float64(g), state, lr, **optimizer.hyper())
        lr = chosen.advance(lr, epoch, optimizer.lr)
    assert len(set(lrs)) > 1  # the rate really moved
    assert follow_shown_rule(steps, GRADIENTS, 0.3, graph) == pytest.approx(float(w), rel=1e-12)


def test_following_a_rule_that_needs_a_value_nothing_gives_is_an_error():
    graph = scalar_graph()
    steps = [s for s in derive(graph, optimizer=make_optimizer("sgd", momentum=0.9)).steps if s.kind == "update"]
    with pytest.raises(ValueError, match="dL/dw"):
        follow_rule(steps, {graph.symbol("w"): 0.3})


def text_steps(optimizer, schedule=None):
    d = derive(scalar_graph(), optimizer=optimizer, schedule=schedule)
    return [line.split("  ", 1)[1].strip() for line in d.to("text").splitlines()
            if line.startswith("gradient-descent update")]


def test_plain_sgd_shows_the_seeds_update_alone():
    assert text_steps(make_optimizer("sgd", lr=0.5)) == ["w_new = w_old - eta * dL/dw"]


def test_adam_shows_its_settings_moment_estimates_and_bias_correction():
    assert text_steps(make_optimizer("adam")) == [
        "(eta, beta_1, beta_2, epsilon) = (0.001, 0.9, 0.999, 1.0e-8)",
        "(m_w,0, v_w,0) = (0, 0)",
        "g_w,t = dL/dw",
        "m_w,t = beta_1 * m_w,t-1 + g_w,t * (1 - beta_1)",
        "v_w,t = beta_2 * v_w,t-1 + g_w,t**2 * (1 - beta_2)",
        "mhat_w,t = m_w,t / (1 - beta_1**t)",
        "vhat_w,t = v_w,t / (1 - beta_2**t)",
        "w_new = w_old - eta * mhat_w,t / (sqrt(vhat_w,t) + epsilon)",
    ]


def test_sgd_with_nesterov_momentum_and_weight_decay_and_a_schedule_shows_each_piece():
    lines = text_steps(make_optimizer("sgd", momentum=0.9, nesterov=True, weight_decay=0.01),
                       make_schedule("step", step_size=10))
    assert lines[:2] == ["(eta_0, mu, lambda, s, gamma) = (0.001, 0.9, 0.01, 10, 0.1)", "eta = eta_0 * gamma**floor(e / s)"]
    assert lines[2:] == ["g_w,t = lambda * w + dL/dw", "b_w,1 = g_w,1", "b_w,t = b_w,t-1 * mu + g_w,t",
                         "d_w,t = b_w,t * mu + g_w,t", "w_new = w_old - eta * d_w,t"]


def test_derive_shows_the_models_train_optimizer_and_the_option_replaces_it(tmp_path):
    from click.testing import CliRunner
    from symbackprop.cli import main
    model = tmp_path / "m.toml"
    model.write_text((ROOT / "examples" / "neuron.toml").read_text().replace("lr = 2.0", 'optimizer = "rmsprop"\n'
                                                                              "lr = 0.01\ncentered = true"))
    shown = CliRunner().invoke(main, ["derive", str(model), "--format", "text"])
    assert shown.exit_code == 0 and "gbar_w,t = alpha * gbar_w,t-1 + g_w,t * (1 - alpha)" in shown.output
    replaced = CliRunner().invoke(main, ["derive", str(model), "--format", "text", "--optimizer", "sgd"])
    assert "w_new = w_old - eta * dL/dw" in replaced.output and "gbar" not in replaced.output
    assert "Warning: " in replaced.output and "lr, centered: not used" in replaced.output


def test_update_steps_render_in_every_format():
    d = derive(MLP.graph, optimizer=make_optimizer("adamw", amsgrad=True))
    latex = d.to("latex")
    assert r"\hat{m}_{W1,t} = \frac{m_{W1,t}}{1 - \beta_{1}^{t}}" in latex
    assert r"\mathbf{W}_{1}^{(\text{new})} = \mathbf{W}_{1}^{(\text{old})} - \eta d_{W1,t}" in latex
    assert r"d_{W1,t} = \lambda \mathbf{W}_{1} + \frac{\hat{m}_{W1,t}}{\sqrt{\hat{v}_{W1,t}} + \epsilon}" in latex
    for fmt in ("markdown", "mathml", "html"):
        assert d.to(fmt).count("beta") + d.to(fmt).count("&#946;") > 0


def test_update_steps_take_one_value_step_and_one_block_per_parameter():
    optimizer = make_optimizer("adam")
    g = MLP.graph
    steps = update_steps(optimizer, [(p.name, p.symbol, Adjoint("L", p.name)) for p in g.params])
    assert steps[0].subject == "" and [s.subject for s in steps[1:]] == [p.name for p in g.params for _ in range(7)]
    assert all(isinstance(s.forms[0], UpdateRule) for s in steps[1:] if isinstance(s.lhs, NewValue))


def test_module_source_copies_the_numeric_functions_verbatim():
    source = module_source(make_optimizer("adam", amsgrad=True), make_schedule("cosine", T_max=5))
    assert "def update(w, g, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False" in source
    assert "def schedule_next_lr(lr, epoch, base_lr, T_max, eta_min=0.0):" in source
    assert "symbackprop" not in source.split("\n", 1)[1].replace("`symbackprop train`", "")
    namespace = {"np": np}
    exec(compile(source, "<optimizer>", "exec"), namespace)  # our own source, as a generated module holds it
    state = namespace["init_state"]({"w": 0.0})
    assert namespace["step"]({"w": 1.0}, {"w": 0.5}, state)["w"] == pytest.approx(1.0 - 1e-3)
