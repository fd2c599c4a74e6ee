"""Rendering: the seed's LaTeX lines exactly, well-formed LaTeX for every format, and notebook display."""
import pytest

from symbackprop import derive
from test_derive import seed_graph, shared_weight_graph, two_layer_graph

SEED_LATEX = [
    r"\frac{\partial L}{\partial a} = a - y",
    r"\frac{\partial a}{\partial z} = \sigma'(z) = \sigma(z) \left(1 - \sigma(z)\right)",
    r"\frac{\partial L}{\partial z} = \frac{\partial L}{\partial a} \cdot \frac{\partial a}{\partial z}"
    r" = \left(a - y\right) \cdot \sigma(z) \left(1 - \sigma(z)\right)",
    r"\frac{\partial L}{\partial w} = \frac{\partial L}{\partial z} \cdot \frac{\partial z}{\partial w}"
    r" = \frac{\partial L}{\partial z} \cdot x",
    r"\frac{\partial L}{\partial b} = \frac{\partial L}{\partial z} \cdot \frac{\partial z}{\partial b}"
    r" = \frac{\partial L}{\partial z}",
    r"w^{(new)} = w^{(old)} - \eta \frac{\partial L}{\partial w}",
    r"b^{(new)} = b^{(old)} - \eta \frac{\partial L}{\partial b}",
]


def parse_latex(line: str) -> None:
    """Raise if ``line`` is not well-formed math, using matplotlib's mathtext parser."""
    mathtext = pytest.importorskip("matplotlib.mathtext")
    mathtext.MathTextParser("path").parse(f"${line}$")


def test_seed_latex_is_the_five_steps_of_the_textbook():
    assert derive(seed_graph()).to("latex").splitlines() == SEED_LATEX


def test_the_latex_checker_rejects_malformed_latex():
    with pytest.raises(ValueError):
        parse_latex(r"\frac{\partial L}{")


@pytest.mark.parametrize("make", [seed_graph, two_layer_graph, shared_weight_graph])
@pytest.mark.parametrize("options", [{}, {"expanded": True}, {"shapes": True}])
def test_every_latex_line_is_well_formed(make, options):
    for line in derive(make()).to("latex", **options).splitlines():
        parse_latex(line)


def test_markdown_wraps_each_step_in_a_display_block():
    text = derive(seed_graph()).to("markdown")
    blocks = text.split("$$")[1::2]
    assert [b.strip() for b in blocks] == SEED_LATEX
    assert text.startswith("## Backpropagation: single sigmoid neuron")


def test_text_shows_the_chain_rule_in_plain_symbols():
    lines = derive(seed_graph()).to("text").splitlines()
    assert lines[0].endswith("dL/da = a - y")
    assert "dL/dz = dL/da * da/dz = (a - y) * sigmoid(z)*(1 - sigmoid(z))" in lines[2]
    assert lines[3].endswith("dL/dw = dL/dz * dz/dw = dL/dz * x")
    assert lines[5].endswith("w_new = w_old - eta * dL/dw")


def test_deeper_network_repeats_the_steps_layer_by_layer_backwards():
    d = derive(two_layer_graph())
    assert [(s.kind, s.subject) for s in d.steps if s.kind != "update"] == [
        ("loss", "a2"), ("local", "a2"), ("chain", "z2"), ("param", "w2"), ("param", "b2"),
        ("local", "z2"), ("chain", "a1"), ("local", "a1"), ("chain", "z1"), ("param", "w1"), ("param", "b1")]
    assert r"\tanh'(z_{1})" in d.to("latex")


def test_jupyter_shows_an_aligned_block():
    d = derive(seed_graph())
    latex = d._repr_latex_()
    assert latex.startswith("$$\\begin{aligned}") and latex.endswith("\\end{aligned}$$")
    assert r"\frac{\partial L}{\partial a} &= a - y" in latex
    assert d._repr_markdown_() == d.to("markdown")


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format 'html'"):
        derive(seed_graph()).to("html")
