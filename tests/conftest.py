"""Test-wide set-up: four fake CPU devices for the pmap tests, one compilation cache, and the `x64` fixture.

XLA reads the flag once, when jax first initialises its backends, so it must be set before any test
module imports jax.
"""
import os
import shutil
import tempfile

import pytest

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
# The pmap tests need 4 devices, which only the fake CPU devices give on every machine; on a GPU host the
# xdist workers would also fight over the GPU's memory. JAX_PLATFORMS=... in the environment overrides this.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the run (jax reads the variable when it is imported): the xdist
# workers, which inherit it from the process that starts them, and the processes the multi-process tests
# start compile each tiny BERT or ResNet program that several test files build once, not once per process.
# A cache the caller set is used and kept; the one made here is removed when the run that made it ends.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="acclip-optax-xla-cache-")


def pytest_unconfigure(config):
    del config
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture
def x64():
    """float64 JAX arrays for one test (the suite runs in float32 otherwise); restored afterwards."""
    import jax  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS is set above)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
