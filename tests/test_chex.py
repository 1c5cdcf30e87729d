"""Every public transformation and alias under chex's variants, as users test their optimizers.

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

PUBLIC = {
    "scale_by_acclip": lambda: acclip_optax.scale_by_acclip(),
    "scale_by_acclip_bias_corrected": lambda: acclip_optax.scale_by_acclip(bias_correction=True),
    "scale_by_acclip_ports": lambda: acclip_optax.scale_by_acclip_ports(),
    "clip_by_coordinate": lambda: acclip_optax.clip_by_coordinate(1.0),
    "clip_by_global_norm": lambda: acclip_optax.clip_by_global_norm(1.0),
    "acclip": lambda: acclip_optax.acclip(0.1, weight_decay=1e-2),
    "acclip_ports": lambda: acclip_optax.acclip_ports(1e-3, weight_decay=1e-2),
    "cclip": lambda: acclip_optax.cclip(0.1, acclip_optax.clip_threshold_schedule(1.0, 1.5), momentum=0.9),
    "gclip": lambda: acclip_optax.gclip(0.1, 1.0, momentum=0.9, nesterov=True),
    "zclip": lambda: acclip_optax.zclip(warmup_steps=2, max_norm=10.0),
    "adagc": lambda: acclip_optax.adagc(warmup_steps=2),
    "autoclip": lambda: acclip_optax.autoclip(history=2),
    "spam": lambda: acclip_optax.spam(1e-3, reset_interval=2, warmup_steps=1, grad_accu_steps=1,
                                      weight_decay=1e-2),
}
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


def test_readme_chex_example_runs():
  import os  # pylint: disable=g-import-not-at-top
  import unittest  # pylint: disable=g-import-not-at-top
  readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
  section = readme.split("### Testing an optimizer that uses acclip_optax with chex", 1)[1]
  code = section.split("```python", 1)[1].split("```", 1)[0]
  namespace = {"__name__": "readme_example"}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  suite = unittest.defaultTestLoader.loadTestsFromTestCase(namespace["MyOptimizerTest"])
  result = unittest.TextTestRunner(verbosity=0).run(suite)
  assert result.testsRun == 5 and result.wasSuccessful(), result.failures + result.errors
