"""Every public transformation and alias (the one list, `transformations_under_test.py`) under chex's
variants, as users test their optimizers.

`chex.variants` runs each test with the update as written, under `jax.jit`, on a device
(`jax.device_put` of the inputs) and under `jax.pmap` over the 4 fake CPU devices (inputs broadcast,
the first device's output kept). Each variant must give the eager update, keep the updates' shapes and
dtypes, and stay finite on heavy-tailed gradients; a jitted update traces once.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import acclip_optax
from transformations_under_test import TRANSFORMATIONS_UNDER_TEST

PUBLIC = {name: under_test.make for name, under_test in TRANSFORMATIONS_UNDER_TEST.items()}
NUM_STEPS = 3


def params_and_grads():
  rng = np.random.default_rng(0)
  params = {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "bias": jnp.zeros(4, jnp.float32),
            "scale": jnp.ones((), jnp.bfloat16)}
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.standard_cauchy(p.shape), p.dtype), params)
           for _ in range(NUM_STEPS)]
  return params, grads


def run(update, tx, params, grads):
  state = tx.init(params)
  outputs = []
  for g in grads:
    updates, state = update(g, state, params)
    outputs.append(updates)
  return outputs, state


class TransformationVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True, with_device=True, with_pmap=True)
  @parameterized.named_parameters(*[(name, name) for name in sorted(PUBLIC)])
  def test_every_variant_gives_the_eager_update(self, name):
    tx = PUBLIC[name]()
    params, grads = params_and_grads()
    expected, expected_state = run(tx.update, tx, params, grads)
    outputs, state = run(self.variant(tx.update), tx, params, grads)
    for got, want, g in zip(outputs, expected, grads):
      chex.assert_trees_all_equal_shapes_and_dtypes(got, g)
      chex.assert_tree_all_finite(got)
      chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal_structs(state, expected_state)
    chex.assert_trees_all_close(acclip_optax.clip_stats(state), acclip_optax.clip_stats(expected_state),
                                rtol=1e-5)

  @parameterized.named_parameters(*[(name, name) for name in sorted(PUBLIC)])
  def test_jitted_update_traces_once(self, name):
    tx = PUBLIC[name]()
    params, grads = params_and_grads()
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(g, state):
      updates, state = tx.update(g, state, params)
      return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for g in grads:
      new_params, state = step(g, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_params, params)
    chex.assert_tree_all_finite(new_params)


def test_docs_chex_example_runs():
  import os  # pylint: disable=g-import-not-at-top
  import unittest  # pylint: disable=g-import-not-at-top
  guide = os.path.join(os.path.dirname(__file__), "..", "docs", "testing_with_chex.md")
  code = open(guide, encoding="utf-8").read().split("```python", 1)[1].split("```", 1)[0]
  namespace = {"__name__": "docs_chex_example"}
  exec(compile(code, "docs/testing_with_chex.md", "exec"), namespace)  # pylint: disable=exec-used
  suite = unittest.defaultTestLoader.loadTestsFromTestCase(namespace["MyOptimizerTest"])
  result = unittest.TextTestRunner(verbosity=0).run(suite)
  assert result.testsRun == 5 and result.wasSuccessful(), result.failures + result.errors
