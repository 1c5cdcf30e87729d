"""Test-wide set-up: four fake CPU devices for the pmap tests.

XLA reads the flag once, when jax first initialises its backends, so it must be set before any test
module imports jax.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu") if os.environ.get("CI") else None
