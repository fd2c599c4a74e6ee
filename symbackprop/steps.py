"""The derivation as data: an ordered list of steps, each a left-hand side and one or more forms.

A step is shown as ``lhs = form_1 = form_2``: first its chain-rule form (``dL/da * da/dz``), then its
value in the network's own symbols. The forms are small display trees (the classes below) holding
SymPy expressions; :mod:`symbackprop.render` turns them into LaTeX, Markdown or plain text, one
``_print_<Class>`` method per class, so a new output format is a new renderer, not edits here.

Step kinds, in the order a backward pass meets them:

``loss``        the loss differentiated by a quantity it uses directly (dL/da = a - y);
``local``       a local derivative of a node by one of its inputs (da/dz = sigma'(z));
``chain``       an adjoint through one consumer (dL/dz = dL/da * da/dz);
``accumulate``  an adjoint summed over several consumers (a value used in two places);
``param``       the gradient of a parameter (dL/dw = dL/dz * dz/dw = dL/dz * x);
``gradient``    the gradient of an input, when one is asked for;
``update``      the gradient-descent update of a parameter (w_new = w_old - eta dL/dw);
``expanded``    a gradient written with inputs and parameters only (on request).

A derivation evaluated at a point (:mod:`symbackprop.evaluate`) is preceded by its forward pass:

``given``       an input or parameter at the point (x = 1.5);
``forward``     a node by its definition (z = w x + b);
``value``       the loss by its definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import sympy as sp

KINDS = ("loss", "local", "chain", "accumulate", "param", "gradient", "update", "expanded", "given", "forward",
         "value")


class Adjoint(sp.Symbol):
    """``dL/dv``: the derivative of the loss by quantity ``v``, summed over every path (the adjoint)."""

    def __new__(cls, loss: str, of: str | None = None, **assumptions):
        if of is None:  # rebuilt from its name "dL/dv" (SymPy does this when copying symbols)
            loss, of = (part[1:] for part in loss.split("/", 1))
        obj = super().__new__(cls, f"d{loss}/d{of}", real=True)
        obj.loss, obj.of = loss, of
        return obj

    def __getnewargs_ex__(self):
        return ((self.loss, self.of), {})


@dataclass(frozen=True)
class Math:
    """A SymPy expression (it may contain :class:`Adjoint` symbols)."""

    expr: sp.Expr


@dataclass(frozen=True)
class Partial:
    """The local partial derivative of node ``of`` by its direct input ``wrt``: da/dz."""

    of: str
    wrt: str


@dataclass(frozen=True)
class Prime:
    """``f'(arg)``: the derivative of a one-argument function, written the textbook way."""

    func: type
    arg: sp.Expr


@dataclass(frozen=True)
class Product:
    """Factors in the order written; ``hadamard`` joins them with an elementwise product."""

    factors: tuple["Display", ...]
    hadamard: bool = False


@dataclass(frozen=True)
class Total:
    """A sum of terms (the paths through each consumer of a value)."""

    terms: tuple["Display", ...]


@dataclass(frozen=True)
class NewValue:
    """``w^(new)``."""

    param: sp.Symbol


@dataclass(frozen=True)
class UpdateRule:
    """``w^(old) - eta dL/dw``."""

    param: sp.Symbol
    gradient: sp.Symbol


Display = Union[Math, Partial, Prime, Product, Total, NewValue, UpdateRule]


@dataclass(frozen=True)
class Step:
    """One line of the derivation: ``lhs = forms[0] = forms[1] ...``."""

    kind: str
    lhs: Display
    forms: tuple[Display, ...]
    #: the quantity this step is about (the adjoint's node, the parameter, the local derivative's node)
    subject: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown step kind {self.kind!r}")
