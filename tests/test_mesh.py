"""The jit + mesh path (`config.parallelism = "mesh"`) gives the pmap path's numbers on 4 fake CPU devices.

For mesh shapes (data, fsdp) = (4, 1), (2, 2) and (1, 4): the same data order and dropout keys, so the same
losses (to 1e-5 relative); params and optimizer state sharded over "fsdp" by `parallel.fsdp_spec`; checkpoints
of sharded state resume under another mesh shape and under pmap with the losses of an uninterrupted run; one
compiled step serves a learning-rate sweep.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments.bert import train as bert_train
from experiments.common import checkpoint
from experiments.common import metrics as metrics_lib
from experiments.common import parallel
from test_bert import micro_config, shared_vocab, train_losses  # pylint: disable=unused-import

MESH_SHAPES = [(4, 1), (2, 2), (1, 4)]
NUM_STEPS = 20


def losses_of(workdir):
  losses = train_losses(workdir)
  return np.array([losses[step] for step in sorted(losses)])


def logits_of(workdir):
  """The logged largest attention logit at each log step (the maximum over every device's rows)."""
  records = metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILENAME))
  return np.array([r["max_attention_logit"] for r in records if "train_loss" in r])


@pytest.fixture(scope="module")
def pmap_run(tmp_path_factory, shared_vocab):
  workdir = str(tmp_path_factory.mktemp("pmap"))
  result = bert_train.train_and_evaluate(micro_config(vocab_file=shared_vocab, num_train_steps=NUM_STEPS),
                                         workdir)
  return result, losses_of(workdir), logits_of(workdir)


def test_fsdp_rule_shards_the_largest_divisible_dimension():
  assert parallel.fsdp_spec((512, 32), 4) == P("fsdp", None)
  assert parallel.fsdp_spec((30, 64), 4) == P(None, "fsdp")  # 30 does not divide by 4
  assert parallel.fsdp_spec((64, 64), 4) == P("fsdp", None)  # equal sizes: the first
  assert parallel.fsdp_spec((31, 33), 4) == P()  # none divides: replicated
  assert parallel.fsdp_spec((64,), 4) == P()  # small: replicated
  assert parallel.fsdp_spec((), 4) == P()
  assert parallel.fsdp_spec((512, 32), 1) == P()


def test_a_mesh_shape_that_does_not_cover_the_devices_names_itself():
  with pytest.raises(ValueError, match=r"mesh_shape=\(3, 1\) must be two sizes"):
    parallel.MeshParallelism((3, 1))


@pytest.mark.parametrize("mesh_shape", MESH_SHAPES)
def test_bert_mesh_losses_equal_pmap(tmp_path, shared_vocab, pmap_run, mesh_shape):
  pmap_result, pmap_losses, pmap_logits = pmap_run
  result = bert_train.train_and_evaluate(
      micro_config(vocab_file=shared_vocab, num_train_steps=NUM_STEPS, parallelism="mesh",
                   mesh_shape=mesh_shape), str(tmp_path))
  np.testing.assert_allclose(losses_of(str(tmp_path)), pmap_losses, rtol=1e-5)
  # The mesh path logs the largest attention logit over the global batch, as pmap does over its devices (under
  # jit the maximum is over the global array, so mesh (1, 4) equal to pmap shows pmap's is the global one too).
  assert len(pmap_logits) == len(pmap_losses) and np.all(pmap_logits > 0)
  np.testing.assert_allclose(logits_of(str(tmp_path)), pmap_logits, rtol=1e-5)
  np.testing.assert_allclose(result["eval_loss"], pmap_result["eval_loss"], rtol=1e-5)


def test_fsdp_state_is_sharded_by_the_rule_and_keeps_it_through_a_step(shared_vocab):
  """Under mesh (1, 4) each large param and its optimizer moments are split over 'fsdp'."""
  config = micro_config(vocab_file=shared_vocab, optimizer="acclip", parallelism="mesh", mesh_shape=(1, 4))
  par = parallel.create(config)
  model_config = bert_train.models.BertConfig(vocab_size=512, **config.model)
  spec = bert_train.optimizers.OptimizerSpec.from_config(config, config.num_train_steps)
  steps = bert_train.compiled_steps(model_config, spec.step_key(), par)
  params = steps.init_params(jax.random.key(0), config.max_seq_len, config.max_predictions_per_seq)
  state = par.place_state(jax.device_get(bert_train.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=spec.create().init(params),
      rng=jax.random.key_data(jax.random.key(1)))))
  rng = np.random.default_rng(0)
  batch = {"input_ids": rng.integers(5, 512, (8, 32)).astype(np.int32),
           "token_type_ids": np.zeros((8, 32), np.int32), "attention_mask": np.ones((8, 32), np.int32),
           "masked_positions": rng.integers(0, 32, (8, 5)).astype(np.int32),
           "masked_labels": rng.integers(5, 512, (8, 5)).astype(np.int32),
           "masked_weights": np.ones((8, 5), np.float32)}
  new_state, _ = steps.train_step(state, par.place_batch(batch))
  sharded = 0
  for leaf in jax.tree.leaves(new_state):
    expected = parallel.fsdp_spec(leaf.shape, 4)
    assert leaf.sharding.is_equivalent_to(jax.sharding.NamedSharding(par.mesh, expected), leaf.ndim)
    sharded += expected != P()
  assert sharded >= 3, "the params, the momentum and the threshold EMA of the large leaves"


def test_sharded_checkpoint_resumes_under_another_mesh_and_under_pmap(tmp_path, shared_vocab, pmap_run):
  """Saved under mesh (2, 2) at step 10, resumed under (1, 4) and under pmap: the uninterrupted losses."""
  _, pmap_losses, _ = pmap_run
  first = micro_config(vocab_file=shared_vocab, num_train_steps=NUM_STEPS, parallelism="mesh", mesh_shape=(2, 2),
                       halt_after_steps=10)
  for name, overrides in [("mesh14", dict(parallelism="mesh", mesh_shape=(1, 4))), ("pmap", {})]:
    workdir = str(tmp_path / name)
    bert_train.train_and_evaluate(first, workdir)
    manager = checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints"))
    assert manager.all_steps() == [10]
    manager.close()
    result = bert_train.train_and_evaluate(
        micro_config(vocab_file=shared_vocab, num_train_steps=NUM_STEPS, **overrides), workdir)
    assert result["steps"] == NUM_STEPS
    np.testing.assert_allclose(losses_of(workdir), pmap_losses, rtol=1e-5)
    records = metrics_lib.read_metrics(os.path.join(workdir, metrics_lib.METRICS_FILENAME))
    assert [r["step"] for r in records if "train_loss" in r] == list(range(1, NUM_STEPS + 1))


def test_mesh_restore_places_each_shard_on_its_device(tmp_path, shared_vocab):
  """Orbax restores the sharded arrays straight into the mesh's shardings (no host copy of the whole)."""
  workdir = str(tmp_path)
  config = micro_config(vocab_file=shared_vocab, num_train_steps=4, parallelism="mesh", mesh_shape=(1, 4))
  bert_train.train_and_evaluate(config, workdir)
  par = parallel.create(config)
  manager = checkpoint.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step, _ = manager.latest_meta()
  template = manager._manager.restore(step)  # pylint: disable=protected-access
  host_state = jax.device_get(template["state"])
  restored, _ = manager.restore_latest(par.restore_template(host_state))
  manager.close()
  for leaf in jax.tree.leaves(restored):
    assert isinstance(leaf, jax.Array)
    assert leaf.sharding.is_equivalent_to(
        jax.sharding.NamedSharding(par.mesh, parallel.fsdp_spec(leaf.shape, 4)), leaf.ndim)


def test_one_compiled_mesh_step_serves_a_learning_rate_sweep(tmp_path, shared_vocab):
  config = micro_config(vocab_file=shared_vocab, num_train_steps=4, parallelism="mesh", mesh_shape=(2, 2),
                        save_checkpoints=False)
  bert_train.train_and_evaluate(config, str(tmp_path / "a"))
  misses = bert_train.compiled_steps.cache_info().misses
  config.update(learning_rate=3e-3, seed=1)
  bert_train.train_and_evaluate(config, str(tmp_path / "b"))
  assert bert_train.compiled_steps.cache_info().misses == misses
