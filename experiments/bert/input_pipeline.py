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
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import heapq
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Mapping, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TEXT_SUFFIXES = (".txt", ".rst", ".md")
_EVAL_SPLIT_SEED = 0  # the train/eval document split is fixed, whatever the training seed
_EVAL_MASK_SEED = 1  # so is the masking of the evaluation sequences
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
  if max_documents:
    documents = documents[:max_documents]
  if not documents:
    raise ValueError(f"corpus={corpus!r} holds no text (every document is empty)")
  logging.info("corpus=%r: %d documents", corpus, len(documents))
  return documents


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
  with open(path, "rb") as f:
    data = f.read()
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as error:
    raise ValueError(f"corpus file {path!r} is not UTF-8 text: undecodable byte at offset "
                     f"{error.start} ({data[error.start:error.start + 4]!r})") from error


def _load_hf_documents(name, hf_config, data_files, split, text_field) -> list[str]:
  import datasets  # pylint: disable=g-import-not-at-top
  dataset = datasets.load_dataset(name, hf_config, data_files=data_files, split=split)
  if text_field not in dataset.column_names:
    raise ValueError(f"dataset {name!r} has no column {text_field!r} (columns: {dataset.column_names}); "
                     "set hf_text_field")
  return list(dataset[text_field])


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
  if not 0 < eval_fraction < 1:
    raise ValueError(f"eval_fraction={eval_fraction} must lie in (0, 1)")
  if not 0 <= validation_fraction < 1:
    raise ValueError(f"validation_fraction={validation_fraction} must lie in [0, 1)")
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


# -------------------------------------------------------------------------------------------- tokenizer
def _bert_tokenizer(model, lowercase: bool):
  from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers  # pylint: disable=g-import-not-at-top
  tokenizer = Tokenizer(model)
  tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.decoder = decoders.WordPiece()
  return tokenizer


def train_wordpiece_vocab(documents: Sequence[str], vocab_size: int, out_path: str,
                          lowercase: bool = True) -> str:
  """Trains a WordPiece vocabulary on `documents` and writes it atomically as a BERT vocab.txt.

  The vocabulary is built as HF tokenizers' `WordPieceTrainer` builds it, by byte-pair merges over the
  words that HF tokenizers' BERT normaliser and pre-tokeniser produce (the ones `load_tokenizer` encodes
  with), but deterministically:

  1. Each distinct word w, of frequency n_w, starts as its characters, all but the first with the
     continuation prefix: "word" -> [w, ##o, ##r, ##d].
  2. The vocabulary starts as [PAD] [UNK] [CLS] [SEP] [MASK], then every character c of the corpus in
     code-point order, then "##c" for every c seen after a word's first character, in the same order (the whole alphabet is kept: a `vocab_size`
     below its size gives the special tokens and the alphabet only).
  3. While it has fewer than `vocab_size` tokens, the adjacent pair (a, b) with the largest count
     sum_w n_w * #{(a, b) in w} is merged everywhere into a + b.removeprefix("##"), which is appended
     (unless another pair already made that string). Ties go to the pair of smallest ids (id(a), id(b)),
     ids being positions in the vocabulary: HF's rule.

  HF's trainer applies the same tie rule, but gives the "##c" tokens their ids in a hash map's iteration
  order, which Rust seeds at random per process, so the same corpus gave different tokens and ids from
  run to run. Here the file is a function of (documents, vocab_size, lowercase) only, the same in every
  process and on every machine.

  Raises:
    ValueError: vocab_size < 6, or documents without any word.
  """
  if vocab_size <= len(SPECIAL_TOKENS):
    raise ValueError(f"vocab_size={vocab_size} must exceed the {len(SPECIAL_TOKENS)} special tokens")
  word_counts = _word_counts(documents, lowercase)
  if not word_counts:
    raise ValueError("the documents hold no words to train a WordPiece vocabulary on")
  vocab = list(SPECIAL_TOKENS) + _wordpiece_merges(word_counts, vocab_size - len(SPECIAL_TOKENS))
  directory = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(directory, exist_ok=True)
  with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, delete=False, suffix=".tmp") as f:
    f.writelines(token + "\n" for token in vocab)
  os.replace(f.name, out_path)
  return out_path


def _word_counts(documents: Sequence[str], lowercase: bool) -> dict[str, int]:
  """Word -> frequency, the words being those HF's BERT normaliser and pre-tokeniser cut the text into."""
  from tokenizers import normalizers, pre_tokenizers  # pylint: disable=g-import-not-at-top
  normalizer = normalizers.BertNormalizer(lowercase=lowercase)
  pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  counts = collections.Counter()
  for document in documents:
    counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(document)))
  return dict(counts)


def _wordpiece_merges(word_counts: Mapping[str, int], max_tokens: int) -> list[str]:
  """The alphabet, then merged tokens, up to max_tokens (rule in `train_wordpiece_vocab`).

  Symbols are token ids (their position in the returned list). Pair counts and the words each pair occurs
  in are updated only for the words a merge touches; a heap of (-count, id_a, id_b), whose stale entries
  are skipped, picks the next pair.
  """
  characters = sorted({c for word in word_counts for c in word})
  continuations = sorted({c for word in word_counts for c in word[1:]})
  tokens = characters + ["##" + c for c in continuations]
  ids = {token: i for i, token in enumerate(tokens)}
  words = [[ids[word[0]]] + [ids["##" + c] for c in word[1:]] for word in sorted(word_counts)]
  frequencies = [word_counts[word] for word in sorted(word_counts)]
  pair_counts = collections.defaultdict(int)
  pair_words = collections.defaultdict(set)
  for index, (symbols, frequency) in enumerate(zip(words, frequencies)):
    for pair in zip(symbols, symbols[1:]):
      pair_counts[pair] += frequency
      pair_words[pair].add(index)
  heap = [(-count, a, b) for (a, b), count in pair_counts.items()]
  heapq.heapify(heap)
  while len(tokens) < max_tokens and heap:
    negative_count, a, b = heapq.heappop(heap)
    if pair_counts.get((a, b), 0) != -negative_count:
      continue  # a stale entry: the pair's count changed since it was pushed
    suffix = tokens[b]
    merged_token = tokens[a] + (suffix[2:] if suffix.startswith("##") else suffix)
    if merged_token not in ids:
      ids[merged_token] = len(tokens)
      tokens.append(merged_token)
    merged = ids[merged_token]
    changed = set()
    for index in sorted(pair_words.pop((a, b))):
      symbols, frequency = words[index], frequencies[index]
      new_symbols, i = [], 0
      while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
          new_symbols.append(merged)
          i += 2
        else:
          new_symbols.append(symbols[i])
          i += 1
      if len(new_symbols) == len(symbols):
        continue  # the pair left this word through an earlier merge
      for pair in zip(symbols, symbols[1:]):
        pair_counts[pair] -= frequency
        changed.add(pair)
      for pair in zip(new_symbols, new_symbols[1:]):
        pair_counts[pair] += frequency
        pair_words[pair].add(index)
        changed.add(pair)
      words[index] = new_symbols
    del pair_counts[(a, b)]
    for pair in sorted(changed - {(a, b)}):
      if pair_counts[pair] > 0:
        heapq.heappush(heap, (-pair_counts[pair], *pair))
      else:
        del pair_counts[pair]
  return tokens


def load_tokenizer(vocab_path: str, lowercase: bool = True):
  """A `tokenizers.Tokenizer` (BERT normaliser and pre-tokeniser, WordPiece) from a BERT vocab.txt.

  Raises:
    FileNotFoundError: vocab_path does not exist.
    ValueError: the vocabulary lacks one of [PAD] [UNK] [CLS] [SEP] [MASK].
  """
  from tokenizers import models  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(vocab_path):
    raise FileNotFoundError(f"vocab file {vocab_path!r} does not exist")
  tokenizer = _bert_tokenizer(models.WordPiece.from_file(vocab_path, unk_token="[UNK]"), lowercase)
  missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
  if missing:
    raise ValueError(f"vocab file {vocab_path!r} lacks the special token(s) {missing}; a BERT vocabulary "
                     f"needs all of {list(SPECIAL_TOKENS)}")
  return tokenizer


def _fingerprint(documents: Sequence[str], vocab_size: int, lowercase: bool) -> str:
  digest = hashlib.sha256(f"{vocab_size}|{lowercase}|{len(documents)}".encode())
  for document in documents:
    digest.update(hashlib.sha256(document.encode()).digest())
  return digest.hexdigest()


def vocab_sha256(path: str) -> str:
  """The SHA-256 hex digest of a vocabulary file's bytes: what checkpoints record to detect a mismatch."""
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def prepare_vocab(config, workdir: str, train_documents: Sequence[str]) -> str:
  """The vocab.txt for this run: `config.vocab_file`, or one trained on the training split and cached.

  The cached `<workdir>/vocab.txt` is reused only if `vocab_info.json` says it came from the same training
  documents and settings (or the same given file); otherwise a ValueError says what differs, so a workdir is
  never silently continued with another vocabulary. With several processes, process 0 trains and writes,
  the others wait and read.
  """
  os.makedirs(workdir, exist_ok=True)
  vocab_path = os.path.join(workdir, "vocab.txt")
  info_path = os.path.join(workdir, "vocab_info.json")
  if config.vocab_file:
    if not os.path.isfile(config.vocab_file):
      raise FileNotFoundError(f"vocab_file={config.vocab_file!r} does not exist")
    source = {"vocab_file_sha256": vocab_sha256(config.vocab_file), "lowercase": config.lowercase}
  else:
    source = {"trained_on": _fingerprint(train_documents, config.vocab_size, config.lowercase),
              "vocab_size": config.vocab_size, "lowercase": config.lowercase}
  if os.path.exists(info_path):
    with open(info_path) as f:
      cached = json.load(f)
    if cached != source:
      raise ValueError(
          f"{vocab_path} was made from {cached}, but this run asks for {source} (a different corpus, "
          "vocab_size or vocab_file); use a new workdir or the original settings")
  elif jax.process_index() == 0:
    if config.vocab_file:
      load_tokenizer(config.vocab_file, config.lowercase)  # validate before adopting it
      shutil.copyfile(config.vocab_file, vocab_path + ".tmp")
      os.replace(vocab_path + ".tmp", vocab_path)
    else:
      train_wordpiece_vocab(train_documents, config.vocab_size, vocab_path, config.lowercase)
    with open(info_path + ".tmp", "w") as f:
      json.dump(source, f)
    os.replace(info_path + ".tmp", info_path)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("bert_vocab_written")
  return vocab_path


# ------------------------------------------------------------------------------------ packing, masking
def pack_sequences(token_ids: Sequence[Sequence[int]], max_seq_len: int, *, cls_id: int, sep_id: int,
                   pad_id: int) -> np.ndarray:
  """Concatenates documents (with [SEP] between them) into int32 [N, max_seq_len] `[CLS] ... [SEP]` rows."""
  if max_seq_len < 3:
    raise ValueError(f"max_seq_len={max_seq_len} must be >= 3 ([CLS], a token, [SEP])")
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
  the number of documents of each split ("train", "eval", "validation"); corpus is the config's corpus.
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

  def description(self) -> dict:
    """What was loaded, for reports: the corpus, its documents per split, the training tokens."""
    return {"corpus": self.corpus, "corpus_name": corpus_name(self.corpus),
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

  def train_batch(self, step: int, global_batch_size: int, rows: slice = slice(None)) -> dict:
    """The masked rows `rows` of the global training batch of `step` (a function of seed and step only)."""
    steps_per_epoch = self.steps_per_epoch(global_batch_size)
    epoch, index = divmod(step, steps_per_epoch)
    order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train_sequences))
    ids = order[index * global_batch_size:(index + 1) * global_batch_size]
    batch = self._mask(self.train_sequences[ids], np.random.default_rng([self.seed, epoch, index]))
    return {name: value[rows] for name, value in batch.items()}

  def eval_batches(self, global_batch_size: int, rows: slice = slice(None), *,
                   split: str = "eval") -> list[dict]:
    """Fixed-masked batches of the "eval" or "validation" split; the last is padded with zero-weight rows."""
    if split not in ("eval", "validation"):
      raise ValueError(f"split={split!r} must be 'eval' or 'validation'")
    sequences = self.eval_sequences if split == "eval" else self.validation_sequences
    if not len(sequences):
      raise ValueError(f"the {split} split holds no sequences (validation_fraction = 0 holds out none)")
    batch = self._mask(sequences, np.random.default_rng(_EVAL_MASK_SEED))
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

  max_rows = config.get("max_eval_sequences") or None
  eval_sequences = pack(eval_documents)[:max_rows]
  validation_sequences = pack(validation_documents)[:max_rows]
  vocab_size = tokenizer.get_vocab_size()
  special_ids = tuple(sorted(special.values()))
  return MlmData(
      train_sequences=pack(train_documents), eval_sequences=eval_sequences,
      validation_sequences=validation_sequences, vocab_path=vocab_path,
      vocab_size=vocab_size, pad_id=special["[PAD]"], mask_id=special["[MASK]"],
      special_ids=special_ids,
      random_token_ids=np.setdiff1d(np.arange(vocab_size), special_ids).astype(np.int32),
      seed=config.seed, mask_prob=config.mask_prob, max_predictions=config.max_predictions_per_seq,
      document_counts={"train": len(train_documents), "eval": len(eval_documents),
                       "validation": len(validation_documents)},
      corpus=config.corpus or "pydoc")
