"""Test configuration.

Hypothesis explores new random examples on every developer run (and remembers failures in
.hypothesis/). In CI (the CI environment variable is set) it is derandomized: the examples are
a fixed function of each test, so a CI run is reproducible and cannot fail on an example no
developer run has seen.
"""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
