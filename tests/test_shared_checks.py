"""The checks every public transformation passes, driven by the one list in `transformations_under_test.py`.

Strictness (bad trees and dtypes are refused by name), sharding (each state leaf that mirrors a param has
the param's sharding after `init`, `jit(init)` and a jitted `update`), dtypes, `inject_hyperparams`,
composition with optax's wrappers (`apply_if_finite`, `MultiSteps`, donation), edge cases (zero
gradients, `None` leaves, empty trees) and convergence on a parabola and Rosenbrock's function. The chex
variants and the trace-once check are in `test_chex.py`, from the same list.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import acclip_optax
from transformations_under_test import TRANSFORMATIONS_UNDER_TEST as UNDER_TEST

NAMES = sorted(UNDER_TEST)
WITH_PARAM_SHAPED_STATE = [name for name in NAMES if UNDER_TEST[name].param_shaped_state]
REFUSING_COMPLEX = [name for name in NAMES if not UNDER_TEST[name].accepts_complex]


def assert_no_nan(state):
  """No NaN in a state (+inf is allowed: ZClip's threshold is +inf until its warm-up ends)."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    assert not bool(jnp.any(jnp.isnan(leaf))), f"NaN in the state at {jax.tree_util.keystr(path)}"


def cauchy_tree(seed, like):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(rng.standard_cauchy(p.shape), p.dtype), like)


# ---- strictness -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_integer_updates_are_refused(name):
  tx = UNDER_TEST[name].make()
  state = tx.init({"w": jnp.zeros(3)})
  with pytest.raises(TypeError, match=r"updates\['w'\] has dtype int32"):
    tx.update({"w": jnp.array([1, -200, 3])}, state, {"w": jnp.zeros(3)})


@pytest.mark.parametrize("name", WITH_PARAM_SHAPED_STATE)
def test_integer_params_are_refused_at_init(name):
  with pytest.raises(TypeError, match=r"params\['step'\] has dtype int32"):
    UNDER_TEST[name].make().init({"w": jnp.zeros(3), "step": jnp.zeros((), jnp.int32)})


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("updates, message", [
    ({"v": jnp.ones(3)}, "tree structure"),
    ({"w": jnp.ones((3, 1))}, r"updates\['w'\] has shape \(3, 1\), but (the optimizer state|the params)"),
])
def test_updates_not_shaped_like_the_state_are_refused(name, updates, message):
  """Named, whatever the rule keeps: a state shaped like the params, or (scalars, norm histories) the params."""
  tx = UNDER_TEST[name].make()
  state = tx.init({"w": jnp.zeros(3)})
  with pytest.raises(ValueError, match=message):
    tx.update(updates, state, {"w": jnp.zeros(3)})


@pytest.mark.parametrize("updates, message", [
    ({"v": jnp.ones(3)}, "skip_step_on_spikes: the wrapped transformation's update failed"),
    # optax.adam broadcasts (3, 1) against its (3,) moments: updates of shape (3, 3), named.
    ({"w": jnp.ones((3, 1))}, r"the wrapped transformation's updates\['w'\] has shape \(3, 3\)")])
def test_skip_step_names_updates_its_inner_rule_cannot_take_without_params(updates, message):
  tx = acclip_optax.skip_step_on_spikes(optax.adam(0.1), window=4)
  with pytest.raises(ValueError, match=message):
    tx.update(updates, tx.init({"w": jnp.zeros(3)}))


@pytest.mark.parametrize("name", REFUSING_COMPLEX)
def test_complex_params_are_refused_where_the_rule_is_real(name):
  with pytest.raises(TypeError, match=r"params\['w'\] is complex"):
    UNDER_TEST[name].make().init({"w": jnp.zeros(3, jnp.complex64)})


# ---- sharding -------------------------------------------------------------------------------------

SHARDED_SHAPES = {"kernel": ((2, 4, 3), P(None, "x")), "bias": ((4,), P("x")), "scale": ((5,), P())}


def _sharded_params(mesh):
  """Params with distinct shapes (a state leaf of that shape mirrors that param), sharded over 'x'."""
  return {name: jax.device_put(jnp.full(shape, 0.5, jnp.float32), NamedSharding(mesh, spec))
          for name, (shape, spec) in SHARDED_SHAPES.items()}


def _assert_state_sharded_like_params(state, params, explicit, where):
  by_shape = {p.shape: p for p in jax.tree.leaves(params)}
  mirrors = [leaf for leaf in jax.tree.leaves(state) if leaf.shape in by_shape]
  assert mirrors, f"{where}: no state leaf mirrors a param"
  for leaf in mirrors:
    param = by_shape[leaf.shape]
    assert leaf.sharding.is_equivalent_to(param.sharding, leaf.ndim), (
        f"{where}: a state leaf of shape {leaf.shape} has sharding {leaf.sharding.spec}, its param "
        f"{param.sharding.spec}")
    if explicit:  # the sharding is part of the type: float32[2,4@x,3]
      assert jax.typeof(leaf).sharding.spec == jax.typeof(param).sharding.spec, (where, jax.typeof(leaf))


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto], ids=["explicit", "auto"])
@pytest.mark.parametrize("name", WITH_PARAM_SHAPED_STATE)
def test_state_keeps_the_params_sharding(name, axis_type):
  mesh = jax.make_mesh((4,), ("x",), axis_types=(axis_type,))
  explicit = axis_type == AxisType.Explicit
  tx = UNDER_TEST[name].make()
  with jax.set_mesh(mesh):
    params = _sharded_params(mesh)
    state = tx.init(params)
    _assert_state_sharded_like_params(state, params, explicit, "init")
    if explicit:  # under an auto mesh jit leaves the state's sharding to the compiler (optax.adam's too)
      _assert_state_sharded_like_params(jax.jit(tx.init)(params), params, explicit, "jit(init)")
    updates, state = jax.jit(tx.update)(cauchy_tree(0, params), state, params)
    _assert_state_sharded_like_params(state, params, explicit, "jitted update")
    _assert_state_sharded_like_params(updates, params, explicit, "updates")


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto], ids=["explicit", "auto"])
@pytest.mark.parametrize("shape,spec", [((512, 256), P("x")), ((512, 256), P(None, "x")), ((300, 7), P()),
                                        ((128, 768), P(None, "x")), ((70000,), P("x")),
                                        ((64, 64, 24), P(None, "x")), ((96, 1024), P())])
def test_clipped_coordinate_counts_are_exact_and_move_no_sharded_data(shape, spec, axis_type):
  """`count_true` (the counts behind clip fractions) equals NumPy's on large and small, sharded and whole
  arrays; on a sharded array the compiled count combines the devices' partial counts (an all-reduce) and
  moves no mask between devices (no all-gather, all-to-all or collective permute)."""
  from acclip_optax._common import count_true  # pylint: disable=g-import-not-at-top
  mesh = jax.make_mesh((4,), ("x",), axis_types=(axis_type,))
  values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  with jax.set_mesh(mesh):
    x = jax.device_put(values, NamedSharding(mesh, spec))
    count = jax.jit(lambda a: count_true(a > 0.3))
    assert int(count(x)) == int((values > 0.3).sum())
    compiled = count.lower(x).compile().as_text()
  for collective in ("all-gather", "all-to-all", "collective-permute"):
    assert collective not in compiled, collective


# ---- dtypes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", NAMES)
def test_updates_keep_the_gradients_dtype(name, dtype):
  tx = UNDER_TEST[name].make()
  params = {"w": jnp.ones((3, 2), dtype), "b": jnp.zeros(2, dtype)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for seed in range(3):
    grads = cauchy_tree(seed, params)
    updates, state = update(grads, state, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, grads)
    chex.assert_tree_all_finite(updates)
  assert_no_nan(state)


# ---- inject_hyperparams ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_injected_hyperparameters_give_the_same_updates(name):
  """inject_hyperparams puts the numeric hyperparameters in the state (traced in a jitted update)."""
  under_test = UNDER_TEST[name]
  plain, injected = under_test.make(), under_test.make_injected()
  params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
  plain_state, injected_state = plain.init(params), injected.init(params)
  assert injected_state.hyperparams, "nothing was injected"
  for seed in range(4):
    grads = cauchy_tree(seed, params)
    expected, plain_state = jax.jit(plain.update)(grads, plain_state, params)
    got, injected_state = jax.jit(injected.update)(grads, injected_state, params)
    # The injected hyperparameters are float32 arrays: 1 - float32(0.999) is 1.3e-5 (relative) off 0.001.
    chex.assert_trees_all_close(got, expected, rtol=1e-4, atol=1e-6)


# ---- composition with optax's wrappers ------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_a_nan_gradient_under_apply_if_finite_keeps_the_state(name):
  tx = optax.apply_if_finite(UNDER_TEST[name].make(), max_consecutive_errors=3)
  params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  _, state = update(cauchy_tree(0, params), state, params)
  bad = {"w": jnp.ones(3), "b": jnp.array([1.0, jnp.nan])}
  updates, bad_state = update(bad, state, params)
  chex.assert_trees_all_equal(bad_state.inner_state, state.inner_state)
  chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, bad))
  assert int(bad_state.notfinite_count) == 1


@pytest.mark.parametrize("name", NAMES)
def test_multi_steps_accumulates_and_the_state_can_be_donated(name):
  """A train step donates its optimizer state: no buffer may appear twice in it."""
  tx = optax.MultiSteps(UNDER_TEST[name].make(), every_k_schedule=2)
  params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
  step = jax.jit(tx.update, donate_argnums=(1,))
  state = tx.init(params)
  for seed in range(4):
    _, state = step(cauchy_tree(seed, params), state, params)
  assert int(state.gradient_step) == 2
  assert_no_nan(state.inner_opt_state)


# ---- edge cases -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_zero_gradients_at_zero_params_give_zero_updates(name):
  tx = UNDER_TEST[name].make()
  params = {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}
  state = tx.init(params)
  for _ in range(3):
    updates, state = jax.jit(tx.update)(params, state, params)
    chex.assert_trees_all_equal(updates, params)
  assert_no_nan(state)


@pytest.mark.parametrize("name", NAMES)
def test_none_leaves_and_empty_trees(name):
  tx = UNDER_TEST[name].make()
  params = {"w": jnp.ones(3), "frozen": None}
  grads = {"w": jnp.array([0.5, -2.0, 4.0]), "frozen": None}
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert updates["frozen"] is None and updates["w"].shape == (3,)
  empty_updates, empty_state = tx.update({}, tx.init({}), {})
  assert empty_updates == {}
  assert_no_nan(empty_state)
  assert set(acclip_optax.clip_stats(empty_state)) == set(acclip_optax.clip_stats(tx.init(params)))


# ---- convergence (as optax's alias tests) ---------------------------------------------------------

def parabola(x):
  return jnp.sum((x - jnp.array([1.0, -1.0, 1.0])) ** 2)


def rosenbrock(x):
  return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def minimize(opt, loss, x0, num_steps):
  def body(carry, _):
    x, state = carry
    updates, state = opt.update(jax.grad(loss)(x), state, x)
    return (optax.apply_updates(x, updates), state), None
  (x, _), _ = jax.lax.scan(body, (x0, opt.init(x0)), None, length=num_steps)
  return x


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_parabola_and_rosenbrock(name):
  opt = UNDER_TEST[name].make_optimizer()
  x = minimize(opt, parabola, jnp.array([-1.0, 10.0, 1.0]), 2000)
  np.testing.assert_allclose(np.asarray(x), [1.0, -1.0, 1.0], atol=1e-2)
  x = minimize(opt, rosenbrock, jnp.array([0.0, 0.0]), 20000)
  np.testing.assert_allclose(np.asarray(x), [1.0, 1.0], atol=2e-2)


def test_every_public_transformation_is_in_the_one_list_under_test():
  """A constructor in `acclip_optax.__all__` that returns a GradientTransformation gets every shared check."""
  import inspect  # pylint: disable=g-import-not-at-top
  tested = {under_test.factory for under_test in UNDER_TEST.values()}
  constructors = [name for name in acclip_optax.__all__ if inspect.isfunction(getattr(acclip_optax, name))
                  and "GradientTransformation" in str(inspect.signature(getattr(acclip_optax, name)).return_annotation)]
  assert len(constructors) >= 16
  assert [name for name in constructors if getattr(acclip_optax, name) not in tested] == []
