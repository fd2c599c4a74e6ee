"""Shared test set-up: the `slow` marker, hypothesis profiles, and the examples directory."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))
sys.path.insert(0, str(Path(__file__).parent))

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("default", max_examples=40, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("long", max_examples=1000, deadline=None,
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
