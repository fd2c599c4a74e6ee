"""Optimizers and learning-rate schedules with torch.optim's definitions, defaults and update order.

Each optimizer keeps, side by side (as micrograd keeps an operation's forward and backward):

* its settings: torch's names and defaults (``lr``, ``momentum``, ``betas``, ...), and how each is checked;
* ``update``: the numeric step of one parameter, written as torch.optim's ``_single_tensor_*`` function
  does it (same order of operations), in plain NumPy with no reference to symbackprop, so that
  :func:`module_source` can copy it verbatim into a generated module;
* ``rule``: the same step as symbolic display steps (:mod:`symbackprop.steps`) for the derivation:
  the seed's ``w_new = w_old - eta dL/dw`` generalised with momentum buffers, moment estimates and bias
  correction, written with time-indexed symbols (``m_{w,t}``, ``beta_1``, ``epsilon``, ``eta``).

State: one dict per parameter, filled lazily by ``update`` (a missing moment is 0, as torch's
``zeros_like`` start; SGD's momentum buffer starts as the first gradient, as torch's does). It holds only
numbers and arrays, so checkpoints save it and a resumed run continues bit-identically.

Schedules step once per epoch, as torch's ``scheduler.step()`` after each epoch, with torch's recursive
("chainable") formulas: ``next_lr(lr, epoch, base_lr, ...)`` is the learning rate after ``epoch``
epochs, from the one before.
"""
from __future__ import annotations

import inspect
import math
import textwrap
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import sympy as sp

from .graph import ModelError
from .steps import Math, NewValue, Step, UpdateRule


# ---- settings: kinds and checks ------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def check_value(kind: str, value: Any, where: str) -> Any:
    """``value`` checked as a setting of ``kind`` (and normalised); a one-line ModelError at ``where``."""
    def fail(expected: str):
        raise ModelError(where, f"must be {expected}, got {value!r}")

    if kind == "flag":
        if not isinstance(value, (bool, np.bool_)):
            fail("true or false")
        return bool(value)
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            fail("a whole number >= 1")
        return int(value)
    if kind == "pair":
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(
                _is_number(b) and 0 <= b < 1 for b in value):
            fail("two numbers from 0 up to (not including) 1, such as [0.9, 0.999]")
        return (float(value[0]), float(value[1]))
    if not _is_number(value):
        fail("a finite number")
    checks = {"positive": (lambda v: v > 0, "a positive number"),
              "nonnegative": (lambda v: v >= 0, "a number >= 0"),
              "fraction": (lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1"),
              "unit": (lambda v: 0 <= v <= 1, "a number from 0 to 1")}
    ok, expected = checks[kind]
    if not ok(value):
        fail(expected)
    return float(value)


@dataclass(frozen=True)
class Setting:
    """One hyper-parameter: its torch name, default (None: required), kind and display symbol."""

    name: str
    default: Any
    kind: str
    symbol: str = ""


class RuleSymbol(sp.Symbol):
    """A symbol of an update rule: a setting (``beta_1``), a state (``m_{w,t}``), the step count ``t``,
    the epoch ``e``, the learning rate ``eta``.

    It prints as a symbol of its name, but it is not the model quantity of the same name (a model may
    have an input ``t`` or a parameter ``alpha``): SymPy tells them apart by class, and a value printer
    looks its value up under :attr:`value_key`, not under the name.
    """

    def __new__(cls, name: str):
        return super().__new__(cls, name, real=True)

    def __getnewargs_ex__(self):
        return ((self.name,), {})

    @property
    def value_key(self) -> str:
        return f"update:{self.name}"


def _symbol(name: str) -> RuleSymbol:
    return RuleSymbol(name)


#: the learning rate, the step count t (1 at the first update) and the epoch e (0 in the first epoch)
ETA, STEP, EPOCH = _symbol("eta"), _symbol("t"), _symbol("e")


def indexed(base: str, quantity: str | None, index: str) -> sp.Symbol:
    """A symbol SymPy's printers show as ``base`` with the subscript ``quantity, index``: m_{w,t}.

    A parameter's own subscript joins the index (``W1`` at step t is ``W_{1,t}``), so it prints like the
    parameter does.
    """
    if quantity is None:
        from sympy.printing.conventions import split_super_sub
        name, _, subs = split_super_sub(base)
        return _symbol(f"{name}_{','.join([*subs, index])}")
    return _symbol(f"{base}_{quantity},{index}")


class Configurable:
    """Settings checked against a table of :class:`Setting`\\ s (shared by optimizers and schedules)."""

    name: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]]

    def __init__(self, where: dict[str, str] | None = None, **values: Any):
        where = where or {}
        known = {s.name: s for s in self.settings}
        for key in values:
            if key not in known:
                raise ModelError(where.get(key, key), f"not a setting of {self.name} (its settings: "
                                                      f"{', '.join(known)})")
        self.values: dict[str, Any] = {}
        for s in self.settings:
            if s.name in values:
                self.values[s.name] = check_value(s.kind, values[s.name], where.get(s.name, s.name))
            elif s.default is None:
                raise ModelError(where.get("", self.name), f"{self.name} needs {s.name} (torch's "
                                                           f"{self.torch_name} has no default for it)")
            else:
                self.values[s.name] = s.default
        self.check(where)

    #: the torch class this follows, for messages and docs
    torch_name: ClassVar[str] = ""

    def check(self, where: dict[str, str]) -> None:
        """Checks that involve several settings (none by default)."""

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def describe(self) -> dict[str, Any]:
        """Name and settings as plain JSON values (for checkpoints and generated code)."""
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()}}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.values == self.values

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.values.items())})"

    def symbols(self) -> dict[str, sp.Symbol]:
        out = {}
        for s in self.settings:
            for i, part in enumerate(s.symbol.split()):
                out[s.name if len(s.symbol.split()) == 1 else f"{s.name}[{i}]"] = _symbol(part)
        return out

    def value_of(self, key: str) -> float:
        if key.endswith("]"):
            name, i = key[:-1].split("[")
            return self.values[name][int(i)]
        return self.values[key]

    @classmethod
    def source(cls, method: str) -> str:
        """The source of a numeric static method, as a module-level function (for generated modules)."""
        text = textwrap.dedent(inspect.getsource(getattr(cls, method)))
        return "\n".join(line for line in text.splitlines() if line.strip() != "@staticmethod") + "\n"


# ---- optimizers ----------------------------------------------------------------------------------------
class Optimizer(Configurable):
    """An update rule: ``step`` moves every parameter; ``rule`` shows one parameter's update as steps."""

    @property
    def lr(self) -> float:
        return self.values["lr"]

    def with_lr(self, lr: float, where: str = "lr") -> "Optimizer":
        return type(self)(where={"lr": where}, **{**self.values, "lr": lr})

    def hyper(self) -> dict[str, Any]:
        """The keyword arguments of ``update`` besides ``lr``."""
        return {k: v for k, v in self.values.items() if k != "lr"}

    def init_state(self, params: dict) -> dict[str, dict]:
        """Empty state for every parameter (``update`` creates its entries at the first step)."""
        return {name: {} for name in params}

    def step(self, params: dict, grads: dict, state: dict, lr: float) -> dict[str, np.ndarray]:
        """New values of all parameters after one update with learning rate ``lr``; ``state`` is updated.

        A float32 parameter stays float32, and so does its state (the updates use Python numbers, which
        do not upcast); anything else is computed in float64.
        """
        hyper = self.hyper()
        new = {}
        for k in params:
            dtype = np.float32 if np.asarray(params[k]).dtype == np.float32 else np.float64
            new[k] = self.update(np.asarray(params[k], dtype=dtype), np.asarray(grads[k], dtype=dtype), state[k], lr,
                                 **hyper)
        return new

    @property
    def is_plain(self) -> bool:
        """The seed's rule w_new = w_old - eta dL/dw (plain SGD)."""
        return False

    @staticmethod
    def update(w, g, state, lr, **hyper):  # pragma: no cover - each optimizer defines it
        raise NotImplementedError

    def rule(self, param: str, symbol: sp.Symbol, gradient: sp.Expr) -> list[Step]:  # pragma: no cover
        """The update of parameter ``param`` (shown as ``symbol``) whose gradient is ``gradient``, as steps."""
        raise NotImplementedError


class _Rule:
    """Builds one parameter's update steps: its gradient g_{w,t}, its state m_{w,t}, ..., and the seed's
    last line ``w^(new) = w^(old) - eta * direction``. As in the seed, ``w`` is the current value."""

    def __init__(self, param: str, symbol: sp.Symbol, gradient: sp.Expr, hyper: dict[str, sp.Symbol]):
        self.param, self.symbol, self.gradient, self.h = param, symbol, gradient, hyper
        self.steps: list[Step] = []

    def state(self, base: str, index: str = "t") -> sp.Symbol:
        return indexed(base, self.symbol.name, index)

    def add(self, lhs: sp.Expr, value: sp.Expr) -> sp.Symbol:
        self.steps.append(Step("update", Math(lhs), (Math(value),), self.param))
        return lhs

    def start(self, *bases: str) -> None:
        """``(m_{w,0}, v_{w,0}) = (0, 0)``: the state as torch creates it."""
        zeros = [self.state(b, "0") for b in bases]
        lhs = zeros[0] if len(zeros) == 1 else sp.Tuple(*zeros)
        self.add(lhs, sp.S.Zero if len(zeros) == 1 else sp.Tuple(*[sp.S.Zero] * len(zeros)))

    def decayed_gradient(self, weight_decay: float) -> sp.Symbol:
        """g_{w,t} = dL/dw (+ lambda w, the L2 penalty torch adds to the gradient)."""
        value = self.gradient + (self.h["weight_decay"] * self.symbol if weight_decay else 0)
        return self.add(self.state("g"), value)

    def average(self, base: str, decay: sp.Expr, value: sp.Expr) -> sp.Symbol:
        """An exponential moving average: ``x_t = d x_{t-1} + (1 - d) value``."""
        return self.add(self.state(base), decay * self.state(base, "t-1") + (1 - decay) * value)

    def finish(self, direction: sp.Expr) -> list[Step]:
        """``w^(new) = w^(old) - eta direction``; a sum is named first (d_{w,t}), so the line stays unambiguous."""
        if isinstance(direction, sp.Add):
            direction = self.add(self.state("d"), direction)
        self.steps.append(Step("update", NewValue(self.symbol), (UpdateRule(self.symbol, direction),), self.param))
        return self.steps


class SGD(Optimizer):
    """torch.optim.SGD: momentum, dampening, Nesterov momentum and L2 weight decay."""

    name, torch_name = "sgd", "torch.optim.SGD"
    settings = (Setting("lr", 1e-3, "positive", "eta"), Setting("momentum", 0.0, "nonnegative", "mu"),
                Setting("dampening", 0.0, "unit", "tau"), Setting("weight_decay", 0.0, "nonnegative", "lambda"),
                Setting("nesterov", False, "flag"))

    def check(self, where):
        if self["nesterov"] and (self["momentum"] <= 0 or self["dampening"] != 0):
            raise ModelError(where.get("nesterov", "nesterov"),
                             "Nesterov momentum needs momentum > 0 and dampening = 0 (as torch.optim.SGD)")

    @property
    def is_plain(self) -> bool:
        return self["momentum"] == 0 and self["weight_decay"] == 0

    @staticmethod
    def update(w, g, state, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        """One torch.optim.SGD step of parameter w with gradient g; returns the new w (state: momentum)."""
        if weight_decay != 0:
            g = g + weight_decay * w
        if momentum != 0:
            if "momentum_buffer" not in state:
                buf = np.array(g)  # a copy, in the gradient's dtype
            else:
                buf = momentum * state["momentum_buffer"] + (1 - dampening) * g
            state["momentum_buffer"] = buf
            g = g + momentum * buf if nesterov else buf
        return w - lr * g

    def rule(self, param, symbol, gradient):
        if self.is_plain:
            return [Step("update", NewValue(symbol), (UpdateRule(symbol, gradient),), param)]
        r = _Rule(param, symbol, gradient, self.symbols())
        g = r.decayed_gradient(self["weight_decay"])
        if self["momentum"] == 0:
            return r.finish(g)
        r.add(r.state("b", "1"), r.state("g", "1"))
        carried = g if self["dampening"] == 0 else (1 - r.h["dampening"]) * g
        b = r.add(r.state("b"), r.h["momentum"] * r.state("b", "t-1") + carried)
        return r.finish(g + r.h["momentum"] * b if self["nesterov"] else b)


class RMSprop(Optimizer):
    """torch.optim.RMSprop: a moving average of squared gradients, optionally centred, with momentum."""

    name, torch_name = "rmsprop", "torch.optim.RMSprop"
    settings = (Setting("lr", 1e-2, "positive", "eta"), Setting("alpha", 0.99, "fraction", "alpha"),
                Setting("eps", 1e-8, "nonnegative", "epsilon"),
                Setting("weight_decay", 0.0, "nonnegative", "lambda"),
                Setting("momentum", 0.0, "nonnegative", "mu"), Setting("centered", False, "flag"))

    @staticmethod
    def update(w, g, state, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        """One torch.optim.RMSprop step of parameter w with gradient g; returns the new w."""
        state["step"] = state.get("step", 0) + 1
        if weight_decay != 0:
            g = g + weight_decay * w
        square_avg = state["square_avg"] = alpha * state.get("square_avg", 0.0) + (1 - alpha) * (g * g)
        if centered:
            grad_avg = state.get("grad_avg", 0.0)
            grad_avg = state["grad_avg"] = grad_avg + (1 - alpha) * (g - grad_avg)
            avg = np.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            avg = np.sqrt(square_avg) + eps
        if momentum > 0:
            buf = state["momentum_buffer"] = momentum * state.get("momentum_buffer", 0.0) + g / avg
            return w - lr * buf
        return w - lr * (g / avg)

    def rule(self, param, symbol, gradient):
        r, h = _Rule(param, symbol, gradient, self.symbols()), self.symbols()
        r.start(*["v"] + ["gbar"] * self["centered"] + ["b"] * (self["momentum"] > 0))
        g = r.decayed_gradient(self["weight_decay"])
        v = r.average("v", h["alpha"], g ** 2)
        if self["centered"]:
            v = v - r.average("gbar", h["alpha"], g) ** 2
        scaled = g / (sp.sqrt(v) + h["eps"])
        if self["momentum"] > 0:
            scaled = r.add(r.state("b"), h["momentum"] * r.state("b", "t-1") + scaled)
        return r.finish(scaled)


class Adam(Optimizer):
    """torch.optim.Adam: bias-corrected moving averages of the gradient and its square (AMSGrad optional)."""

    name, torch_name = "adam", "torch.optim.Adam"
    settings = (Setting("lr", 1e-3, "positive", "eta"), Setting("betas", (0.9, 0.999), "pair", "beta_1 beta_2"),
                Setting("eps", 1e-8, "nonnegative", "epsilon"),
                Setting("weight_decay", 0.0, "nonnegative", "lambda"), Setting("amsgrad", False, "flag"))
    #: AdamW decays the weights directly instead of adding lambda w to the gradient
    decoupled = False

    def hyper(self):
        return {**super().hyper(), "decoupled": self.decoupled}

    @staticmethod
    def update(w, g, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
        """One torch.optim.Adam step (AdamW: decoupled=True) of parameter w with gradient g; returns the new w."""
        t = state["step"] = state.get("step", 0) + 1
        beta1, beta2 = betas
        if weight_decay != 0:
            if decoupled:
                w = w * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * w
        exp_avg = state.get("exp_avg", 0.0)
        exp_avg = state["exp_avg"] = exp_avg + (1 - beta1) * (g - exp_avg)
        exp_avg_sq = state["exp_avg_sq"] = beta2 * state.get("exp_avg_sq", 0.0) + (1 - beta2) * (g * g)
        bias_correction1 = 1 - beta1 ** t
        bias_correction2 = 1 - beta2 ** t
        step_size = lr / bias_correction1
        if amsgrad:
            exp_avg_sq = state["max_exp_avg_sq"] = np.maximum(state.get("max_exp_avg_sq", 0.0), exp_avg_sq)
        denom = np.sqrt(exp_avg_sq) / bias_correction2 ** 0.5 + eps
        return w - step_size * (exp_avg / denom)

    def rule(self, param, symbol, gradient):
        r, h = _Rule(param, symbol, gradient, self.symbols()), self.symbols()
        t = STEP
        r.start("m", "v", *["vmax"] * self["amsgrad"])
        g = r.decayed_gradient(self["weight_decay"] if not self.decoupled else 0)
        m = r.average("m", h["betas[0]"], g)
        v = r.average("v", h["betas[1]"], g ** 2)
        if self["amsgrad"]:
            v = r.add(r.state("vmax"), sp.Max(r.state("vmax", "t-1"), v))
        m_hat = r.add(r.state("mhat"), m / (1 - h["betas[0]"] ** t))
        v_hat = r.add(r.state("vhat"), v / (1 - h["betas[1]"] ** t))
        direction = m_hat / (sp.sqrt(v_hat) + h["eps"])
        if self.decoupled and self["weight_decay"]:  # torch first scales w by 1 - eta lambda: the same thing
            direction += h["weight_decay"] * symbol
        return r.finish(direction)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay w <- w (1 - eta lambda), default lambda 0.01."""

    name, torch_name = "adamw", "torch.optim.AdamW"
    settings = tuple(Setting(s.name, 1e-2, s.kind, s.symbol) if s.name == "weight_decay" else s
                     for s in Adam.settings)
    decoupled = True


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, RMSprop, Adam, AdamW)}


def make_optimizer(name: str = "sgd", where: dict[str, str] | None = None, **settings: Any) -> Optimizer:
    """The optimizer called ``name`` with ``settings`` (torch's defaults for the rest), checked."""
    where = where or {}
    if name not in OPTIMIZERS:
        raise ModelError(where.get("optimizer", "optimizer"),
                         f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name](where=where, **settings)


# ---- learning-rate schedules ---------------------------------------------------------------------------
class Schedule(Configurable):
    """A learning rate per epoch; ``next_lr`` is torch's chainable formula (one ``scheduler.step()``)."""

    def advance(self, lr: float, epoch: int, base_lr: float) -> float:
        """The learning rate after ``epoch`` epochs (torch's ``last_epoch``), from the one before."""
        return self.next_lr(lr, epoch, base_lr, **self.values)

    @staticmethod
    def next_lr(lr, epoch, base_lr, **settings):  # pragma: no cover - each schedule defines it
        raise NotImplementedError

    def formula(self, base: sp.Symbol, epoch: sp.Symbol) -> sp.Expr:  # pragma: no cover
        raise NotImplementedError


class StepLR(Schedule):
    """torch.optim.lr_scheduler.StepLR: eta_e = eta_0 gamma^floor(e / step_size)."""

    name, torch_name = "step", "torch.optim.lr_scheduler.StepLR"
    settings = (Setting("step_size", None, "count", "s"), Setting("gamma", 0.1, "positive", "gamma"))

    @staticmethod
    def next_lr(lr, epoch, base_lr, step_size, gamma=0.1):
        """StepLR: multiply by gamma every step_size epochs."""
        if epoch == 0 or epoch % step_size != 0:
            return lr
        return lr * gamma

    def formula(self, base, epoch):
        h = self.symbols()
        return sp.Mul(base, h["gamma"] ** sp.floor(epoch / h["step_size"]), evaluate=False)  # eta_0 first, as written


class ExponentialLR(Schedule):
    """torch.optim.lr_scheduler.ExponentialLR: eta_e = eta_0 gamma^e."""

    name, torch_name = "exponential", "torch.optim.lr_scheduler.ExponentialLR"
    settings = (Setting("gamma", None, "positive", "gamma"),)

    @staticmethod
    def next_lr(lr, epoch, base_lr, gamma):
        """ExponentialLR: multiply by gamma every epoch."""
        return lr * gamma

    def formula(self, base, epoch):
        return sp.Mul(base, self.symbols()["gamma"] ** epoch, evaluate=False)  # eta_0 first, as written


class CosineAnnealingLR(Schedule):
    """torch.optim.lr_scheduler.CosineAnnealingLR: eta_min + (eta_0 - eta_min)(1 + cos(pi e / T_max)) / 2."""

    name, torch_name = "cosine", "torch.optim.lr_scheduler.CosineAnnealingLR"
    settings = (Setting("T_max", None, "count", "T_max"), Setting("eta_min", 0.0, "nonnegative", "eta_min"))

    @staticmethod
    def next_lr(lr, epoch, base_lr, T_max, eta_min=0.0):
        """CosineAnnealingLR's recursive form (it continues the cosine past T_max, as torch does)."""
        if (epoch - 1 - T_max) % (2 * T_max) == 0:
            return lr + (base_lr - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
        return ((1 + math.cos(math.pi * epoch / T_max)) / (1 + math.cos(math.pi * (epoch - 1) / T_max))
                * (lr - eta_min) + eta_min)

    def formula(self, base, epoch):
        h = self.symbols()
        return h["eta_min"] + (base - h["eta_min"]) * (1 + sp.cos(sp.pi * epoch / h["T_max"])) / 2


SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (StepLR, ExponentialLR, CosineAnnealingLR)}
SCHEDULE_KEYS = sorted({s.name for cls in SCHEDULES.values() for s in cls.settings})
OPTIMIZER_KEYS = sorted({s.name for cls in OPTIMIZERS.values() for s in cls.settings})


def make_schedule(name: str | None, where: dict[str, str] | None = None, **settings: Any) -> Schedule | None:
    """The schedule called ``name`` (None: a constant learning rate) with ``settings``, checked."""
    where = where or {}
    if name is None:
        if settings:
            key = sorted(settings)[0]
            raise ModelError(where.get(key, key), "a schedule setting, but no schedule is chosen "
                                                  f"(schedule = {' | '.join(map(repr, SCHEDULES))})")
        return None
    if name not in SCHEDULES:
        raise ModelError(where.get("schedule", "schedule"),
                         f"unknown schedule {name!r} (choose from {', '.join(SCHEDULES)})")
    return SCHEDULES[name](where={"": where.get("schedule", "schedule"), **where}, **settings)


# ---- the update rule as derivation steps ---------------------------------------------------------------
def update_steps(optimizer: Optimizer, params: list[tuple[str, sp.Symbol, sp.Expr]],
                 schedule: Schedule | None = None, first_step: bool = False) -> list[Step]:
    """The update of each ``(name, symbol, gradient)`` as steps, after a step giving the settings' values
    (``(eta, beta_1, beta_2, epsilon) = (0.001, 0.9, 0.999, 1e-8)``) and, with a schedule, the learning
    rate of epoch e (``eta = eta_0 gamma^e``). Plain SGD at a constant rate is the seed's
    ``w^(new) = w^(old) - eta dL/dw`` alone.

    ``first_step`` adds, after the settings, the step count and epoch of the optimizer's first update
    (``(t, e) = (1, 0)``): the derivation is then shown with that update's numbers (see :func:`follow_rule`).
    """
    steps: list[Step] = []
    if schedule is not None:
        steps.append(Step("update", Math(ETA), (Math(schedule.formula(_symbol("eta_0"), EPOCH)),)))
    for name, symbol, gradient in params:
        steps += optimizer.rule(name, symbol, gradient)
    if optimizer.is_plain and schedule is None:
        return steps
    used = shown_symbols(steps)
    values = []
    for owner in (optimizer, schedule):
        for key, symbol in (owner.symbols().items() if owner is not None else ()):
            if key == "lr" and schedule is not None:
                symbol = _symbol("eta_0")
            if symbol in used or key == "lr":
                value = owner.value_of(key)
                values.append((symbol, sp.Integer(value) if isinstance(value, int) else sp.Float(value)))
    counter = [(STEP, sp.Integer(1))] * (not optimizer.is_plain) + [(EPOCH, sp.Integer(0))] * (schedule is not None)
    firsts = [values, counter] if first_step else [values]
    return [Step("update", *_assignment(pairs)) for pairs in firsts] + steps


def shown_symbols(steps: list[Step]) -> set[sp.Symbol]:
    """Every symbol the steps write (in their left-hand sides, forms and update directions)."""
    shown = [f.expr if isinstance(f, Math) else f.gradient for s in steps for f in (s.lhs, *s.forms)
             if isinstance(f, (Math, UpdateRule))]
    return set().union(*[e.free_symbols for e in shown])


def _assignment(pairs: list[tuple[sp.Symbol, sp.Expr]]) -> tuple[Math, tuple[Math]]:
    """``(a, b) = (1, 2)`` (or ``a = 1`` for one pair) as a step's left-hand side and form."""
    lhs, rhs = (sp.Tuple(*parts) if len(pairs) > 1 else parts[0] for parts in zip(*pairs))
    return Math(lhs), (Math(rhs),)


# ---- the update rule evaluated as written -------------------------------------------------------------
@dataclass
class FollowedRule:
    """The update steps evaluated at one step: what :func:`follow_rule` returns."""

    #: every symbol the steps define or use, with its value: settings, eta, t, e and each state
    #: ``X_{w,t}`` (at t = 1 also as ``X_{w,1}``; its value one step before as ``X_{w,t-1}``)
    values: dict[sp.Symbol, Any]
    #: each parameter's value after the update, by name
    new: dict[str, Any]
    #: the steps that hold at this step; at t = 1 a general step ``b_{w,t} = mu b_{w,t-1} + ...`` does
    #: not (SGD's buffer starts as ``b_{w,1} = g_{w,1}``), and after t = 1 the start ``X_{w,0} = 0`` does not
    held: list[Step]


def _time_index(symbol: sp.Basic) -> tuple[str, str] | None:
    """``("m_w", "t-1")`` for the state symbol m_{w,t-1}; None for a symbol without a time index."""
    if not isinstance(symbol, RuleSymbol) or "," not in symbol.name:
        return None
    base, index = symbol.name.rsplit(",", 1)
    return base, index


def numeric_value(expr: sp.Expr, env: dict[sp.Symbol, Any]) -> Any:
    """``expr`` evaluated with NumPy (elementwise on arrays) at the values ``env`` gives its symbols."""
    symbols = sorted(expr.free_symbols, key=lambda s: (s.name, type(s).__name__))
    missing = [s.name for s in symbols if s not in env]
    if missing:
        raise ValueError(f"{expr} needs a value for {', '.join(missing)}")
    function = sp.lambdify(symbols, expr, modules="numpy", dummify=True)
    with np.errstate(all="ignore"):  # a value that overflows is shown as it is (inf), as training computes it
        return function(*(env[s] for s in symbols))


def follow_rule(steps: list[Step], known: dict[sp.Symbol, Any], t: int = 1, epoch: int = 0,
                previous: dict[sp.Symbol, Any] | None = None) -> FollowedRule:
    """The update steps (of :func:`update_steps`) evaluated in order, as written, at step ``t`` of epoch
    ``epoch``: the numbers a worked example shows, from the displayed rule itself.

    ``known`` gives each parameter's symbol and gradient symbol a value (and ``eta`` for plain SGD,
    whose rule shows no settings); ``previous`` is the :attr:`FollowedRule.values` of step t - 1 (none at
    t = 1: each state starts from its ``X_{w,0}`` step, or at ``X_{w,1}``). A step that needs a value
    nothing gives raises ValueError: the shown rule would not say how to compute it.
    """
    env: dict[sp.Symbol, Any] = {**known, STEP: t, EPOCH: epoch}
    for symbol, value in (previous or {}).items():
        where = _time_index(symbol)
        if where is not None and where[1] == "t":
            env[_symbol(f"{where[0]},t-1")] = value
    new: dict[str, Any] = {}
    held: list[Step] = []
    for step in steps:
        if isinstance(step.lhs, NewValue):
            rule = step.forms[0]
            new[step.subject] = numeric_value(rule.param - ETA * rule.gradient, env)
            held.append(step)
            continue
        lhs, rhs = step.lhs.expr, step.forms[0].expr
        holds = True
        for target, value in (zip(lhs, rhs) if isinstance(lhs, sp.Tuple) else [(lhs, rhs)]):
            base, index = _time_index(target) or (None, None)
            if target in (STEP, EPOCH):  # the step count shown: it holds at that step only
                holds &= env[target] == value
            elif index == "0":  # a state's start: X_{w,t-1} at the first step
                holds &= t == 1
                if t == 1:
                    env[target] = env[_symbol(f"{base},t-1")] = numeric_value(value, env)
            elif index == "1" and t > 1 or index == "t" and target in env:  # the start replaces the rule at t = 1
                holds = False
            else:
                env[target] = numeric_value(value, env)
                if index is not None and t == 1:  # at t = 1, X_{w,1} and X_{w,t} are one value
                    env[_symbol(f"{base},1")] = env[_symbol(f"{base},t")] = env[target]
        if holds:
            held.append(step)
    return FollowedRule(env, new, held)


# ---- the same update in a generated module -------------------------------------------------------------
def batches(n, batch_size, rng):
    """Row indices of each batch of one epoch: None (every row) for the full batch, else a fresh
    shuffle from ``rng`` cut into batches of ``batch_size`` (the last one may be smaller)."""
    if batch_size is None or batch_size >= n:
        return [None]
    order = rng.permutation(n)
    return [order[first:first + batch_size] for first in range(0, n, batch_size)]


def module_source(optimizer: Optimizer, schedule: Schedule | None = None) -> str:
    """Python source (NumPy and the standard library only) that trains a generated module's
    ``loss_and_grad`` with ``optimizer`` exactly as ``symbackprop train`` does: the same ``update``,
    ``next_lr`` and ``batches`` functions, copied from this module."""
    def literal(config: Configurable | None) -> str:
        return "None" if config is None else repr(config.describe())

    hyper = ", ".join(f"{k}={v!r}" for k, v in optimizer.hyper().items())
    next_lr = textwrap.dedent("""\
        def next_lr(lr, epoch, base_lr):
            \"\"\"The learning rate after `epoch` epochs: constant (no schedule).\"\"\"
            return lr
        """)
    if schedule is not None:
        settings = ", ".join(f"{k}={v!r}" for k, v in schedule.values.items())
        next_lr = schedule.source("next_lr").replace("def next_lr(", "def schedule_next_lr(", 1) + textwrap.dedent(f"""


            def next_lr(lr, epoch, base_lr):
                \"\"\"The learning rate after `epoch` epochs ({schedule.torch_name}).\"\"\"
                return schedule_next_lr(lr, epoch, base_lr, {settings})
            """)
    parts = [
        f"# ---- training: {optimizer.torch_name}'s update, as `symbackprop train` runs it "
        f"{'-' * max(0, 40 - len(optimizer.torch_name))}\nimport math\n\n"
        f"OPTIMIZER = {literal(optimizer)}\nSCHEDULE = {literal(schedule)}\n",
        optimizer.source("update"),
        next_lr,
        inspect.getsource(batches),
        textwrap.dedent(f'''\
            def init_state(params):
                """The optimizer's state for every parameter at the start (filled in by the first step)."""
                return {{name: {{}} for name in params}}


            def step(params, grads, state, lr=OPTIMIZER["lr"]):
                """Every parameter after one update; `state` (from init_state) is updated in place.
                A float32 parameter stays float32 (and so does its state); others are float64."""
                new = {{}}
                for k in params:
                    dtype = np.float32 if np.asarray(params[k]).dtype == np.float32 else np.float64
                    new[k] = update(np.asarray(params[k], dtype=dtype), np.asarray(grads[k], dtype=dtype),
                                    state[k], lr, {hyper})
                return new


            def train(params, data, epochs, batch_size=None, seed=0):
                """Train as `symbackprop train` does (same batches, updates and schedule); the final parameters."""
                rng = np.random.default_rng(seed)
                state, lr = init_state(params), OPTIMIZER["lr"]
                n = len(next(iter(data.values()))) if data else 1
                for epoch in range(1, epochs + 1):
                    for rows in batches(n, batch_size, rng):
                        part = data if rows is None else {{k: v[rows] for k, v in data.items()}}
                        params = step(params, loss_and_grad(params, part)[1], state, lr)
                    lr = next_lr(lr, epoch, OPTIMIZER["lr"])
                return params
            '''),
    ]
    return "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
