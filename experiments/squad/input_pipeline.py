"""SQuAD v1.1 data: the official JSON, sliding-window features, training and dev batches.

The pieces follow the original BERT recipe (google-research/bert run_squad.py):

* `read_squad` reads the official SQuAD v1.1 JSON (``{"data": [{"paragraphs": [{"context", "qas"}]}]}``).
* `build_features` tokenises question and context with the pre-training WordPiece tokenizer, keeping the
  character offsets of every context token, and cuts long contexts into overlapping windows:
  ``[CLS] question [SEP] window [SEP]``, consecutive windows starting ``doc_stride`` tokens apart. Training
  questions whose ``answer_start`` does not point at the answer are skipped and counted, as run_squad.py does.
* `SquadData` holds a run's features; the global training batch of step k is a function of (seed, k) only:
  rows ``[k B, (k + 1) B)`` of the stream of windows made of seeded permutations, one per epoch,

      stream = perm_0 ++ perm_1 ++ ...,   perm_e = default_rng([seed, e]).permutation(N),

  so a resumed run reads the batches an uninterrupted run reads, on any number of processes.

Decoding spans and the official metric live in `experiments.squad.evaluation`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import numpy as np

from experiments.common import results

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


def _read_question(qa: Any, context: str, where: str, path: str) -> SquadExample:
  qid = _require(qa, "id", str, where, path)
  question = _require(qa, "question", str, where, path)
  texts, starts = [], []
  for i, answer in enumerate(_require(qa, "answers", list, where, path)):
    texts.append(_require(answer, "text", str, f"{where}.answers[{i}]", path))
    starts.append(_require(answer, "answer_start", int, f"{where}.answers[{i}]", path))
  return SquadExample(qid, question, context, tuple(texts), starts[0] if starts else None)


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
  dataset = results.read_json(path, remedy="It is not a SQuAD v1.1 JSON file as written: download train-v1.1.json or "
                              "dev-v1.1.json again.")
  examples = []
  for a, article in enumerate(_require(dataset, "data", list, "the top level", path)):
    for p, paragraph in enumerate(_require(article, "paragraphs", list, f"data[{a}]", path)):
      where = f"data[{a}].paragraphs[{p}]"
      context = _require(paragraph, "context", str, where, path)
      for q, qa in enumerate(_require(paragraph, "qas", list, where, path)):
        examples.append(_read_question(qa, context, f"{where}.qas[{q}]", path))
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
    """The rows the model and the span loss read: token ids, segments, mask, answer positions."""
    return {"input_ids": self.input_ids, "token_type_ids": self.token_type_ids,
            "attention_mask": self.attention_mask, "start_positions": self.start_positions,
            "end_positions": self.end_positions}


def check_window_settings(max_seq_len: int, doc_stride: int, max_query_len: int) -> None:
  """ValueError unless the windows have room: strides and questions >= 1 token, and
  ``max_seq_len >= max_query_len + 4`` ([CLS], two [SEP] and at least one context token)."""
  if max_query_len < 1 or doc_stride < 1:
    raise ValueError(f"max_query_len={max_query_len} and doc_stride={doc_stride} must be >= 1.")
  if max_seq_len < max_query_len + 4:
    raise ValueError(f"max_seq_len={max_seq_len} leaves no room for context after a question of "
                     f"max_query_len={max_query_len} tokens and 3 special tokens.")


def _special_token_ids(tokenizer) -> tuple[int, int, int]:
  """The [CLS], [SEP] and [PAD] ids; ValueError naming a missing one."""
  ids = []
  for token in ("[CLS]", "[SEP]", "[PAD]"):
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
      raise ValueError(f"The tokenizer vocabulary has no {token!r} token; SQuAD needs a BERT WordPiece "
                       "vocabulary with [CLS], [SEP] and [PAD].")
    ids.append(token_id)
  return tuple(ids)


def _window_starts(num_tokens: int, window: int, doc_stride: int) -> list[int]:
  """Start offsets of windows of at most `window` tokens, `doc_stride` apart, covering every token."""
  starts = [0]
  while starts[-1] + window < num_tokens:
    starts.append(starts[-1] + min(window, doc_stride))
  return starts


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


def _answer_tokens(example: SquadExample, offsets: np.ndarray) -> tuple[int, int] | None:
  """First and last context token overlapping the first answer's characters, or None."""
  if example.answer_start is None or not example.answers:
    return None
  char_start = example.answer_start
  char_end = char_start + len(example.answers[0])
  inside = np.flatnonzero((offsets[:, 1] > char_start) & (offsets[:, 0] < char_end))
  return (int(inside[0]), int(inside[-1])) if len(inside) else None


def _window_row(query_ids, context_ids, offsets, start, length, *, max_seq_len, special_ids) -> dict:
  """The arrays of one window ``[CLS] query [SEP] context[start:start + length] [SEP] [PAD]...``."""
  cls_id, sep_id, pad_id = special_ids
  ids = [cls_id, *query_ids, sep_id, *context_ids[start:start + length], sep_id]
  offset = len(query_ids) + 2  # position of the window's first context token
  row = {"input_ids": np.full(max_seq_len, pad_id, np.int32),
         "token_type_ids": np.zeros(max_seq_len, np.int32),
         "attention_mask": np.zeros(max_seq_len, np.int32),
         "token_char_start": np.full(max_seq_len, -1, np.int32),
         "token_char_end": np.full(max_seq_len, -1, np.int32)}
  row["input_ids"][:len(ids)] = ids
  row["token_type_ids"][offset:len(ids)] = 1
  row["attention_mask"][:len(ids)] = 1
  row["token_char_start"][offset:offset + length] = offsets[start:start + length, 0]
  row["token_char_end"][offset:offset + length] = offsets[start:start + length, 1]
  return row


def _example_rows(index, example, query_ids, context, *, answer, max_seq_len, doc_stride, special_ids):
  """The rows of every window of one question (see `build_features`)."""
  offsets = np.asarray(context.offsets, dtype=np.int32).reshape(-1, 2)
  window = max_seq_len - len(query_ids) - 3
  starts = _window_starts(len(context.ids), window, doc_stride)
  lengths = [min(window, len(context.ids) - start) for start in starts]
  best_window = _max_context_windows(starts, lengths, len(context.ids))
  offset = len(query_ids) + 2
  rows = []
  for window_index, (start, length) in enumerate(zip(starts, lengths)):
    row = _window_row(query_ids, context.ids, offsets, start, length, max_seq_len=max_seq_len,
                      special_ids=special_ids)
    row["token_is_max_context"] = np.zeros(max_seq_len, bool)
    row["token_is_max_context"][offset:offset + length] = best_window[start:start + length] == window_index
    inside = answer is not None and start <= answer[0] and answer[1] < start + length
    row["start_positions"] = answer[0] - start + offset if inside else 0
    row["end_positions"] = answer[1] - start + offset if inside else 0
    row["example_index"] = index
    rows.append(row)
  return rows


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
  check_window_settings(max_seq_len, doc_stride, max_query_len)
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's settings stay untouched
  tokenizer.no_truncation()
  tokenizer.no_padding()
  special_ids = _special_token_ids(tokenizer)
  contexts = list(dict.fromkeys(example.context for example in examples))
  context_encodings = dict(zip(contexts, tokenizer.encode_batch(contexts, add_special_tokens=False)))
  question_encodings = tokenizer.encode_batch([e.question for e in examples], add_special_tokens=False)

  rows, skipped, mismatched = [], 0, 0
  for index, (example, question) in enumerate(zip(examples, question_encodings)):
    context = context_encodings[example.context]
    if training and not answer_matches_context(example):
      mismatched += 1
      logging.warning("SQuAD: question %r: could not find the answer %r at answer_start %s; skipped.",
                      example.qid, example.answers[0] if example.answers else None, example.answer_start)
      continue
    answer = _answer_tokens(example, np.asarray(context.offsets, np.int32).reshape(-1, 2))
    if training and answer is None:
      skipped += 1
      continue
    rows += _example_rows(index, example, question.ids[:max_query_len], context, answer=answer,
                          max_seq_len=max_seq_len, doc_stride=doc_stride, special_ids=special_ids)
  if skipped or mismatched:
    logging.warning("SQuAD: skipped %d training questions whose answer_start does not point at the "
                    "answer and %d whose answer has no tokens.", mismatched, skipped)
  if not rows:
    raise ValueError("SQuAD: no features built: every question was skipped.")
  arrays = {name: np.asarray([row[name] for row in rows]) for name in rows[0]}
  for name in ("start_positions", "end_positions", "example_index"):
    arrays[name] = arrays[name].astype(np.int32)
  return SquadFeatures(**arrays, num_skipped=skipped + mismatched)


# ---------------------------------------------------------------------------------------------------------
# Batches.


@dataclasses.dataclass(frozen=True)
class SquadData:
  """The training windows and the dev questions and windows of one run.

  Attributes:
    train_features: the training windows (`build_features(training=True)`).
    dev_examples: the dev questions, with every ground-truth answer.
    dev_features: the dev windows.
    seed: the seed of the training batch order.
  """
  train_features: SquadFeatures
  dev_examples: list[SquadExample]
  dev_features: SquadFeatures
  seed: int

  def train_batch(self, step: int, global_batch_size: int, rows: slice = slice(None)) -> dict:
    """Rows `rows` of the global training batch after `step` updates (module docstring), with weight 1.

    Returns:
      The `SquadFeatures.model_inputs` of those windows and "weights" (float32 ones: every row is real).
    """
    num_windows = len(self.train_features)
    positions = np.arange(step * global_batch_size, (step + 1) * global_batch_size)[rows]
    epochs, offsets = np.divmod(positions, num_windows)
    indices = np.empty_like(positions)
    for epoch in np.unique(epochs):
      order = np.random.default_rng([self.seed, int(epoch)]).permutation(num_windows)
      indices[epochs == epoch] = order[offsets[epochs == epoch]]
    batch = {name: value[indices] for name, value in self.train_features.model_inputs().items()}
    return {**batch, "weights": np.ones(len(indices), np.float32)}

  def dev_batches(self, batch_size: int) -> list[dict]:
    """Every dev window, in order, in batches of `batch_size` rows; weight 0 on the last batch's padding.

    Each process reads all of them (decoding needs every window's logits), so `batch_size` is a
    per-process count; the padding repeats the last window.
    """
    num_windows = len(self.dev_features)
    padded = -(-num_windows // batch_size) * batch_size
    fill = np.minimum(np.arange(padded), num_windows - 1)
    inputs = {name: value[fill] for name, value in self.dev_features.model_inputs().items()}
    inputs["weights"] = (np.arange(padded) < num_windows).astype(np.float32)
    return [{name: value[begin:begin + batch_size] for name, value in inputs.items()}
            for begin in range(0, padded, batch_size)]


def create_datasets(config, tokenizer) -> SquadData:
  """Reads config.train_file and config.dev_file and builds their windows (config's window settings)."""
  windows = dict(max_seq_len=config.max_seq_len, doc_stride=config.doc_stride,
                 max_query_len=config.max_query_len)
  dev_examples = read_squad(config.dev_file)
  return SquadData(
      train_features=build_features(read_squad(config.train_file), tokenizer, training=True, **windows),
      dev_examples=dev_examples, dev_features=build_features(dev_examples, tokenizer, **windows),
      seed=config.seed)
