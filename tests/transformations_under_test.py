"""The one list of the public transformations under test.

Every shared check (the chex variants in `test_chex.py`; strictness, sharding, dtypes, `inject_hyperparams`,
tracing once, composition with optax's wrappers and convergence in `test_shared_checks.py`) is driven by
`TRANSFORMATIONS_UNDER_TEST`, as optax's `contrib/_common_test.py` is by `_MAIN_OPTIMIZERS_UNDER_TEST`.
A transformation added to the library and to this list gets every check.

Each entry gives the public constructor and the keyword arguments of the instance under test (short
warm-ups and histories, so a few steps reach every branch), and the optimizer that the convergence check
runs: the entry itself where it is an optimizer (it holds a learning rate), or the entry chained with the
update rule its authors pair it with where it only transforms gradients.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import optax

import acclip_optax


@dataclasses.dataclass(frozen=True)
class UnderTest:
  """A public transformation with the settings it is tested at.

  Attributes:
    factory: the public constructor (`acclip_optax.<name>`).
    kwargs: its arguments for the instance under test.
    converge: wraps the instance into the optimizer that must minimise a parabola and Rosenbrock's
      function (None: the instance is itself an optimizer).
    param_shaped_state: its state holds leaves shaped like the params (moments, EMAs); otherwise only
      scalars and histories of the global norm.
    accepts_complex: complex params and updates follow the modulus-and-phase rule (False: refused).
  """
  factory: Callable[..., optax.GradientTransformation]
  kwargs: dict[str, Any]
  converge: Callable[[optax.GradientTransformation], optax.GradientTransformation] | None = None
  param_shaped_state: bool = True
  accepts_complex: bool = True

  def make(self) -> optax.GradientTransformation:
    return self.factory(**self.kwargs)

  def make_injected(self) -> optax.GradientTransformation:
    """The same transformation with every numeric hyperparameter in its state (`optax.inject_hyperparams`)."""
    return optax.inject_hyperparams(self.factory)(**self.kwargs)

  def make_optimizer(self) -> optax.GradientTransformation:
    return self.converge(self.make()) if self.converge else self.make()


def _then(update_rule):
  return lambda transformation: optax.chain(transformation, update_rule)


TRANSFORMATIONS_UNDER_TEST: dict[str, UnderTest] = {
    # The paper's rules (acclip_optax._acclip, _acclip_ports, _cclip, _gclip).
    "scale_by_acclip": UnderTest(acclip_optax.scale_by_acclip, {}, converge=_then(optax.scale(-0.02))),
    "scale_by_acclip_bias_corrected_alpha2": UnderTest(
        acclip_optax.scale_by_acclip, dict(alpha=2.0, bias_correction=True), converge=_then(optax.scale(-0.02))),
    "scale_by_acclip_ports": UnderTest(acclip_optax.scale_by_acclip_ports, {},
                                       converge=_then(optax.scale(-0.01))),
    "clip_by_coordinate": UnderTest(acclip_optax.clip_by_coordinate, dict(threshold=1.0),
                                    converge=_then(optax.sgd(0.003, momentum=0.9)), param_shaped_state=False),
    "clip_by_scheduled_global_norm": UnderTest(acclip_optax.clip_by_scheduled_global_norm, dict(max_norm=1.0),
                                     converge=_then(optax.sgd(0.003, momentum=0.9)), param_shaped_state=False),
    "acclip": UnderTest(acclip_optax.acclip, dict(learning_rate=0.02)),
    "acclip_alpha1.5_weight_decay": UnderTest(acclip_optax.acclip,
                                              dict(learning_rate=0.02, alpha=1.5, weight_decay=1e-4)),
    "acclip_ports": UnderTest(acclip_optax.acclip_ports, dict(learning_rate=0.01, weight_decay=1e-4)),
    "cclip": UnderTest(acclip_optax.cclip, dict(learning_rate=0.003, threshold=1.0, momentum=0.9)),
    "gclip": UnderTest(acclip_optax.gclip, dict(learning_rate=0.003, max_norm=1.0, momentum=0.9, nesterov=True)),
    # The spike-clipping methods that followed (_zclip, _adagc, _autoclip, _spam, _stable_spam), in front of
    # AdamW as their authors pair them.
    "zclip": UnderTest(acclip_optax.zclip, dict(warmup_steps=2, max_norm=10.0), converge=_then(optax.adam(0.02)),
                       param_shaped_state=False, accepts_complex=False),
    "adagc": UnderTest(acclip_optax.adagc, dict(warmup_steps=2), converge=_then(optax.adam(0.02)),
                       param_shaped_state=False, accepts_complex=False),
    "autoclip": UnderTest(acclip_optax.autoclip, dict(history=4), converge=_then(optax.adam(0.02)),
                          param_shaped_state=False, accepts_complex=False),
    "scale_by_spam": UnderTest(acclip_optax.scale_by_spam, dict(warmup_steps=2),
                               converge=_then(optax.scale(-0.01)), accepts_complex=False),
    "spam": UnderTest(acclip_optax.spam, dict(learning_rate=0.01, warmup_steps=2,
                                              weight_decay=1e-4), accepts_complex=False),
    "scale_by_stable_spam": UnderTest(
        acclip_optax.scale_by_stable_spam, dict(reset_interval=3, momentum_decay_steps=4, momentum_decay_floor=0.9),
        converge=_then(optax.scale(-0.01)), accepts_complex=False),
    "stable_spam": UnderTest(acclip_optax.stable_spam, dict(learning_rate=0.01, reset_interval=3, weight_decay=1e-4),
                             accepts_complex=False),
    # QK-clip rescales attention weights after the step: it goes last, after the update rule. These checks
    # run it without max_logits (the shared checks' params hold no attention layer), where it passes the
    # update through; tests/test_qk_clip.py checks the rule itself, and its rescaled updates on sharded
    # kernels and biases.
    "qk_clip": UnderTest(acclip_optax.qk_clip, dict(threshold=10.0, attention={"attention": (("query",), ("key",))}),
                         converge=lambda transformation: optax.chain(optax.adam(0.02), transformation),
                         param_shaped_state=False),
    # A wrapper (shapes are its inner transformation's business), around ACClip; a window whose ring buffer
    # (6,) is shaped like no param of the sharding check, and short enough that a few steps reach the test.
    "skip_step_on_spikes": UnderTest(acclip_optax.skip_step_on_spikes,
                                     dict(inner=acclip_optax.acclip(learning_rate=0.02), window=6),
                                     accepts_complex=False),
}
