"""The WordPiece vocabulary of MLM pre-training: training it deterministically, loading it, caching it.

`train_wordpiece_vocab` uses HF `tokenizers`' BERT pre-tokenisation and HF's WordPiece merge rule, with ties
broken by token ids rather than a hash order, so every process and machine writes the same vocab.txt;
`prepare_vocab` trains it once per workdir (or checks a given `vocab_file`), `load_tokenizer` reads it.
"""
from __future__ import annotations

import collections
import hashlib
import heapq
import json
import logging
import os
from typing import Mapping, Sequence

import jax
from jax.experimental import multihost_utils

from experiments.common import results

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bert_tokenizer(model, lowercase: bool):
  """A HF `tokenizers.Tokenizer` around a WordPiece `model` with BERT's normaliser, pre-tokeniser and decoder."""
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
  if len(vocab) > vocab_size:  # WordPiece keeps every character of the corpus, whatever the size asked
    logging.warning("vocab_size=%d is below the %d special tokens plus the %d single-character pieces of the training "
                    "documents: the vocabulary has %d tokens", vocab_size, len(SPECIAL_TOKENS),
                    len(vocab) - len(SPECIAL_TOKENS), len(vocab))
  directory = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(directory, exist_ok=True)
  results.write_text(out_path, "".join(token + "\n" for token in vocab))
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
    results.DamagedFileError: it is not UTF-8 text, or the tokenizer cannot read it (naming the file and line).
    ValueError: the vocabulary lacks one of [PAD] [UNK] [CLS] [SEP] [MASK].
  """
  from tokenizers import models  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(vocab_path):
    raise FileNotFoundError(f"vocab file {vocab_path!r} does not exist")
  remedy = "A BERT vocab.txt is UTF-8 text, one token a line: restore it from a copy or from where it came."
  results.check_utf8_text(vocab_path, remedy)
  try:
    model = models.WordPiece.from_file(vocab_path, unk_token="[UNK]")
  except Exception as error:  # tokenizers raises a bare Exception without the path
    raise results.DamagedFileError(f"{vocab_path}: {error}; the file is damaged. {remedy}") from None
  tokenizer = bert_tokenizer(model, lowercase)
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


def check_vocab_file(vocab_file: str) -> None:
  if not os.path.isfile(vocab_file):
    raise FileNotFoundError(f"vocab_file={vocab_file!r} does not exist")


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
    check_vocab_file(config.vocab_file)
    source = {"vocab_file_sha256": vocab_sha256(config.vocab_file), "lowercase": config.lowercase}
  else:
    source = {"trained_on": _fingerprint(train_documents, config.vocab_size, config.lowercase),
              "vocab_size": config.vocab_size, "lowercase": config.lowercase}
  if os.path.exists(info_path):
    cached = results.read_json(info_path, remedy="Delete it and vocab.txt: the run then makes its "
                               "vocabulary again (the same one, from the same documents and settings).")
    if cached != source:
      raise ValueError(
          f"{vocab_path} was made from {cached}, but this run asks for {source} (a different corpus, "
          "vocab_size or vocab_file); use a new workdir or the original settings")
  elif jax.process_index() == 0:
    if config.vocab_file:
      load_tokenizer(config.vocab_file, config.lowercase)  # validate before adopting it
      with open(config.vocab_file, encoding="utf-8") as f:
        results.write_text(vocab_path, f.read())
    else:
      train_wordpiece_vocab(train_documents, config.vocab_size, vocab_path, config.lowercase)
    results.write_text(info_path, json.dumps(source))
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("bert_vocab_written")
  return vocab_path
