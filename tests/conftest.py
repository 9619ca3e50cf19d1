"""Test configuration.

Hypothesis explores new random examples on every developer run (and remembers failures in
.hypothesis/). In CI (the CI environment variable is set) it is derandomized: the examples are
a fixed function of each test, so a CI run is reproducible and cannot fail on an example no
developer run has seen.
"""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def local_ray():
    """One 2-CPU Ray on 127.0.0.1 for the test session, shut down at its end. The Ray tests are
    marked ``xdist_group("ray")`` and scripts/test runs ``--dist loadgroup``, so under xdist they
    all run on one worker and share this instance (a start costs 5-10 s on 2 cores)."""
    ray = pytest.importorskip("ray", reason="the Ray backends need ray (pip install 'stepcredit[ray]')")
    from stepcredit._ray import start_local_ray

    if not ray.is_initialized():
        start_local_ray(2)
    yield ray
    ray.shutdown()
