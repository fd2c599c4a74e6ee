"""Shared test set-up: shape-checked generated code, the `slow` marker, hypothesis profiles, the examples.

Every test runs generated code in the shape-checked mode (docs/testing.md): each assignment checks that its
array has the shape the derivation inferred, so a wrong broadcast fails where it happens instead of
producing numbers that a batch size happens to hide.
"""
import os
import sys
from pathlib import Path

import pytest

os.environ["SYMBACKPROP_CHECK_SHAPES"] = "1"  # read by symbackprop.codegen.shape_checks_default

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
sys.path.insert(0, str(Path(__file__).parent))

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("default", max_examples=40, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("long", max_examples=1200, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("SYMBACKPROP_PROFILE", "default"))
except ImportError:  # pragma: no cover
    pass


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SYMBACKPROP_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set SYMBACKPROP_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
