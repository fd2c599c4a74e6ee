"""The command line: each command's output, and one-line errors with exit status 1 for bad input."""

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES, ROOT
from symbackprop.cli import main

NEURON = str(ROOT / "examples" / "neuron.toml")


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def test_derive_prints_the_seed_steps():
    result = run("derive", NEURON)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == r"\frac{\partial L}{\partial a} = a - y"
    assert r"\sigma'(z)" in lines[1]
    assert lines[3].endswith(r"\cdot x")
    assert r"w^{(\text{new})} = w^{(\text{old})} - \eta \frac{\partial L}{\partial w}" in lines


@pytest.mark.parametrize("fmt, marker", [("markdown", "$$"), ("text", "dL/dw = dL/dz * dz/dw = dL/dz * x"),
                                         ("mathml", '<math xmlns="http://www.w3.org/1998/Math/MathML"'),
                                         ("html", "<!DOCTYPE html>")])
def test_derive_formats(fmt, marker):
    result = run("derive", NEURON, "--format", fmt)
    assert result.exit_code == 0 and marker in result.output


def test_derive_wrt_and_expanded():
    result = run("derive", NEURON, "--wrt", "b", "--expanded", "--format", "text")
    assert result.exit_code == 0
    assert "dL/dw" not in result.output
    assert "expanded gradient" in result.output and "sigmoid(w * x + b)" in result.output


def test_help_explains_the_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("derive", "codegen", "train", "verify"):
        assert command in result.output
    assert "--wrt" in run("derive", "--help").output


def test_codegen_writes_a_module_and_refuses_to_overwrite_a_users_file(tmp_path):
    out = tmp_path / "grad.py"
    assert run("codegen", NEURON, "-o", out).exit_code == 0
    assert "def loss_and_grad(params, data):" in out.read_text()
    assert run("codegen", NEURON, "-o", out).exit_code == 0  # its own file: regenerated
    mine = tmp_path / "mine.py"
    mine.write_text("precious = True\n")
    result = run("codegen", NEURON, "-o", mine)
    assert result.exit_code == 1 and "use --force" in result.output
    assert mine.read_text() == "precious = True\n"


def test_train_runs_the_seed_with_its_synthetic_data(tmp_path):
    history = tmp_path / "loss.csv"
    result = run("train", NEURON, "--epochs", "50", "--history", history)
    assert result.exit_code == 0, result.output
    rows = history.read_text().splitlines()
    assert rows[0] == "epoch,loss" and len(rows) == 51
    first, last = float(rows[1].split(",")[1]), float(rows[-1].split(",")[1])
    assert last < first / 2


def test_verify_passes_on_the_seed():
    result = run("verify", NEURON)
    assert result.exit_code == 0 and "all gradient checks passed" in result.output


BAD_MODELS = {
    "undefined": ('[inputs]\nx = {}\n[params]\nw = {}\n[loss]\nL = "w*q"\n', "[loss] L: undefined name 'q'"),
    "cycle": ('[inputs]\nx = {}\n[params]\nw = {}\n[nodes]\na = "b*w"\nb = "a*x"\n[loss]\nL = "a"\n',
              "[nodes] a: cycle: a -> b -> a"),
    "twice": ('[inputs]\nw = {}\n[params]\nw = {}\n[loss]\nL = "w"\n', "[params] w: 'w' is defined twice"),
    "unknown function": ('[inputs]\nx = {}\n[params]\nw = {}\n[loss]\nL = "sinh(w*x)"\n',
                         "[loss] L: unknown function 'sinh'"),
    "non-scalar loss": ('[inputs]\nx = { shape = [3] }\n[params]\nw = {}\n[loss]\nL = "w*x"\n',
                        "[loss] L: the loss must be a scalar per sample"),
    "import": ('[inputs]\nx = {}\n[params]\nw = {}\n[loss]\nL = "__import__(\'os\').system(\'touch PWNED\')"\n',
               "[loss] L: attribute access '.system' is not allowed"),
    "attribute": ('[inputs]\nx = {}\n[params]\nw = {}\n[loss]\nL = "x.real"\n', "attribute access '.real'"),
    "lambda": ('[inputs]\nx = {}\n[params]\nw = {}\n[loss]\nL = "(lambda: 1)()"\n', "not lambda"),
    "subscript of a scalar": ('[inputs]\nx = {}\n[params]\nw = {}\n[loss]\nL = "x[0]"\n',
                              "cannot index x: it is a scalar (shape ())"),
    "string": ('[inputs]\nx = {}\n[params]\nw = {}\n[loss]\nL = "\'text\'"\n', "str literal 'text' is not allowed"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
@pytest.mark.parametrize("command", ["derive", "codegen", "train", "verify"])
def test_bad_models_give_one_line_and_exit_1(tmp_path, monkeypatch, case, command):
    monkeypatch.chdir(tmp_path)
    text, message = BAD_MODELS[case]
    (tmp_path / "bad.toml").write_text(text)
    extra = ["-o", "out.py"] if command == "codegen" else []
    result = run(command, "bad.toml", *extra)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: bad.toml: "), result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # nothing written, nothing run


@pytest.mark.parametrize("command", ["derive", "codegen", "train", "verify", "predict", "evaluate"])
def test_a_missing_model_file_is_bad_input_one_line_and_status_1(command, tmp_path):
    extra = {"codegen": ["-o", tmp_path / "g.py"], "predict": ["--params", "p.npz", "--data", "d.csv"],
             "evaluate": ["--params", "p.npz"]}.get(command, [])
    result = run(command, "no-such-file.toml", *extra)
    assert result.exit_code == 1
    assert result.output == "Error: no-such-file.toml: file: no such file\n"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_derives(example):
    assert run("derive", example, "--format", "text").exit_code == 0
