"""Test-wide set-up: four fake CPU devices for the pmap tests.

XLA reads the flag once, when jax first initialises its backends, so it must be set before any test
module imports jax.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
# The pmap tests need 4 devices, which only the fake CPU devices give on every machine; on a GPU host the
# xdist workers would also fight over the GPU's memory. JAX_PLATFORMS=... in the environment overrides this.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
