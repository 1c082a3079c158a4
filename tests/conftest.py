"""Shared fixtures: one local Ray instance for the whole session (started and stopped here)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 4 logical CPUs (2 workers + headroom on a 2-core machine)."""
    import ray

    tests = str(Path(__file__).parent)  # workers unpickle functions defined in test modules
    # The dashboard serves the state API that Ray Train's placement-group cleaner polls: without it the
    # resources of a Train run whose trial was stopped (a PBT exploit) are never released.
    ray.init(num_cpus=4, include_dashboard=True, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": tests}})
    yield ray
    ray.shutdown()
