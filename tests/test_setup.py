"""The set-up promises of the README: CI runs the README's own test command; optional extras stay optional."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_dask_is_imported_only_by_the_dask_engine():
    check = ("import sys, symbackprop, symbackprop.cli, symbackprop.train, symbackprop.data, symbackprop.distributed; "
             "print(sorted(m for m in ('dask', 'distributed', 'pyarrow', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_without_dask_the_engine_says_which_extra_to_install(monkeypatch):
    from symbackprop.distributed import connect
    from symbackprop.graph import UserError
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails
    with pytest.raises(UserError, match=re.escape("pip install 'symbackprop[dask]'")):
        with connect(workers=1):
            pass
