"""Render a derivation's steps as LaTeX, Markdown, MathML, an HTML page or plain text.

A renderer prints each display node of :mod:`symbackprop.steps` with one ``_print_<Class>`` method and
delegates SymPy expressions to a printer of :mod:`symbackprop.printing`. A new format is a new
subclass of :class:`Renderer`.

With an ``evaluation`` (:mod:`symbackprop.evaluate`) the derivation is shown at a point: the forward
pass first, and every step followed by its numbers (the form with values in place of symbols, printed
by the matching printer of :mod:`symbackprop.valueprint`, then the value).
"""
from __future__ import annotations

import html
from contextlib import contextmanager
from xml.dom import minidom

import sympy as sp

from .derive import EXPAND_LIMIT
from .functions import CONVENTIONS, prime_names
from .printing import MINUS, NetworkLatexPrinter, NetworkMathMLPrinter, NetworkTextPrinter, mathml_name
from .stable import rules_used
from .steps import Step
from .valueprint import ValueLatexPrinter, ValueMathMLPrinter, ValueTextPrinter

TITLES = {
    "loss": "derivative of the loss",
    "local": "local derivative",
    "chain": "chain rule",
    "accumulate": "sum over all uses",
    "param": "gradient of a parameter",
    "gradient": "gradient of an input",
    "update": "gradient-descent update",
    "expanded": "expanded gradient",
    "given": "given",
    "forward": "forward pass",
    "value": "value of the loss",
}
#: steps of the forward pass: their numbers follow on the same line even where a format breaks lines
FORWARD_KINDS = ("given", "forward", "value")


class Renderer:
    """Base renderer: one line per step, ``lhs = form = form``, then the numbers when evaluated."""

    printer_class = NetworkLatexPrinter
    value_printer_class = ValueLatexPrinter
    #: how the renderer writes ``=`` between forms and ``+`` between the terms of a sum
    equals, plus = " = ", " + "

    def __init__(self, derivation, shapes: bool = False, expanded: bool = False, evaluation=None,
                 expand_limit: int | None = EXPAND_LIMIT):
        self.derivation = derivation
        self.evaluation = evaluation
        self.show_shapes = shapes
        self.steps = derivation.steps + (derivation.expanded_steps(expand_limit) if expanded else [])
        self.forward = evaluation.forward_steps() if evaluation is not None else []
        shapes_by_name = {n: q.shape for n, q in derivation.graph.quantities.items()}
        self.math = self.printer_class(shapes_by_name)
        self.numbers = None if evaluation is None else self.value_printer_class(
            shapes_by_name, evaluation.values, evaluation.digits)
        #: one line for the gradients whose expanded form is over the limit (they are not expanded)
        self.notice = derivation.expansion_notice(expand_limit) if expanded else None

    # ---- display nodes -------------------------------------------------------------------------
    def display(self, node) -> str:
        return getattr(self, f"_print_{type(node).__name__}")(node)

    @contextmanager
    def printing_values(self):
        """Print with the value printer: each symbol becomes its value."""
        saved, self.math = self.math, self.numbers
        try:
            yield
        finally:
            self.math = saved

    def _print_Math(self, node):
        return self.math.doprint(node.expr)

    def _factor(self, node) -> str:
        text = self.display(node)
        expr = getattr(node, "expr", None)
        if isinstance(expr, sp.Add) or (isinstance(expr, sp.Mul) and expr.could_extract_minus_sign()):
            return self.parens(text)
        if expr is not None and self.math is self.numbers and self.numbers.is_negative(expr):
            return self.parens(text)
        return text

    def _print_Total(self, node):
        return self.plus.join(self.display(t) for t in node.terms)

    # ---- lines ---------------------------------------------------------------------------------
    def title(self, step: Step) -> str:
        if step.kind == "given":
            return {"param": "parameter", "constant": "constant"}.get(self.derivation.graph[step.subject].kind, "input")
        return TITLES[step.kind]

    def forms(self, step: Step) -> list[str]:
        """The step's symbolic forms."""
        return [self.display(f) for f in step.forms]

    def numbers_of(self, step: Step) -> list[str]:
        """The step's numbers: its form with values, then its value (none without an evaluation)."""
        ev = self.evaluation
        if ev is None:
            return []
        out = []
        form = ev.numeric_form(step)
        if form is not None:
            with self.printing_values():
                out.append(self.display(form))
        symbol = ev.value_symbol(step)
        if symbol is not None:
            value = self.numbers.doprint(symbol)
            if value not in out:
                out.append(value)
        return out

    def shape_of_step(self, step: Step) -> str:
        if self.show_shapes and step.subject:
            return self.shape_note(self.derivation.graph[step.subject].shape)
        return ""

    def line(self, step: Step) -> str:
        parts = [self.display(step.lhs), *self.forms(step), *self.numbers_of(step)]
        return self.equals.join(parts) + self.shape_of_step(step)

    def broken(self, step: Step) -> bool:
        """Whether a format that breaks lines puts the step's numbers on a line of their own."""
        return step.kind not in FORWARD_KINDS and bool(step.forms)

    @property
    def all_steps(self) -> list[Step]:
        return self.forward + self.steps

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
        """Plain-text lines about what is not shown (an expanded form over its limit, an update step without
        numbers)."""
        return ([self.notice] if self.notice else []) + (self.evaluation.notices() if self.evaluation else [])

    def render(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


def latex_text(text: str) -> str:
    """Plain text for ``\\text{...}``: LaTeX's special characters escaped (names may hold ``_``)."""
    special = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "^": r"\^{}", "#": r"\#",
               "$": r"\$", "%": r"\%", "&": r"\&", "~": r"\~{}"}
    return "".join(special.get(ch, ch) for ch in text)


class LatexRenderer(Renderer):
    """One LaTeX math line per step (no ``$``), or an ``aligned`` block with ``standalone=True``."""

    def __init__(self, derivation, shapes: bool = False, expanded: bool = False, evaluation=None,
                 expand_limit: int | None = EXPAND_LIMIT, standalone: bool = False):
        super().__init__(derivation, shapes, expanded, evaluation, expand_limit)
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
        return rf"{self.math.doprint(node.param)}^{{(\text{{new}})}}"

    def _print_UpdateRule(self, node):
        return rf"{self.math.doprint(node.param)}^{{(\text{{old}})}} - \eta {self.math.doprint(node.gradient)}"

    def shape_note(self, shape):
        space = r"\mathbb{R}" if not shape else r"\mathbb{R}^{" + r" \times ".join(map(str, shape)) + "}"
        return rf" \quad \in {space}"

    def lines(self) -> list[str]:
        steps = [self.line(s) for s in self.all_steps]
        notes = [rf"\text{{convention: }} {c}" for c in self.conventions()]
        return steps + notes + [rf"\text{{{latex_text(n)}}}" for n in self.notices()]

    def aligned_rows(self, step: Step) -> list[str]:
        """``lhs &= forms``, and the numbers on a row of their own (``&= numbers``) where the step breaks."""
        lhs, forms, numbers = self.display(step.lhs), self.forms(step), self.numbers_of(step)
        note = self.shape_of_step(step)
        if numbers and self.broken(step):
            return [f"{lhs} &= {' = '.join(forms)}{note}", f"&= {' = '.join(numbers)}"]
        return [f"{lhs} &= {' = '.join(forms + numbers)}{note}"]

    def aligned(self, steps: list[Step], notes: bool = True) -> str:
        rows = [row for s in steps for row in self.aligned_rows(s)]
        if notes:
            rows += [rf"&\text{{convention: }} {c}" for c in self.conventions()]
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"

    def render(self) -> str:
        if not self.standalone:
            return "\n".join(self.lines())
        return "$$" + self.aligned(self.all_steps) + "$$"


class MarkdownRenderer(LatexRenderer):
    """Markdown with ``$$`` blocks: pastes into a Jupyter notebook or a GitHub README."""

    def render(self) -> str:
        d = self.derivation
        out = [f"## Backpropagation: {d.graph.name}", ""]
        if self.forward:
            out += ["### Forward pass", "", "$$", self.aligned(self.forward, notes=False), "$$", "",
                    "### Backward pass", ""]
        for i, step in enumerate(self.steps, 1):
            block = self.aligned([step], notes=False) if self.numbers_of(step) and self.broken(step) \
                else self.line(step)
            out += [f"{i}. {self.title(step).capitalize()}", "", "$$", block, "$$", ""]
        for c in self.conventions():
            out += [f"Convention: ${c}$", ""]
        out += [f"Note: {n}" for n in self.notices()]
        return "\n".join(out).rstrip() + "\n"


class TextRenderer(Renderer):
    """Plain text for terminals and logs: ``dL/dz = dL/da * da/dz``."""

    printer_class = NetworkTextPrinter
    value_printer_class = ValueTextPrinter
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
        steps = self.all_steps
        width = max(len(self.title(s)) for s in steps) if steps else 0
        out = []
        for step in steps:
            lhs, forms, numbers = self.display(step.lhs), self.forms(step), self.numbers_of(step)
            head = f"{self.title(step):<{width}}  "
            if numbers and self.broken(step):  # the numbers on the next line, their = under the first one
                out.append(head + " = ".join([lhs, *forms]) + self.shape_of_step(step))
                out.append(" " * len(head + lhs) + " = " + " = ".join(numbers))
            else:
                out.append(head + " = ".join([lhs, *forms, *numbers]) + self.shape_of_step(step))
        out += [f"convention: {c}" for c in self.conventions()]
        return "\n".join(out + [f"note: {n}" for n in self.notices()])


class MathMLRenderer(Renderer):
    """One presentation-MathML ``<math>`` element per step: browsers display it with no script or font.

    It follows MathML Core, what browsers implement: bold vectors and matrices in Unicode's bold letters,
    the minus sign U+2212, ``ℝ`` (U+211D), a prime as a character after the name, words as ``<mtext>``.
    """

    printer_class = NetworkMathMLPrinter
    value_printer_class = ValueMathMLPrinter
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
        return (f'<mrow><mi mathvariant="normal">{name}</mi><mo lspace="0" rspace="0">&#8242;</mo>'
                f"{self.parens(self.math.doprint(node.arg))}</mrow>")

    def _print_Product(self, node):
        op = "<mo>&#8857;</mo>" if node.hadamard else "<mo>&#183;</mo>"
        return op.join(self._factor(f) for f in node.factors)

    def _print_NewValue(self, node):
        return f"<msup>{self.math.doprint(node.param)}{self.parens('<mtext>new</mtext>')}</msup>"

    def _print_UpdateRule(self, node):
        return (f"<msup>{self.math.doprint(node.param)}{self.parens('<mtext>old</mtext>')}</msup>"
                f"{MINUS}<mi>&#951;</mi>{self.math.doprint(node.gradient)}")

    def shape_note(self, shape):
        space = "<mi>&#8477;</mi>"
        if shape:
            sizes = "<mo>&#215;</mo>".join(f"<mn>{n}</mn>" for n in shape)
            space = f"<msup>{space}<mrow>{sizes}</mrow></msup>"
        return f'<mspace width="1em"/><mo>&#8712;</mo>{space}'

    def math_element(self, content: str, block: bool = True) -> str:
        display = ' display="block"' if block else ""
        return steady_brackets(f'<math xmlns="http://www.w3.org/1998/Math/MathML"{display}><mrow>{content}</mrow></math>')

    def render(self) -> str:
        out = [self.math_element(self.line(s)) for s in self.all_steps]
        notes = [f"<p>convention: {html.escape(c)}</p>" for c in self.conventions()]
        return "\n".join(out + notes + [f"<p>note: {html.escape(n)}</p>" for n in self.notices()])


#: elements that make a bracketed group taller than a line of text: its brackets must stretch
TALL = ("mfrac", "mtable", "munderover", "munder")
BRACKETS = set("()[]{}|")


def steady_brackets(markup: str) -> str:
    """Brackets around a group no taller than a line are marked ``stretchy="false"``.

    Browsers stretch a bracket to the height of what it encloses; without a math font (as on many
    Linux systems) the next size up of ``(`` is far taller than ``(y)`` needs. A group holding a fraction
    or a matrix keeps stretchy brackets.
    """
    document = minidom.parseString(markup)
    for mo in document.getElementsByTagName("mo"):
        if mo.firstChild is None or mo.firstChild.nodeValue not in BRACKETS:
            continue
        if not any(mo.parentNode.getElementsByTagName(tag) for tag in TALL):
            mo.setAttribute("stretchy", "false")
    return document.documentElement.toxml().encode("ascii", "xmlcharrefreplace").decode()


class HtmlRenderer(MathMLRenderer):
    """An HTML page (or, with ``fragment=True``, a ``<div>`` for a notebook) that shows the steps in a table
    aligned at the equals sign: MathML and CSS only, no script, no download.

    The report (:mod:`symbackprop.report`) builds its page from the same pieces: :data:`STYLE`,
    :meth:`steps_table` and :func:`html_page`.
    """

    def __init__(self, derivation, shapes: bool = False, expanded: bool = False, evaluation=None,
                 expand_limit: int | None = EXPAND_LIMIT, fragment: bool = False):
        super().__init__(derivation, shapes, expanded, evaluation, expand_limit)
        self.fragment = fragment

    def rows(self, step: Step, number: int | None = None, anchor: str = "", link: str = "") -> list[str]:
        """The table rows of one step: ``lhs | = forms = numbers``, the numbers on a second row where it breaks."""
        lhs, forms, numbers = self.display(step.lhs), self.forms(step), self.numbers_of(step)
        first, second = (forms, numbers) if numbers and self.broken(step) else (forms + numbers, [])
        rhs = lambda parts, note="": self.math_element("".join(self.equals + p for p in parts) + note, block=False)
        ident = f' id="{anchor}"' if anchor else ""
        out = [f'<tr class="step"{ident}><td class="n">{"" if number is None else number}</td>'
               f'<td class="what">{html.escape(self.title(step))}</td>'
               f'<td class="lhs">{self.math_element(lhs, block=False)}</td>'
               f'<td class="rhs">{rhs(first, self.shape_of_step(step))}</td>'
               f'<td class="link">{link}</td></tr>']
        if second:
            out.append(f'<tr class="numbers"><td></td><td></td><td></td><td class="rhs">{rhs(second)}</td>'
                       "<td></td></tr>")
        return out

    def steps_table(self, steps: list[Step], numbered: bool = True, anchor=None, link=None) -> str:
        """A table of steps; ``anchor(i, step)`` gives a row's id and ``link(i, step)`` its last cell."""
        rows = []
        for i, step in enumerate(steps, 1):
            rows += self.rows(step, i if numbered else None, anchor(i, step) if anchor else "",
                              link(i, step) if link else "")
        return '<div class="scroll"><table class="steps">\n' + "\n".join(rows) + "\n</table></div>"

    def notes(self) -> list[str]:
        conventions = [f'<p class="note">Convention: {html.escape(c)}</p>' for c in self.conventions()]
        return conventions + [f'<p class="note">Note: {html.escape(n)}</p>' for n in self.notices()]

    def body(self) -> list[str]:
        parts = []
        if self.forward:
            parts += ["<h2>Forward pass</h2>", self.steps_table(self.forward, numbered=False),
                      "<h2>Backward pass</h2>"]
        parts += [self.steps_table(self.steps), *self.notes()]
        return parts

    def render(self) -> str:
        title = f"Backpropagation: {self.derivation.graph.name}"
        if self.fragment:
            return "\n".join([f'<div class="symbackprop"><style>{scoped(STEPS_STYLE, ".symbackprop")}</style>',
                               f"<h3>{html.escape(title)}</h3>", *self.body(), "</div>"])
        return html_page(title, self.body())


#: the page: a readable column of text
BODY_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.45;
       max-width: 84rem; margin: 2rem auto; padding: 0 1.5rem; color: #1f2328; background: #fff; }"""
#: the steps: MathML in a math font, aligned at the equals sign (the left column right-aligned)
STEPS_STYLE = """
math { font-family: math, "STIX Two Math", "Latin Modern Math", "Cambria Math", "DejaVu Serif", serif;
       font-size: 1.15em; math-style: normal; }
.scroll { overflow-x: auto; }
table.steps { border-collapse: collapse; margin: 0.5em 0 1em; }
table.steps td { padding: 0.35em 0.4em; vertical-align: baseline; white-space: nowrap; }
table.steps td.n { color: #888; text-align: right; font-size: 0.85em; }
table.steps td.what { color: #59636e; font-size: 0.85em; padding-right: 1em; }
table.steps td.lhs { text-align: right; padding-right: 0.1em; }
table.steps td.rhs { text-align: left; padding-left: 0.1em; }
table.steps tr.numbers td { padding-top: 0; }
table.steps td.link { font-size: 0.85em; padding-left: 1.5em; }
p.note { color: #59636e; }
"""
STYLE = BODY_STYLE + STEPS_STYLE


def scoped(style: str, scope: str) -> str:
    """``style`` with every rule limited to the inside of ``scope``, so that a fragment in a notebook styles
    itself and nothing around it."""
    rules = []
    for rule in style.split("}"):
        if "{" not in rule:
            continue
        selectors, body = rule.split("{", 1)
        prefixed = [f"{scope} {s.strip()}" for s in selectors.split(",")]
        rules.append(f"{', '.join(prefixed)} {{{body}}}")
    return "\n".join(rules)


def html_page(title: str, body: list[str], style: str = STYLE, meta: list[str] = ()) -> str:
    """A complete page: UTF-8, the style inline, no script and nothing fetched."""
    t = html.escape(title)
    return "\n".join(["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', *meta,
                       '<meta name="viewport" content="width=device-width, initial-scale=1">',
                       f"<title>{t}</title>", f"<style>{style}</style>", "</head>", "<body>", f"<h1>{t}</h1>",
                       *body, "</body>", "</html>"]) + "\n"


RENDERERS = {"latex": LatexRenderer, "markdown": MarkdownRenderer, "mathml": MathMLRenderer,
             "html": HtmlRenderer, "text": TextRenderer}


def render(derivation, fmt: str = "latex", **options) -> str:
    """Render ``derivation`` in ``fmt`` (latex, markdown, mathml, html or text)."""
    try:
        cls = RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(RENDERERS)}") from None
    return cls(derivation, **options).render()
