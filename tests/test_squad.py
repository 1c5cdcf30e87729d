"""SQuAD v1.1: reading, sliding-window features, batches, span decoding, the official metric, fine-tuning
(end to end, resumed, diverged)."""
import dataclasses
import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordPiece

from experiments.bert import input_pipeline as bert_input_pipeline
from experiments.bert import train as bert_train
from experiments.bert.configs import tiny
from experiments.common import metrics as metrics_lib
from experiments.squad import evaluation
from experiments.squad import input_pipeline
from experiments.squad import models
from experiments.squad import train
from experiments.squad.configs import tiny as squad_tiny

DATA = os.path.join(os.path.dirname(__file__), "data", "squad_v1_tiny.json")


@pytest.fixture(scope="module")
def examples():
  return input_pipeline.read_squad(DATA)


@pytest.fixture(scope="module")
def vocab_path(examples, tmp_path_factory):
  """A WordPiece vocab.txt trained on the test file, as pre-training trains one."""
  path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
  documents = [e.context for e in examples] + [e.question for e in examples]
  return bert_input_pipeline.train_wordpiece_vocab(documents, vocab_size=400, out_path=path)


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
  return bert_input_pipeline.load_tokenizer(vocab_path)


# --- reading -------------------------------------------------------------------------------------------


def test_read_squad_keeps_every_question_and_answer(examples):
  raw = json.load(open(DATA, encoding="utf-8"))
  qas = [qa for article in raw["data"] for p in article["paragraphs"] for qa in p["qas"]]
  assert [e.qid for e in examples] == [qa["id"] for qa in qas]
  for example, qa in zip(examples, qas):
    assert example.answers == tuple(a["text"] for a in qa["answers"])
    start = example.answer_start
    assert example.context[start:start + len(example.answers[0])] == example.answers[0]


def test_read_squad_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.json"):
    input_pipeline.read_squad(tmp_path / "nowhere.json")
  bad_json = tmp_path / "bad.json"
  bad_json.write_text('{"data": [')
  with pytest.raises(ValueError, match="not a SQuAD v1.1 JSON"):
    input_pipeline.read_squad(bad_json)
  no_context = tmp_path / "no_context.json"
  no_context.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
  with pytest.raises(ValueError, match="'context'"):
    input_pipeline.read_squad(no_context)


def test_answer_start_must_point_at_the_answer():
  def example(start, text="quick brown", context="The quick brown fox."):
    return input_pipeline.SquadExample("q", "What?", context, (text,), start)
  assert input_pipeline.answer_matches_context(example(4))
  assert input_pipeline.answer_matches_context(example(6))  # inside the first word: run_squad.py's word rule
  assert input_pipeline.answer_matches_context(example(4, text="quick  brown"))  # whitespace collapsed
  assert not input_pipeline.answer_matches_context(example(10))  # points at "brown fox."
  assert not input_pipeline.answer_matches_context(example(15))  # runs past the context's end
  assert not input_pipeline.answer_matches_context(example(None))


def test_training_skips_and_counts_questions_whose_answer_start_is_wrong(examples, tokenizer):
  shifted = dataclasses.replace(examples[0], answer_start=len(examples[0].context) - 1)
  features = input_pipeline.build_features([shifted, *examples[1:]], tokenizer, training=True, max_seq_len=64,
                                  doc_stride=16, max_query_len=16)
  reference = input_pipeline.build_features(examples, tokenizer, training=True, max_seq_len=64, doc_stride=16,
                                   max_query_len=16)
  assert features.num_skipped == reference.num_skipped + 1
  assert 0 not in features.example_index and 0 in reference.example_index


# --- features ------------------------------------------------------------------------------------------


def test_answers_map_back_to_their_character_span(examples, tokenizer):
  features = input_pipeline.build_features(examples, tokenizer, max_seq_len=64, doc_stride=16, max_query_len=16,
                                  training=True)
  located = set()
  for row in range(len(features)):
    start, end = features.start_positions[row], features.end_positions[row]
    if start == 0:
      continue
    example = examples[features.example_index[row]]
    text = example.context[features.token_char_start[row, start]:features.token_char_end[row, end]]
    assert text == example.answers[0]
    assert features.token_char_start[row, start] == example.answer_start
    located.add(example.qid)
  assert located == {e.qid for e in examples}


def test_long_context_gives_overlapping_windows(examples, tokenizer):
  max_seq_len, doc_stride = 48, 8
  features = input_pipeline.build_features(examples, tokenizer, max_seq_len=max_seq_len, doc_stride=doc_stride,
                                  max_query_len=16)
  danube = next(i for i, e in enumerate(examples) if e.qid == "riv-1")
  rows = np.flatnonzero(features.example_index == danube)
  assert len(rows) >= 3
  context_tokens = tokenizer.encode(examples[danube].context, add_special_tokens=False)
  window_ids = []
  for row in rows:
    is_context = features.token_char_start[row] >= 0
    assert features.token_type_ids[row][is_context].all()
    assert features.input_ids[row, features.attention_mask[row].sum() - 1] == tokenizer.token_to_id("[SEP]")
    window_ids.append(features.input_ids[row][is_context])
  for previous, following in zip(window_ids, window_ids[1:]):
    # Each window starts doc_stride tokens after the previous one, so they share all but doc_stride tokens.
    np.testing.assert_array_equal(previous[doc_stride:], following[:len(previous) - doc_stride])
  starts = [k * doc_stride for k in range(len(rows))]
  assert starts[-1] + len(window_ids[-1]) == len(context_tokens.ids)
  assert starts[-2] + len(window_ids[-2]) < len(context_tokens.ids)
  # Every context token is the max-context token of exactly one window.
  max_context_chars = np.concatenate([features.token_char_start[row][features.token_is_max_context[row]]
                                      for row in rows])
  np.testing.assert_array_equal(np.sort(max_context_chars), np.asarray(context_tokens.offsets)[:, 0])


def test_question_is_cut_to_max_query_len(examples, tokenizer):
  features = input_pipeline.build_features(examples, tokenizer, max_seq_len=64, doc_stride=16, max_query_len=3)
  question_tokens = (features.token_type_ids == 0) & (features.attention_mask == 1)
  # Every test question has more than 3 tokens: [CLS] + 3 question tokens + [SEP] in each window.
  np.testing.assert_array_equal(question_tokens.sum(axis=1), 3 + 2)


def test_feature_errors_name_the_problem(examples, tokenizer):
  with pytest.raises(ValueError, match="max_seq_len=10"):
    input_pipeline.build_features(examples, tokenizer, max_seq_len=10, max_query_len=8)
  vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[SEP]", "red", "green"])}
  no_cls = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
  with pytest.raises(ValueError, match=r"\[CLS\]"):
    input_pipeline.build_features(examples, tokenizer=no_cls)


# --- batches -------------------------------------------------------------------------------------------


def test_training_batches_read_seeded_epochs_back_to_back(examples, tokenizer):
  features = input_pipeline.build_features(examples, tokenizer, max_seq_len=48, doc_stride=8, max_query_len=16,
                                           training=True)
  data = input_pipeline.SquadData(features, examples, features, seed=3)
  num_windows, batch_size = len(features), 4
  steps = -(-3 * num_windows // batch_size)  # three epochs and a bit
  stream = np.concatenate([data.train_batch(step, batch_size)["input_ids"] for step in range(steps)])
  for epoch in range(3):  # every window once per epoch, in a new order each epoch
    epoch_rows = stream[epoch * num_windows:(epoch + 1) * num_windows]
    np.testing.assert_array_equal(np.unique(epoch_rows, axis=0), np.unique(features.input_ids, axis=0))
  # A batch is a function of (seed, step) only; a process's rows are its slice of the global batch.
  again = data.train_batch(5, batch_size, slice(2, 4))
  np.testing.assert_array_equal(again["input_ids"], data.train_batch(5, batch_size)["input_ids"][2:4])
  np.testing.assert_array_equal(again["weights"], [1.0, 1.0])


def test_dev_batches_cover_every_window_once_with_zero_weight_padding(examples, tokenizer):
  features = input_pipeline.build_features(examples, tokenizer, max_seq_len=48, doc_stride=8, max_query_len=16)
  batches = input_pipeline.SquadData(features, examples, features, seed=0).dev_batches(8)
  weights = np.concatenate([b["weights"] for b in batches])
  assert all(len(b["weights"]) == 8 for b in batches) and weights.sum() == len(features)
  np.testing.assert_array_equal(np.concatenate([b["input_ids"] for b in batches])[weights > 0],
                                features.input_ids)


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="train_file"):
    train.check_config(_squad_config(train_file=""))
  with pytest.raises(ValueError, match="warmup_fraction"):
    train.check_config(_squad_config(warmup_steps=10))
  with pytest.raises(ValueError, match="max_seq_len=10"):
    train.check_config(_squad_config(max_seq_len=10))
  assert train.schedule_steps(_squad_config(num_train_steps=-1, num_epochs=2.0, batch_size=4), 10) == (5, 0)
  assert train.schedule_steps(_squad_config(num_train_steps=40, warmup_fraction=0.1), 10) == (40, 4)


# --- decoding ------------------------------------------------------------------------------------------


def _hand_features(windows):
  """Features over the context 'red green blue' (tokens at chars [0,3), [4,9), [10,14)).

  Each window is [CLS] q [SEP] red green blue; `windows` gives each window's max-context flags of the three
  context tokens.
  """
  rows = len(windows)
  char_start = np.tile([-1, -1, -1, 0, 4, 10], (rows, 1)).astype(np.int32)
  char_end = np.tile([-1, -1, -1, 3, 9, 14], (rows, 1)).astype(np.int32)
  max_context = np.array([[False] * 3 + list(flags) for flags in windows])
  zeros = np.zeros((rows, 6), np.int32)
  features = input_pipeline.SquadFeatures(zeros, zeros, zeros + 1, zeros[:, 0], zeros[:, 0], zeros[:, 0],
                                 char_start, char_end, max_context)
  return [input_pipeline.SquadExample("q", "colour?", "red green blue", ("green",), 4)], features


def test_decoding_picks_best_valid_span():
  examples, features = _hand_features([(True, True, True)])
  start = np.array([[0, 5, 0, 1, 2, 0]], float)  # position 1 is a question token: never a span
  end = np.array([[0, 5, 0, 0, 1, 3.5]], float)
  # Valid (s, e) scores: (3,3)=1 (3,4)=2 (3,5)=4.5 (4,4)=3 (4,5)=5.5 (5,5)=3.5.
  assert evaluation.decode_predictions(examples, features, start, end, max_answer_length=3) == {"q": "green blue"}
  # One token at most: (5,5)=3.5 beats (4,4)=3.
  assert evaluation.decode_predictions(examples, features, start, end, max_answer_length=1) == {"q": "blue"}
  # End before start is never a span: (5,3) would score 12; the best valid one is (5,5)=6.5 over (3,3)=6.
  start = np.array([[0, 0, 0, 0, 0, 6]], float)
  end = np.array([[0, 0, 0, 6, 0, 0.5]], float)
  assert evaluation.decode_predictions(examples, features, start, end) == {"q": "blue"}


def test_decoding_takes_best_window_and_skips_non_max_context_starts():
  examples, features = _hand_features([(True, True, False), (False, False, True)])
  start = np.array([[0, 0, 0, 2, 0, 9], [0, 0, 0, 9, 0, 1]], float)
  end = np.array([[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 3]], float)
  # Window 0: start 5 is not max context there; best (3,5)=3. Window 1: starts only at 5, (5,5)=4 wins.
  assert evaluation.decode_predictions(examples, features, start, end) == {"q": "blue"}
  end[1, 5] = 0.5  # window 1's best is now (5,5)=1.5 < 3
  assert evaluation.decode_predictions(examples, features, start, end) == {"q": "red green blue"}


def test_decoding_matches_brute_force_search(examples, tokenizer):
  features = input_pipeline.build_features(examples, tokenizer, max_seq_len=48, doc_stride=8, max_query_len=16)
  rng = np.random.default_rng(0)
  start, end = rng.normal(size=(2, *features.input_ids.shape))
  max_answer_length = 5
  best = {}
  for row in range(len(features)):
    example = examples[features.example_index[row]]
    context = np.flatnonzero(features.token_char_start[row] >= 0)
    for s in context[features.token_is_max_context[row, context]]:
      for e in context[(context >= s) & (context < s + max_answer_length)]:
        score = start[row, s] + end[row, e]
        if score > best.get(example.qid, (-np.inf,))[0]:
          text = example.context[features.token_char_start[row, s]:features.token_char_end[row, e]]
          best[example.qid] = (score, text)
  predictions = evaluation.decode_predictions(examples, features, start, end, max_answer_length=max_answer_length)
  assert predictions == {qid: text for qid, (_, text) in best.items()}


# --- metric --------------------------------------------------------------------------------------------


def test_normalize_answer():
  assert evaluation.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
  assert evaluation.normalize_answer("An apple a day") == "apple day"
  assert evaluation.normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_f1_and_exact_match_by_hand():
  # 'the cat sat' -> [cat, sat]; 'a cat sat down' -> [cat, sat, down]: P = 2/2, R = 2/3, F1 = 0.8.
  assert evaluation.f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
  # Bag of tokens: [ten, ten] vs [ten] share one token: P = 1/2, R = 1, F1 = 2/3.
  assert evaluation.f1_score("ten ten", "ten") == pytest.approx(2 / 3)
  assert evaluation.f1_score("Volga", "Danube") == 0.0
  assert evaluation.f1_score("the", "a") == 0.0  # both normalise to nothing
  assert evaluation.exact_match_score("The Volga.", "volga")
  assert not evaluation.exact_match_score("Volga river", "volga")


def test_squad_v1_scores_max_over_ground_truths_by_hand():
  examples = [input_pipeline.SquadExample("a", "", "", ("Volga", "the Volga river"), 0),
              input_pipeline.SquadExample("b", "", "", ("ten countries",), 0),
              input_pipeline.SquadExample("c", "", "", ("snow",), 0)]
  predictions = {"a": "volga river", "b": "ten"}  # 'c' unanswered: scores 0
  # a: EM 1 (matches 'the Volga river'), F1 1. b: EM 0, F1: P = 1, R = 1/2 -> 2/3. c: 0.
  # EM = 100 * 1/3 = 33.33; F1 = 100 * (1 + 2/3 + 0) / 3 = 55.56.
  scores = evaluation.squad_v1_scores(examples, predictions)
  assert scores["exact_match"] == pytest.approx(100 / 3)
  assert scores["f1"] == pytest.approx(500 / 9)


def test_span_loss_matches_numpy_reference():
  rng = np.random.default_rng(1)
  start_logits, end_logits = rng.normal(size=(2, 3, 7))
  start_positions, end_positions = np.array([0, 4, 6]), np.array([2, 4, 5])

  def cross_entropy(logits, labels):  # float64: -log softmax(logits)[label]
    log_normaliser = np.log(np.exp(logits).sum(axis=1))
    return log_normaliser - logits[np.arange(len(labels)), labels]

  expected = np.mean(cross_entropy(start_logits, start_positions) + cross_entropy(end_logits, end_positions)) / 2
  loss = models.span_loss(start_logits.astype(np.float32), end_logits.astype(np.float32), start_positions,
                         end_positions)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


# --- fine-tuning ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained_workdir(tmp_path_factory):
  """One MLM step of tiny BERT on a slice of pydoc_data.topics, leaving vocab.txt and a checkpoint."""
  config = tiny.get_config()
  config.update(max_documents=40, vocab_size=300, max_seq_len=64, max_predictions_per_seq=8, batch_size=4,
                eval_batch_size=4, max_eval_sequences=4, num_train_steps=1, warmup_steps=0,
                eval_every_steps=0, plot=False)
  workdir = str(tmp_path_factory.mktemp("pretrained"))
  bert_train.train_and_evaluate(config, workdir)
  return workdir


def _squad_config(**overrides):
  """configs/tiny.py on the test file: 2 steps of 4 windows of 64 tokens, every step logged."""
  config = squad_tiny.get_config()
  config.update(train_file=DATA, dev_file=DATA)
  config.update(overrides)
  return config


def _records(workdir):
  return metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))


@pytest.fixture(scope="module")
def finetuned(pretrained_workdir, tmp_path_factory):
  """(workdir, result) of one uninterrupted 2-step fine-tuning run; later runs reuse its compiled steps."""
  workdir = str(tmp_path_factory.mktemp("finetuned"))
  return workdir, train.finetune(_squad_config(), workdir, pretrained_workdir)


def test_finetune_end_to_end(finetuned, examples):
  workdir, result = finetuned
  assert {"exact_match", "f1", "train_questions_skipped", "train_loss", "eval_loss", "steps", "diverged",
          "halted", "checkpoint_step", "wall_time_s", "steps_per_s"} <= set(result)
  assert result["train_questions_skipped"] == 0
  assert (result["steps"], result["diverged"], result["halted"], result["checkpoint_step"]) == (2, False, False, 2)
  scores = {name: result[name] for name in ("exact_match", "f1")}
  assert all(np.isfinite(v) and 0 <= v <= 100 for v in scores.values())
  assert scores["f1"] >= scores["exact_match"]
  predictions = json.load(open(os.path.join(workdir, "predictions.json"), encoding="utf-8"))
  assert set(predictions) == {e.qid for e in examples}
  contexts = {e.qid: e.context for e in examples}
  assert all(answer in contexts[qid] for qid, answer in predictions.items())  # spans of the context
  assert evaluation.squad_v1_scores(examples, predictions) == scores
  records = _records(workdir)
  train_losses = [r["train_loss"] for r in records if "train_loss" in r]
  assert len(train_losses) == 2 and np.isfinite(train_losses).all()
  # The encoder's largest attention logit of every step, measured in the training step's own forward pass.
  assert [r["max_attention_logit"] > 0 for r in records if "train_loss" in r] == [True, True]
  final = [r for r in records if "dev_f1" in r]
  assert [r["step"] for r in final] == [2]
  assert (final[0]["dev_exact_match"], final[0]["dev_f1"]) == (scores["exact_match"], scores["f1"])
  assert np.isfinite(final[0]["eval_loss"]) and final[0]["eval_loss"] == result["eval_loss"]


def test_finetuning_resumes_from_its_checkpoint(pretrained_workdir, finetuned, tmp_path):
  workdir, uninterrupted = finetuned
  halted = train.finetune(_squad_config(halt_after_steps=1), str(tmp_path), pretrained_workdir)
  assert (halted["steps"], halted["halted"], halted["checkpoint_step"]) == (1, True, 1)
  resumed = train.finetune(_squad_config(), str(tmp_path), pretrained_workdir)
  assert (resumed["steps"], resumed["halted"], resumed["checkpoint_step"]) == (2, False, 2)
  # Step 2 ran from the step-1 checkpoint, with the batch and dropout keys of step 2: the uninterrupted run's.
  losses = [(r["step"], r["train_loss"]) for r in _records(str(tmp_path)) if "train_loss" in r]
  expected = [(r["step"], r["train_loss"]) for r in _records(workdir) if "train_loss" in r]
  assert [step for step, _ in losses] == [1, 2]
  np.testing.assert_allclose([loss for _, loss in losses], [loss for _, loss in expected], rtol=1e-6)
  assert (resumed["exact_match"], resumed["f1"]) == (uninterrupted["exact_match"], uninterrupted["f1"])


def test_divergence_stops_the_run_and_keeps_only_finite_checkpoints(pretrained_workdir, tmp_path):
  config = _squad_config(learning_rate=1e30, checkpoint_every_steps=1)
  result = train.finetune(config, str(tmp_path), pretrained_workdir)
  assert result["diverged"] and not result["halted"]
  assert math.isnan(result["exact_match"]) and math.isnan(result["f1"])
  assert not os.path.exists(tmp_path / "predictions.json")
  manager = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
  assert manager.latest_step() == result["checkpoint_step"] and (result["checkpoint_step"] or 0) < 2
  for step in manager.all_steps():
    saved = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(saved["params"]))
  manager.close()


def test_pretrained_encoder_is_the_checkpoint_s(pretrained_workdir):
  pretrained = train.load_pretrained(_squad_config(), pretrained_workdir)
  assert pretrained.model_config.vocab_size == pretrained.tokenizer.get_vocab_size() == 300
  directory = os.path.join(pretrained_workdir, "checkpoints")
  manager = ocp.CheckpointManager(directory)
  saved = manager.restore(manager.latest_step(),
                          args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  manager.close()
  saved_leaves = jax.tree_util.tree_leaves_with_path(saved["params"]["bert"])
  loaded_leaves = jax.tree_util.tree_leaves_with_path(pretrained.encoder)
  assert [path for path, _ in saved_leaves] == [path for path, _ in loaded_leaves]
  for (_, saved_leaf), (_, loaded_leaf) in zip(saved_leaves, loaded_leaves):
    np.testing.assert_array_equal(saved_leaf, loaded_leaf)


def test_new_head_and_pretrained_encoder_are_the_model_s_params(pretrained_workdir, vocab_path):
  pretrained = train.load_pretrained(_squad_config(), pretrained_workdir)
  tokens = jnp.zeros((1, 4), jnp.int32)
  model = models.BertForQuestionAnswering(pretrained.model_config)
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, tokens, deterministic=True))
  params = {"bert": pretrained.encoder, **models.init_head(pretrained.model_config, jax.random.key(0))}
  assert jax.tree.map(lambda x: (x.shape, x.dtype), params) == jax.tree.map(lambda x: (x.shape, x.dtype),
                                                                            expected["params"])
  # Without a pre-training workdir: the config's sizes and vocabulary, and no encoder to load.
  scratch = train.load_pretrained(_squad_config(vocab_file=vocab_path), None)
  assert scratch.encoder is None and scratch.model_config.hidden_size == tiny.get_config().model.hidden_size
  assert scratch.model_config.vocab_size == scratch.tokenizer.get_vocab_size()


def test_vocab_or_checkpoint_mismatch_is_a_clear_error(pretrained_workdir, vocab_path, tmp_path):
  with pytest.raises(ValueError, match="not the one the checkpoint"):
    train.load_pretrained(_squad_config(vocab_file=vocab_path), pretrained_workdir)
  no_checkpoint = tmp_path / "no_checkpoint"
  no_checkpoint.mkdir()
  shutil.copy(os.path.join(pretrained_workdir, "vocab.txt"), no_checkpoint / "vocab.txt")
  with pytest.raises(FileNotFoundError, match="No pre-training checkpoint"):
    train.load_pretrained(_squad_config(), str(no_checkpoint))
  with pytest.raises(FileNotFoundError, match="vocab"):
    train.load_pretrained(_squad_config(), str(tmp_path / "nowhere"))


@pytest.mark.parametrize("inside", ["", "squad"])
def test_finetuning_into_the_pretraining_workdir_is_refused(pretrained_workdir, inside):
  metrics_path = os.path.join(pretrained_workdir, "metrics.jsonl")
  before = open(metrics_path).read()
  with pytest.raises(ValueError, match="pre-training workdir .* Give the fine-tuning run a workdir of its own"):
    train.finetune(_squad_config(), os.path.join(pretrained_workdir, inside), pretrained_workdir)
  assert open(metrics_path).read() == before
  assert not os.path.exists(os.path.join(pretrained_workdir, "squad"))


def test_mesh_finetuning_equals_pmap(pretrained_workdir, finetuned, tmp_path):
  """The jit + mesh path (mesh (2, 2): params and state sharded over fsdp) gives the pmap run's numbers."""
  workdir, result = finetuned
  mesh = train.finetune(_squad_config(parallelism="mesh", mesh_shape=(2, 2)), str(tmp_path), pretrained_workdir)
  losses = {name: [r["train_loss"] for r in _records(path) if "train_loss" in r]
            for name, path in [("pmap", workdir), ("mesh", str(tmp_path))]}
  np.testing.assert_allclose(losses["mesh"], losses["pmap"], rtol=1e-5)
  np.testing.assert_allclose(mesh["eval_loss"], result["eval_loss"], rtol=1e-5)
  assert (mesh["exact_match"], mesh["f1"]) == (result["exact_match"], result["f1"])
