"""Rendering: the seed's LaTeX lines exactly, well-formed LaTeX for every format, and notebook display."""
from html.parser import HTMLParser
from xml.etree import ElementTree

import pytest

from symbackprop import derive, sum_
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
    r"w^{(\text{new})} = w^{(\text{old})} - \eta \frac{\partial L}{\partial w}",
    r"b^{(\text{new})} = b^{(\text{old})} - \eta \frac{\partial L}{\partial b}",
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
    assert "dL/dz = dL/da * da/dz = (a - y) * sigmoid(z) * (1 - sigmoid(z))" in lines[2]
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
    with pytest.raises(ValueError, match="unknown format 'rtf'"):
        derive(seed_graph()).to("rtf")


# ---- MathML and HTML ------------------------------------------------------------------------------------
MATHML = "{http://www.w3.org/1998/Math/MathML}"


def mathml_elements(text: str) -> list:
    """Each line of ``text`` that is a <math> element, parsed (raises on malformed XML)."""
    return [ElementTree.fromstring(line) for line in text.splitlines() if line.startswith("<math")]


def spoken(element) -> str:
    """The characters of a MathML element in document order, separated by spaces."""
    return " ".join(t.strip() for t in element.itertext() if t.strip())


@pytest.mark.parametrize("make", [seed_graph, two_layer_graph, shared_weight_graph])
@pytest.mark.parametrize("options", [{}, {"expanded": True}, {"shapes": True}])
def test_every_mathml_step_is_well_formed_presentation_mathml(make, options):
    d = derive(make())
    elements = mathml_elements(d.to("mathml", **options))
    assert len(elements) == len(d.steps) + (len(d.expanded_steps()) if options.get("expanded") else 0)
    for e in elements:
        assert e.tag == MATHML + "math" and e.get("display") == "block"


def test_seed_mathml_reads_as_the_textbook_steps():
    steps = [spoken(e) for e in mathml_elements(derive(seed_graph()).to("mathml"))]
    assert steps[0] == "\u2202 L \u2202 a = a \u2212 y"
    assert steps[1] == "\u2202 a \u2202 z = \u03c3 \u2032 ( z ) = \u03c3 ( z ) \u2062 ( 1 \u2212 \u03c3 ( z ) )"
    assert steps[3] == "\u2202 L \u2202 w = \u2202 L \u2202 z \u00b7 \u2202 z \u2202 w = \u2202 L \u2202 z \u00b7 x"
    assert steps[5] == "w ( new ) = w ( old ) \u2212 \u03b7 \u2202 L \u2202 w"


def test_mathml_follows_mathml_core_bold_letters_double_struck_r_minus_sign_and_upright_words():
    """Browsers implement MathML Core, which ignores mathvariant="bold" and "double-struck" (issue 11)."""
    from test_layers import sigmoid_mlp
    text = derive(sigmoid_mlp([3, 4, 2])).to("mathml", shapes=True)
    assert "mathvariant=\"bold\"" not in text and "double-struck" not in text
    assert "<mi>&#119830;</mi>" in text      # W in Unicode's mathematical bold (U+1D416)
    assert "<mi>&#119834;</mi>" in text      # a in bold (U+1D41A)
    assert "<mi>&#8477;</mi>" in text        # the double-struck R (U+211D) of the shapes
    assert "<mo>&#8868;</mo>" in text        # the transpose of a^T
    assert "<mo>&#8857;</mo>" in text        # the Hadamard product
    assert "<mo>-</mo>" not in text and "<mo>&#8722;</mo>" in text   # the minus sign U+2212, not a hyphen
    assert "<mtext>new</mtext>" in text and "<mtext>old</mtext>" in text
    assert "<msup><mi mathvariant=\"normal\">&#963;</mi><mo>&#8242;</mo>" not in text  # no prime as a speck


def test_mathml_writes_a_hat_name_with_an_accent_and_keeps_it_bold():
    from symbackprop import Graph
    g = Graph("autoencoder")
    x = g.input("x", shape=(2,))
    xhat = g.node("xhat", 2 * x)
    from symbackprop.tensor import sum_
    g.loss("L", sum_((xhat - x) ** 2))
    text = derive(g, wrt=["x"]).to("mathml")
    assert '<mover accent="true"><mi>&#119857;</mi><mo>^</mo></mover>' in text   # bold x with a hat
    assert spoken(mathml_elements(text)[0]).endswith("= 2 \U0001d431 ^ \u2212 2 \U0001d431")  # x̂ before x


def test_brackets_stretch_only_around_fractions_and_matrices():
    """Without a math font a stretchy bracket around (y) grows to the next, much taller size (issue 11)."""
    text = derive(seed_graph()).to("mathml")
    assert '<mo stretchy="false">(</mo><mrow><mi>a</mi>' in text
    assert "<mo>(</mo>" not in text   # the seed has no fraction inside brackets


def test_html_is_a_page_with_the_steps_aligned_in_a_table_and_an_escaped_title():
    g = seed_graph()
    g.name = "neuron <script>alert(1)</script> & co"
    page = derive(g).to("html")
    parser = _Tags()
    parser.feed(page)
    steps = len(derive(g).steps)
    assert parser.tags.count("tr") == steps and parser.tags.count("math") == 2 * steps  # lhs | = forms
    assert "script" not in parser.tags
    assert "<title>Backpropagation: neuron &lt;script&gt;alert(1)&lt;/script&gt; &amp; co</title>" in page
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "td.lhs { text-align: right;" in page and "td.rhs { text-align: left;" in page
    for block in page.split("<math")[1:]:
        ElementTree.fromstring("<math" + block.split("</math>")[0] + "</math>")
    rhs = [b for b in page.split('<td class="rhs">')[1:]]
    assert all(b.startswith('<math xmlns="http://www.w3.org/1998/Math/MathML"><mrow><mo>=</mo>') for b in rhs)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def test_a_reciprocal_vector_factor_of_a_hadamard_product_is_written_as_a_fraction():
    """SymPy's LaTeX printer hands ``1/u`` (a power -1) to ``_print_Mul``, which read the exponent -1 as a
    scalar factor: dL/dout of ``sum(log((out - y)**2/2 + 1))`` was printed as ``-((out - y)^2/2 + 1) ⊙ (out - y)``
    (found with examples/activations.toml; text and MathML were right)."""
    from symbackprop import Graph
    import sympy as sp
    g = Graph("robust loss")
    x, y = g.input("x", (2,)), g.input("y", (2,))
    b = g.param("b", (2,))
    out = g.node("out", x + b)
    g.loss("L", sum_(sp.log((out - y) ** 2 / 2 + 1)))
    first = derive(g).to("latex").splitlines()[0]
    assert first == (r"\frac{\partial L}{\partial \mathbf{out}} = \frac{1}{\frac{1}{2} \left(\mathbf{out}"
                     r" - \mathbf{y}\right)^{2} + 1} \odot \left(\mathbf{out} - \mathbf{y}\right)")
    parse_latex(first)
