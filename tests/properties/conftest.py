"""Hypothesis settings for the property tests: bounded examples, no deadline (shared CPUs).

``TRUSTSERVE_PROPERTY_EXAMPLES`` raises the bound for a longer local run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "trustserve",
    max_examples=int(os.environ.get("TRUSTSERVE_PROPERTY_EXAMPLES", "100")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("trustserve")
