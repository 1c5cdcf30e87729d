"""The WordPiece vocabulary trainer: hand-checked merges, HF's tie rule, and the same file in every process."""
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.bert import input_pipeline

SPECIALS = list(input_pipeline.SPECIAL_TOKENS)


def train(tmp_path, documents, vocab_size, name="vocab.txt"):
  path = input_pipeline.train_wordpiece_vocab(documents, vocab_size, str(tmp_path / name))
  with open(path, encoding="utf-8") as f:
    return f.read().split("\n")[:-1]


def test_merges_by_hand(tmp_path):
  # Words: "ab" x3, "abc" x1. Alphabet: a b c (every character), ##b ##c (seen after a first character).
  # Pair counts: (a, ##b) = 4, (##b, ##c) = 1: "ab" first; then (ab, ##c) = 1 gives "abc".
  alphabet = ["a", "b", "c", "##b", "##c"]
  assert train(tmp_path, ["ab ab", "ab abc"], 100) == SPECIALS + alphabet + ["ab", "abc"]
  assert train(tmp_path, ["ab ab", "ab abc"], 11) == SPECIALS + alphabet + ["ab"]
  # Merging two continuations keeps one prefix: (##b, ##c) = 2 > (a, ##b) = (d, ##b) = 1.
  assert train(tmp_path, ["abc", "dbc"], 12) == SPECIALS + ["a", "b", "c", "d", "##b", "##c", "##bc"]


def test_a_vocabulary_below_the_alphabet_is_said(tmp_path, caplog):
  import logging  # pylint: disable=g-import-not-at-top
  with caplog.at_level(logging.WARNING):
    tokens = train(tmp_path, ["ab ab", "ab abc"], 8)
  assert tokens == SPECIALS + ["a", "b", "c", "##b", "##c"]  # the alphabet is kept whole
  assert (f"vocab_size=8 is below the {len(SPECIALS)} special tokens plus the 5 single-character pieces of the "
          f"training documents: the vocabulary has {len(SPECIALS) + 5} tokens") in caplog.text


def test_ties_go_to_the_pair_of_smallest_ids(tmp_path):
  # (c, ##d) and (a, ##b) both occur once; a has the smaller id, so "ab" comes first whatever the order.
  for documents in (["ab cd"], ["cd ab"], ["cd", "ab"]):
    vocab = train(tmp_path, documents, len(SPECIALS) + 6 + 1)
    assert vocab[-1] == "ab"
  # "ba" x1 and "ab" x1: (a, ##b) has ids (a, ##b) < (b, ##a) since a < b.
  assert train(tmp_path, ["ba ab"], len(SPECIALS) + 4 + 1)[-1] == "ab"


def test_unbounded_merging_ends_with_every_word_a_token(tmp_path):
  # With room for every merge, merging stops only when no word has two symbols left.
  rng = np.random.default_rng(0)
  words = ["".join(rng.choice(list("abc"), size=rng.integers(1, 8))) for _ in range(300)]
  vocab = train(tmp_path, [" ".join(words)], 10**6)
  assert len(vocab) == len(set(vocab))
  assert set(words) <= set(vocab)


def test_pydoc_vocabulary_is_hfs_up_to_hash_order_ties(tmp_path):
  from tokenizers import models, trainers  # pylint: disable=g-import-not-at-top
  train_documents, *_ = input_pipeline.split_documents(input_pipeline.load_documents("pydoc"), 0.05)
  vocab = train(tmp_path, train_documents, 2048)
  assert vocab[:len(SPECIALS)] == SPECIALS and len(vocab) == len(set(vocab)) == 2048
  tokenizer = input_pipeline.bert_tokenizer(
      models.WordPiece(unk_token="[UNK]"), lowercase=True)
  tokenizer.train_from_iterator(train_documents, trainers.WordPieceTrainer(
      vocab_size=2048, special_tokens=SPECIALS, show_progress=False))
  hf_vocab = set(tokenizer.get_vocab())
  # HF's own runs differ by a few tokens (its "##c" ids follow a hash order); ours is one of its answers.
  assert len(hf_vocab - set(vocab)) <= 20
  # Every character is in the alphabet: the training text encodes without [UNK].
  tokenizer = input_pipeline.load_tokenizer(str(tmp_path / "vocab.txt"))
  unk_id = tokenizer.token_to_id("[UNK]")
  assert all(unk_id not in e.ids for e in tokenizer.encode_batch(train_documents[:50]))


_TRAIN_IN_A_PROCESS = """
import sys
from experiments.bert import input_pipeline
documents = input_pipeline.split_documents(input_pipeline.load_documents("pydoc"), 0.05)[0][:300]
input_pipeline.train_wordpiece_vocab(documents, 1500, sys.argv[1])
"""


def test_the_same_file_in_every_process(tmp_path):
  """Two interpreters with different hash seeds (Python's and, by construction, Rust's) write one file."""
  contents = []
  for hash_seed in ("1", "2"):
    path = tmp_path / f"vocab_{hash_seed}.txt"
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    subprocess.run([sys.executable, "-c", _TRAIN_IN_A_PROCESS, str(path)], check=True, env=env,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    contents.append(path.read_bytes())
  assert contents[0] == contents[1]
  assert len(contents[0].split(b"\n")) == 1501


@pytest.mark.parametrize("vocab_size, documents, message", [
    (5, ["some text"], "must exceed the 5 special tokens"),
    (100, [" \n\t "], "no words"),
])
def test_bad_vocabulary_requests(tmp_path, vocab_size, documents, message):
  with pytest.raises(ValueError, match=message):
    input_pipeline.train_wordpiece_vocab(documents, vocab_size, str(tmp_path / "vocab.txt"))
