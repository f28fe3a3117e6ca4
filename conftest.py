"""Test-wide settings: hypothesis profiles, doctest namespace, offline mode, shared data location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Under pytest-xdist (`make test` runs one worker per core) each worker and the processes its tests start use
# one thread: two workers of two threads each on two cores oversubscribe them and run slower than one.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def shared_data_root() -> Path | None:
    """``$PA3D_DATA`` when set, else ``../shared/data`` beside the checkout; None when neither exists."""
    env = os.environ.get("PA3D_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real part-labelled data; skips the test with a reason when it is absent."""
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not found: set PA3D_DATA or place it at ../shared/data")
    return root


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    import torch

    doctest_namespace["torch"] = torch
    torch.manual_seed(0)
