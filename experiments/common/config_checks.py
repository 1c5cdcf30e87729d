"""A run's config checked before any data is read, by building what it describes.

There is no second list of rules: the optimizer's constructors (`optimizers.check_optimizer_config`), a
model config's constructor and `jax.eval_shape` of the model's init, and each input pipeline's own checks
refuse bad values. What this module adds is the config's spelling in their errors: a model config's
`num_heads=3` becomes `model.num_heads=3`, the field a user wrote.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable


def spelled_as_in_config(message: str, prefix: str, names: Iterable[str]) -> str:
  """`message` with each `name=` of `names` written `prefix.name=`; prefixed by `prefix: ` when it names none."""
  names = list(names)
  if not names:
    return f"{prefix}: {message}"
  pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")=")
  renamed, count = pattern.subn(lambda match: f"{prefix}.{match.group(1)}=", message)
  return renamed if count else f"{prefix}: {message}"


def build(construct: Callable[[], Any], prefix: str, names: Iterable[str]) -> Any:
  """`construct()`, whose ValueError, TypeError or AssertionError (Flax asserts some shapes) becomes a
  ValueError naming the fields as the config spells them (`spelled_as_in_config`)."""
  try:
    return construct()
  except (ValueError, TypeError, AssertionError) as error:
    raise ValueError(spelled_as_in_config(str(error) or type(error).__name__, prefix, names)) from error
