"""Render a derivation's steps as LaTeX, Markdown, MathML, an HTML page or plain text.

A renderer prints each display node of :mod:`symbackprop.steps` with one ``_print_<Class>`` method and
delegates SymPy expressions to a printer of :mod:`symbackprop.printing`. A new format is a new
subclass of :class:`Renderer`.
"""
from __future__ import annotations

import html

import sympy as sp

from .derive import EXPAND_LIMIT
from .functions import CONVENTIONS, prime_names
from .printing import NetworkLatexPrinter, NetworkMathMLPrinter, NetworkTextPrinter, mathml_name
from .stable import rules_used
from .steps import Step

TITLES = {
    "loss": "derivative of the loss",
    "local": "local derivative",
    "chain": "chain rule",
    "accumulate": "sum over all uses",
    "param": "gradient of a parameter",
    "gradient": "gradient of an input",
    "update": "gradient-descent update",
    "expanded": "expanded gradient",
}


class Renderer:
    """Base renderer: one line per step, ``lhs = form = form``."""

    printer_class = NetworkLatexPrinter
    #: how the renderer writes ``=`` between forms and ``+`` between the terms of a sum
    equals, plus = " = ", " + "

    def __init__(self, derivation, shapes: bool = False, expanded: bool = False,
                 expand_limit: int | None = EXPAND_LIMIT):
        self.derivation = derivation
        self.show_shapes = shapes
        self.steps = derivation.steps + (derivation.expanded_steps(expand_limit) if expanded else [])
        #: one line for the gradients whose expanded form is over the limit (they are not expanded)
        self.notice = derivation.expansion_notice(expand_limit) if expanded else None
        self.math = self.printer_class({n: q.shape for n, q in derivation.graph.quantities.items()})

    # ---- display nodes -------------------------------------------------------------------------
    def display(self, node) -> str:
        return getattr(self, f"_print_{type(node).__name__}")(node)

    def _print_Math(self, node):
        return self.math.doprint(node.expr)

    def _factor(self, node) -> str:
        text = self.display(node)
        expr = getattr(node, "expr", None)
        if isinstance(expr, sp.Add) or (isinstance(expr, sp.Mul) and expr.could_extract_minus_sign()):
            return self.parens(text)
        return text

    def _print_Total(self, node):
        return self.plus.join(self.display(t) for t in node.terms)

    # ---- lines ---------------------------------------------------------------------------------
    def line(self, step: Step) -> str:
        text = self.equals.join([self.display(step.lhs)] + [self.display(f) for f in step.forms])
        if self.show_shapes and step.subject:
            text += self.shape_note(self.derivation.graph[step.subject].shape)
        return text

    #: which of a convention's (LaTeX, text) forms this renderer prints
    convention_form = 0

    def conventions(self) -> list[str]:
        """Conventions at points without a derivative, and the stable forms the model is computed in."""
        graph = self.derivation.graph
        used = {type(e) for q in graph.computed for e in sp.preorder_traversal(q.expr)}
        notes = [c[self.convention_form] for f, c in CONVENTIONS.items() if f in used]
        return notes + [self.stable_form(written, computed) for written, computed in rules_used(graph.stable_rules)]

    def stable_form(self, written: sp.Expr, computed: sp.Expr) -> str:
        """One stable-form rule, in the same form (LaTeX or text) as the conventions."""
        if self.convention_form == 0:
            latex = NetworkLatexPrinter()
            return rf"{latex.doprint(written)} \text{{ is computed as }} {latex.doprint(computed)}"
        text = NetworkTextPrinter()
        return f"{text.doprint(written)} is computed as {text.doprint(computed)}"

    def notices(self) -> list[str]:
        """Plain-text lines about what is not shown (an expanded form over its limit)."""
        return [self.notice] if self.notice else []

    def render(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


def latex_text(text: str) -> str:
    """Plain text for ``\\text{...}``: LaTeX's special characters escaped (names may hold ``_``)."""
    special = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "^": r"\^{}", "#": r"\#",
               "$": r"\$", "%": r"\%", "&": r"\&", "~": r"\~{}"}
    return "".join(special.get(ch, ch) for ch in text)


class LatexRenderer(Renderer):
    """One LaTeX math line per step (no ``$``), or an ``aligned`` block with ``standalone=True``."""

    def __init__(self, derivation, shapes: bool = False, expanded: bool = False,
                 expand_limit: int | None = EXPAND_LIMIT, standalone: bool = False):
        super().__init__(derivation, shapes, expanded, expand_limit)
        self.standalone = standalone

    def parens(self, text):
        return rf"\left({text}\right)"

    def _print_Partial(self, node):
        sym = self.derivation.graph.symbol
        return rf"\frac{{\partial {self.math.doprint(sym(node.of))}}}{{\partial {self.math.doprint(sym(node.wrt))}}}"

    def _print_Prime(self, node):
        name = prime_names(node.func)[0]
        arg = self.math.doprint(node.arg)
        return f"{name}'({arg})"

    def _print_Product(self, node):
        op = r" \odot " if node.hadamard else r" \cdot "
        return op.join(self._factor(f) for f in node.factors)

    def _print_NewValue(self, node):
        return f"{self.math.doprint(node.param)}^{{(new)}}"

    def _print_UpdateRule(self, node):
        return rf"{self.math.doprint(node.param)}^{{(old)}} - \eta {self.math.doprint(node.gradient)}"

    def shape_note(self, shape):
        space = r"\mathbb{R}" if not shape else r"\mathbb{R}^{" + r" \times ".join(map(str, shape)) + "}"
        return rf" \quad \in {space}"

    def lines(self) -> list[str]:
        steps = [self.line(s) for s in self.steps]
        notes = [rf"\text{{convention: }} {c}" for c in self.conventions()]
        return steps + notes + [rf"\text{{{latex_text(n)}}}" for n in self.notices()]

    def render(self) -> str:
        lines = self.lines()
        if not self.standalone:
            return "\n".join(lines)
        aligned = [line.replace(" = ", " &= ", 1) for line in lines]
        return "$$\\begin{aligned}\n" + " \\\\\n".join(aligned) + "\n\\end{aligned}$$"


class MarkdownRenderer(LatexRenderer):
    """Markdown with ``$$`` blocks: pastes into a Jupyter notebook or a GitHub README."""

    def render(self) -> str:
        d = self.derivation
        out = [f"## Backpropagation: {d.graph.name}", ""]
        for i, step in enumerate(self.steps, 1):
            out += [f"{i}. {TITLES[step.kind].capitalize()}", "", "$$", self.line(step), "$$", ""]
        for c in self.conventions():
            out += [f"Convention: ${c}$", ""]
        out += [f"Note: {n}" for n in self.notices()]
        return "\n".join(out).rstrip() + "\n"


class TextRenderer(Renderer):
    """Plain text for terminals and logs: ``dL/dz = dL/da * da/dz``."""

    printer_class = NetworkTextPrinter
    convention_form = 1

    def parens(self, text):
        return f"({text})"

    def _print_Partial(self, node):
        return f"d{node.of}/d{node.wrt}"

    def _print_Prime(self, node):
        return f"{prime_names(node.func)[1]}'({self.math.doprint(node.arg)})"

    def _print_Product(self, node):
        return " * ".join(self._factor(f) for f in node.factors)  # * is elementwise, as in NumPy

    def _print_NewValue(self, node):
        return f"{node.param}_new"

    def _print_UpdateRule(self, node):
        return f"{node.param}_old - eta * {self.math.doprint(node.gradient)}"

    def shape_note(self, shape):
        return f"    [shape {shape}]" if shape else "    [scalar]"

    def render(self) -> str:
        width = max(len(TITLES[s.kind]) for s in self.steps) if self.steps else 0
        out = [f"{TITLES[s.kind]:<{width}}  {self.line(s)}" for s in self.steps]
        out += [f"convention: {c}" for c in self.conventions()]
        return "\n".join(out + [f"note: {n}" for n in self.notices()])


class MathMLRenderer(Renderer):
    """One presentation-MathML ``<math>`` element per step: browsers display it with no script or font."""

    printer_class = NetworkMathMLPrinter
    convention_form = 1
    equals, plus = "<mo>=</mo>", "<mo>+</mo>"

    def parens(self, text):
        return f"<mrow><mo>(</mo>{text}<mo>)</mo></mrow>"

    def symbol(self, name: str) -> str:
        return self.math.doprint(self.derivation.graph.symbol(name))

    def _print_Partial(self, node):
        return (f"<mfrac><mrow><mo>&#8706;</mo>{self.symbol(node.of)}</mrow>"
                f"<mrow><mo>&#8706;</mo>{self.symbol(node.wrt)}</mrow></mfrac>")

    def _print_Prime(self, node):
        name = html.escape(mathml_name(prime_names(node.func)[1]))
        return (f'<mrow><msup><mi mathvariant="normal">{name}</mi><mo>&#8242;</mo></msup>'
                f"{self.parens(self.math.doprint(node.arg))}</mrow>")

    def _print_Product(self, node):
        op = "<mo>&#8857;</mo>" if node.hadamard else "<mo>&#183;</mo>"
        return op.join(self._factor(f) for f in node.factors)

    def _print_NewValue(self, node):
        return f"<msup>{self.math.doprint(node.param)}{self.parens('<mi>new</mi>')}</msup>"

    def _print_UpdateRule(self, node):
        return (f"<msup>{self.math.doprint(node.param)}{self.parens('<mi>old</mi>')}</msup>"
                f"<mo>-</mo><mi>&#951;</mi>{self.math.doprint(node.gradient)}")

    def shape_note(self, shape):
        space = '<mi mathvariant="double-struck">R</mi>'
        if shape:
            sizes = "<mo>&#215;</mo>".join(f"<mn>{n}</mn>" for n in shape)
            space = f"<msup>{space}<mrow>{sizes}</mrow></msup>"
        return f'<mspace width="1em"/><mo>&#8712;</mo>{space}'

    def math_element(self, step: Step) -> str:
        return f'<math xmlns="http://www.w3.org/1998/Math/MathML" display="block"><mrow>{self.line(step)}</mrow></math>'

    def render(self) -> str:
        out = [self.math_element(s) for s in self.steps]
        notes = [f"<p>convention: {html.escape(c)}</p>" for c in self.conventions()]
        return "\n".join(out + notes + [f"<p>note: {html.escape(n)}</p>" for n in self.notices()])


class HtmlRenderer(MathMLRenderer):
    """A standalone HTML page: the steps as a numbered list of MathML blocks (no script, no download)."""

    def render(self) -> str:
        title = html.escape(f"Backpropagation: {self.derivation.graph.name}")
        items = [f"<li><p>{TITLES[s.kind].capitalize()}</p>\n{self.math_element(s)}</li>" for s in self.steps]
        notes = [f"<p>Convention: {html.escape(c)}</p>" for c in self.conventions()]
        notes += [f"<p>Note: {html.escape(n)}</p>" for n in self.notices()]
        return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
                          f"<title>{title}</title>", "</head>", "<body>", f"<h1>{title}</h1>", "<ol>", *items,
                          "</ol>", *notes, "</body>", "</html>"]) + "\n"


RENDERERS = {"latex": LatexRenderer, "markdown": MarkdownRenderer, "mathml": MathMLRenderer,
             "html": HtmlRenderer, "text": TextRenderer}


def render(derivation, fmt: str = "latex", **options) -> str:
    """Render ``derivation`` in ``fmt`` (latex, markdown, mathml, html or text)."""
    try:
        cls = RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(RENDERERS)}") from None
    return cls(derivation, **options).render()
