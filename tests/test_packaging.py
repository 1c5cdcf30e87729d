"""The package as a user installs it: the library needs only jax, optax and numpy; the wheel holds it alone."""
import ast
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


# The library's shape (as optax.contrib's): one private module per method family, none over this many lines,
# and no function over this many lines of code (docstrings, comments and blank lines aside).
MAX_MODULE_LINES = 400
MAX_FUNCTION_CODE_LINES = 80
# The public modules of an earlier version, whose names moved to the package.
MOVED_MODULES = {"transform": "scale_by_acclip", "spike_clipping": "zclip", "alias": "acclip", "stats": "clip_stats",
                 "schedule": "clip_threshold_schedule"}


def _library_modules():
  folder = os.path.join(ROOT, "acclip_optax")
  return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".py"))


def _code_lines(node, lines):
  """The lines of a function that hold code: not its (or a nested def's) docstring, a comment or a blank."""
  docstrings = set()
  for inner in ast.walk(node):
    if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(inner):
      docstrings.update(range(inner.body[0].lineno, inner.body[0].end_lineno + 1))
  return [number for number in range(node.lineno, node.end_lineno + 1) if number not in docstrings
          and lines[number - 1].strip() and not lines[number - 1].strip().startswith("#")]


def test_no_library_module_or_function_is_too_long():
  too_long = []
  for path in _library_modules():
    with open(path, encoding="utf-8") as f:
      text = f.read()
    lines = text.splitlines()
    if len(lines) > MAX_MODULE_LINES:
      too_long.append(f"{os.path.basename(path)}: {len(lines)} lines")
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        count = len(_code_lines(node, lines))
        if count > MAX_FUNCTION_CODE_LINES:
          too_long.append(f"{os.path.basename(path)}:{node.lineno} {node.name}: {count} lines of code")
  assert not too_long, too_long


def test_every_transformation_lives_in_a_private_module_and_is_imported_from_the_package():
  import acclip_optax  # pylint: disable=g-import-not-at-top
  for name in acclip_optax.__all__:
    obj = getattr(acclip_optax, name)
    if not isinstance(obj, type(acclip_optax)):
      assert obj.__module__.startswith("acclip_optax._"), (name, obj.__module__)


@pytest.mark.parametrize("module_name, name", sorted(MOVED_MODULES.items()))
def test_a_moved_module_warns_and_gives_the_packages_object(module_name, name, monkeypatch):
  import acclip_optax  # pylint: disable=g-import-not-at-top
  # As in a fresh interpreter: the old module not imported yet, so the package's attribute imports it.
  monkeypatch.delitem(sys.modules, f"acclip_optax.{module_name}", raising=False)
  if module_name in vars(acclip_optax):
    monkeypatch.delattr(acclip_optax, module_name)
  with pytest.warns(DeprecationWarning, match=rf"acclip_optax\.{module_name} is deprecated"):
    module = getattr(acclip_optax, module_name)  # as an attribute of the package, as before
  assert module is sys.modules[f"acclip_optax.{module_name}"]
  with pytest.warns(DeprecationWarning, match=rf"acclip_optax\.{module_name}\.{name} is deprecated.*acclip_optax\.{name}"):
    assert getattr(module, name) is getattr(acclip_optax, name)
  with pytest.raises(AttributeError, match="no attribute 'nothing'"):
    getattr(module, "nothing")
  assert name in module.__all__  # `from acclip_optax.<module> import *` still gives its names


# The experiments' largest modules, each under this many lines (their helpers live in modules of their own).
MAX_STUDY_LINES = 450
LARGE_EXPERIMENT_MODULES = ("experiments/common/training_loop.py", "experiments/comparison/study.py",
                            "experiments/stability/study.py")


@pytest.mark.parametrize("path", LARGE_EXPERIMENT_MODULES)
def test_the_experiments_largest_modules_stay_under_their_limit(path):
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    assert len(f.read().splitlines()) < MAX_STUDY_LINES, path
