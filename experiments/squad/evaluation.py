"""SQuAD v1.1 answers from span logits, and the official v1.1 evaluation.

* `decode_predictions` picks, for every question, the span ``(s, e)`` maximising
  ``start_logit[s] + end_logit[e]`` with ``s <= e < s + max_answer_length`` inside the context, over all
  windows of the question, counting a start token only in the window where it has the most context.
* `squad_v1_scores` is the official v1.1 evaluation (evaluate-v1.1.py): exact match and token F1 of the
  normalised answer (lower case, punctuation and the articles a/an/the removed, whitespace collapsed),
  maximised over the ground truths, both in percent.
"""
from __future__ import annotations

import collections
import logging
import re
import string
from typing import Iterable, Mapping, Sequence

import numpy as np

from experiments.squad import input_pipeline

_DECODE_CHUNK = 256  # windows scored at once: bounds the [chunk, L, K] float64 score array's memory


def _best_spans(start_logits: np.ndarray, end_logits: np.ndarray, can_start: np.ndarray,
                can_end: np.ndarray, max_answer_length: int) -> tuple[np.ndarray, ...]:
  """Per window: the best score, start and end of ``start[s] + end[e]`` over the valid spans.

  A span is valid when ``can_start[s]``, ``can_end[e]`` and ``s <= e < s + max_answer_length``; a window
  without one has score -inf.
  """
  num_windows, seq_len = start_logits.shape
  end_index = np.arange(seq_len)[:, None] + np.arange(max_answer_length)[None, :]  # [L, K]: e = s + k
  in_range = end_index < seq_len
  end_index = np.minimum(end_index, seq_len - 1)
  valid = can_start[:, :, None] & in_range[None] & can_end[:, end_index]
  scores = np.where(valid, start_logits[:, :, None] + end_logits[:, end_index], -np.inf)
  flat_best = scores.reshape(num_windows, -1).argmax(axis=1)
  best_score = scores.reshape(num_windows, -1)[np.arange(num_windows), flat_best]
  best_start, best_length = np.divmod(flat_best, max_answer_length)
  return best_score, best_start, best_start + best_length


def decode_predictions(examples: Sequence[input_pipeline.SquadExample],
                       features: input_pipeline.SquadFeatures, start_logits: np.ndarray,
                       end_logits: np.ndarray, *,
                       max_answer_length: int = 30) -> dict[str, str]:
  """Best answer text per question from the windows' start/end logits.

  For each question, over all of its windows, picks

    ``argmax_{s, e} start_logits[s] + end_logits[e]``  subject to  ``s <= e < s + max_answer_length``,

  ``s`` and ``e`` context tokens of the same window and ``s`` in the window that gives it the most context
  (`SquadFeatures.token_is_max_context`); the answer is the context text from the start of token ``s`` to
  the end of token ``e``. A question with no valid span (no windows) gets the empty string.

  Args:
    examples: the examples `features` was built from.
    features: from `input_pipeline.build_features`.
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
  is_context = features.token_char_start >= 0
  can_start = is_context & features.token_is_max_context
  spans = [_best_spans(start_logits[i:i + _DECODE_CHUNK], end_logits[i:i + _DECODE_CHUNK],
                       can_start[i:i + _DECODE_CHUNK], is_context[i:i + _DECODE_CHUNK], max_answer_length)
           for i in range(0, len(start_logits), _DECODE_CHUNK)]
  best_score, best_start, best_end = (np.concatenate(parts) for parts in zip(*spans))

  best_window: dict[int, int] = {}  # example index -> its best window (the first one on a tie)
  for window in np.flatnonzero(np.isfinite(best_score)):
    example = int(features.example_index[window])
    if example not in best_window or best_score[window] > best_score[best_window[example]]:
      best_window[example] = window
  predictions = {example.qid: "" for example in examples}
  for example, window in best_window.items():
    context = examples[example].context
    predictions[examples[example].qid] = context[features.token_char_start[window, best_start[window]]:
                                                 features.token_char_end[window, best_end[window]]]
  return predictions


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """The official SQuAD normalisation: lower case, no punctuation, no a/an/the, single spaces."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> bool:
  """``normalize_answer(prediction) == normalize_answer(ground_truth)``."""
  return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score(prediction: str, ground_truth: str) -> float:
  """Harmonic mean of token precision and recall of the normalised answers (bag of tokens).

  With ``c`` the size of the multiset intersection of the two token bags, ``P = c / |prediction|``,
  ``R = c / |ground truth|`` and ``F1 = 2 P R / (P + R)`` (0 when ``c = 0``).
  """
  prediction_tokens = normalize_answer(prediction).split()
  ground_truth_tokens = normalize_answer(ground_truth).split()
  num_same = sum((collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)).values())
  if num_same == 0:
    return 0.0
  precision = num_same / len(prediction_tokens)
  recall = num_same / len(ground_truth_tokens)
  return 2 * precision * recall / (precision + recall)


def squad_v1_scores(examples: Iterable[input_pipeline.SquadExample],
                    predictions: Mapping[str, str]) -> dict[str, float]:
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
