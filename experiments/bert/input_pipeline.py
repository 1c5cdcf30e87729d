"""MLM pre-training data: corpus reading, a WordPiece vocabulary, packed sequences and dynamic masking.

Corpus (`config.corpus`), no download unless a Hugging Face name is given:

* `"pydoc"` (default): the Python standard library's `pydoc_data.topics`, one document per help topic;
* a path to a folder, searched recursively for .txt/.rst/.md files, one document per file (e.g. the Debian
  package python3.11-doc's `/usr/share/doc/python3.11/html/_sources`);
* a path to one text file: documents separated by blank lines, the convention of BERT's pre-training data
  (one sentence or paragraph per line, a blank line between documents);
* `"hf:NAME"`: `datasets.load_dataset(NAME, config.hf_config, data_files=config.hf_data_files,
  split=config.hf_split)`, one document per non-empty row of `config.hf_text_field` (for instance
  `hf:wikitext` with hf_config `wikitext-103-raw-v1`, or `hf:text` with local data_files).

Documents are split into training, held-out evaluation (`eval_fraction`) and, optionally, validation
(`validation_fraction`, for choosing hyperparameters without touching the evaluation split) documents by a
fixed seeded shuffle, so no held-out text leaks into training. The vocabulary is a WordPiece vocabulary
trained on the training documents (HF `tokenizers`' BERT pre-tokenisation, then WordPiece merges with a
fixed tie rule, so the same corpus gives the same file in every process), cached as `<workdir>/vocab.txt`
with a fingerprint in `vocab_info.json` that must match on reuse; or a given BERT `vocab.txt`
(`config.vocab_file`).

Packing (as RoBERTa's FULL-SENTENCES, no next-sentence task): the token ids of all documents of a split are
concatenated with [SEP] between documents and cut into `[CLS] chunk [SEP]` sequences of `max_seq_len`; the
last one is padded with [PAD].

Dynamic masking (BERT): for each sequence and training step, n = min(max_predictions, max(1,
round(mask_prob * #maskable))) positions are drawn uniformly among the non-special tokens; each is replaced
by [MASK] with probability 0.8, by a uniformly drawn non-special token with probability 0.1, and kept with
probability 0.1. The loss averages over these positions only. The batch of step s is a function of
(seed, s) only, so runs resume exactly and give the same batches on any number of processes.

A fixed objective (`static_masking`, with `max_train_sequences` for a subset small enough for full-batch
steps): every training sequence is masked once, by a fixed seed whatever the run's, and keeps that mask in
every epoch, so the training loss is one fixed finite sum and a batch of all the training sequences is its
exact gradient, with no sampling noise. The "train" split of `eval_batches` is then the training sequences
with those masks: the objective itself.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import logging
import os
import re
from typing import Optional, Sequence

import numpy as np

# The vocabulary half of the data API, re-exported so that drivers read everything from input_pipeline.
from experiments.bert.vocabulary import (  # noqa: F401  pylint: disable=unused-import
    SPECIAL_TOKENS, bert_tokenizer, check_vocab_file, load_tokenizer, prepare_vocab, train_wordpiece_vocab, vocab_sha256)
from experiments.common import results

TEXT_SUFFIXES = (".txt", ".rst", ".md")
_EVAL_SPLIT_SEED = 0  # the train/eval document split is fixed, whatever the training seed
_EVAL_MASK_SEED = 1  # so is the masking of the evaluation sequences
_STATIC_MASK_SEED = 2  # and the one mask of each training sequence under static_masking
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")  # separates the documents of a one-file corpus


# ----------------------------------------------------------------------------------------------- corpus
def load_documents(corpus: str = "pydoc", *, hf_config: Optional[str] = None,
                   hf_data_files=None, hf_split: str = "train", hf_text_field: str = "text",
                   max_documents: Optional[int] = None) -> list[str]:
  """The non-empty documents of a corpus (see the module docstring for the accepted names).

  Raises:
    FileNotFoundError: a path that does not exist, or a folder without .txt/.rst/.md files.
    ValueError: undecodable (non-UTF-8) bytes, or a corpus without any text.
  """
  if corpus in ("", "pydoc"):
    from pydoc_data.topics import topics  # pylint: disable=g-import-not-at-top
    documents = [topics[name] for name in sorted(topics)]
  elif corpus.startswith("hf:"):
    documents = _load_hf_documents(corpus[3:], hf_config, hf_data_files, hf_split, hf_text_field)
  elif os.path.isfile(corpus):
    documents = _BLANK_LINES.split(_read_text_file(corpus))
  else:
    documents = [_read_text_file(path) for path in _text_files(corpus)]
  documents = [d for d in documents if d.strip()]
  check_limit("max_documents", max_documents)
  if max_documents:
    documents = documents[:max_documents]
  if not documents:
    raise ValueError(f"corpus={corpus!r} holds no text (every document is empty)")
  logging.info("corpus=%r: %d documents", corpus, len(documents))
  return documents


def documents_sha256(documents: Sequence[str]) -> str:
  """The corpus's fingerprint: SHA-256 over its documents in order, each as its UTF-8 length and bytes.

  Recorded by every run and study, so that a corpus that changed underneath them (another release of a
  package, an edited file) is an error where runs would be mixed, not a silent change of their numbers.
  """
  digest = hashlib.sha256()
  for document in documents:
    data = document.encode("utf-8")
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)
  return digest.hexdigest()


def corpus_name(corpus: str) -> str:
  """A reader's name for a `config.corpus` value."""
  if corpus in ("", "pydoc"):
    return "pydoc_data.topics (the Python standard library's help topics)"
  if corpus.startswith("hf:"):
    return f"the Hugging Face dataset {corpus[3:]!r}"
  return f"{'the text file' if os.path.isfile(corpus) else 'the text files under'} {corpus}"


def _text_files(path: str) -> list[str]:
  if not os.path.exists(path):
    raise FileNotFoundError(f"corpus={path!r} does not exist (give 'pydoc', a file, a folder or 'hf:NAME')")
  files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                 if f.endswith(TEXT_SUFFIXES) and os.path.isfile(f))
  if not files:
    raise FileNotFoundError(f"corpus folder {path!r} contains no {'/'.join(TEXT_SUFFIXES)} files")
  return files


def _read_text_file(path: str) -> str:
  return results.read_utf8_text(
      path, "Convert it to UTF-8 (for example `iconv -f latin1 -t utf-8`) or move it out of the corpus.",
      problem="a corpus file must be UTF-8")


def _load_hf_documents(name, hf_config, data_files, split, text_field) -> list[str]:
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError(f"corpus='hf:{name}' reads the Hugging Face `datasets` package, which is not installed: "
                      "pip install -e \".[hf]\"") from error
  dataset = datasets.load_dataset(name, hf_config, data_files=data_files, split=split)
  if text_field not in dataset.column_names:
    raise ValueError(f"dataset {name!r} has no column {text_field!r} (columns: {dataset.column_names}); "
                     "set hf_text_field")
  return list(dataset[text_field])


def check_limit(name: str, value: Optional[int]) -> None:
  """A cap on documents or sequences: 0 (or None) means all, a negative one would cut from the end."""
  if value is not None and value < 0:
    raise ValueError(f"{name}={value} must be >= 0 (0: all)")


def check_fractions(eval_fraction: float, validation_fraction: float) -> None:
  if not 0 < eval_fraction < 1:
    raise ValueError(f"eval_fraction={eval_fraction} must lie in (0, 1)")
  if not 0 <= validation_fraction < 1:
    raise ValueError(f"validation_fraction={validation_fraction} must lie in [0, 1)")


def check_max_seq_len(max_seq_len: int) -> None:
  if max_seq_len < 3:
    raise ValueError(f"max_seq_len={max_seq_len} must be >= 3 ([CLS], a token, [SEP])")


def check_masking(mask_prob: float, max_predictions: int) -> None:
  if not 0 < mask_prob <= 1:
    raise ValueError(f"mask_prob={mask_prob} must lie in (0, 1]")
  if max_predictions < 1:
    raise ValueError(f"max_predictions_per_seq={max_predictions} must be >= 1 "
                     "(0 masks nothing: the loss would be a silent 0)")


def check_settings(config) -> None:
  """The data fields of a config, checked before the corpus is read (the rules the functions below apply
  when they run): ValueError naming the field."""
  check_limit("max_documents", config.get("max_documents"))
  check_limit("max_eval_sequences", config.get("max_eval_sequences"))
  check_limit("max_train_sequences", config.get("max_train_sequences"))
  check_fractions(config.eval_fraction, config.get("validation_fraction", 0.0))
  check_max_seq_len(config.max_seq_len)
  check_masking(config.mask_prob, config.max_predictions_per_seq)
  if config.vocab_file:
    check_vocab_file(config.vocab_file)
  elif config.vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(f"vocab_size={config.vocab_size} must exceed the {len(SPECIAL_TOKENS)} special tokens")


def split_documents(documents: Sequence[str], eval_fraction: float,
                    validation_fraction: float = 0.0) -> tuple[list[str], list[str], list[str]]:
  """(train, eval, validation) documents, split by a fixed shuffle of the documents.

  The first ceil(eval_fraction * n) (at least 1, at most n - 1) shuffled documents are held out for evaluation, the next
  ceil(validation_fraction * n) (none when it is 0) for validation (choosing hyperparameters), the rest
  train. The evaluation documents do not depend on validation_fraction, and the order within each split is
  the corpus order.

  Raises:
    ValueError: fractions outside [0, 1) (eval: (0, 1)), or too few documents for every split to get one.
  """
  check_fractions(eval_fraction, validation_fraction)
  if len(documents) < 2:
    raise ValueError(f"the corpus has {len(documents)} document(s); at least 2 are needed to hold one "
                     "out for evaluation (a one-file corpus separates its documents by blank lines)")
  num_eval = min(max(1, int(np.ceil(eval_fraction * len(documents)))), len(documents) - 1)
  num_validation = int(np.ceil(validation_fraction * len(documents)))
  if num_eval + num_validation >= len(documents):
    raise ValueError(
        f"the corpus has {len(documents)} document(s): too few to hold out {num_eval} for evaluation "
        f"and {num_validation} for validation (eval_fraction={eval_fraction}, validation_fraction="
        f"{validation_fraction}) and still train on one")
  order = np.random.default_rng(_EVAL_SPLIT_SEED).permutation(len(documents))
  split_of = np.zeros(len(documents), np.int64)  # 0 train, 1 eval, 2 validation
  split_of[order[:num_eval]] = 1
  split_of[order[num_eval:num_eval + num_validation]] = 2
  return tuple([d for d, split in zip(documents, split_of) if split == which] for which in (0, 1, 2))


# ------------------------------------------------------------------------------------ packing, masking
def pack_sequences(token_ids: Sequence[Sequence[int]], max_seq_len: int, *, cls_id: int, sep_id: int,
                   pad_id: int) -> np.ndarray:
  """Concatenates documents (with [SEP] between them) into int32 [N, max_seq_len] `[CLS] ... [SEP]` rows."""
  check_max_seq_len(max_seq_len)
  stream = []
  for ids in token_ids:
    if len(ids):
      stream.extend(ids)
      stream.append(sep_id)
  stream = np.asarray(stream[:-1], dtype=np.int32)
  chunk = max_seq_len - 2
  num_rows = -(-len(stream) // chunk)
  rows = np.full((num_rows, max_seq_len), pad_id, dtype=np.int32)
  for row in range(num_rows):
    piece = stream[row * chunk:(row + 1) * chunk]
    rows[row, 0] = cls_id
    rows[row, 1:1 + len(piece)] = piece
    rows[row, 1 + len(piece)] = sep_id
  return rows


def mask_tokens(sequences: np.ndarray, rng: np.random.Generator, *, mask_id: int, pad_id: int,
                special_ids: Sequence[int],
                random_token_ids: np.ndarray, mask_prob: float = 0.15,
                max_predictions: int = 20) -> dict[str, np.ndarray]:
  """BERT's masking of int [B, L] sequences (rule in the module docstring).

  Returns:
    input_ids [B, L] (masked), token_type_ids [B, L] (zeros), attention_mask [B, L] (1 = not [PAD]),
    masked_positions [B, P], masked_labels [B, P] (the original ids), masked_weights
    [B, P] (1.0 for a prediction, 0.0 for padding of the P slots), with P = max_predictions.
  """
  batch_size, length = sequences.shape
  maskable = ~np.isin(sequences, special_ids)
  num_maskable = maskable.sum(axis=1)
  num_masked = np.minimum(max_predictions, np.maximum(1, np.round(num_maskable * mask_prob))).astype(np.int64)
  num_masked = np.where(num_maskable > 0, np.minimum(num_masked, num_maskable), 0)
  scores = np.where(maskable, rng.random((batch_size, length)), 2.0)  # non-maskable sort last
  order = np.argsort(scores, axis=1, kind="stable")[:, :max_predictions]
  if order.shape[1] < max_predictions:
    order = np.pad(order, ((0, 0), (0, max_predictions - order.shape[1])))
  valid = np.arange(max_predictions)[None, :] < num_masked[:, None]
  positions = np.where(valid, order, 0).astype(np.int32)
  labels = np.where(valid, np.take_along_axis(sequences, positions, axis=1), 0).astype(np.int32)
  action = rng.random((batch_size, max_predictions))
  random_tokens = random_token_ids[rng.integers(len(random_token_ids), size=(batch_size, max_predictions))]
  replacement = np.where(action < 0.8, mask_id, np.where(action < 0.9, random_tokens, labels))
  input_ids = sequences.copy()
  rows = np.broadcast_to(np.arange(batch_size)[:, None], positions.shape)
  input_ids[rows[valid], positions[valid]] = replacement[valid]
  return {
      "input_ids": input_ids.astype(np.int32),
      "token_type_ids": np.zeros_like(sequences, dtype=np.int32),
      "attention_mask": (sequences != pad_id).astype(np.int32),
      "masked_positions": positions,
      "masked_labels": labels,
      "masked_weights": valid.astype(np.float32),
  }


# --------------------------------------------------------------------------------------------- dataset
@dataclasses.dataclass
class MlmData:
  """Packed train/eval/validation sequences and the batch functions of one run.

  validation_sequences has no rows when the run holds out no validation documents; document_counts holds
  the number of documents of each split ("train", "eval", "validation"); corpus is the config's corpus and
  corpus_sha256 its documents' `documents_sha256`.
  """
  train_sequences: np.ndarray
  eval_sequences: np.ndarray
  validation_sequences: np.ndarray
  vocab_path: str
  vocab_size: int
  pad_id: int
  mask_id: int
  special_ids: tuple[int, ...]
  random_token_ids: np.ndarray
  seed: int
  mask_prob: float
  max_predictions: int
  document_counts: dict[str, int] = dataclasses.field(default_factory=dict)
  corpus: str = "pydoc"
  static_masking: bool = False
  corpus_sha256: str = ""

  def description(self) -> dict:
    """What was loaded, for reports: the corpus, its fingerprint, its documents per split, the training tokens."""
    return {"corpus": self.corpus, "corpus_name": corpus_name(self.corpus), "corpus_sha256": self.corpus_sha256,
            "documents": dict(self.document_counts), "train_sequences": len(self.train_sequences),
            "train_tokens": int(np.sum(self.train_sequences != self.pad_id)), "vocab_size": self.vocab_size}

  def _mask(self, sequences: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return mask_tokens(sequences, rng, mask_id=self.mask_id, pad_id=self.pad_id,
                       special_ids=self.special_ids, random_token_ids=self.random_token_ids,
                       mask_prob=self.mask_prob, max_predictions=self.max_predictions)

  def steps_per_epoch(self, global_batch_size: int) -> int:
    steps = len(self.train_sequences) // global_batch_size
    if steps == 0:
      raise ValueError(f"batch_size={global_batch_size} exceeds the {len(self.train_sequences)} training "
                       "sequences of the corpus; use a smaller batch or a larger corpus")
    return steps

  def frequency_buckets(self, num_buckets: int = 4) -> np.ndarray:
    """The bucket of every token id by its training-set frequency, 0 the most frequent.

    Tokens are sorted by their count in the training sequences (padding left out) and cut so that each
    bucket holds about 1/num_buckets of the training token occurrences: bucket 0 is a few very frequent
    tokens, the last holds the rare ones and every token never seen in training.
    """
    tokens = self.train_sequences[self.train_sequences != self.pad_id]
    counts = np.bincount(tokens, minlength=self.vocab_size)[:self.vocab_size]
    order = np.argsort(-counts, kind="stable")
    share_before = (np.cumsum(counts[order]) - counts[order]) / max(counts.sum(), 1)
    buckets = np.empty(self.vocab_size, np.int32)
    buckets[order] = np.minimum((share_before * num_buckets).astype(np.int32), num_buckets - 1)
    buckets[counts == 0] = num_buckets - 1
    return buckets

  @functools.cached_property
  def static_masks(self) -> dict[str, np.ndarray]:
    """Every training sequence masked once (`static_masking`), the same whatever the run's seed."""
    return self._mask(self.train_sequences, np.random.default_rng(_STATIC_MASK_SEED))

  def train_batch(self, step: int, global_batch_size: int, rows: slice = slice(None)) -> dict:
    """The masked rows `rows` of the global training batch of `step` (a function of seed and step only)."""
    steps_per_epoch = self.steps_per_epoch(global_batch_size)
    epoch, index = divmod(step, steps_per_epoch)
    order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train_sequences))
    ids = order[index * global_batch_size:(index + 1) * global_batch_size]
    if self.static_masking:
      return {name: value[ids][rows] for name, value in self.static_masks.items()}
    batch = self._mask(self.train_sequences[ids], np.random.default_rng([self.seed, epoch, index]))
    return {name: value[rows] for name, value in batch.items()}

  def eval_batches(self, global_batch_size: int, rows: slice = slice(None), *,
                   split: str = "eval") -> list[dict]:
    """Fixed-masked batches of the "eval", "validation" or (static masking only) "train" split; the last is
    padded with zero-weight rows."""
    if split == "train":
      if not self.static_masking:
        raise ValueError("the train split is evaluated with static_masking only (else its masks change every step)")
      batch, sequences = self.static_masks, self.train_sequences
    elif split in ("eval", "validation"):
      sequences = self.eval_sequences if split == "eval" else self.validation_sequences
      if not len(sequences):
        raise ValueError(f"the {split} split holds no sequences (validation_fraction = 0 holds out none)")
      batch = self._mask(sequences, np.random.default_rng(_EVAL_MASK_SEED))
    else:
      raise ValueError(f"split={split!r} must be 'eval', 'validation' or 'train'")
    num_rows = len(sequences)
    padded_rows = -(-num_rows // global_batch_size) * global_batch_size
    fill = np.arange(padded_rows) % num_rows  # pad with repeats whose weights are zeroed
    batch = {name: value[fill] for name, value in batch.items()}
    batch["masked_weights"][num_rows:] = 0.0
    return [{name: value[start:start + global_batch_size][rows] for name, value in batch.items()}
            for start in range(0, padded_rows, global_batch_size)]


def create_datasets(config, workdir: str) -> MlmData:
  """Reads the corpus, prepares the vocabulary and packs the splits (see the module docstring).

  `config.max_eval_sequences` (0: all) caps the evaluation and the validation sequences alike.
  """
  documents = load_documents(config.corpus, hf_config=config.get("hf_config"),
                             hf_data_files=config.get("hf_data_files"),
                             hf_split=config.get("hf_split", "train"),
                             hf_text_field=config.get("hf_text_field", "text"),
                             max_documents=config.get("max_documents"))
  train_documents, eval_documents, validation_documents = split_documents(
      documents, config.eval_fraction, config.get("validation_fraction", 0.0))
  vocab_path = prepare_vocab(config, workdir, train_documents)
  tokenizer = load_tokenizer(vocab_path, config.lowercase)
  special = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}

  def pack(split_documents_):
    encodings = tokenizer.encode_batch(split_documents_, add_special_tokens=False)
    return pack_sequences([e.ids for e in encodings], config.max_seq_len, cls_id=special["[CLS]"],
                          sep_id=special["[SEP]"], pad_id=special["[PAD]"])

  check_limit("max_eval_sequences", config.get("max_eval_sequences"))
  max_rows = config.get("max_eval_sequences") or None
  eval_sequences = pack(eval_documents)[:max_rows]
  validation_sequences = pack(validation_documents)[:max_rows]
  vocab_size = tokenizer.get_vocab_size()
  special_ids = tuple(sorted(special.values()))
  train_sequences = pack(train_documents)[:config.get("max_train_sequences") or None]
  return MlmData(
      train_sequences=train_sequences, eval_sequences=eval_sequences,
      validation_sequences=validation_sequences, vocab_path=vocab_path,
      vocab_size=vocab_size, pad_id=special["[PAD]"], mask_id=special["[MASK]"],
      special_ids=special_ids,
      random_token_ids=np.setdiff1d(np.arange(vocab_size), special_ids).astype(np.int32),
      seed=config.seed, mask_prob=config.mask_prob, max_predictions=config.max_predictions_per_seq,
      document_counts={"train": len(train_documents), "eval": len(eval_documents),
                       "validation": len(validation_documents)},
      corpus=config.corpus or "pydoc", static_masking=bool(config.get("static_masking", False)),
      corpus_sha256=documents_sha256(documents))
