"""Hugging Face BERT checkpoints in and out (experiments.bert.hf_checkpoint), proven equal to the reference.

Default suite, no transformers or torch: against the reference outputs that tests/data/make_hf_reference.py
wrote once with transformers (versions in tests/data/hf_reference_versions.json) — HF's MLM logits on a
padded batch with token types, and HF's tokenizer.json, the Rust tokenizer BertTokenizerFast runs. Under
`pytest -m oracle -n0` (transformers 4.x and torch installed): the same equalities live, on fresh random
models (2 layers, and BERT-base's shapes), through PyTorch and Flax checkpoints, and back after export.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from experiments.bert import hf_checkpoint
from experiments.bert import input_pipeline
from experiments.bert import models
from experiments.bert import pretrained
from experiments.bert import train as bert_train
from experiments.bert.configs import tiny as bert_tiny
from experiments.squad import models as squad_models
from experiments.squad import train as squad_train
from experiments.squad.configs import tiny as squad_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
TINY = os.path.join(DATA, "hf_bert_tiny")  # a random HF BertForMaskedLM: 2 layers, hidden 32, vocabulary 512
CASED_TOKENIZER = os.path.join(DATA, "hf_tokenizer_cased")
REFERENCE = os.path.join(DATA, "hf_bert_tiny_reference.npz")
SQUAD = os.path.join(DATA, "squad_v1_tiny.json")
TOLERANCE = 1e-5  # float32, on logits of size ~1


def mlm_logits(config, params, input_ids, token_type_ids, attention_mask):
  """Our logits at every position [B, L, V]."""
  positions = np.broadcast_to(np.arange(input_ids.shape[1]), input_ids.shape)
  return np.asarray(models.BertForMaskedLM(config).apply(
      {"params": params}, input_ids, token_type_ids, attention_mask, positions, deterministic=True))


def assert_logits_equal(ours, reference, attention_mask):
  """Equal at the real tokens. HF computes padded positions too, attending to the real keys, while ours
  masks them as queries as well: their values differ and nothing reads them."""
  real = attention_mask > 0
  np.testing.assert_allclose(ours[real], reference[real], rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def reference():
  with np.load(REFERENCE) as data:
    return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def imported_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("hf_bert_tiny_import"))
  summary = hf_checkpoint.main(["import", "--checkpoint", TINY, "--workdir", workdir])
  return workdir, summary


# --- the reference outputs --------------------------------------------------------------------------------


def test_reference_batch_has_padding_and_both_token_types(reference):
  assert (reference["attention_mask"] == 0).any() and (reference["attention_mask"] == 1).all(axis=0)[:5].all()
  assert set(np.unique(reference["token_type_ids"][reference["attention_mask"] > 0])) == {0, 1}


def test_load_hf_gives_hfs_logits(reference):
  config, params, vocab = hf_checkpoint.load_hf(TINY)
  assert (config.num_layers, config.hidden_size, config.num_heads, config.vocab_size) == (2, 32, 4, 512)
  assert vocab == hf_checkpoint.Vocabulary(os.path.join(TINY, "vocab.txt"), lowercase=True)
  ours = mlm_logits(config, params, reference["input_ids"], reference["token_type_ids"],
                    reference["attention_mask"])
  assert_logits_equal(ours, reference["logits"], reference["attention_mask"])


def test_our_tokenizer_encodes_the_reference_batch_as_hf(reference):
  tokenizer = hf_checkpoint.load_hf(TINY)[2].tokenizer()
  cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
  for row, (question, context) in enumerate(zip(reference["questions"], reference["contexts"])):
    ids = [cls_id, *tokenizer.encode(question, add_special_tokens=False).ids, sep_id,
           *tokenizer.encode(context, add_special_tokens=False).ids, sep_id]
    real = reference["attention_mask"][row] > 0
    assert ids == reference["input_ids"][row][real].tolist()


@pytest.mark.parametrize("folder, lowercase", [(TINY, True), (CASED_TOKENIZER, False)])
def test_tokenizer_ids_are_hfs_on_all_of_pydoc(folder, lowercase):
  """Ours on vocab.txt vs the tokenizer.json BertTokenizerFast saved for it, on every pydoc_data topic."""
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  vocab = hf_checkpoint.read_vocabulary(folder)
  assert vocab.lowercase == lowercase
  documents = input_pipeline.load_documents("pydoc")
  ours = vocab.tokenizer().encode_batch(documents, add_special_tokens=False)
  hf = Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).encode_batch(
      documents, add_special_tokens=False)
  assert [e.ids for e in ours] == [e.ids for e in hf]


# --- import, export ---------------------------------------------------------------------------------------


def test_import_writes_a_pretraining_workdir(imported_workdir, reference):
  workdir, summary = imported_workdir
  assert summary["unused_weights"] == [] and summary["lowercase"] is True
  with open(os.path.join(TINY, "vocab.txt"), "rb") as f, open(os.path.join(workdir, "vocab.txt"), "rb") as g:
    assert f.read() == g.read()
  assert pretrained.vocabulary_lowercase(workdir) is True
  _, meta = pretrained.latest_meta(pretrained.checkpoint_dir(workdir))
  config = models.BertConfig(**meta["signature"]["model"])
  assert config == hf_checkpoint.load_hf(TINY)[0]
  params = pretrained.restore_params(pretrained.checkpoint_dir(workdir), models.abstract_params(config),
                                     meta["signature"]["optimizer"])
  ours = mlm_logits(config, params, reference["input_ids"], reference["token_type_ids"],
                    reference["attention_mask"])
  assert_logits_equal(ours, reference["logits"], reference["attention_mask"])


def test_import_refuses_a_workdir_with_checkpoints(imported_workdir):
  with pytest.raises(ValueError, match="already holds checkpoints"):
    hf_checkpoint.import_checkpoint(TINY, imported_workdir[0])


def test_export_gives_back_the_same_folder(imported_workdir, tmp_path):
  summary = hf_checkpoint.main(["export", "--workdir", imported_workdir[0], "--out", str(tmp_path)])
  assert summary["architecture"] == "BertForMaskedLM"
  original, exported = load_file(os.path.join(TINY, "model.safetensors")), load_file(
      os.path.join(tmp_path, "model.safetensors"))
  assert sorted(exported) == sorted(original)  # every weight of HF's BertForMaskedLM, none more
  for name in original:
    np.testing.assert_array_equal(exported[name], original[name], err_msg=name)
  with open(os.path.join(TINY, "config.json")) as f, open(os.path.join(tmp_path, "config.json")) as g:
    original_config, exported_config = json.load(f), json.load(g)
  assert hf_checkpoint.config_from_hf(exported_config) == hf_checkpoint.config_from_hf(original_config)
  assert {k: exported_config[k] for k in ("architectures", "hidden_act", "pad_token_id")} == {
      k: original_config[k] for k in ("architectures", "hidden_act", "pad_token_id")}
  assert hf_checkpoint.read_vocabulary(str(tmp_path)).lowercase is True


def test_old_names_and_unused_weights(tmp_path):
  """gamma/beta LayerNorm names, a tied decoder stored, a pooler and next-sentence head: read and reported."""
  weights = load_file(os.path.join(TINY, "model.safetensors"))
  renamed = {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"):
             value for name, value in weights.items()}
  extra = {"bert.pooler.dense.weight": np.ones((32, 32), np.float32),
           "bert.pooler.dense.bias": np.zeros(32, np.float32),
           "cls.seq_relationship.weight": np.ones((2, 32), np.float32),
           "cls.predictions.decoder.weight": weights["bert.embeddings.word_embeddings.weight"]}
  folder = tmp_path / "old"
  shutil.copytree(TINY, folder)
  save_file({**renamed, **extra}, str(folder / "model.safetensors"))
  summary = hf_checkpoint.import_checkpoint(str(folder), str(tmp_path / "workdir"))
  assert summary["unused_weights"] == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                                       "cls.seq_relationship.weight"]
  jax.tree.map(np.testing.assert_array_equal, hf_checkpoint.load_hf(str(folder))[1],
               hf_checkpoint.load_hf(TINY)[1])
  untied = dict(extra, **{"cls.predictions.decoder.weight": np.zeros((512, 32), np.float32)})
  save_file({**renamed, **untied}, str(folder / "model.safetensors"))
  with pytest.raises(ValueError, match="untied decoder"):
    hf_checkpoint.load_hf(str(folder))


def test_missing_weights_are_named(tmp_path):
  weights = load_file(os.path.join(TINY, "model.safetensors"))
  folder = tmp_path / "missing"
  shutil.copytree(TINY, folder)
  dropped = ("cls.predictions.bias", "bert.encoder.layer.1.output.dense.weight")
  save_file({k: v for k, v in weights.items() if k not in dropped}, str(folder / "model.safetensors"))
  with pytest.raises(ValueError, match="lacks 2 weight.*: bert.encoder.layer.1.output.dense.weight, "
                                       "cls.predictions.bias"):
    hf_checkpoint.load_hf(str(folder))


def _truncated(path, keep=0.5):
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])


def _not_utf8(path):
  path.write_bytes(path.read_bytes() + b"\xff\xfe\n")


@pytest.mark.parametrize("damage, message", [
    (lambda folder: _truncated(folder / "config.json"), r"config\.json, line \d+: not valid JSON"),
    (lambda folder: _truncated(folder / "model.safetensors"), r"model\.safetensors"),
    (lambda folder: _not_utf8(folder / "vocab.txt"), r"vocab\.txt, line \d+: bytes that are not UTF-8"),
])
def test_every_damaged_file_of_a_hugging_face_folder_is_named(tmp_path, damage, message):
  folder = tmp_path / "damaged"
  shutil.copytree(TINY, folder)
  damage(folder)
  with pytest.raises(ValueError, match=message) as raised:
    hf_checkpoint.load_hf(str(folder))
  assert str(folder) in str(raised.value)


def test_a_damaged_vocabulary_of_an_imported_workdir_is_named(imported_workdir, tmp_path):
  workdir = str(tmp_path / "imported")
  shutil.copytree(imported_workdir[0], workdir)
  with open(os.path.join(workdir, "vocab_info.json"), "w") as f:
    f.write('{"lowercase": tr')
  with pytest.raises(ValueError, match=rf"{os.path.join(workdir, 'vocab_info.json')}, line 1: not valid JSON"):
    pretrained.vocabulary_lowercase(workdir)


@pytest.mark.parametrize("key, value, message", [
    ("hidden_act", "gelu_new", "hidden_act='gelu_new' is not supported.*exact erf GELU"),
    ("position_embedding_type", "relative_key", "position_embedding_type='relative_key' is not supported"),
    ("model_type", "roberta", "only BERT"),
    ("hidden_size", 48, "wrong shape"),
    ("vocab_size", 600, "holds 512 tokens but config.json says vocab_size=600"),
])
def test_unsupported_or_inconsistent_configs_are_clear_errors(tmp_path, key, value, message):
  folder = tmp_path / "bad"
  shutil.copytree(TINY, folder)
  with open(folder / "config.json") as f:
    hf_config = json.load(f)
  hf_config[key] = value
  with open(folder / "config.json", "w") as f:
    json.dump(hf_config, f)
  with pytest.raises(ValueError, match=message):
    hf_checkpoint.load_hf(str(folder))


# --- continued pre-training from the imported checkpoint ---------------------------------------------------


def _continued_pretraining_config(workdir, **overrides):
  """configs/tiny.py with the imported model's sizes and vocabulary, 1 step on a slice of pydoc."""
  config = bert_tiny.get_config()
  config.model.update(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=64)
  config.update(init_from=workdir, vocab_file=os.path.join(workdir, "vocab.txt"), max_documents=30,
                max_seq_len=32, max_predictions_per_seq=5, batch_size=4, eval_batch_size=4, max_eval_sequences=4,
                num_train_steps=1, warmup_steps=0, plot=False)
  config.update(overrides)
  return config


def test_bert_driver_continues_pretraining_from_an_imported_checkpoint(imported_workdir, tmp_path):
  """At learning rate 0 (and so no weight decay either), the run's final weights are the imported ones."""
  workdir = imported_workdir[0]
  result = bert_train.train_and_evaluate(_continued_pretraining_config(workdir, learning_rate=0.0),
                                         str(tmp_path / "continued"))
  assert (result["steps"], result["diverged"]) == (1, False) and np.isfinite(result["eval_loss"])
  config = hf_checkpoint.load_hf(TINY)[0]
  final = pretrained.restore_params(
      pretrained.checkpoint_dir(str(tmp_path / "continued")), models.abstract_params(config),
      pretrained.latest_meta(pretrained.checkpoint_dir(str(tmp_path / "continued")))[1]["signature"]["optimizer"])
  jax.tree.map(np.testing.assert_array_equal, final, hf_checkpoint.load_hf(TINY)[1])


@pytest.mark.parametrize("overrides, message", [
    (dict(model=dict(num_layers=1)), "holds a model with model.num_layers=2; this run has model.num_layers=1"),
    (dict(vocab_file=""), "set vocab_file='.*hf_bert_tiny_import.*/vocab.txt'"),
    (dict(lowercase=False), "reads lower-cased text: set lowercase=True"),
])
def test_continued_pretraining_names_what_does_not_fit(imported_workdir, overrides, message):
  config = _continued_pretraining_config(imported_workdir[0])
  config.model.update(overrides.pop("model", {}))
  config.update(overrides)
  with pytest.raises(ValueError, match=message):
    bert_train.check_config(config)


# --- SQuAD from the imported checkpoint -------------------------------------------------------------------


def test_squad_fine_tunes_from_an_imported_checkpoint_and_exports(imported_workdir, tmp_path):
  """The user's commands: import, `experiments.squad.main --pretrained_workdir`, export."""
  workdir = imported_workdir[0]
  command = [sys.executable, "-m", "experiments.squad.main", "--config", squad_tiny.__file__,
             "--workdir", str(tmp_path / "squad"), "--pretrained_workdir", workdir,
             f"--config.train_file={SQUAD}", f"--config.dev_file={SQUAD}"]
  process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
  assert process.returncode == 0, process.stderr[-3000:]
  result = json.loads(process.stdout[process.stdout.index("{"):])
  assert (result["steps"], result["diverged"]) == (2, False)
  assert np.isfinite(result["train_loss"]) and 0 <= result["exact_match"] <= result["f1"] <= 100
  assert os.path.isfile(result["predictions_path"])
  # The fine-tuned model (encoder and span head) exports as a BertForQuestionAnswering.
  summary = hf_checkpoint.export_checkpoint(str(tmp_path / "squad"), str(tmp_path / "hf_squad"))
  assert summary["architecture"] == "BertForQuestionAnswering"
  weights = load_file(str(tmp_path / "hf_squad" / "model.safetensors"))
  assert {"qa_outputs.weight", "qa_outputs.bias"} <= set(weights) and not any("cls." in k for k in weights)
  params, unused = hf_checkpoint.params_from_hf(weights, hf_checkpoint.load_hf(TINY)[0], head="qa")
  assert unused == [] and params["qa_outputs"]["kernel"].shape == (32, 2)
  # Cased fine-tuning of an uncased import is refused.
  config = squad_tiny.get_config()
  config.update(train_file=SQUAD, dev_file=SQUAD, lowercase=False)
  with pytest.raises(ValueError, match="reads lower-cased text; fine-tune with --config.lowercase=True"):
    squad_train.load_pretrained(config, workdir)


def test_qa_params_round_trip():
  config = hf_checkpoint.load_hf(TINY)[0]
  tokens = np.zeros((1, 4), np.int32)
  shapes = jax.eval_shape(lambda: squad_models.BertForQuestionAnswering(config).init(
      jax.random.key(0), tokens, tokens, tokens + 1, deterministic=True))["params"]
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
  weights = hf_checkpoint.params_to_hf(params, config)
  assert weights["qa_outputs.weight"].shape == (2, 32)  # PyTorch's Linear layout [out, in]
  back, unused = hf_checkpoint.params_from_hf(weights, config, head="qa")
  assert unused == []
  jax.tree.map(np.testing.assert_array_equal, back, params)


# --- live against transformers (pytest -m oracle -n0) -------------------------------------------------------


def _hf_batch(reference):
  """HF's batch of the reference texts, made live by BertTokenizerFast."""
  transformers = pytest.importorskip("transformers")
  tokenizer = transformers.BertTokenizerFast.from_pretrained(TINY)
  return dict(tokenizer(list(reference["questions"]), list(reference["contexts"]), padding=True,
                        return_tensors="np"))


def _random_torch_model(folder, **sizes):
  """A random HF BertForMaskedLM (every parameter perturbed off its 0/1 init) saved to `folder`."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(1)
  model = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=512, **sizes)).eval()
  with torch.no_grad():
    for parameter in model.parameters():
      parameter.add_(0.02 * torch.randn_like(parameter))
  model.save_pretrained(folder, safe_serialization=True)
  for name in ("vocab.txt", "tokenizer_config.json"):
    shutil.copy(os.path.join(TINY, name), os.path.join(folder, name))
  return model


def _torch_logits(model, batch):
  torch = pytest.importorskip("torch")
  with torch.no_grad():
    return model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in batch.items()}).logits.numpy()


TINY_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64)
BASE_SIZES = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                  max_position_embeddings=512)


@pytest.mark.oracle
@pytest.mark.parametrize("sizes", [TINY_SIZES, BASE_SIZES], ids=["tiny", "base"])
def test_oracle_pytorch_checkpoint_in_and_out(sizes, reference, tmp_path):
  transformers = pytest.importorskip("transformers")
  model = _random_torch_model(str(tmp_path / "hf"), **sizes)
  batch = _hf_batch(reference)
  expected = _torch_logits(model, batch)
  workdir = str(tmp_path / "workdir")
  hf_checkpoint.import_checkpoint(str(tmp_path / "hf"), workdir)
  config, params, _ = hf_checkpoint.load_hf(str(tmp_path / "hf"))
  ours = mlm_logits(config, params, batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
  print(f"{sizes['num_hidden_layers']} layers: max |ours - HF| = "
        f"{np.abs(ours - expected)[batch['attention_mask'] > 0].max():.2e}")
  assert_logits_equal(ours, expected, batch["attention_mask"])

  hf_checkpoint.export_checkpoint(workdir, str(tmp_path / "exported"))
  reloaded, info = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "exported"),
                                                                output_loading_info=True)
  assert not any(info.values()), info  # no missing, unexpected or mismatched weights
  assert_logits_equal(_torch_logits(reloaded.eval(), batch), expected, batch["attention_mask"])
  flax_model = transformers.FlaxBertForMaskedLM.from_pretrained(str(tmp_path / "exported"))
  assert_logits_equal(np.asarray(flax_model(**batch).logits), expected, batch["attention_mask"])


@pytest.mark.oracle
def test_oracle_flax_checkpoint_in(reference, tmp_path):
  transformers = pytest.importorskip("transformers")
  model = transformers.FlaxBertForMaskedLM(transformers.BertConfig(vocab_size=512, **TINY_SIZES), seed=2)
  model.params = jax.tree.map(lambda x: x + 0.02 * np.random.default_rng(3).standard_normal(x.shape, np.float32),
                              model.params)
  model.save_pretrained(str(tmp_path))
  for name in ("vocab.txt", "tokenizer_config.json"):
    shutil.copy(os.path.join(TINY, name), tmp_path / name)
  assert os.path.isfile(tmp_path / hf_checkpoint.FLAX_MSGPACK)
  batch = _hf_batch(reference)
  expected = np.asarray(model(**batch).logits)
  config, params, _ = hf_checkpoint.load_hf(str(tmp_path))
  assert_logits_equal(mlm_logits(config, params, batch["input_ids"], batch["token_type_ids"],
                                 batch["attention_mask"]), expected, batch["attention_mask"])


@pytest.mark.oracle
@pytest.mark.parametrize("folder, lowercase", [(TINY, True), (CASED_TOKENIZER, False)])
def test_oracle_tokenizer_ids_are_bert_tokenizer_fasts(folder, lowercase):
  transformers = pytest.importorskip("transformers")
  hf = transformers.BertTokenizerFast(os.path.join(folder, "vocab.txt"), do_lower_case=lowercase)
  ours = hf_checkpoint.read_vocabulary(folder).tokenizer()
  documents = input_pipeline.load_documents("pydoc")
  hf_ids = hf(documents, add_special_tokens=False)["input_ids"]
  assert [e.ids for e in ours.encode_batch(documents, add_special_tokens=False)] == hf_ids


@pytest.mark.oracle
def test_oracle_committed_reference_is_transformers_output(reference):
  """The committed logits are what transformers gives now on the committed checkpoint."""
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("torch")
  model = transformers.BertForMaskedLM.from_pretrained(TINY).eval()
  batch = {k: reference[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
  assert_logits_equal(_torch_logits(model, batch), reference["logits"], reference["attention_mask"])
