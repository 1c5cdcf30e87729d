"""The package as a user installs it: the library needs only jax, optax and numpy; the wheel holds it alone."""
import os
import subprocess
import sys

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = os.path.join(os.path.dirname(__file__), "..")

# Imports the library in a fresh interpreter in which the optional packages cannot be imported.
_WITHOUT_EXTRAS = r"""
import sys
BLOCKED = ("matplotlib", "flax", "chex", "orbax", "tokenizers", "ml_collections", "scipy", "experiments")
class Blocker:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Blocker())
import acclip_optax, acclip_optax.noise
import jax.numpy as jnp
tx = acclip_optax.acclip(0.1)
tx.update(jnp.ones(3), tx.init(jnp.zeros(3)), jnp.zeros(3))
acclip_optax.noise.tail_index_hill(jnp.arange(1.0, 100.0), 10)
try:
  import acclip_optax.noise_plots
except ImportError as error:
  print(error)
else:
  raise SystemExit("noise_plots imported without matplotlib")
"""


def test_library_imports_without_the_extras_and_names_the_plots_extra():
  process = subprocess.run([sys.executable, "-c", _WITHOUT_EXTRAS], capture_output=True, text=True,
                           timeout=120, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert process.returncode == 0, process.stderr
  assert 'pip install "acclip-optax[plots]"' in process.stdout


def test_wheel_packages_and_dependencies():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)
  assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["acclip_optax*"]
  base = {requirement.split(">")[0].split("=")[0] for requirement in project["project"]["dependencies"]}
  assert base == {"jax", "optax", "numpy"}
  assert any(r.startswith("chex") for r in project["project"]["optional-dependencies"]["test"])
