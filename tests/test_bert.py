"""BERT MLM driver: model size, data pipeline, masking statistics, pmap equivalence, resume, bad input.

The multi-process test lives in test_bert_multiprocess.py.
"""
import functools
import hashlib
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.bert import input_pipeline
from experiments.bert import models
from experiments.bert import train
from experiments.bert.configs import tiny
from experiments.common import checkpoint
from experiments.common import classification
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel
from experiments.common import training_loop


def micro_config(**overrides):
  """The tiny config shrunk further so a run takes seconds (1 layer, hidden 32, sequences of 32 tokens)."""
  config = tiny.get_config()
  config.model.update(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_position_embeddings=32)
  config.vocab_size = 512
  config.max_seq_len = 32
  config.max_predictions_per_seq = 5
  config.batch_size = 8
  config.eval_batch_size = 8
  config.max_eval_sequences = 16
  config.num_train_steps = 6
  config.warmup_steps = 2
  config.log_every_steps = 2
  config.eval_every_steps = 0
  config.plot = False
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def shared_vocab(tmp_path_factory):
  """One vocabulary trained on pydoc's training split, given to most runs so they skip training it."""
  config = micro_config()
  train_documents, *_ = input_pipeline.split_documents(
      input_pipeline.load_documents(config.corpus), config.eval_fraction)
  path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
  return input_pipeline.train_wordpiece_vocab(train_documents, config.vocab_size, path)


def train_losses(workdir):
  steps, losses = metrics_lib.metric_series(
      metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILENAME)), "train_loss")
  return dict(zip(steps.tolist(), losses.tolist()))


# ----------------------------------------------------------------------------------------------- model
def bert_param_count(vocab, hidden, layers, intermediate, positions, types):
  """BERT's parameter count from its architecture (no pooler, MLM head tied to the embeddings)."""
  embeddings = (vocab + positions + types) * hidden + 2 * hidden
  attention = 4 * (hidden * hidden + hidden)
  feed_forward = hidden * intermediate + intermediate + intermediate * hidden + hidden
  layer = attention + feed_forward + 2 * 2 * hidden
  mlm_head = hidden * hidden + hidden + 2 * hidden + vocab
  return embeddings + layers * layer + mlm_head


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_param_count_matches_architecture(size):
  if size == "tiny":
    config = models.BertConfig(vocab_size=4096, hidden_size=128, num_layers=2, num_heads=2,
                               intermediate_size=512)
  else:
    config = models.BertConfig(vocab_size=30522)
  count = models.count_params(models.abstract_params(config))
  assert count == bert_param_count(config.vocab_size, config.hidden_size, config.num_layers,
                                   config.intermediate_size, config.max_position_embeddings,
                                   config.type_vocab_size)
  if size == "base":
    assert 108e6 < count < 111e6  # BERT-base: about 110M (the published figure includes the pooler)


def test_size_configs_build_the_paper_models():
  from experiments.bert.configs import base, base6, large, mini  # pylint: disable=g-import-not-at-top
  shapes = {name: (module.get_config().model.num_layers, module.get_config().model.hidden_size,
                   module.get_config().model.num_heads)
            for name, module in [("tiny", tiny), ("mini", mini), ("base6", base6), ("base", base),
                                 ("large", large)]}
  assert shapes == {"tiny": (2, 128, 2), "mini": (4, 256, 4), "base6": (6, 768, 12),
                    "base": (12, 768, 12), "large": (24, 1024, 16)}


def test_encoder_lives_under_bert_and_loads_into_bert_model(shared_vocab):
  del shared_vocab
  config = models.BertConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                             intermediate_size=32)
  tokens = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 50
  mask = jnp.ones_like(tokens)
  mlm_params = models.BertForMaskedLM(config).init(
      jax.random.key(0), tokens, tokens * 0, mask, tokens[:, :2], deterministic=True)["params"]
  encoder = models.BertModel(config)
  sequence_output = encoder.apply({"params": mlm_params["bert"]}, tokens, tokens * 0, mask,
                                  deterministic=True)
  assert sequence_output.shape == (2, 6, 16)
  # The MLM logits are the tied embedding product of the transformed encoder output.
  logits = models.BertForMaskedLM(config).apply({"params": mlm_params}, tokens, tokens * 0, mask,
                                                tokens[:, :2], deterministic=True)
  assert logits.shape == (2, 2, 50)
  assert "embedding" in mlm_params["bert"]["word_embeddings"]
  assert not any("word" in key for key in mlm_params if key != "bert")  # no second output matrix


# ------------------------------------------------------------------------------------------------ data
def test_pack_sequences_keeps_every_token_in_order():
  documents = [[10, 11, 12], [20, 21], [], [30, 31, 32, 33]]
  rows = input_pipeline.pack_sequences(documents, 6, cls_id=2, sep_id=3, pad_id=0)
  assert (rows[:, 0] == 2).all()
  body = [t for row in rows for t in row[1:].tolist() if t != 0]
  # rows end with [SEP]; documents are separated by [SEP]; dropping all [SEP] gives the tokens in order
  assert [t for t in body if t != 3] == [10, 11, 12, 20, 21, 30, 31, 32, 33]
  assert rows.shape[1] == 6 and rows[-1, -1] == 0  # the last row is padded


def make_masking_input(num_rows=2000, length=64, seed=0):
  rng = np.random.default_rng(seed)
  sequences = rng.integers(5, 100, size=(num_rows, length)).astype(np.int32)
  sequences[:, 0] = 2  # [CLS]
  lengths = rng.integers(10, length, size=num_rows)
  for row, n in enumerate(lengths):
    sequences[row, n] = 3  # [SEP]
    sequences[row, n + 1:] = 0  # [PAD]
  return sequences, lengths


def test_masking_statistics():
  sequences, lengths = make_masking_input()
  special_ids = (0, 1, 2, 3, 4)
  batch = input_pipeline.mask_tokens(
      sequences, np.random.default_rng(1), mask_id=4, pad_id=0, special_ids=special_ids,
      random_token_ids=np.arange(5, 100, dtype=np.int32), mask_prob=0.15, max_predictions=20)
  weights = batch["masked_weights"].astype(bool)
  maskable = lengths - 1  # tokens between [CLS] and [SEP]
  expected_count = np.minimum(20, np.maximum(1, np.round(0.15 * maskable)))
  np.testing.assert_array_equal(weights.sum(1), expected_count)
  rows = np.broadcast_to(np.arange(len(sequences))[:, None], weights.shape)
  positions, labels = batch["masked_positions"][weights], batch["masked_labels"][weights]
  assert not np.isin(sequences[rows[weights], positions], special_ids).any()
  np.testing.assert_array_equal(labels, sequences[rows[weights], positions])
  for row in range(50):  # positions within a row are distinct
    chosen = batch["masked_positions"][row][weights[row]]
    assert len(set(chosen.tolist())) == len(chosen)
  new_tokens = batch["input_ids"][rows[weights], positions]
  n = len(new_tokens)
  is_mask = new_tokens == 4
  is_kept = new_tokens == labels
  # Kept = the 10% "keep" branch plus random draws that hit the original (1/95 of the 10% branch).
  for observed, p in [(is_mask.mean(), 0.8), (is_kept.mean(), 0.1 + 0.1 / 95),
                      ((~is_mask & ~is_kept).mean(), 0.1 - 0.1 / 95)]:
    assert abs(observed - p) < 5 * np.sqrt(p * (1 - p) / n)
  untouched = np.ones_like(sequences, bool)
  untouched[rows[weights], positions] = False
  np.testing.assert_array_equal(batch["input_ids"][untouched], sequences[untouched])
  np.testing.assert_array_equal(batch["attention_mask"], sequences != 0)


def test_masking_is_deterministic_given_the_seed():
  sequences, _ = make_masking_input(num_rows=20)
  kwargs = dict(mask_id=4, pad_id=0, special_ids=(0, 1, 2, 3, 4),
                random_token_ids=np.arange(5, 100, dtype=np.int32))
  first = input_pipeline.mask_tokens(sequences, np.random.default_rng(7), **kwargs)
  again = input_pipeline.mask_tokens(sequences, np.random.default_rng(7), **kwargs)
  other = input_pipeline.mask_tokens(sequences, np.random.default_rng(8), **kwargs)
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
  assert not np.array_equal(first["masked_positions"], other["masked_positions"])


def test_datasets_split_by_document_and_batches_are_a_function_of_seed_and_step(tmp_path, shared_vocab):
  config = micro_config(vocab_file=shared_vocab)
  data = input_pipeline.create_datasets(config, str(tmp_path / "a"))
  again = input_pipeline.create_datasets(config, str(tmp_path / "b"))
  documents = input_pipeline.load_documents(config.corpus)
  train_docs, eval_docs, _ = input_pipeline.split_documents(documents, config.eval_fraction)
  assert set(train_docs).isdisjoint(eval_docs) and len(train_docs) + len(eval_docs) == len(documents)
  for step in (0, 5, 1000):
    first, second = data.train_batch(step, 8), again.train_batch(step, 8)
    for name in first:
      np.testing.assert_array_equal(first[name], second[name])
  halves = [data.train_batch(3, 8, slice(0, 4)), data.train_batch(3, 8, slice(4, 8))]
  whole = data.train_batch(3, 8)
  for name in whole:
    np.testing.assert_array_equal(np.concatenate([h[name] for h in halves]), whole[name])
  eval_batches = data.eval_batches(8)
  assert sum(b["masked_weights"][:, 0].sum() for b in eval_batches) == len(data.eval_sequences)


def test_hf_datasets_corpus_through_the_local_text_loader(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text("first line of text\n\nsecond line\nthird line\n")
  documents = input_pipeline.load_documents("hf:text", hf_data_files=str(path))
  assert documents == ["first line of text", "second line", "third line"]


def test_folder_corpus_reads_text_files_recursively(tmp_path):
  (tmp_path / "sub").mkdir()
  (tmp_path / "a.txt").write_text("alpha text")
  (tmp_path / "sub" / "b.rst").write_text("beta text")
  (tmp_path / "ignored.bin").write_bytes(b"\xff\xfe")
  assert input_pipeline.load_documents(str(tmp_path)) == ["alpha text", "beta text"]


def test_corpus_fingerprint_changes_with_any_document_and_with_where_documents_split():
  fingerprint = input_pipeline.documents_sha256
  documents = ["alpha text", "beta ü"]
  expected = hashlib.sha256(b"".join(len(d.encode()).to_bytes(8, "little") + d.encode() for d in documents))
  assert fingerprint(documents) == expected.hexdigest()
  assert fingerprint(list(documents)) == fingerprint(documents)
  assert len({fingerprint(documents), fingerprint(["alpha text", "beta u"]), fingerprint(["alpha textbeta ü"]),
              fingerprint(["alpha tex", "tbeta ü"]), fingerprint(documents[::-1]), fingerprint([])}) == 6


def test_validation_split_is_disjoint_and_leaves_the_held_out_split_unchanged():
  documents = [f"document {i}" for i in range(40)]
  train_docs, eval_docs, validation_docs = input_pipeline.split_documents(documents, 0.1, 0.2)
  assert (len(train_docs), len(eval_docs), len(validation_docs)) == (28, 4, 8)
  assert sorted(train_docs + eval_docs + validation_docs) == sorted(documents)
  assert input_pipeline.split_documents(documents, 0.1)[1] == eval_docs
  assert input_pipeline.split_documents(documents, 0.1)[2] == []
  with pytest.raises(ValueError, match="too few to hold out 4 for evaluation and 36 for validation"):
    input_pipeline.split_documents(documents, 0.1, 0.9)
  with pytest.raises(ValueError, match="validation_fraction=-0.1 must lie in"):
    input_pipeline.split_documents(documents, 0.1, -0.1)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("make_corpus, error, message", [
    (lambda d: str(d / "missing"), FileNotFoundError, "does not exist"),
    (lambda d: str(d), FileNotFoundError, "contains no"),
    (lambda d: (d / "empty.txt").write_text("  \n") and str(d / "empty.txt"), ValueError, "no text"),
    (lambda d: (d / "bad.txt").write_bytes(b"ok\nfine\nnot \xff\xfe ok") and str(d / "bad.txt"), ValueError,
     r"bad\.txt, line 3: bytes that are not UTF-8 text .*a corpus file must be UTF-8\. Convert it to UTF-8"),
])
def test_bad_corpus_is_a_clear_error(tmp_path, make_corpus, error, message):
  corpus_dir = tmp_path / "corpus"
  corpus_dir.mkdir()
  with pytest.raises(error, match=message):
    input_pipeline.load_documents(make_corpus(corpus_dir))


def test_vocabulary_errors(tmp_path, shared_vocab):
  workdir = str(tmp_path / "run")
  documents = input_pipeline.load_documents("pydoc")
  input_pipeline.prepare_vocab(micro_config(), workdir, documents)
  with pytest.raises(ValueError, match="a different corpus, vocab_size or vocab_file"):
    input_pipeline.prepare_vocab(micro_config(vocab_size=600), workdir, documents)
  with pytest.raises(ValueError, match="a different corpus"):
    input_pipeline.prepare_vocab(micro_config(vocab_file=shared_vocab), workdir, documents)
  no_mask = tmp_path / "vocab.txt"
  no_mask.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
  with pytest.raises(ValueError, match=r"lacks the special token\(s\) \['\[MASK\]'\]"):
    input_pipeline.load_tokenizer(str(no_mask))
  with pytest.raises(FileNotFoundError, match="vocab_file="):
    input_pipeline.prepare_vocab(micro_config(vocab_file=str(tmp_path / "nope.txt")),
                                 str(tmp_path / "other"), documents)


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=6), "batch_size=6 does not divide by the device count 4"),
    (dict(batch_size=0), "batch_size=0 must be >= 1"),
    (dict(optimizer="adamax"), "optimizer='adamax' is not one of adam, adamw"),
    (dict(learning_rate=float("nan")), "learning_rate=nan must be a finite number >= 0"),
    (dict(warmup_steps=-1), "warmup_steps=-1 must be >= 0"),
    (dict(warmup_steps=7), r"warmup_steps=7 must lie in \[0, total_steps=6\]"),
    (dict(log_every_steps=0), "log_every_steps=0 must be >= 1"),
    (dict(max_predictions_per_seq=0), "max_predictions_per_seq=0 must be >= 1"),
    (dict(halt_after_steps=-2), "halt_after_steps=-2 must be >= 0"),
    (dict(max_seq_len=64), "max_seq_len=64 exceeds model.max_position_embeddings=32"),
])
def test_bad_run_settings_fail_before_the_corpus_is_read(tmp_path, overrides, message):
  config = micro_config(corpus=str(tmp_path / "no_such_corpus"), **overrides)
  with pytest.raises(ValueError, match=message):  # not the corpus's FileNotFoundError: checked first
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_batch_larger_than_the_corpus_is_a_clear_error(tmp_path, shared_vocab):
  with pytest.raises(ValueError, match="exceeds the .* training sequences"):
    train.train_and_evaluate(micro_config(vocab_file=shared_vocab, batch_size=40_000), str(tmp_path))


def test_workdir_that_is_a_file_is_a_clear_error(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("not a directory")
  with pytest.raises(ValueError, match=f"workdir='{path}' is a file, not a directory"):
    train.train_and_evaluate(micro_config(), str(path))


def test_one_text_file_corpus_is_split_into_documents_at_blank_lines(tmp_path, caplog):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("First document,\nits second line.\n\nSecond document.\n  \n\n\nThird one.\n")
  with caplog.at_level("INFO"):
    documents = input_pipeline.load_documents(str(corpus))
  assert documents == ["First document,\nits second line.", "Second document.", "Third one.\n"]
  assert "3 documents" in caplog.text
  train_documents, eval_documents, _ = input_pipeline.split_documents(documents, 0.1)
  assert len(train_documents) == 2 and len(eval_documents) == 1


# --------------------------------------------------------------------------------------------- training
def test_one_training_step_on_tiny(tmp_path):
  config = tiny.get_config()
  config.update(num_train_steps=1, warmup_steps=0, max_eval_sequences=8, eval_batch_size=8,
                save_checkpoints=False, validation_fraction=0.05)
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["steps"] == 1 and not result["diverged"]
  # The validation split is evaluated beside the held-out one, on other documents.
  assert np.isfinite(result["validation_loss"]) and result["validation_loss"] != result["eval_loss"]
  # An untrained model predicts about uniformly: the loss starts near log(vocab size).
  assert abs(result["train_loss"] - np.log(result["vocab_size"])) < 0.5
  assert np.isfinite(result["eval_loss"]) and 0 <= result["eval_accuracy"] <= 1
  records = metrics_lib.read_metrics(result["metrics_path"])
  step_record = next(r for r in records if "train_loss" in r)
  assert {"train_loss", "train_accuracy", "learning_rate", "grad_norm", "tokens_per_s"} <= set(step_record)
  assert any({"eval_loss", "validation_loss"} <= set(r) for r in records)
  assert step_record["learning_rate"] == pytest.approx(config.learning_rate)
  assert os.path.isfile(result["loss_plot"])
  assert os.path.isfile(os.path.join(str(tmp_path), "vocab.txt"))


def test_one_step_in_bfloat16_as_tpu_users_run_it(tmp_path, shared_vocab):
  """model.dtype="bfloat16": the computation in bfloat16, parameters and optimizer state in float32."""
  config = micro_config(vocab_file=shared_vocab, num_train_steps=1, warmup_steps=0, save_checkpoints=False)
  config.model.dtype = "bfloat16"
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["steps"] == 1 and not result["diverged"]
  assert np.isfinite(result["train_loss"]) and abs(result["train_loss"] - np.log(result["vocab_size"])) < 0.5
  assert np.isfinite(result["eval_loss"])
  records = metrics_lib.read_metrics(result["metrics_path"])
  assert np.isfinite(next(r for r in records if "train_loss" in r)["grad_norm"])


def test_held_out_loss_by_token_frequency(tmp_path, shared_vocab):
  config = micro_config(vocab_file=shared_vocab, num_train_steps=1, warmup_steps=0, save_checkpoints=False)
  result = train.train_and_evaluate(config, str(tmp_path))
  buckets = result["frequency_buckets"]
  assert len(buckets) == train.NUM_FREQUENCY_BUCKETS and sum(b["tokens"] for b in buckets) == result["vocab_size"]
  assert sum(b["train_share"] for b in buckets) == pytest.approx(1.0)
  # Frequent tokens are few: bucket 0 holds far fewer vocabulary entries than the rare bucket.
  assert buckets[0]["tokens"] < buckets[-1]["tokens"]
  losses = [result[f"eval_loss_bucket{b}"] for b in range(len(buckets))]
  assert all(np.isfinite(losses[:2]))
  # Every evaluation record holds the losses by bucket.
  records = [r for r in metrics_lib.read_metrics(result["metrics_path"]) if "eval_loss" in r]
  assert set(records[-1]) >= {f"eval_loss_bucket{b}" for b in range(len(buckets))}


def test_frequency_buckets_split_the_training_tokens_into_quarters():
  data = input_pipeline.MlmData.__new__(input_pipeline.MlmData)
  object.__setattr__(data, "train_sequences", np.array([[5] * 50 + [6] * 25 + [7] * 15 + [8] * 10 + [0] * 4]))
  object.__setattr__(data, "pad_id", 0)
  object.__setattr__(data, "vocab_size", 12)
  buckets = data.frequency_buckets(4)
  # Token 5 holds half the tokens (buckets 0-1 start in it: it is bucket 0), 6 starts at 50%, 7 at 75%,
  # 8 at 90%; tokens never seen (and padding) are rare.
  assert buckets.tolist()[5:9] == [0, 2, 3, 3]
  assert all(buckets[t] == 3 for t in (1, 2, 3, 4, 9, 10, 11))


def _single_step_setup(dropout_rate=0.0):
  config = micro_config(optimizer="acclip", learning_rate=1e-2)
  model_config = models.BertConfig(vocab_size=97, dropout_rate=dropout_rate,
                                   attention_dropout_rate=dropout_rate, **{
                                       k: v for k, v in config.model.items() if "dropout" not in k})
  model = models.BertForMaskedLM(model_config)
  tx = optimizers.OptimizerSpec.from_config(config, config.num_train_steps).create()
  rng = np.random.default_rng(0)
  batch = input_pipeline.mask_tokens(
      rng.integers(5, 97, size=(8, 32)).astype(np.int32), rng, mask_id=4, pad_id=0,
      special_ids=(0, 1, 2, 3, 4), random_token_ids=np.arange(5, 97), max_predictions=5)
  batch["masked_weights"][0, 2:] = 0.0  # devices hold different numbers of masked tokens
  tokens = jnp.zeros((1, 32), jnp.int32)
  init = jax.jit(functools.partial(model.init, deterministic=True))
  params = init(jax.random.key(0), tokens, tokens, tokens, tokens[:, :5])["params"]
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                           rng=jax.random.key_data(jax.random.key(1)))
  return model, tx, state, batch


def _run_on_devices(devices, model, tx, state, batch, steps=2):
  def step(state, batch):
    grads, aux = train.train_grads(state, batch, model=model, axis_name=parallel.AXIS_NAME)
    return classification.apply_gradients(tx, state, grads, aux)

  step_fn = jax.pmap(step, axis_name=parallel.AXIS_NAME, devices=devices)
  state = jax.tree.map(lambda x: jnp.stack([x] * len(devices)), state)
  sharded = parallel.shard_batch(batch, len(devices))
  losses = []
  for _ in range(steps):
    state, metrics = step_fn(state, sharded)
    losses.append(np.asarray(metrics["train_loss"]))
  return jax.device_get(state), losses


def test_pmap_on_four_devices_equals_one_device():
  assert jax.local_device_count() == 4
  model, tx, state, batch = _single_step_setup()
  one_state, one_losses = _run_on_devices(jax.local_devices()[:1], model, tx, state, batch)
  four_state, four_losses = _run_on_devices(jax.local_devices(), model, tx, state, batch)
  for one, four in zip(one_losses, four_losses):
    np.testing.assert_allclose(four, np.full(4, one[0]), rtol=1e-5)
  for one, four in zip(jax.tree.leaves(one_state.params), jax.tree.leaves(four_state.params)):
    np.testing.assert_allclose(four, np.broadcast_to(one, four.shape), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(four[0], four[3])  # replicas stay identical


def test_dropout_keys_differ_per_device():
  model, _, state, batch = _single_step_setup(dropout_rate=0.5)
  batch = {name: np.concatenate([value[:2]] * 4) for name, value in batch.items()}  # same rows per device
  loss_fn = jax.pmap(lambda s, b: _per_device_loss(model, s, b), axis_name=parallel.AXIS_NAME)
  state = jax.tree.map(lambda x: jnp.stack([x] * 4), state)
  local_losses = np.asarray(loss_fn(state, parallel.shard_batch(batch)))
  assert len(set(local_losses.tolist())) == 4  # same data, different dropout on every device


def _per_device_loss(model, state, batch):
  rng = parallel.device_rng(jax.random.wrap_key_data(state.rng), state.step)
  logits = train.apply_model(model, state.params, batch, deterministic=False,
                              rngs={"dropout": rng})
  return train.mlm_sums(logits, batch["masked_labels"], batch["masked_weights"])["loss_sum"]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, shared_vocab):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  result = train.train_and_evaluate(micro_config(vocab_file=shared_vocab), workdir)
  return workdir, result


@pytest.fixture(scope="module")
def halted_run(tmp_path_factory, shared_vocab):
  workdir = str(tmp_path_factory.mktemp("halted"))
  result = train.train_and_evaluate(micro_config(vocab_file=shared_vocab, halt_after_steps=3), workdir)
  return workdir, result


def test_resume_gives_exactly_the_uninterrupted_losses(tmp_path, uninterrupted_run, halted_run,
                                                       shared_vocab):
  reference_dir, reference = uninterrupted_run
  halted_dir, halted = halted_run
  assert halted["halted"] and halted["steps"] == 3
  workdir = str(tmp_path / "resumed")
  shutil.copytree(halted_dir, workdir)
  resumed = train.train_and_evaluate(micro_config(vocab_file=shared_vocab), workdir)
  assert resumed["steps"] == 6
  expected = train_losses(reference_dir)
  assert sorted(expected) == [1, 2, 3, 4, 5, 6]
  assert train_losses(workdir) == expected  # bit-exact, steps 1-3 before and 4-6 after the restart
  assert resumed["eval_loss"] == reference["eval_loss"]


def test_sigterm_stops_with_a_checkpoint_and_the_rerun_continues_exactly(tmp_path, monkeypatch,
                                                                        uninterrupted_run, shared_vocab):
  """A preemption notice (SIGTERM to this process during step 3's batch) stops the run after that step
  with a checkpoint there and no evaluation; the rerun resumes and gives the uninterrupted losses."""
  shard_batch, calls, sent = parallel.shard_batch, [], []

  def notify_during_third_step(batch):
    if getattr(signal.getsignal(signal.SIGTERM), "__self__", None).__class__ is training_loop.PreemptionNotice:
      calls.append(1)  # a train step's batch: the handler is installed only while the loop runs
    if len(calls) == 3 and not sent:
      sent.append(os.kill(os.getpid(), signal.SIGTERM))
    return shard_batch(batch)

  before = signal.getsignal(signal.SIGTERM)
  workdir = str(tmp_path / "preempted")
  with monkeypatch.context() as patch:
    patch.setattr(training_loop.parallel, "shard_batch", notify_during_third_step)
    with pytest.raises(training_loop.Preempted, match="at step 3: the newest checkpoint is step 3") as raised:
      train.train_and_evaluate(micro_config(vocab_file=shared_vocab), workdir)
  assert (raised.value.step, raised.value.checkpoint_step) == (3, 3)
  assert isinstance(raised.value, SystemExit) and not isinstance(raised.value, Exception)
  assert signal.getsignal(signal.SIGTERM) is before  # the loop's handler is gone
  assert sorted(train_losses(workdir)) == [1, 2, 3]
  records = metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILENAME))
  assert not any("eval_loss" in r for r in records)
  resumed = train.train_and_evaluate(micro_config(vocab_file=shared_vocab), workdir)
  reference_dir, reference = uninterrupted_run
  assert train_losses(workdir) == train_losses(reference_dir)
  records = metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILENAME))
  assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3, 4, 5, 6]  # no step twice
  assert resumed["eval_loss"] == reference["eval_loss"] and not resumed["halted"]


def test_the_loop_closes_its_checkpoints_and_metrics_on_an_error(tmp_path, monkeypatch, shared_vocab):
  """An exception out of a train step (here the batch's placement, in step 2) leaves the loop with its
  checkpoint manager and metric writer closed, and with the step before it in metrics.jsonl."""
  closed, shard_batch, calls = [], parallel.shard_batch, []

  def fail_in_second_step(batch):
    if getattr(signal.getsignal(signal.SIGTERM), "__self__", None).__class__ is training_loop.PreemptionNotice:
      calls.append(1)
      if len(calls) == 2:
        raise RuntimeError("the device fell over")
    return shard_batch(batch)

  for owner in (checkpoint.CheckpointManager, metrics_lib.MetricWriter):
    monkeypatch.setattr(owner, "close", functools.partialmethod(
        lambda self, close, name: closed.append(name) or close(self), owner.close, owner.__name__))
  monkeypatch.setattr(training_loop.parallel, "shard_batch", fail_in_second_step)
  with pytest.raises(RuntimeError, match="the device fell over"):
    train.train_and_evaluate(micro_config(vocab_file=shared_vocab, log_every_steps=1), str(tmp_path / "run"))
  assert sorted(closed) == ["CheckpointManager", "MetricWriter"]
  records = metrics_lib.read_metrics(str(tmp_path / "run" / metrics_lib.METRICS_FILENAME))
  assert [r["step"] for r in records if "train_loss" in r] == [1]


def test_corrupt_checkpoint_is_an_error_not_a_fresh_start(tmp_path, halted_run, shared_vocab):
  workdir = str(tmp_path / "corrupt")
  shutil.copytree(halted_run[0], workdir)
  state_dir = os.path.join(workdir, "checkpoints", "3", "state")
  for root, _, files in os.walk(state_dir):
    for name in files:
      if not name.startswith(("_", "commit")):
        with open(os.path.join(root, name), "r+b") as f:
          data = bytearray(f.read())
          f.seek(0)
          f.write(bytes(b ^ 0xFF for b in data))
  with pytest.raises(checkpoint.CheckpointError, match="checkpoint step 3 .* cannot restore the state"):
    train.train_and_evaluate(micro_config(vocab_file=shared_vocab), workdir)


def test_mismatched_checkpoint_is_an_error(tmp_path, halted_run, shared_vocab):
  workdir = str(tmp_path / "mismatch")
  shutil.copytree(halted_run[0], workdir)
  config = micro_config(vocab_file=shared_vocab)
  config.model.intermediate_size = 48
  with pytest.raises(checkpoint.CheckpointError, match="different run setup: model differ"):
    train.train_and_evaluate(config, workdir)


def test_train_step_is_compiled_once_across_runs_of_a_learning_rate_sweep(tmp_path, uninterrupted_run,
                                                                           shared_vocab):
  del uninterrupted_run  # compiled the step for micro_config()
  hits_before = train.compiled_steps.cache_info().hits
  result = train.train_and_evaluate(
      micro_config(vocab_file=shared_vocab, learning_rate=3e-3, seed=1, num_train_steps=6,
                   save_checkpoints=False), str(tmp_path))
  assert train.compiled_steps.cache_info().hits == hits_before + 1
  records = metrics_lib.read_metrics(result["metrics_path"])
  assert records[0]["learning_rate"] == pytest.approx(3e-3 * 0.5)  # warm-up step 1 of 2, this run's peak


def test_divergence_keeps_the_last_finite_checkpoint(tmp_path, shared_vocab):
  workdir = str(tmp_path / "diverging")
  config = micro_config(vocab_file=shared_vocab, optimizer="sgd", learning_rate=1000.0, warmup_steps=1,
                        num_train_steps=12, checkpoint_every_steps=2, log_every_steps=10,
                        max_checkpoints_to_keep=2)
  result = train.train_and_evaluate(config, workdir)
  assert result["diverged"] and result["steps"] < 12
  losses = train_losses(workdir)
  assert not np.isfinite(losses[result["steps"]])  # the non-finite loss that stopped it is on record
  with checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    assert manager.latest_step() == result["checkpoint_step"] < result["steps"]
    for step in manager.all_steps():
      assert np.isfinite(losses[step])
  restored = _restore_latest(workdir, config)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored["params"]))
  # A rerun resumes from that finite state, and diverges again without touching it.
  again = train.train_and_evaluate(config, workdir)
  assert again["diverged"] and again["checkpoint_step"] == result["checkpoint_step"]


def _restore_latest(workdir, config):
  """The newest checkpoint's state, restored against the template of a fresh run of `config`."""
  data = input_pipeline.create_datasets(config, workdir)
  model_config = models.BertConfig(vocab_size=data.vocab_size, **config.model)
  tx = optimizers.OptimizerSpec.from_config(config, config.num_train_steps).create()
  params = models.abstract_params(model_config)
  template = {"step": np.zeros((), np.int32), "params": params, "opt_state": jax.eval_shape(tx.init, params),
              "rng": np.zeros(2, np.uint32)}
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
  with checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    return manager.restore_latest(template)[0]


def test_refused_rerun_leaves_config_json_unchanged(tmp_path, uninterrupted_run, shared_vocab):
  workdir = str(tmp_path / "finished")
  shutil.copytree(uninterrupted_run[0], workdir)
  before = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(checkpoint.CheckpointError, match="num_train_steps, optimizer differ"):
    train.train_and_evaluate(micro_config(vocab_file=shared_vocab, num_train_steps=7), workdir)
  assert open(os.path.join(workdir, "config.json")).read() == before


def test_rerunning_a_finished_run_adds_nothing(tmp_path, halted_run, shared_vocab):
  workdir = str(tmp_path / "rerun")
  shutil.copytree(halted_run[0], workdir)
  metrics_path = os.path.join(workdir, metrics_lib.METRICS_FILENAME)
  before = open(metrics_path).read()
  again = train.train_and_evaluate(micro_config(vocab_file=shared_vocab, halt_after_steps=3), workdir)
  assert open(metrics_path).read() == before  # no second evaluation record
  assert again["steps"] == 3 and again["halted"] and not again["diverged"]
  for name in ("train_loss", "train_accuracy", "train_loss_last10", "eval_loss"):
    assert again[name] == halted_run[1][name]


def test_cli_exits_nonzero_when_the_run_diverged(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  program = ("from experiments.common import cli\n"
             "cli.run(lambda config, workdir: {'diverged': True, 'steps': 4, 'checkpoint_step': 2},"
             " workdir_help='', config_help='')\n")
  config_file = os.path.join(os.path.dirname(train.__file__), "configs", "tiny.py")
  process = subprocess.run([sys.executable, "-c", program, f"--config={config_file}",
                            f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=120,
                           cwd=os.path.join(os.path.dirname(__file__), ".."))
  assert process.returncode == 1
  assert "diverged" in process.stderr and "step 2, is the last finite state" in process.stderr


def test_an_optimizer_state_with_an_infinite_statistic_is_not_divergence(tmp_path, shared_vocab):
  """ZClip keeps inf as its threshold while it does not clip: only the loss and parameters decide."""
  result = train.train_and_evaluate(
      micro_config(vocab_file=shared_vocab, optimizer="zclip", checkpoint_every_steps=2), str(tmp_path))
  assert not result["diverged"] and result["checkpoint_step"] == 6
