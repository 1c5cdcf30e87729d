"""Hugging Face BERT checkpoints in and out: `load_hf`, and the `import` and `export` commands.

    python -m experiments.bert.hf_checkpoint import --checkpoint DIR --workdir W
    python -m experiments.bert.hf_checkpoint export --workdir W --out DIR

A Hugging Face BERT folder holds config.json, vocab.txt, tokenizer_config.json (`do_lower_case`) and the
weights, as model.safetensors (PyTorch names and layouts, read with safetensors' NumPy API: no torch) or
flax_model.msgpack. `import` writes a workdir that `experiments.squad.main --pretrained_workdir W` fine-tunes
and `experiments.bert.main --config.init_from=W` continues pre-training (`experiments.bert.pretrained`).
`export` writes the folder back from a workdir: a pre-training one as `BertForMaskedLM`, a SQuAD fine-tuning
one as `BertForQuestionAnswering`.

Our BERT is the same network (post-LayerNorm, exact GELU, learned positions, token types, tied MLM head), so
the conversion is names and layouts only. A PyTorch `Linear` weight W [out, in] is our kernel K = W^T, and the
attention's projections split the hidden axis into heads (H = heads * head_dim):

    HF (PyTorch)                                          ours (Flax params)
    bert.embeddings.word_embeddings.weight [V, H]         bert/word_embeddings/embedding        (same for
                                                          position_embeddings, token_type_embeddings)
    bert.embeddings.LayerNorm.{weight, bias}              bert/embeddings_layer_norm/{scale, bias}
    bert.encoder.layer.i.attention.self.query.weight      bert/layer_i/attention/query/kernel   W^T as [H, heads, head_dim]
    bert.encoder.layer.i.attention.self.query.bias        bert/layer_i/attention/query/bias     as [heads, head_dim]
                                                          (key, value likewise)
    bert.encoder.layer.i.attention.output.dense.weight    bert/layer_i/attention/out/kernel     W^T as [heads, head_dim, H]
    bert.encoder.layer.i.attention.output.LayerNorm       bert/layer_i/attention_layer_norm
    bert.encoder.layer.i.intermediate.dense               bert/layer_i/intermediate             K = W^T
    bert.encoder.layer.i.output.dense                     bert/layer_i/output                   K = W^T
    bert.encoder.layer.i.output.LayerNorm                 bert/layer_i/output_layer_norm
    cls.predictions.transform.dense                       mlm_transform                         K = W^T
    cls.predictions.transform.LayerNorm                   mlm_layer_norm
    cls.predictions.bias                                  mlm_output_bias
    qa_outputs (BertForQuestionAnswering)                 qa_outputs (experiments.bert.models) K = W^T

The MLM decoder is tied to the word embeddings in both (a checkpoint that stores `cls.predictions.decoder`
must hold the tied values). Older checkpoints name LayerNorm parameters gamma/beta; Flax ones use
kernel [in, out], embedding and scale, and may leave out the `bert.` prefix: all are read. The pooler and the
next-sentence head, which our models do not have, are reported as unused; a missing weight is an error that
names it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bert import models
from experiments.bert import pretrained
from experiments.bert import vocabulary
from experiments.common import results

SAFETENSORS = "model.safetensors"
FLAX_MSGPACK = "flax_model.msgpack"

# Our BertConfig field <- HF config.json key (absent keys take HF's defaults, which are BertConfig's).
_CONFIG_KEYS = {
    "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
    "dropout_rate": "hidden_dropout_prob", "attention_dropout_rate": "attention_probs_dropout_prob",
    "layer_norm_eps": "layer_norm_eps", "initializer_range": "initializer_range",
}
# HF settings our model has one value of: config.json key -> (the value we implement, what it means).
_FIXED_SETTINGS = {
    "hidden_act": ("gelu", "the exact erf GELU"),
    "position_embedding_type": ("absolute", "learned absolute positions"),
    "is_decoder": (False, "an encoder"),
    "add_cross_attention": (False, "no cross-attention"),
}


class Vocabulary(NamedTuple):
  """A checkpoint's WordPiece vocabulary file and whether its text is lower-cased."""
  path: str
  lowercase: bool

  def tokenizer(self):
    """Our `tokenizers.Tokenizer` on it (`experiments.bert.vocabulary.load_tokenizer`)."""
    return vocabulary.load_tokenizer(self.path, self.lowercase)


# --------------------------------------------------------------------------------------------- the mapping
class _Layout(NamedTuple):
  """How one HF tensor becomes one of our arrays (`to_ours`) and back (`to_hf`)."""
  to_ours: Callable[[np.ndarray, models.BertConfig], np.ndarray]
  to_hf: Callable[[np.ndarray, models.BertConfig], np.ndarray]


def _head_dim(config: models.BertConfig) -> int:
  return config.hidden_size // config.num_heads


_SAME = _Layout(lambda x, c: x, lambda x, c: x)
_LINEAR = _Layout(lambda w, c: w.T, lambda k, c: k.T)
_HEADS_IN = _Layout(lambda w, c: w.T.reshape(c.hidden_size, c.num_heads, _head_dim(c)),
                    lambda k, c: k.reshape(c.hidden_size, c.hidden_size).T)
_HEADS_BIAS = _Layout(lambda b, c: b.reshape(c.num_heads, _head_dim(c)), lambda b, c: b.reshape(-1))
_HEADS_OUT = _Layout(lambda w, c: w.T.reshape(c.num_heads, _head_dim(c), c.hidden_size),
                     lambda k, c: k.reshape(c.hidden_size, c.hidden_size).T)


def _dense(ours: tuple[str, ...], hf: str, kernel: _Layout = _LINEAR, bias: _Layout = _SAME):
  return [(ours + ("kernel",), f"{hf}.weight", kernel), (ours + ("bias",), f"{hf}.bias", bias)]


def _layer_norm(ours: tuple[str, ...], hf: str):
  return [(ours + ("scale",), f"{hf}.weight", _SAME), (ours + ("bias",), f"{hf}.bias", _SAME)]


def _encoder_names(config: models.BertConfig) -> list[tuple[tuple[str, ...], str, _Layout]]:
  """(our param path, HF name, layout) of every encoder parameter."""
  names = [(("bert", f"{kind}_embeddings", "embedding"), f"bert.embeddings.{kind}_embeddings.weight", _SAME)
           for kind in ("word", "position", "token_type")]
  names += _layer_norm(("bert", "embeddings_layer_norm"), "bert.embeddings.LayerNorm")
  for i in range(config.num_layers):
    ours, hf = ("bert", f"layer_{i}"), f"bert.encoder.layer.{i}"
    for projection in ("query", "key", "value"):
      names += _dense(ours + ("attention", projection), f"{hf}.attention.self.{projection}", _HEADS_IN,
                      _HEADS_BIAS)
    names += _dense(ours + ("attention", "out"), f"{hf}.attention.output.dense", _HEADS_OUT)
    names += _layer_norm(ours + ("attention_layer_norm",), f"{hf}.attention.output.LayerNorm")
    names += _dense(ours + ("intermediate",), f"{hf}.intermediate.dense")
    names += _dense(ours + ("output",), f"{hf}.output.dense")
    names += _layer_norm(ours + ("output_layer_norm",), f"{hf}.output.LayerNorm")
  return names


def _mlm_head_names() -> list[tuple[tuple[str, ...], str, _Layout]]:
  return (_dense(("mlm_transform",), "cls.predictions.transform.dense")
          + _layer_norm(("mlm_layer_norm",), "cls.predictions.transform.LayerNorm")
          + [(("mlm_output_bias",), "cls.predictions.bias", _SAME)])


def _qa_head_names() -> list[tuple[tuple[str, ...], str, _Layout]]:
  return _dense(("qa_outputs",), "qa_outputs")


# ------------------------------------------------------------------------------------------------- reading
def config_from_hf(hf_config: Mapping[str, Any]) -> models.BertConfig:
  """Our `BertConfig` from a HF BERT config.json's dict.

  Raises:
    ValueError: a model type or setting our BERT does not implement (naming it and what we support).
  """
  model_type = hf_config.get("model_type", "bert")
  if model_type != "bert":
    raise ValueError(f"model_type={model_type!r}: only BERT checkpoints (model_type 'bert') can be imported")
  for key, (value, meaning) in _FIXED_SETTINGS.items():
    if hf_config.get(key, value) != value:
      raise ValueError(f"{key}={hf_config[key]!r} is not supported: our BERT has {key}={value!r} "
                       f"({meaning})")
  fields = {ours: hf_config[hf] for ours, hf in _CONFIG_KEYS.items() if hf in hf_config}
  if "vocab_size" not in fields:
    raise ValueError("config.json lacks vocab_size")
  return models.BertConfig(**fields)


def config_to_hf(config: models.BertConfig, architecture: str, pad_token_id: int) -> dict[str, Any]:
  """The HF config.json dict of our `BertConfig` (the inverse of `config_from_hf`)."""
  hf_config = {"architectures": [architecture], "model_type": "bert", "pad_token_id": pad_token_id,
               **{hf: getattr(config, ours) for ours, hf in _CONFIG_KEYS.items()}}
  hf_config.update({key: value for key, (value, _) in _FIXED_SETTINGS.items()})
  return hf_config


def _torch_name(flax_path: tuple[str, ...], value: np.ndarray) -> tuple[str, np.ndarray]:
  """A Flax checkpoint's (path, array) under the PyTorch name and layout."""
  *path, leaf = flax_path
  if leaf == "kernel":
    return ".".join(path + ["weight"]), value.T
  return ".".join(path + [{"embedding": "weight", "scale": "weight"}.get(leaf, leaf)]), value


def read_weights(checkpoint_dir: str) -> dict[str, np.ndarray]:
  """The weights of a HF BERT folder under PyTorch names and layouts, float32, with the `bert.` prefix.

  Reads model.safetensors (preferred) or flax_model.msgpack; LayerNorm gamma/beta become weight/bias.

  Raises:
    FileNotFoundError: the folder holds neither weights file.
  """
  safetensors_path = os.path.join(checkpoint_dir, SAFETENSORS)
  msgpack_path = os.path.join(checkpoint_dir, FLAX_MSGPACK)
  if os.path.isfile(safetensors_path):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      weights = load_file(safetensors_path)
    except Exception as error:  # safetensors raises its own SafetensorError (and OSError) for a damaged file
      raise results.DamagedFileError(f"{safetensors_path}: not a readable safetensors file ({error}); the file is "
                                     f"damaged or truncated. {_WEIGHTS_REMEDY}") from error
  elif os.path.isfile(msgpack_path):
    from flax import serialization  # pylint: disable=g-import-not-at-top
    with open(msgpack_path, "rb") as f:
      try:
        tree = serialization.msgpack_restore(f.read())
      except Exception as error:  # msgpack raises several types for damaged bytes
        raise results.DamagedFileError(f"{msgpack_path}: not a readable Flax msgpack file ({error}); the file is "
                                       f"damaged or truncated. {_WEIGHTS_REMEDY}") from error
    weights = dict(_torch_name(tuple(str(k.key) for k in path), np.asarray(value))
                   for path, value in jax.tree_util.tree_leaves_with_path(tree))
  else:
    raise FileNotFoundError(f"{checkpoint_dir!r} holds neither {SAFETENSORS} nor {FLAX_MSGPACK}")
  renamed = {}
  for name, value in weights.items():
    name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if name.startswith(("embeddings.", "encoder.", "pooler.")):  # a BertModel, saved without the prefix
      name = "bert." + name
    renamed[name] = np.asarray(value, np.float32)
  return renamed


_WEIGHTS_REMEDY = "Copy the checkpoint folder again from where it came from (e.g. the Hugging Face hub's files)."


def _read_json(path: str, default: dict | None = None) -> dict:
  """A JSON file of the folder (`results.read_json`: a damaged one is an error naming the file and line)."""
  if not os.path.isfile(path):
    if default is not None:
      return default
    raise FileNotFoundError(f"{path!r} does not exist")
  return results.read_json(path, remedy=_WEIGHTS_REMEDY)


def read_vocabulary(checkpoint_dir: str) -> Vocabulary:
  """vocab.txt and tokenizer_config.json's `do_lower_case` (BertTokenizer's default, True, when absent).

  Raises:
    ValueError: tokenizer settings our tokenizer does not implement (a `strip_accents` other than the
      lower-casing's, no Chinese-character splitting).
  """
  tokenizer_config = _read_json(os.path.join(checkpoint_dir, "tokenizer_config.json"), default={})
  lowercase = bool(tokenizer_config.get("do_lower_case", True))
  if tokenizer_config.get("strip_accents") not in (None, lowercase):
    raise ValueError(f"strip_accents={tokenizer_config['strip_accents']} with do_lower_case={lowercase} is "
                     "not supported: our tokenizer strips accents exactly when it lower-cases")
  if not tokenizer_config.get("tokenize_chinese_chars", True):
    raise ValueError("tokenize_chinese_chars=false is not supported: our tokenizer splits Chinese characters")
  path = os.path.join(checkpoint_dir, "vocab.txt")
  vocabulary.load_tokenizer(path, lowercase)  # exists and has the special tokens
  return Vocabulary(path, lowercase)


def _check_tied_decoder(weights: Mapping[str, np.ndarray]) -> list[str]:
  """The names of a stored MLM decoder (tied to the word embeddings and the output bias), checked equal."""
  tied = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
          "cls.predictions.decoder.bias": "cls.predictions.bias"}
  for name, source in tied.items():
    if name in weights and source in weights and not np.array_equal(weights[name], weights[source]):
      raise ValueError(f"{name} differs from {source}: our MLM head ties them, an untied decoder is not "
                       "supported")
  return [name for name in tied if name in weights]


def _nest(flat: Mapping[tuple[str, ...], np.ndarray]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def params_from_hf(weights: Mapping[str, np.ndarray], config: models.BertConfig,
                   head: str = "mlm") -> tuple[dict, list[str]]:
  """Our params from HF weights (PyTorch names, `read_weights`), and the names of the unused weights.

  Args:
    weights: name -> array.
    config: the model's config (`config_from_hf`).
    head: "mlm" (`models.BertForMaskedLM`) or "qa" (`models.BertForQuestionAnswering`).

  Raises:
    ValueError: missing weights (all named), a shape that differs from the config's, an untied decoder.
  """
  names = _encoder_names(config) + (_mlm_head_names() if head == "mlm" else _qa_head_names())
  missing = [hf for _, hf, _ in names if hf not in weights]
  if missing:
    raise ValueError(f"the checkpoint lacks {len(missing)} weight(s) our model needs: {', '.join(missing)}")
  abstract = _flatten(models.abstract_params(config) if head == "mlm" else _abstract_qa_params(config))
  expected = {hf: jax.eval_shape(lambda x, layout=layout: layout.to_hf(x, config), abstract[ours]).shape
              for ours, hf, layout in names}
  wrong = [f"{hf}: {weights[hf].shape} (expected {shape})" for hf, shape in expected.items()
           if weights[hf].shape != shape]
  if wrong:
    raise ValueError(f"weights of the wrong shape for config.json's sizes: {'; '.join(wrong)}")
  flat = {ours: layout.to_ours(weights[hf], config) for ours, hf, layout in names}
  used = {hf for _, hf, _ in names} | set(_check_tied_decoder(weights))
  return _nest(flat), sorted(set(weights) - used)


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, prefix + (key,)))
    else:
      flat[prefix + (key,)] = value
  return flat


def _abstract_qa_params(config: models.BertConfig) -> dict:
  tokens = jnp.zeros((1, 1), jnp.int32)
  model = models.BertForQuestionAnswering(config)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens + 1,
                                           deterministic=True))["params"]


def load_hf(path: str) -> tuple[models.BertConfig, dict, Vocabulary]:
  """A HF BERT folder as (our BertConfig, params of `models.BertForMaskedLM`, its Vocabulary).

  `models.BertForMaskedLM(config).apply({"params": params}, input_ids, token_type_ids, attention_mask,
  masked_positions, deterministic=True)` gives the logits HF's `BertForMaskedLM` gives at those positions.
  Weights our model does not use (pooler, next-sentence head) are logged.

  Raises:
    FileNotFoundError: no config.json, vocab.txt or weights file.
    ValueError: an unsupported setting (`config_from_hf`, `read_vocabulary`), missing weights (named),
      weights whose shapes differ from the config's, or a vocab.txt of another size than vocab_size.
  """
  config, params, vocab, _ = _load(path)
  return config, params, vocab


def _load(path: str) -> tuple[models.BertConfig, dict, Vocabulary, list[str]]:
  """`load_hf`'s triple and the names of the unused weights."""
  config = config_from_hf(_read_json(os.path.join(path, "config.json")))
  vocab = read_vocabulary(path)
  vocab_size = vocab.tokenizer().get_vocab_size()
  if vocab_size != config.vocab_size:
    raise ValueError(f"{vocab.path} holds {vocab_size} tokens but config.json says vocab_size="
                     f"{config.vocab_size}")
  params, unused = params_from_hf(read_weights(path), config)
  if unused:
    logging.warning("%s: %d weight(s) our BertForMaskedLM does not use, not imported: %s", path,
                    len(unused), ", ".join(unused))
  return config, params, vocab, unused


# ------------------------------------------------------------------------------------------------- writing
def params_to_hf(params: Mapping[str, Any], config: models.BertConfig) -> dict[str, np.ndarray]:
  """HF weights (PyTorch names and layouts) of our params: BertForMaskedLM's, or with a `qa_outputs` head,
  BertForQuestionAnswering's (the inverse of `params_from_hf`)."""
  names = _encoder_names(config) + (_qa_head_names() if "qa_outputs" in params else _mlm_head_names())
  flat = _flatten(params)
  return {hf: np.ascontiguousarray(layout.to_hf(np.asarray(flat[ours], np.float32), config))
          for ours, hf, layout in names}


def save_hf(out_dir: str, config: models.BertConfig, params: Mapping[str, Any], vocab: Vocabulary) -> str:
  """Writes a HF BERT folder: config.json, vocab.txt, tokenizer_config.json, model.safetensors.

  `transformers.BertForMaskedLM.from_pretrained(out_dir)` (or BertForQuestionAnswering, for params with a
  `qa_outputs` head) then loads every weight, with none missing or unexpected.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  architecture = "BertForQuestionAnswering" if "qa_outputs" in params else "BertForMaskedLM"
  tokenizer = vocab.tokenizer()
  results.write_json(os.path.join(out_dir, "config.json"),
                     config_to_hf(config, architecture, tokenizer.token_to_id("[PAD]")))
  results.copy_file(vocab.path, os.path.join(out_dir, "vocab.txt"))
  results.write_json(os.path.join(out_dir, "tokenizer_config.json"),
                     {"tokenizer_class": "BertTokenizer", "do_lower_case": vocab.lowercase,
                      "model_max_length": config.max_position_embeddings})
  tensors = params_to_hf(params, config)
  results.write_file(os.path.join(out_dir, SAFETENSORS),
                     lambda path: save_file(tensors, path, metadata={"format": "pt"}))
  return out_dir


# ------------------------------------------------------------------------------------------- the commands
def import_checkpoint(checkpoint_dir: str, workdir: str) -> dict[str, Any]:
  """`load_hf(checkpoint_dir)` written as a pre-training workdir (`experiments.bert.pretrained.save`).

  Returns:
    {"workdir", "model": the BertConfig as a dict, "lowercase", "num_params", "unused_weights"}.
  """
  config, params, vocab, unused = _load(checkpoint_dir)
  workdir = os.path.abspath(workdir)
  pretrained.save(workdir, config, params, vocab.path, vocab.lowercase)
  return {"workdir": workdir, "model": dataclasses.asdict(config), "lowercase": vocab.lowercase,
          "num_params": models.count_params(params), "unused_weights": unused}


def _workdir_vocabulary(workdir: str, signature: Mapping[str, Any]) -> Vocabulary:
  """The vocabulary of a pre-training workdir (its own), or of a SQuAD one (its config's pre-training run's).

  Checked against the checkpoint's recorded vocab_sha256.
  """
  path = os.path.join(workdir, "vocab.txt")
  if os.path.isfile(path):
    lowercase = pretrained.vocabulary_lowercase(workdir)
  else:  # a fine-tuning workdir: its config.json names the pre-training workdir or the vocabulary file
    run_config = _read_json(os.path.join(workdir, "config.json"))
    source = run_config.get("vocab_file") or run_config.get("pretrained_workdir")
    path = source if source and os.path.isfile(source) else os.path.join(source or "", "vocab.txt")
    lowercase = bool(run_config["lowercase"])
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{workdir!r} has no vocab.txt and its config.json names none; export a "
                              "pre-training workdir, or fine-tune with config.pretrained_workdir set")
  if vocabulary.vocab_sha256(path) != signature.get("vocab_sha256"):
    raise ValueError(f"{path!r} is not the vocabulary the checkpoint in {workdir!r} was trained with")
  return Vocabulary(path, lowercase)


def export_checkpoint(workdir: str, out_dir: str) -> dict[str, Any]:
  """The newest checkpoint of a workdir as a HF BERT folder (`save_hf`).

  A pre-training workdir (`experiments.bert.train`, or one `import_checkpoint` wrote) gives a
  BertForMaskedLM; a SQuAD fine-tuning workdir (`experiments.squad.train`, whose signature records its
  windows) gives a BertForQuestionAnswering, encoder and span head.

  Returns:
    {"out", "architecture", "step"}.
  """
  directory = pretrained.checkpoint_dir(workdir)
  step, meta = pretrained.latest_meta(directory)
  signature = meta["signature"]
  config = models.BertConfig(**signature["model"])
  is_squad = "doc_stride" in signature
  abstract = _abstract_qa_params(config) if is_squad else models.abstract_params(config)
  params = pretrained.restore_params(directory, abstract, signature["optimizer"])
  save_hf(out_dir, config, params, _workdir_vocabulary(workdir, signature))
  return {"out": os.path.abspath(out_dir), "step": step,
          "architecture": "BertForQuestionAnswering" if is_squad else "BertForMaskedLM"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  parser = argparse.ArgumentParser(prog="python -m experiments.bert.hf_checkpoint",
                                   description="Hugging Face BERT checkpoints in and out.")
  commands = parser.add_subparsers(dest="command", required=True)
  importer = commands.add_parser("import", help="a HF BERT folder -> a pre-training workdir")
  importer.add_argument("--checkpoint", required=True,
                        help="the HF folder (config.json, vocab.txt, tokenizer_config.json, weights)")
  importer.add_argument("--workdir", required=True, help="the workdir to write (new, or without checkpoints)")
  exporter = commands.add_parser("export", help="a workdir's newest checkpoint -> a HF BERT folder")
  exporter.add_argument("--workdir", required=True, help="a pre-training or SQuAD fine-tuning workdir")
  exporter.add_argument("--out", required=True, help="the HF folder to write")
  args = parser.parse_args(argv)
  if args.command == "import":
    return import_checkpoint(args.checkpoint, args.workdir)
  return export_checkpoint(args.workdir, args.out)


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  try:
    summary = main(sys.argv[1:])
  except (FileNotFoundError, ValueError) as error:  # a bad folder or workdir: the message says which
    raise SystemExit(f"error: {error}") from None
  print(json.dumps(summary, indent=2))
