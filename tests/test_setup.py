"""The set-up promises of the README: CI runs the README's own test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_starts_with_the_main_job_and_the_test_command():
    main_job, tests = readme_commands()[:2]
    assert main_job.startswith("pip install -e . && symbackprop derive examples/neuron.toml")
    assert "symbackprop train examples/neuron.toml" in main_job
    assert tests.startswith("pip install -e '.[test]'") and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    tests = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
    assert "set -euo pipefail" in ci  # pytest's exit 5 (no tests collected) fails CI
