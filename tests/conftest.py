"""Test-wide set-up: four fake CPU devices for the pmap tests, and the `x64` fixture.

XLA reads the flag once, when jax first initialises its backends, so it must be set before any test
module imports jax.
"""
import os

import pytest

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
# The pmap tests need 4 devices, which only the fake CPU devices give on every machine; on a GPU host the
# xdist workers would also fight over the GPU's memory. JAX_PLATFORMS=... in the environment overrides this.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture
def x64():
    """float64 JAX arrays for one test (the suite runs in float32 otherwise); restored afterwards."""
    import jax  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS is set above)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
