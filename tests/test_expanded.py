"""The expanded form of a gradient is bounded: its size is counted before it is built, and past the
operation budget one line says how large it would be while the node form stays the answer.

Sizes are operation counts (deterministic), never times: how long the commands take is measured by
benchmarks/bench_expanded.py.
"""
from __future__ import annotations

import pytest
import sympy as sp
from click.testing import CliRunner

from conftest import EXAMPLES, ROOT
from symbackprop.cli import main
from symbackprop.functions import sigmoid
from symbackprop.derive import EXPAND_LIMIT, ExpansionTooLarge, about, derive, shortest_form
from symbackprop.graph import Graph
from symbackprop.modelfile import load_model, parse_model

GRU = ROOT / "examples" / "gru.toml"
NEURON = ROOT / "examples" / "neuron.toml"


def reused_chain_text(length: int) -> str:
    """n_i = tanh(n_{i-1}) * n_{i-1} + n_{i-1}: each node used three times, so the expansion triples per node."""
    nodes = ['n0 = "w*x"'] + [f'n{i} = "tanh(n{i - 1}) * n{i - 1} + n{i - 1}"' for i in range(1, length + 1)]
    return ("[inputs]\nx = {}\ny = {}\n[params]\nw = { init = 0.5 }\n[nodes]\n" + "\n".join(nodes)
            + f'\n[loss]\nL = "(n{length} - y)**2"\n')


def reused_chain(length: int) -> Graph:
    return parse_model(reused_chain_text(length), "chain.toml").graph


def derive_cli(*args):
    return CliRunner().invoke(main, ["derive", *[str(a) for a in args]])


# ---- the count --------------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_the_counted_size_is_exactly_the_size_of_the_built_form_of_a_chain(length):
    d = derive(reused_chain(length))
    assert d.expanded_size("w") == sp.count_ops(d.expanded("w", simplify=False, limit=None))


@pytest.mark.parametrize("example", [p for p in EXAMPLES if p.stem != "gru"], ids=lambda p: p.stem)
def test_the_counted_size_bounds_the_built_form_on_every_example(example):
    """An upper bound, close: SymPy combines terms as it substitutes (w*x*w is w**2*x) and counts a
    negation or a division as one operation where the count has a product and a power."""
    d = derive(load_model(example).graph)
    for t in d.targets:
        built = sp.count_ops(d.expanded(t, simplify=False, limit=None))
        assert built <= d.expanded_size(t) <= 1.25 * built + 4, t


def test_the_count_grows_by_the_use_counts_and_is_the_same_every_time():
    sizes = [derive(reused_chain(n)).expanded_size("w") for n in range(1, 9)]
    assert all(later > 2.5 * earlier for earlier, later in zip(sizes, sizes[1:]))  # three uses per node
    assert sizes == [derive(reused_chain(n)).expanded_size("w") for n in range(1, 9)]


def test_a_five_step_gru_would_expand_to_millions_of_operations():
    d = derive(load_model(GRU).graph)
    sizes = {t: d.expanded_size(t) for t in d.targets}
    assert min(sizes.values()) > 10 ** 5 and max(sizes.values()) > 5 * 10 ** 6


def test_a_huge_branch_the_gradient_does_not_use_is_not_expanded():
    """Only the nodes a gradient uses are substituted: a 25-node chain beside the loss (5e12 operations
    expanded) does not stand in the way of dL/dv = 2 x (v x - y)."""
    text = reused_chain_text(25).replace("w = { init = 0.5 }", "w = { init = 0.5 }\nv = {}")
    g = parse_model(text.replace('L = "(n25 - y)**2"', 'L = "(v*x - y)**2"'), "m.toml").graph
    x, y, v = (g.symbol(n) for n in "x y v".split())
    d = derive(g)
    assert d.expanded("v") == 2 * x * (v * x - y)


def test_about_writes_large_counts_with_an_exponent():
    assert [about(n) for n in (7, 4096, 999_999, 5_300_000, 17 * 10 ** 12)] == \
        ["7", "4,096", "999,999", "5.3e6", "1.7e13"]


# ---- the budget in the API -----------------------------------------------------------------------------
def test_expanded_past_the_limit_raises_one_line_instead_of_building():
    d = derive(reused_chain(8))
    size = d.expanded_size("w")
    assert size > EXPAND_LIMIT
    with pytest.raises(ExpansionTooLarge) as e:
        d.expanded("w")
    assert str(e.value) == f"the expanded form of dL/dw would have {about(size)} operations (limit {EXPAND_LIMIT:,})"
    assert (e.value.size, e.value.limit) == (size, EXPAND_LIMIT)


def test_the_limit_is_a_keyword_and_none_lifts_it():
    d = derive(reused_chain(3))
    size = d.expanded_size("w")
    with pytest.raises(ExpansionTooLarge):
        d.expanded("w", limit=size - 1)
    assert sp.count_ops(d.expanded("w", simplify=False, limit=size)) == size
    assert d.expanded("w", limit=None) == d.expanded("w", limit=size)


def test_expanded_steps_keep_the_gradients_within_the_limit_and_the_notice_names_the_others():
    g = load_model(ROOT / "examples" / "two_layer.toml").graph
    d = derive(g)
    sizes = {t: d.expanded_size(t) for t in d.targets}
    limit = sorted(sizes.values())[1]  # the two smallest fit
    shown = [s.subject for s in d.expanded_steps(limit)]
    assert shown == [t for t in d.targets if sizes[t] <= limit] and len(shown) >= 2
    notice = d.expansion_notice(limit)
    over = [t for t in d.targets if sizes[t] > limit]
    assert notice.startswith("expanded form of " + ", ".join(f"dL/d{t}" for t in over) + " not shown: ")
    assert f"up to {about(max(sizes[t] for t in over))} operations" in notice or len(over) == 1
    assert "\n" not in notice
    assert d.expansion_notice(max(sizes.values())) is None
    assert d.expansion_notice(None) is None


def test_the_notice_names_three_gradients_and_counts_the_rest():
    notice = derive(load_model(GRU).graph).expansion_notice()
    assert notice.startswith("expanded form of dL/dWz, dL/dUz, dL/dbz and 6 more not shown: it would have up to ")
    assert "over the limit of 2,000 (raise it with --expand-limit OPS" in notice


# ---- the command ----------------------------------------------------------------------------------------
def test_derive_expanded_on_a_recurrent_model_prints_the_node_form_and_one_line_about_the_size():
    result = derive_cli(GRU, "--expanded", "--format", "text")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    notes = [line for line in lines if line.startswith("note: ")]
    assert len(notes) == 1 and "would have up to 5.3e6 operations" in notes[0]
    assert not any(line.startswith("expanded gradient") for line in lines)
    assert lines[:-1] == derive_cli(GRU, "--format", "text").output.splitlines()  # the node form, unchanged


@pytest.fixture
def chain_file(tmp_path):
    path = tmp_path / "chain.toml"
    path.write_text(reused_chain_text(4))
    return path


def test_the_expand_limit_option_sets_the_budget_and_implies_expanded(chain_file):
    size = derive(load_model(chain_file).graph).expanded_size("w")
    within = derive_cli(chain_file, "--format", "text", "--expand-limit", size)
    assert within.exit_code == 0 and "expanded gradient        dL/dw = " in within.output
    assert "note:" not in within.output
    below = derive_cli(chain_file, "--format", "text", "--expand-limit", size - 1)
    assert below.exit_code == 0 and "expanded gradient" not in below.output
    assert below.output.splitlines()[-1].startswith(f"note: expanded form of dL/dw not shown: it would have "
                                                    f"{about(size)} operations, over the limit of {size - 1:,}")


def test_a_negative_expand_limit_is_refused():
    result = derive_cli(NEURON, "--expand-limit", "-1")
    assert result.exit_code == 2 and "-1" in result.output


def test_the_seed_is_still_expanded_by_default():
    result = derive_cli(NEURON, "--expanded", "--format", "text")
    assert "expanded gradient" in result.output and "note:" not in result.output


@pytest.mark.parametrize("fmt, note", [
    ("latex", r"\text{expanded form of dL/dWz, dL/dUz, dL/dbz and 6 more not shown: "),
    ("markdown", "Note: expanded form of dL/dWz, "),
    ("mathml", "<p>note: expanded form of dL/dWz, "),
    ("html", "<p class=\"note\">Note: expanded form of dL/dWz, "),
    ("text", "note: expanded form of dL/dWz, "),
])
def test_every_format_carries_the_notice_once(fmt, note):
    output = derive(load_model(GRU).graph).to(fmt, expanded=True)
    assert output.count(note) == 1
    assert output.count("would have up to") == 1


def test_the_latex_notice_escapes_underscores_in_names():
    g = Graph("underscores")
    x, y = g.inputs("x y")
    w_in = g.param("w_in", init=0.5)
    a = g.node("a", sp.tanh(w_in * x))
    g.loss("L", (a - y) ** 2)
    latex = derive(g).to("latex", expanded=True, expand_limit=1)
    assert r"\text{expanded form of dL/dw\_in not shown: " in latex


# ---- the small expanded forms are given their shortest form, cheaply -----------------------------------
def test_the_expanded_seed_gradient_reads_as_derived_not_sign_flipped():
    g = load_model(NEURON).graph
    x, y, w, b = (g.symbol(n) for n in "x y w b".split())
    s = sigmoid(b + w * x)
    assert derive(g).expanded("w") == x * (1 - s) * (s - y) * s


@pytest.mark.parametrize("example", [p for p in EXAMPLES if p.stem != "gru"], ids=lambda p: p.stem)
def test_simplifying_never_makes_an_expanded_gradient_longer(example):
    d = derive(load_model(example).graph)
    for t in d.targets:
        assert sp.count_ops(d.expanded(t)) <= sp.count_ops(sp.factor_terms(d.expanded(t, simplify=False))), t


def test_the_shortest_form_cancels_fractions():
    w = sp.Symbol("w", positive=True)
    derivative = sp.diff(w / (1 + w), w)  # 1/(1 + w) - w/(1 + w)**2
    assert shortest_form(derivative) == 1 / (1 + w) ** 2
