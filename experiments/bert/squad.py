"""SQuAD v1.1 fine-tuning of a pretrained BERT encoder.

The pieces follow the original BERT recipe (google-research/bert run_squad.py):

* `read_squad` reads the official SQuAD v1.1 JSON (``{"data": [{"paragraphs": [{"context", "qas"}]}]}``).
* `build_features` tokenises question and context with the pretraining WordPiece tokenizer, keeping the
  character offsets of every context token, and cuts long contexts into overlapping windows:
  ``[CLS] question [SEP] window [SEP]``, consecutive windows starting ``doc_stride`` tokens apart.
* `BertForQuestionAnswering` puts a start/end span head on `experiments.bert.models.BertModel`
  (params key ``'bert'``, the same key as in the MLM model, so a pretraining checkpoint drops in).
* `decode_predictions` picks, for every question, the span ``(s, e)`` maximising
  ``start_logit[s] + end_logit[e]`` with ``s <= e < s + max_answer_length`` inside the context, over all
  windows of the question, counting a start token only in the window where it has the most context.
* `squad_v1_scores` is the official v1.1 evaluation: exact match and token F1 of the normalised answer
  (lower case, punctuation and the articles a/an/the removed, whitespace collapsed), maximised over the
  ground truths, both in percent.
* `finetune(config, workdir, pretrained_workdir)` trains under `jax.pmap` with the shared optimizer
  factory and returns ``{'exact_match': ..., 'f1': ...}`` on the dev file.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import os
import re
import string
from typing import Any, Iterable, Mapping, Sequence

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.bert import input_pipeline
from experiments.bert import models
from experiments.common import checkpoint
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel
from experiments.common import training_loop

# ---------------------------------------------------------------------------------------------------------
# Reading the official JSON.


@dataclasses.dataclass(frozen=True)
class SquadExample:
  """One question about one context.

  ``answers`` holds every ground-truth answer text (dev files have several); ``answer_start`` is the
  character offset of the first answer in ``context``, or None when the example carries no answer.
  """
  qid: str
  question: str
  context: str
  answers: tuple[str, ...]
  answer_start: int | None


def _require(mapping: Any, key: str, kind: type, where: str, path: str) -> Any:
  if not isinstance(mapping, dict) or key not in mapping:
    raise ValueError(f"{path}: not SQuAD v1.1 format: {where} has no {key!r} field.")
  value = mapping[key]
  if not isinstance(value, kind) or isinstance(value, bool):
    raise ValueError(f"{path}: not SQuAD v1.1 format: {where}[{key!r}] is a {type(value).__name__}, "
                     f"expected {kind.__name__}.")
  return value


def read_squad(path: str | os.PathLike) -> list[SquadExample]:
  """Reads a SQuAD v1.1 JSON file into `SquadExample`s, in file order.

  Args:
    path: the ``train-v1.1.json`` / ``dev-v1.1.json`` file (or one of the same format).

  Returns:
    The examples; ``answer_start`` is the first answer's character offset.

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    ValueError: if the file is not JSON or lacks a SQuAD field. (An ``answer_start`` that does not point
      at its answer is kept here; `build_features` skips such questions when training.)
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"SQuAD file not found: {path!r}.")
  try:
    with open(path, encoding="utf-8") as f:
      dataset = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not a SQuAD v1.1 JSON file: {e}") from e
  examples = []
  for a, article in enumerate(_require(dataset, "data", list, "the top level", path)):
    for p, paragraph in enumerate(_require(article, "paragraphs", list, f"data[{a}]", path)):
      where = f"data[{a}].paragraphs[{p}]"
      context = _require(paragraph, "context", str, where, path)
      for q, qa in enumerate(_require(paragraph, "qas", list, where, path)):
        qa_where = f"{where}.qas[{q}]"
        qid = _require(qa, "id", str, qa_where, path)
        question = _require(qa, "question", str, qa_where, path)
        answers = _require(qa, "answers", list, qa_where, path)
        texts, starts = [], []
        for i, answer in enumerate(answers):
          texts.append(_require(answer, "text", str, f"{qa_where}.answers[{i}]", path))
          starts.append(_require(answer, "answer_start", int, f"{qa_where}.answers[{i}]", path))
        examples.append(SquadExample(qid, question, context, tuple(texts), starts[0] if starts else None))
  if not examples:
    raise ValueError(f"{path}: SQuAD file holds no questions.")
  return examples


def answer_matches_context(example: SquadExample) -> bool:
  """Whether the first answer's text is found at its ``answer_start`` in the context.

  As run_squad.py checks: the context words overlapping the span ``[answer_start, answer_start +
  len(text))``, joined by single spaces, must contain the answer with its whitespace collapsed.
  """
  if example.answer_start is None or not example.answers:
    return False
  text, context = example.answers[0], example.context
  start, end = example.answer_start, example.answer_start + len(text)
  if not 0 <= start <= end <= len(context):
    return False
  while start > 0 and not context[start - 1].isspace():
    start -= 1
  while end < len(context) and not context[end].isspace():
    end += 1
  return " ".join(text.split()) in " ".join(context[start:end].split())


# ---------------------------------------------------------------------------------------------------------
# Features: sliding windows over the tokenised context.


@dataclasses.dataclass(frozen=True)
class SquadFeatures:
  """Model inputs, one row per window; `N` windows of `max_seq_len` tokens.

  Attributes:
    input_ids, token_type_ids, attention_mask: int32 ``[N, L]`` BERT inputs.
    start_positions, end_positions: int32 ``[N]`` token indices of the answer in the window, 0 (the
      [CLS] token) when the answer is not wholly inside the window, as in the original recipe.
    example_index: int32 ``[N]`` index of the window's question in the example list.
    token_char_start, token_char_end: int32 ``[N, L]`` character span ``[start, end)`` of each context
      token in its context, -1 for question, special and padding tokens.
    token_is_max_context: bool ``[N, L]``, True where this window gives the token the most context
      (``min(left, right) + 0.01 * window length``, largest over the windows holding it).
    num_skipped: training questions left out (their answer_start does not point at the answer, or the
      answer has no tokens); 0 when not training.
  """
  input_ids: np.ndarray
  token_type_ids: np.ndarray
  attention_mask: np.ndarray
  start_positions: np.ndarray
  end_positions: np.ndarray
  example_index: np.ndarray
  token_char_start: np.ndarray
  token_char_end: np.ndarray
  token_is_max_context: np.ndarray
  num_skipped: int = 0

  def __len__(self) -> int:
    return len(self.example_index)

  def model_inputs(self) -> dict[str, np.ndarray]:
    return {"input_ids": self.input_ids, "token_type_ids": self.token_type_ids,
            "attention_mask": self.attention_mask, "start_positions": self.start_positions,
            "end_positions": self.end_positions}


def _special_token_id(tokenizer, token: str) -> int:
  token_id = tokenizer.token_to_id(token)
  if token_id is None:
    raise ValueError(f"The tokenizer vocabulary has no {token!r} token; SQuAD needs a BERT WordPiece "
                     "vocabulary with [CLS], [SEP] and [PAD].")
  return token_id


def _window_starts(num_tokens: int, window: int, doc_stride: int) -> list[int]:
  """Start offsets of windows of at most `window` tokens, `doc_stride` apart, covering every token."""
  starts = [0]
  while starts[-1] + window < num_tokens:
    starts.append(starts[-1] + min(window, doc_stride))
  return starts


def build_features(examples: Sequence[SquadExample], tokenizer, *, max_seq_len: int = 384,
                   doc_stride: int = 128, max_query_len: int = 64,
                   training: bool = False) -> SquadFeatures:
  """Tokenises examples into windows ``[CLS] question [SEP] context window [SEP] [PAD]...``.

  A context of ``T`` tokens with room for ``W = max_seq_len - len(question) - 3`` context tokens per
  window gives windows starting at ``0, s, 2s, ...`` (``s = doc_stride``) until the last one reaches
  token ``T``; consecutive windows share ``W - s`` tokens.

  Args:
    examples: from `read_squad`.
    tokenizer: a ``tokenizers.Tokenizer`` with a WordPiece vocabulary holding [CLS], [SEP] and [PAD]; its
      own truncation and padding settings are ignored.
    max_seq_len: tokens per window.
    doc_stride: tokens between the starts of consecutive windows.
    max_query_len: questions are cut to this many tokens.
    training: if True, drop examples whose answer_start does not point at the answer text
      (`answer_matches_context`) or whose answer has no tokens in the context; counted in
      `SquadFeatures.num_skipped` and logged, as run_squad.py does.

  Returns:
    `SquadFeatures`.
  """
  if max_query_len < 1 or doc_stride < 1:
    raise ValueError(f"max_query_len={max_query_len} and doc_stride={doc_stride} must be >= 1.")
  if max_seq_len < max_query_len + 4:
    raise ValueError(f"max_seq_len={max_seq_len} leaves no room for context after a question of "
                     f"max_query_len={max_query_len} tokens and 3 special tokens.")
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's settings stay untouched
  tokenizer.no_truncation()
  tokenizer.no_padding()
  cls_id, sep_id, pad_id = (_special_token_id(tokenizer, t) for t in ("[CLS]", "[SEP]", "[PAD]"))

  contexts = list(dict.fromkeys(example.context for example in examples))
  context_encodings = dict(zip(contexts, tokenizer.encode_batch(contexts, add_special_tokens=False)))
  question_encodings = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)

  rows = collections.defaultdict(list)
  skipped = mismatched = 0
  for index, (example, question) in enumerate(zip(examples, question_encodings)):
    context = context_encodings[example.context]
    offsets = np.asarray(context.offsets, dtype=np.int32).reshape(-1, 2)
    answer_tokens = None
    if training and not answer_matches_context(example):
      mismatched += 1
      logging.warning("SQuAD: question %r: could not find the answer %r at answer_start %s; skipped.",
                      example.qid, example.answers[0] if example.answers else None, example.answer_start)
      continue
    if example.answer_start is not None and example.answers:
      char_start = example.answer_start
      char_end = char_start + len(example.answers[0])
      inside = np.flatnonzero((offsets[:, 1] > char_start) & (offsets[:, 0] < char_end))
      if len(inside):
        answer_tokens = (int(inside[0]), int(inside[-1]))
    if training and answer_tokens is None:
      skipped += 1
      continue
    query_ids = question.ids[:max_query_len]
    window = max_seq_len - len(query_ids) - 3
    starts = _window_starts(len(context.ids), window, doc_stride)
    lengths = [min(window, len(context.ids) - start) for start in starts]
    best_window = _max_context_windows(starts, lengths, len(context.ids))
    for window, (start, length) in enumerate(zip(starts, lengths)):
      ids = [cls_id, *query_ids, sep_id, *context.ids[start:start + length], sep_id]
      offset = len(query_ids) + 2  # position of the window's first context token
      input_ids = np.full(max_seq_len, pad_id, np.int32)
      input_ids[:len(ids)] = ids
      token_type_ids = np.zeros(max_seq_len, np.int32)
      token_type_ids[offset:len(ids)] = 1
      attention_mask = np.zeros(max_seq_len, np.int32)
      attention_mask[:len(ids)] = 1
      char_start = np.full(max_seq_len, -1, np.int32)
      char_end = np.full(max_seq_len, -1, np.int32)
      char_start[offset:offset + length] = offsets[start:start + length, 0]
      char_end[offset:offset + length] = offsets[start:start + length, 1]
      is_max_context = np.zeros(max_seq_len, bool)
      is_max_context[offset:offset + length] = best_window[start:start + length] == window
      start_position = end_position = 0
      if answer_tokens is not None and start <= answer_tokens[0] and answer_tokens[1] < start + length:
        start_position = answer_tokens[0] - start + offset
        end_position = answer_tokens[1] - start + offset
      for name, value in (("input_ids", input_ids), ("token_type_ids", token_type_ids),
                          ("attention_mask", attention_mask), ("start_positions", start_position),
                          ("end_positions", end_position), ("example_index", index),
                          ("token_char_start", char_start), ("token_char_end", char_end),
                          ("token_is_max_context", is_max_context)):
        rows[name].append(value)
  if skipped or mismatched:
    logging.warning("SQuAD: skipped %d training questions whose answer_start does not point at the "
                    "answer and %d whose answer has no tokens.", mismatched, skipped)
  if not rows:
    raise ValueError("SQuAD: no features built: every question was skipped.")
  arrays = {name: np.asarray(values) for name, values in rows.items()}
  for name in ("start_positions", "end_positions", "example_index"):
    arrays[name] = arrays[name].astype(np.int32)
  return SquadFeatures(**arrays, num_skipped=skipped + mismatched)


def _max_context_windows(starts: Sequence[int], lengths: Sequence[int], num_tokens: int) -> np.ndarray:
  """For each context token, the window giving it the most context.

  A token ``t`` in the window ``[s, s + n)`` scores ``min(t - s, s + n - 1 - t) + 0.01 * n``; ties go to the
  earlier window (run_squad.py's `_check_is_max_context`).
  """
  starts, lengths = np.asarray(starts)[:, None], np.asarray(lengths)[:, None]
  tokens = np.arange(num_tokens)[None, :]
  inside = (tokens >= starts) & (tokens < starts + lengths)
  scores = np.minimum(tokens - starts, starts + lengths - 1 - tokens) + 0.01 * lengths
  return np.argmax(np.where(inside, scores, -np.inf), axis=0)


# ---------------------------------------------------------------------------------------------------------
# Decoding spans and the official metric.


def decode_predictions(examples: Sequence[SquadExample], features: SquadFeatures,
                       start_logits: np.ndarray, end_logits: np.ndarray, *,
                       max_answer_length: int = 30) -> dict[str, str]:
  """Best answer text per question from the windows' start/end logits.

  For each question, over all of its windows, picks

    ``argmax_{s, e} start_logits[s] + end_logits[e]``  subject to  ``s <= e < s + max_answer_length``,

  ``s`` and ``e`` context tokens of the same window and ``s`` in the window that gives it the most context
  (`SquadFeatures.token_is_max_context`); the answer is the context text from the start of token ``s`` to
  the end of token ``e``. A question with no valid span (no windows) gets the empty string.

  Args:
    examples: the examples `features` was built from.
    features: from `build_features`.
    start_logits, end_logits: ``[N, L]`` logits, one row per window.
    max_answer_length: longest answer, in tokens.

  Returns:
    ``{qid: answer text}`` for every example.
  """
  if max_answer_length < 1:
    raise ValueError(f"max_answer_length={max_answer_length} must be >= 1.")
  start_logits = np.asarray(start_logits, np.float64)
  end_logits = np.asarray(end_logits, np.float64)
  if start_logits.shape != features.input_ids.shape or end_logits.shape != features.input_ids.shape:
    raise ValueError(f"Logits of shapes {start_logits.shape} and {end_logits.shape} do not match the "
                     f"{features.input_ids.shape} features.")
  num_windows, seq_len = start_logits.shape
  lengths = np.arange(max_answer_length)
  # Band of candidate spans: end = start + k for k < max_answer_length, [N, L, K].
  end_index = np.arange(seq_len)[:, None] + lengths[None, :]
  in_range = end_index < seq_len
  end_index = np.minimum(end_index, seq_len - 1)
  is_context = features.token_char_start >= 0
  valid = (is_context & features.token_is_max_context)[:, :, None] & in_range[None]
  valid &= np.take_along_axis(is_context[:, :, None], end_index[None].repeat(num_windows, 0), axis=1)
  scores = start_logits[:, :, None] + np.take(end_logits, end_index, axis=1)
  scores = np.where(valid, scores, -np.inf)
  flat_best = scores.reshape(num_windows, -1).argmax(axis=1)
  best_score = scores.reshape(num_windows, -1)[np.arange(num_windows), flat_best]
  best_start, best_length = np.divmod(flat_best, max_answer_length)

  predictions = {example.qid: "" for example in examples}
  best_per_example: dict[int, tuple[float, int]] = {}
  for window in range(num_windows):
    if np.isfinite(best_score[window]):
      example = int(features.example_index[window])
      if example not in best_per_example or best_score[window] > best_per_example[example][0]:
        best_per_example[example] = (best_score[window], window)
  for example, (_, window) in best_per_example.items():
    start = best_start[window]
    end = start + best_length[window]
    context = examples[example].context
    predictions[examples[example].qid] = context[features.token_char_start[window, start]:
                                                 features.token_char_end[window, end]]
  return predictions


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """The official SQuAD normalisation: lower case, no punctuation, no a/an/the, single spaces."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> bool:
  return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
  """Harmonic mean of token precision and recall of the normalised answers (bag of tokens)."""
  prediction_tokens = normalize_answer(prediction).split()
  ground_truth_tokens = normalize_answer(ground_truth).split()
  num_same = sum((collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)).values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(prediction_tokens)
  recall = num_same / len(ground_truth_tokens)
  return 2 * precision * recall / (precision + recall)


def squad_v1_scores(examples: Iterable[SquadExample], predictions: Mapping[str, str]) -> dict[str, float]:
  """The official SQuAD v1.1 evaluation, in percent.

  ``exact_match = 100 * mean_q max_g [normalize(pred_q) == normalize(g)]`` and
  ``f1 = 100 * mean_q max_g F1(pred_q, g)`` over the ground truths ``g`` of each question ``q``; a
  question without a prediction scores 0.

  Args:
    examples: the questions with their ground-truth answers.
    predictions: ``{qid: answer text}``.

  Returns:
    ``{'exact_match': float, 'f1': float}``.
  """
  exact_match = f1 = 0.0
  total = 0
  for example in examples:
    total += 1
    if example.qid not in predictions:
      logging.warning("SQuAD: question %s has no prediction; it scores 0.", example.qid)
      continue
    if not example.answers:
      raise ValueError(f"SQuAD: question {example.qid!r} has no ground-truth answer to score against.")
    prediction = predictions[example.qid]
    exact_match += max(exact_match_score(prediction, answer) for answer in example.answers)
    f1 += max(f1_score(prediction, answer) for answer in example.answers)
  if total == 0:
    raise ValueError("SQuAD: no questions to score.")
  return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# ---------------------------------------------------------------------------------------------------------
# The span head and the pmapped steps.


class BertForQuestionAnswering(nn.Module):
  """BERT encoder with a linear start/end head: ``[start, end]_logits = hidden @ W + b``, ``W: [H, 2]``.

  Padding positions get logit -1e9 so that neither the loss nor the decoding ever picks them.

  Attributes:
    config: the BERT model config, as taken by `experiments.bert.models.BertModel`.
  """
  config: Any

  @nn.compact
  def __call__(self, input_ids, token_type_ids, attention_mask, *, deterministic: bool):
    hidden = models.BertModel(self.config, name="bert")(
        input_ids, token_type_ids, attention_mask, deterministic=deterministic)
    logits = nn.Dense(2, kernel_init=nn.initializers.normal(self.config.initializer_range), dtype=jnp.float32,
                      name="qa_outputs")(hidden.astype(jnp.float32))
    logits = jnp.where(attention_mask[..., None] > 0, logits, -1e9)
    return logits[..., 0], logits[..., 1]


def span_loss(start_logits, end_logits, start_positions, end_positions) -> jax.Array:
  """``(CE(start_logits, start) + CE(end_logits, end)) / 2``, averaged over the batch."""
  start_loss = optax.softmax_cross_entropy_with_integer_labels(start_logits, start_positions)
  end_loss = optax.softmax_cross_entropy_with_integer_labels(end_logits, end_positions)
  return jnp.mean(start_loss + end_loss) / 2


def train_step(state: train_state.TrainState, batch: Mapping[str, jax.Array], dropout_key: jax.Array):
  """One pmapped update: per-device loss and gradients, ``pmean`` across devices, then the optimizer."""
  rng = parallel.device_rng(dropout_key, state.step)

  def loss_fn(params):
    start_logits, end_logits = state.apply_fn(
        {"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
        deterministic=False, rngs={"dropout": rng})
    return span_loss(start_logits, end_logits, batch["start_positions"], batch["end_positions"])

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  loss, grads = jax.lax.pmean((loss, grads), axis_name=parallel.AXIS_NAME)
  state = state.apply_gradients(grads=grads)
  metrics = {"train_loss": loss, "learning_rate": optimizers.current_learning_rate(state.opt_state),
             "grad_norm": optax.tree.norm(grads)}
  return state, metrics


def eval_step(apply_fn, params, batch: Mapping[str, jax.Array]):
  """Start and end logits of a batch of windows (no dropout); `apply_fn` is the model's ``apply``."""
  return apply_fn({"params": params}, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"],
                  deterministic=True)


# ---------------------------------------------------------------------------------------------------------
# Fine-tuning.


def _training_batches(num_features: int, batch_size: int, seed: int) -> Iterable[np.ndarray]:
  """Feature indices of each global batch: epochs of seeded permutations, read back to back."""
  rng = np.random.default_rng(seed)
  order = np.empty(0, np.int64)
  while True:
    while len(order) < batch_size:
      order = np.concatenate([order, rng.permutation(num_features)])
    yield order[:batch_size]
    order = order[batch_size:]


def predict_logits(p_eval_step, params, features: SquadFeatures, batch_size: int) -> tuple[np.ndarray, ...]:
  """Start and end logits ``[N, L]`` of every window, in batches padded to a multiple of the devices.

  Every process runs all windows on its local devices, so each has the logits it needs for decoding.
  """
  devices = jax.local_device_count()
  batch_size = -(-batch_size // devices) * devices
  inputs = {k: v for k, v in features.model_inputs().items() if k in
            ("input_ids", "token_type_ids", "attention_mask")}
  start_logits, end_logits = [], []
  for begin in range(0, len(features), batch_size):
    rows = np.arange(begin, begin + batch_size)
    rows = np.minimum(rows, len(features) - 1)  # the last batch repeats the last window as padding
    batch = parallel.shard_batch({k: v[rows] for k, v in inputs.items()}, devices)
    start, end = jax.device_get(p_eval_step(params, batch))
    count = min(batch_size, len(features) - begin)
    start_logits.append(start.reshape(batch_size, -1)[:count])
    end_logits.append(end.reshape(batch_size, -1)[:count])
  return np.concatenate(start_logits), np.concatenate(end_logits)


def _latest_checkpoint_meta(directory: str) -> tuple[int, dict]:
  """(step, meta) of the newest checkpoint a pre-training run wrote, read without restoring the state."""
  try:
    with checkpoint.CheckpointManager(directory) as manager:
      step, meta = manager.latest_meta()
  except FileNotFoundError as error:
    raise FileNotFoundError(f"No pre-training checkpoint under {directory!r}.") from error
  if "model" not in meta.get("signature", {}):
    raise checkpoint.CheckpointError(f"checkpoint step {step} in {directory} has no model signature; "
                                     "it was not written by experiments.bert.train.")
  return step, meta


def load_pretrained(config, pretrained_workdir: str | None):
  """The model config, tokenizer and (if any) pre-trained encoder params of a fine-tuning run.

  From a pre-training workdir: its `vocab.txt` and the model sizes recorded with its newest checkpoint; the
  checkpoint is restored against a template built from the run's recorded model and optimizer settings
  (`experiments.common.checkpoint` checks structure, shapes and dtypes) and its ``params['bert']`` kept.
  Without one: `config.vocab_file` and `config.model`, and no encoder params (random initialisation).

  Returns:
    ``(models.BertConfig, tokenizers.Tokenizer, encoder params or None)``.

  Raises:
    FileNotFoundError: no vocabulary or no checkpoint.
    ValueError: the vocabulary does not match the checkpoint's (a `config.vocab_file` of another size or
      contents, or a workdir whose vocab.txt changed since the checkpoint).
  """
  if not pretrained_workdir:
    if not config.vocab_file:
      raise ValueError("Set config.vocab_file (a BERT vocab.txt) or give a pretrained_workdir.")
    tokenizer = input_pipeline.load_tokenizer(config.vocab_file, config.lowercase)
    return models.BertConfig(vocab_size=tokenizer.get_vocab_size(), **config.model), tokenizer, None

  vocab_path = config.vocab_file or os.path.join(pretrained_workdir, "vocab.txt")
  tokenizer = input_pipeline.load_tokenizer(vocab_path, config.lowercase)
  directory = os.path.join(pretrained_workdir, "checkpoints")
  _, meta = _latest_checkpoint_meta(directory)
  signature = meta["signature"]
  model_config = models.BertConfig(**signature["model"])
  vocab_sha256 = input_pipeline.vocab_sha256(vocab_path)
  if tokenizer.get_vocab_size() != model_config.vocab_size or vocab_sha256 != signature.get("vocab_sha256"):
    raise ValueError(
        f"Vocabulary {vocab_path!r} ({tokenizer.get_vocab_size()} tokens) is not the one the checkpoint in "
        f"{directory!r} was trained with ({model_config.vocab_size} tokens, sha256 "
        f'{signature.get("vocab_sha256")}); fine-tune with the pre-training vocab.txt.')

  # The template of the pre-training state: the MLM model's params and the optimizer state it was saved with.
  tx = optimizers.OptimizerSpec.from_dict(signature["optimizer"]).create()
  abstract_state = {
      "step": jax.ShapeDtypeStruct((), jnp.int32),
      "params": models.abstract_params(model_config),
      "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))),
  }
  abstract_state["opt_state"] = jax.eval_shape(tx.init, abstract_state["params"])
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract_state)
  manager = checkpoint.CheckpointManager(directory)
  try:
    state, _ = manager.restore_latest(template)
  finally:
    manager.close()
  return model_config, tokenizer, state["params"]["bert"]


def _finetuning_workdir(workdir: str, pretrained_workdir: str | None) -> str:
  """The fine-tuning workdir, created; refused when it is, or lies inside, the pre-training workdir.

  Fine-tuning writes metrics.jsonl and predictions.json, which would replace the pre-training run's files.
  """
  if pretrained_workdir:
    fine, pre = os.path.realpath(workdir), os.path.realpath(pretrained_workdir)
    if os.path.commonpath([fine, pre]) == pre:
      raise ValueError(
          f"workdir={workdir!r} is {'the' if fine == pre else 'inside the'} pre-training workdir "
          f"{pretrained_workdir!r}; fine-tuning would overwrite that run's metrics.jsonl. Give the "
          "fine-tuning run a workdir of its own.")
  return training_loop.prepare_workdir(workdir)


def finetune(config, workdir: str, pretrained_workdir: str | None = None) -> dict[str, float]:
  """Fine-tunes BERT on SQuAD v1.1 and returns the official dev scores.

  Trains ``BertForQuestionAnswering`` on `config.train_file` for `config.num_train_steps` steps (or
  `config.num_epochs` passes over the training windows) with `OptimizerSpec.from_config(config, total_steps)`, the
  gradients averaged over all devices by a pmapped step, then decodes the dev windows and scores them.
  Writes `<workdir>/metrics.jsonl` and `<workdir>/predictions.json` (``{qid: answer}``, as the official
  evaluation script reads).

  Args:
    config: a ConfigDict as `experiments/bert/configs/squad.py`.
    workdir: where metrics and predictions go.
    pretrained_workdir: a pre-training workdir (its `vocab.txt`, `config.json` and newest checkpoint give the
      tokenizer, model sizes and encoder weights); None uses `config.pretrained_workdir`, and if that is empty
      too the encoder starts from random weights with the sizes of `config.model` and `config.vocab_file`.

  Returns:
    ``{'exact_match': EM, 'f1': F1}`` on `config.dev_file`, in percent, and
    ``'train_questions_skipped'``: training questions left out (see `build_features`).

  Raises:
    ValueError: bad optimizer settings, a workdir that is (or lies inside) the pre-training workdir or
      cannot be written, or bad SQuAD files.
  """
  pretrained_workdir = pretrained_workdir or config.get("pretrained_workdir") or None
  parallel.maybe_initialize_distributed(config)
  optimizers.check_optimizer_config(config)
  workdir = _finetuning_workdir(workdir, pretrained_workdir)
  model_config, tokenizer, pretrained_encoder = load_pretrained(config, pretrained_workdir)
  feature_args = dict(max_seq_len=config.max_seq_len, doc_stride=config.doc_stride,
                      max_query_len=config.max_query_len)
  if config.max_seq_len > model_config.max_position_embeddings:
    raise ValueError(f"max_seq_len={config.max_seq_len} exceeds the model's max_position_embeddings="
                     f"{model_config.max_position_embeddings}.")
  train_examples = read_squad(config.train_file)
  dev_examples = read_squad(config.dev_file)
  train_features = build_features(train_examples, tokenizer, training=True, **feature_args)
  dev_features = build_features(dev_examples, tokenizer, **feature_args)

  if config.num_train_steps > 0:
    total_steps = int(config.num_train_steps)
  else:
    total_steps = max(1, int(config.num_epochs * len(train_features) // config.batch_size))
  optimizer_config = config.copy_and_resolve_references()
  optimizer_config.warmup_steps = int(config.warmup_fraction * total_steps)
  model = BertForQuestionAnswering(model_config)
  init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
  dummy = jnp.zeros((1, config.max_seq_len), jnp.int32)
  params = jax.jit(lambda key: model.init(key, dummy, dummy, dummy + 1, deterministic=True)["params"])(
      init_key)
  if pretrained_encoder is not None:
    params = {**params, "bert": pretrained_encoder}
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=optimizers.OptimizerSpec.from_config(optimizer_config, total_steps).create())
  state = parallel.replicate(state)
  dropout_keys = parallel.replicate(jax.random.key_data(dropout_key))
  p_train_step = jax.pmap(
      lambda state, batch, key: train_step(state, batch, jax.random.wrap_key_data(key)),
      axis_name=parallel.AXIS_NAME, donate_argnums=(0,))
  p_eval_step = jax.pmap(functools.partial(eval_step, model.apply), axis_name=parallel.AXIS_NAME)

  writer = metrics_lib.MetricWriter(workdir, enabled=parallel.is_main_process())
  rows = parallel.process_rows(config.batch_size)
  batches = _training_batches(len(train_features), config.batch_size, config.seed)
  train_inputs = train_features.model_inputs()
  pending = []
  bar = metrics_lib.progress_bar(total_steps, enabled=parallel.is_main_process(), desc="squad")
  for step in range(1, total_steps + 1):
    indices = next(batches)[rows]
    batch = parallel.shard_batch({k: v[indices] for k, v in train_inputs.items()})
    state, step_metrics = p_train_step(state, batch, dropout_keys)
    pending.append((step, step_metrics))
    if step % config.log_every_steps == 0 or step == total_steps:
      for logged_step, logged in jax.device_get(pending):
        writer.write(logged_step, {k: v[0] for k, v in logged.items()})
      pending = []
    bar.update(1)
  bar.close()

  start_logits, end_logits = predict_logits(p_eval_step, state.params, dev_features, config.eval_batch_size)
  predictions = decode_predictions(dev_examples, dev_features, start_logits, end_logits,
                                   max_answer_length=config.max_answer_length)
  scores = squad_v1_scores(dev_examples, predictions)
  writer.write(total_steps, {f"dev_{k}": v for k, v in scores.items()})
  if parallel.is_main_process():
    with open(os.path.join(workdir, "predictions.json"), "w", encoding="utf-8") as f:
      json.dump(predictions, f, ensure_ascii=False, indent=1)
  return {**scores, "train_questions_skipped": train_features.num_skipped}


def main(argv: Sequence[str]) -> None:
  """``python -m experiments.bert.squad --config CONFIG --workdir DIR [--pretrained_workdir DIR]``."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  scores = finetune(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.pretrained_workdir)
  print(json.dumps(scores, indent=2))


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Directory for metrics.jsonl and predictions.json.")
  flags.DEFINE_string("pretrained_workdir", None, "A pre-training workdir (vocab.txt, checkpoints/).")
  config_flags.DEFINE_config_file("config", None, "A config file (experiments/bert/configs/squad.py).")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
