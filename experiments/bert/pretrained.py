"""A pre-training workdir as a model: its newest checkpoint's parameters and sizes, and its vocabulary.

What fine-tuning (`experiments.squad.train`), continued pre-training (`config.init_from` of
`experiments.bert.train`) and the Hugging Face export read, and what the Hugging Face import writes:

    <workdir>/vocab.txt           the WordPiece vocabulary
    <workdir>/vocab_info.json     where it came from and whether the text is lower-cased ({"lowercase": ...})
    <workdir>/checkpoints/<step>  state {step, params, opt_state, rng}; meta {"data_position", "signature"},
                                  the signature holding "model" (a BertConfig as a dict), "vocab_sha256" and
                                  "optimizer" (an OptimizerSpec as a dict)

as `experiments.bert.train` leaves it. An imported model is a step-0 state whose optimizer is plain SGD (an
optimizer state of two scalars): whoever continues from it starts an optimizer of their own.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from experiments.bert import models
from experiments.bert import vocabulary
from experiments.common import checkpoint
from experiments.common import optimizers
from experiments.common import results

# The optimizer an imported checkpoint records: its state is a few scalars, not two copies of the model.
IMPORTED_OPTIMIZER = optimizers.OptimizerSpec(
    "sgd", total_steps=1, learning_rate=0.0, hyperparameters=(("momentum", 0.0), ("nesterov", False)))


@flax.struct.dataclass
class TrainState:
  """A BERT run's state, pre-training or fine-tuning: everything a resumed run needs besides the data position
  (which is `step`)."""
  step: jax.Array  # int32, optimizer updates done
  params: Any
  opt_state: Any
  rng: jax.Array  # uint32 raw key data (portable across checkpoint formats)

  def as_dict(self) -> dict:
    return {"step": self.step, "params": self.params, "opt_state": self.opt_state, "rng": self.rng}


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(workdir, "checkpoints")


def latest_meta(directory: str) -> tuple[int, dict]:
  """(step, meta) of the newest checkpoint a BERT run wrote under `directory`, without restoring the state.

  Raises:
    FileNotFoundError: no checkpoint there.
    checkpoint.CheckpointError: the newest one records no model (another driver wrote it).
  """
  try:
    with checkpoint.CheckpointManager(directory) as manager:
      step, meta = manager.latest_meta()
  except FileNotFoundError as error:
    raise FileNotFoundError(f"No pre-training checkpoint under {directory!r}.") from error
  if "model" not in meta.get("signature", {}):
    raise checkpoint.CheckpointError(f"checkpoint step {step} in {directory} has no model signature; "
                                     "it was not written by experiments.bert.train.")
  return step, meta


def restore_params(directory: str, abstract_params: Any, optimizer: dict) -> Any:
  """The params of the newest checkpoint under `directory`, restored against its state's template.

  The template is `abstract_params` (shapes and dtypes) and the state of the optimizer the checkpoint
  records (`optimizer`, its signature's "optimizer"); `experiments.common.checkpoint` checks structure,
  shapes and dtypes.
  """
  tx = optimizers.OptimizerSpec.from_dict(optimizer).create()
  abstract_state = {
      "step": jax.ShapeDtypeStruct((), jnp.int32),
      "params": abstract_params,
      "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))),
  }
  abstract_state["opt_state"] = jax.eval_shape(tx.init, abstract_state["params"])
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_state)
  with checkpoint.CheckpointManager(directory) as manager:
    state, _ = manager.restore_latest(template)
  return state["params"]


def vocabulary_lowercase(workdir: str) -> bool:
  """Whether the workdir's vocabulary is used on lower-cased text (its vocab_info.json says)."""
  path = os.path.join(workdir, "vocab_info.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path!r} does not exist: the workdir does not say whether its vocabulary is "
                            "lower-cased")
  return bool(results.read_json(path, required=("lowercase",), remedy=(
      f"Copy {workdir} again, or run experiments.bert.hf_checkpoint import into a new workdir."))["lowercase"])


def save(workdir: str, model_config: models.BertConfig, params: Any, vocab_path: str,
         lowercase: bool) -> str:
  """Writes `params` of `models.BertForMaskedLM(model_config)` as a step-0 pre-training workdir.

  The vocabulary is copied to `<workdir>/vocab.txt` with the vocab_info.json that
  `vocabulary.prepare_vocab` writes for a given file, so the BERT driver accepts it as its vocabulary.

  Returns:
    The workdir's checkpoint directory.

  Raises:
    ValueError: the workdir already holds checkpoints or another vocabulary; params not of that model.
  """
  directory = checkpoint_dir(workdir)
  if os.path.isdir(directory) and os.listdir(directory):
    raise ValueError(f"{directory!r} already holds checkpoints; write the model into a new workdir")
  expected = jax.tree.map(lambda s: (s.shape, np.dtype(s.dtype).name), models.abstract_params(model_config))
  found = jax.tree.map(lambda x: (np.shape(x), np.asarray(x).dtype.name), params)
  if expected != found:
    raise ValueError("the params are not those of BertForMaskedLM with this config")
  os.makedirs(workdir, exist_ok=True)
  target = os.path.join(workdir, "vocab.txt")
  vocab_sha256 = vocabulary.vocab_sha256(vocab_path)
  if os.path.exists(target) and vocabulary.vocab_sha256(target) != vocab_sha256:
    raise ValueError(f"{target!r} is another vocabulary; write the model into a new workdir")
  results.copy_file(vocab_path, target)
  results.write_text(os.path.join(workdir, "vocab_info.json"),
                     json.dumps({"vocab_file_sha256": vocab_sha256, "lowercase": bool(lowercase)}))
  state = {"step": np.zeros((), np.int32), "params": params,
           "opt_state": jax.device_get(IMPORTED_OPTIMIZER.create().init(params)),
           "rng": np.asarray(jax.random.key_data(jax.random.key(0)))}
  signature = {"model": dataclasses.asdict(model_config), "vocab_sha256": vocab_sha256,
               "optimizer": IMPORTED_OPTIMIZER.to_dict()}
  with checkpoint.CheckpointManager(directory) as manager:
    manager.save(0, state, {"data_position": 0, "signature": signature})
  return directory
