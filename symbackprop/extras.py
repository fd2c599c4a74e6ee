"""Optional dependencies (matplotlib, scikit-learn, torch), imported only where a feature needs them.

A missing one is a one-line :class:`~symbackprop.graph.UserError` saying what needs it and how to install
it, in the two forms users meet: an installed package (``pip install 'symbackprop[plot]'``) and a
checkout of the repository (``pip install -e '.[plot]'``).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .graph import UserError


def install_hint(extra: str) -> str:
    """``pip install 'symbackprop[EXTRA]'`` (or, in a checkout, ``pip install -e '.[EXTRA]'``)."""
    return f"pip install 'symbackprop[{extra}]' (or, in a checkout, pip install -e '.[{extra}]')"


def require(module: str, extra: str, needed_for: str, package: str | None = None) -> ModuleType:
    """Import ``module``, or raise a UserError: ``{needed_for} needs {package}: {install_hint}``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{needed_for} needs {package or module.split('.')[0]}: {install_hint(extra)}") from None


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the non-interactive Agg backend (files only, no window)."""
    matplotlib = require("matplotlib", "plot", "a loss plot (--plot)")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "plot", "a loss plot (--plot)")
