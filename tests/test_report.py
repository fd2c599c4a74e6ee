"""The report: one self-contained page, its sections, the links between the steps and the code; and the
same page opened in a real browser (headless Chromium), which must fetch nothing, log no error and lay
the math out."""
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from chromium import MATH_BOXES, find_chromium, visit
from symbackprop import derive
from symbackprop.cli import main
from symbackprop.modelfile import load_model
from symbackprop.report import build_report, code_listing, step_key
from test_derive import seed_graph

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "neuron.toml"


class Page(HTMLParser):
    """Tags, ids, links and text of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.ids, self.hrefs, self.attributes = [], [], [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        self.attributes.append((tag, attrs))
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if "href" in attrs:
            self.hrefs.append(attrs["href"])


@pytest.fixture(scope="module")
def seed_report(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = CliRunner().invoke(main, ["report", str(SEED), "-o", str(out), "--at", "x=1.5", "--at", "y=1",
                                       "--train", "--no-torch"])
    assert result.exit_code == 0, result.output
    assert re.search(r"wrote .*report\.html \(\d+ kB\)", result.output)
    return out.read_text(encoding="utf-8")


def test_the_seed_report_is_one_self_contained_file_under_a_megabyte(seed_report):
    page = Page(seed_report)
    assert len(seed_report.encode()) < 1_000_000
    assert "script" not in page.tags and "iframe" not in page.tags and "img" not in page.tags
    assert "http" not in seed_report and "//" not in re.sub(r"<pre.*?</pre>", "", seed_report, flags=re.S)
    assert not any(k in ("src", "srcset", "action") for _, attrs in page.attributes for k in attrs)
    assert re.findall(r"url\(([^)]*)\)", seed_report) == ["#arrow"] * seed_report.count("marker-end")
    assert all(h.startswith("#") for h in page.hrefs)
    assert len(page.ids) == len(set(page.ids))
    missing = {h[1:] for h in page.hrefs} - set(page.ids)
    assert not missing, missing  # every link lands on the page


def test_the_seed_report_has_every_section(seed_report):
    page = Page(seed_report)
    assert {"model", "graph", "derivation", "code", "verify", "training"} <= set(page.ids)
    assert page.tags.count("svg") == 2  # the graph and the loss curve
    assert "all gradient checks passed" in seed_report and "loss per epoch" in seed_report
    assert seed_report.count('<tr class="step"') == 7 + 7  # the point and the forward pass, then the derivation
    assert "<mn>0.679178699</mn>" in seed_report and "<mn>0.320821301</mn>" in seed_report


def test_the_graph_shows_each_value_and_adjoint_at_the_point(seed_report):
    graph = seed_report[seed_report.index('<svg class="graph"'):]
    graph = graph[:graph.index("</svg>")]
    assert "= 0.6792</text>" in graph and "\u2202L/\u2202a = \u22120.3208</text>" in graph
    assert "= 0.75</text>" in graph and "\u2202L/\u2202w = \u22120.1049</text>" in graph
    assert graph.count('<g class="quantity"') == 7


def test_each_step_links_to_the_lines_that_compute_it_and_they_link_back(seed_report):
    rows = re.findall(r'<tr class="step" id="(step-\d+)">.*?<td class="link">(.*?)</td></tr>', seed_report)
    assert len(rows) == 7
    lines = dict(re.findall(r'<span class="[^"]*" id="(code-\d+)">(.*?)</span>', seed_report))
    linked = 0
    for step, cell in rows:
        target = re.search(r'href="#(code-\d+)"', cell)
        if target is None:
            assert "in the training loop" in cell  # the updates
            continue
        linked += 1
        n = int(target.group(1).split("-")[1])
        block = [lines[f"code-{k}"] for k in range(n, n + 3) if f"code-{k}" in lines]
        assert any(f'href="#{step}"' in text for text in block), step  # the way back
    assert linked == 5
    chain = re.search(r'id="step-3">.*?href="#code-(\d+)"', seed_report).group(1)
    assert "dL_dz = dL_da*a*(1 - a)" in lines[f"code-{int(chain) + 1}"]  # its comment, then its line


def test_code_blocks_hold_each_quantitys_assignment_comment_and_temporaries():
    d = derive(seed_graph())
    listing = code_listing(d)
    text = {k: [listing.lines[n - 1].strip() for n in v] for k, v in listing.blocks.items()}
    assert text["L"] == ["t0 = a - y", "L = t0**2/2"]
    assert text["dL/dz"] == ["# dL/dz = dL/da * da/dz = (a - y) * sigmoid(z) * (1 - sigmoid(z))",
                             "dL_dz = dL_da*a*(1 - a)"]
    keys = {s.kind: step_key(s, d) for s in d.steps}
    assert keys["local"] == "dL/dz" and keys["update"] is None and keys["param"] in ("dL/dw", "dL/db")


def test_a_report_without_a_point_shows_the_symbolic_derivation():
    m = load_model(ROOT / "examples" / "mlp_sigmoid.toml")
    page = build_report(derive(m.graph), "examples/mlp_sigmoid.toml")
    assert "Forward pass" not in page and "training" not in Page(page).ids
    assert page.count('<tr class="step"') == len(derive(m.graph).steps)
    assert "&#119830;" in page  # the bold W of the model table and the derivation


def test_the_report_never_overwrites_a_file_it_did_not_write(tmp_path):
    mine = tmp_path / "notes.html"
    mine.write_text("my notes")
    result = CliRunner().invoke(main, ["report", str(SEED), "-o", str(mine)])
    assert result.exit_code == 1 and "was not generated by symbackprop; use --force" in result.output
    assert mine.read_text() == "my notes"


def test_a_training_result_shows_its_loss_curve_in_a_notebook():
    from symbackprop.data import model_data
    from symbackprop.train import train
    m = load_model(SEED)
    result = train(m.graph, model_data(m.graph, m.data, source=str(SEED)), lr=2.0, epochs=5)
    shown = result._repr_html_()
    assert "<svg" in shown and "<polyline" in shown and "epochs" in shown and "\u2192" in shown
    assert shown.count(",") >= 5  # six points: epochs 0 to 5


# ---- in a real browser ------------------------------------------------------------------------------------------
def chromium_or_skip() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("SYMBACKPROP_REQUIRE_BROWSER") == "1":
            pytest.fail("SYMBACKPROP_REQUIRE_BROWSER=1 but chromium is not installed")
        pytest.skip("the browser test needs Debian's chromium package (apt-get install chromium; .ci/run installs it)")
    return path


def test_the_browser_harness_sees_requests_and_console_errors(tmp_path):
    """The checker itself: a page that fetches and logs is caught (so a clean result means something)."""
    chromium = chromium_or_skip()
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                   '<img src="http://example.invalid/a.png"><script>console.error("boom")</script></body></html>')
    seen = visit(bad, MATH_BOXES, executable=chromium)
    assert seen.requests == ["http://example.invalid/a.png"]
    assert "boom" in seen.errors


def test_the_seed_report_in_chromium_fetches_nothing_logs_no_error_and_lays_out_the_math(tmp_path, seed_report):
    import json
    chromium = chromium_or_skip()
    page = tmp_path / "report.html"
    page.write_text(seed_report, encoding="utf-8")
    seen = visit(page, MATH_BOXES, executable=chromium)
    assert seen.requests == [] and seen.errors == []
    boxes = json.loads(seen.measured)
    assert boxes["scripts"] == 0 and boxes["mathDisplay"] in ("inline math", "math")
    assert len(boxes["math"]) > 40 and all(w > 0 and h > 0 for w, h in boxes["math"])
    # a fraction laid out as MathML stacks numerator over denominator: taller than a line of its text
    assert len(boxes["fractions"]) > 15 and all(w > 0 and h > 1.4 * size for w, h, size in boxes["fractions"])
    assert len(boxes["svg"]) == 2 and all(w > 300 and h > 150 for w, h in boxes["svg"])
    assert seen.screenshot.startswith(b"\x89PNG") and len(seen.screenshot) > 50_000
    (tmp_path / "report.png").write_bytes(seen.screenshot)


def test_the_derive_html_page_of_a_matrix_network_renders_its_matrices(tmp_path):
    import json
    chromium = chromium_or_skip()
    result = CliRunner().invoke(main, ["derive", str(ROOT / "examples" / "mlp_sigmoid.toml"), "--format", "html",
                                       "--at", "x=[1, 2, 3]", "--at", "y=[0, 1]", "--shapes"])
    page = tmp_path / "mlp.html"
    page.write_text(result.output, encoding="utf-8")
    seen = visit(page, MATH_BOXES, executable=chromium)
    assert seen.requests == [] and seen.errors == []
    boxes = json.loads(seen.measured)
    assert boxes["tables"] and all(w > 10 and h > 20 for w, h in boxes["tables"])  # bracketed arrays
    assert all(w > 0 and h > 0 for w, h in boxes["math"])
