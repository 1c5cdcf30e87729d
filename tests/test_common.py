"""The shared experiment layer: optimizer factory, pmap plumbing, checkpoints, metric writers."""
import json
import math
import os
import shutil
import struct
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.common import checkpoint
from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel


def optimizer_config(**overrides):
  config = optimizers.default_optimizer_config()
  config.update(overrides)
  return config


def toy_params():
  return {"dense": {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([0.1, -0.2])},
          "attention": {"bias": jnp.ones((2, 3))},  # a 2-D per-head bias: not decayed
          "norm": {"scale": jnp.ones(2)}}


def toy_grads(step, params=None):
  return jax.tree.map(lambda p: jnp.sin(p * (step + 1.0)) + 0.3, toy_params() if params is None else params)


# ------------------------------------------------------------------------------------------ optimizers
@pytest.mark.parametrize("mode", ["decoupled", "independent"])  # coupled: the L2 reference test below
@pytest.mark.parametrize("name", optimizers.REGISTRY)
def test_every_optimizer_builds_and_steps(name, mode):
  tx = optimizers.OptimizerSpec.from_config(optimizer_config(
      optimizer=name, weight_decay=0.01, weight_decay_mode=mode, warmup_steps=2, grad_clip_norm=1.0), 10).create()
  params, extra = toy_params(), {}
  if optimizers.REGISTRY[name].caps_attention_logits:  # QK-clip needs an attention layer and its logits
    heads = {"kernel": jnp.ones((2, 1, 2))}
    params = {**params, "mha": {"query": heads, "key": heads}}
    extra = {"max_logits": {"mha": jnp.array([1e3])}}
  state = tx.init(params)
  updates, state = jax.jit(tx.update)(toy_grads(0, params), state, params, **extra)
  leaves = jax.tree.leaves(updates)
  assert all(bool(jnp.all(jnp.isfinite(u))) for u in leaves)
  assert any(bool(jnp.any(u != 0)) for u in leaves)
  assert float(optimizers.current_learning_rate(state)) == pytest.approx(1e-3 * 0.5)


def test_unknown_names_are_clear_errors():
  with pytest.raises(ValueError, match="optimizer='adagrad' is not one of adam, adamw, acclip, "
                                       "acclip_ports, lamb, sgd, gclip, cclip, zclip, adagc, autoclip, spam"):
    optimizers.OptimizerSpec.from_config(optimizer_config(optimizer="adagrad"), 10).create()
  with pytest.raises(ValueError, match="optimizer='skipstep' is now called 'skip_step_on_spikes'"):
    optimizers.OptimizerSpec.from_config(optimizer_config(optimizer="skipstep"), 10).create()
  with pytest.raises(ValueError, match="learning_rate_decay='step' is not one of linear, cosine"):
    optimizers.OptimizerSpec.from_config(optimizer_config(learning_rate_decay="step"), 10).create()
  with pytest.raises(ValueError, match="weight_decay_mode='l2'"):
    optimizers.OptimizerSpec.from_config(optimizer_config(weight_decay_mode="l2"), 10).create()
  with pytest.raises(ValueError, match=r"warmup_steps=20 must lie in \[0, total_steps=10\]"):
    optimizers.OptimizerSpec.from_config(optimizer_config(warmup_steps=20), 10).create()


def reference_scale(k, warmup, total, decay, final):
  if k < warmup:
    return (k + 1) / warmup
  u = min(max((k - warmup) / max(total - warmup, 1), 0.0), 1.0)
  shape = {"linear": 1 - u, "cosine": 0.5 * (1 + math.cos(math.pi * u)), "constant": 1.0}[decay]
  return final + (1 - final) * shape


@pytest.mark.parametrize("decay", optimizers.LEARNING_RATE_DECAYS)
@pytest.mark.parametrize("warmup, final", [(0, 0.0), (3, 0.1)])
def test_learning_rate_schedule_matches_formula(decay, warmup, final):
  schedule = optimizers.learning_rate_scale_schedule(warmup, 12, decay, final)
  for k in range(14):
    assert float(schedule(k)) == pytest.approx(reference_scale(k, warmup, 12, decay, final), abs=1e-6)


def test_one_compiled_update_serves_every_learning_rate():
  params = toy_params()
  grads = toy_grads(0)
  base = optimizer_config(optimizer="sgd", momentum=0.0, warmup_steps=0, learning_rate_decay="constant")
  update = jax.jit(optimizers.OptimizerSpec.from_config(base, 10).create().update)
  results = {}
  for learning_rate in (0.1, 0.4):
    tx = optimizers.OptimizerSpec.from_config(optimizer_config(**{**base.to_dict(), "learning_rate": learning_rate}),
                                     10).create()
    results[learning_rate] = update(grads, tx.init(params), params)[0]
  assert update._cache_size() == 1  # pylint: disable=protected-access
  for g, u1, u4 in zip(jax.tree.leaves(grads), jax.tree.leaves(results[0.1]), jax.tree.leaves(results[0.4])):
    np.testing.assert_allclose(u1, -0.1 * np.asarray(g), rtol=1e-6)
    np.testing.assert_allclose(u4, -0.4 * np.asarray(g), rtol=1e-6)


def test_weight_decay_mask_spares_biases_and_norm_parameters():
  mask = optimizers.weight_decay_mask(toy_params())
  assert mask == {"dense": {"kernel": True, "bias": False}, "attention": {"bias": False},
                  "norm": {"scale": False}}


def run_steps(tx, num_steps=3):
  params = toy_params()
  state = tx.init(params)
  trajectory = []
  for step in range(num_steps):
    updates, state = tx.update(toy_grads(step), state, params)
    params = optax.apply_updates(params, updates)
    trajectory.append(params)
  return trajectory


def test_adam_decoupled_decay_matches_numpy_reference():
  lr, wd, b1, b2, eps = 0.05, 0.1, 0.9, 0.999, 1e-8
  tx = optimizers.OptimizerSpec.from_config(optimizer_config(
      optimizer="adam", learning_rate=lr, weight_decay=wd, warmup_steps=0, learning_rate_decay="linear",
      b1=b1, b2=b2, eps=eps), 4).create()
  ours = run_steps(tx)
  mask = optimizers.weight_decay_mask(toy_params())
  for path_name in [("dense", "kernel"), ("dense", "bias"), ("norm", "scale")]:
    x = np.asarray(toy_params()[path_name[0]][path_name[1]], np.float64)
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    decayed = mask[path_name[0]][path_name[1]]
    for step in range(3):
      g = np.sin(np.asarray(toy_params()[path_name[0]][path_name[1]], np.float64) * (step + 1)) + 0.3
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * g * g
      m_hat, v_hat = m / (1 - b1 ** (step + 1)), v / (1 - b2 ** (step + 1))
      lr_k = lr * (1 - step / 4)
      x = x - lr_k * (m_hat / (np.sqrt(v_hat) + eps) + (wd * x if decayed else 0.0))
      # float32's 1 - b2**k keeps about 4 digits, hence the tolerance
      np.testing.assert_allclose(ours[step][path_name[0]][path_name[1]], x, rtol=1e-4, atol=2e-6)


def test_adamw_equals_optax_adamw_with_the_same_schedule():
  lr, wd = 0.05, 0.1
  ours = run_steps(optimizers.OptimizerSpec.from_config(optimizer_config(
      optimizer="adamw", learning_rate=lr, weight_decay=wd, warmup_steps=2), 6).create(), num_steps=4)
  schedule = optax.join_schedules(
      [optax.linear_schedule(lr / 2, lr, 1), optax.linear_schedule(lr, 0.0, 4)], [2])
  reference = run_steps(optax.adamw(schedule, weight_decay=wd, mask=optimizers.weight_decay_mask),
                        num_steps=4)
  for ours_params, reference_params in zip(ours, reference):
    for a, b in zip(jax.tree.leaves(ours_params), jax.tree.leaves(reference_params)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_sgd_coupled_l2_and_preclipping_match_numpy_reference():
  lr, wd, mu, clip = 0.1, 0.01, 0.9, 0.5
  ours = run_steps(optimizers.OptimizerSpec.from_config(optimizer_config(
      optimizer="sgd", learning_rate=lr, weight_decay=wd, weight_decay_mode="coupled", momentum=mu,
      nesterov=False, grad_clip_norm=clip, learning_rate_decay="constant"), 3).create())
  params = jax.tree.map(lambda p: np.asarray(p, np.float64), toy_params())
  mask = optimizers.weight_decay_mask(toy_params())
  velocity = jax.tree.map(np.zeros_like, params)
  for step in range(3):
    grads = jax.tree.map(lambda p: np.sin(p * (step + 1)) + 0.3,
                         jax.tree.map(lambda p: np.asarray(p, np.float64), toy_params()))
    norm = np.sqrt(sum(np.sum(g * g) for g in jax.tree.leaves(grads)))
    grads = jax.tree.map(lambda g: g * min(1.0, clip / norm), grads)
    grads = jax.tree.map(lambda g, p, m: g + wd * p * m, grads, params, mask)
    velocity = jax.tree.map(lambda v, g: mu * v + g, velocity, grads)
    params = jax.tree.map(lambda p, v: p - lr * v, params, velocity)
    for a, b in zip(jax.tree.leaves(ours[step]), jax.tree.leaves(params)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["sgd", "acclip", "acclip_ports", "spam"])
def test_independent_decay_shrinks_by_the_schedule_not_the_learning_rate(name):
  """x_k+1 = x_k + u_k - scale(k) * wd * mask * x_k, u_k the same optimizer's update without decay."""
  wd, lr, warmup, total = 0.05, 0.3, 2, 6
  fields = dict(optimizer=name, learning_rate=lr, warmup_steps=warmup, learning_rate_decay="linear")
  decayed = run_steps(optimizers.OptimizerSpec.from_config(optimizer_config(
      **fields, weight_decay=wd, weight_decay_mode="independent"), total).create(), num_steps=4)
  plain_tx = optimizers.OptimizerSpec.from_config(optimizer_config(**fields), total).create()
  mask = optimizers.weight_decay_mask(toy_params())
  # Replay the undecayed optimizer on the decayed trajectory: same gradients, same state updates.
  state = plain_tx.init(toy_params())
  before = toy_params()
  for step in range(4):
    updates, state = plain_tx.update(toy_grads(step), state, before)
    scale = reference_scale(step, warmup, total, "linear", 0.0)
    for x, u, m, ours in zip(jax.tree.leaves(before), jax.tree.leaves(updates), jax.tree.leaves(mask),
                             jax.tree.leaves(decayed[step])):
      x, u = np.asarray(x, np.float64), np.asarray(u, np.float64)
      np.testing.assert_allclose(ours, x + u - (scale * wd * x if m else 0.0), rtol=2e-5, atol=1e-6)
    before = decayed[step]


def test_independent_decay_at_lr_times_wd_equals_decoupled_adamw():
  lr, wd = 0.02, 0.1
  fields = dict(optimizer="adam", learning_rate=lr, warmup_steps=2, learning_rate_decay="cosine")
  decoupled = run_steps(optimizers.OptimizerSpec.from_config(optimizer_config(
      **fields, weight_decay=wd, weight_decay_mode="decoupled"), 6).create(), num_steps=5)
  independent = run_steps(optimizers.OptimizerSpec.from_config(optimizer_config(
      **fields, weight_decay=lr * wd, weight_decay_mode="independent"), 6).create(), num_steps=5)
  for a, b in zip(jax.tree.leaves(decoupled), jax.tree.leaves(independent)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def spec(total_steps=10, **overrides):
  return optimizers.OptimizerSpec.from_config(optimizer_config(**overrides), total_steps)


def test_step_key_ignores_only_the_peak_learning_rate():
  a = spec(learning_rate=0.1).step_key()
  assert a == spec(learning_rate=0.5).step_key()
  assert hash(a) == hash(spec(learning_rate=0.5).step_key())
  assert a != spec(learning_rate=0.1, b1=0.8).step_key()
  assert a != spec(11, learning_rate=0.1).step_key()
  # A field the optimizer does not read is not part of its description.
  assert spec(optimizer="sgd", b1=0.8).step_key() == spec(optimizer="sgd").step_key()


@pytest.mark.parametrize("name", optimizers.REGISTRY)
def test_spec_roundtrips_through_json_and_records_only_its_own_fields(name):
  original = spec(optimizer=name, learning_rate=0.3, weight_decay=0.01, b2=0.99)
  restored = optimizers.OptimizerSpec.from_dict(json.loads(json.dumps(original.to_dict())))
  assert restored == original
  assert set(original.to_dict()["hyperparameters"]) == set(optimizers.REGISTRY[name].fields)


def test_spec_refuses_fields_its_optimizer_does_not_read():
  with pytest.raises(ValueError, match=r"optimizer 'sgd' reads momentum, nesterov, not \['b1'\]"):
    optimizers.OptimizerSpec("sgd", total_steps=10, hyperparameters=(("b1", 0.9),))
  assert spec(optimizer="sgd").replace(momentum=0.5, learning_rate=2.0).hyperparameters == (
      ("momentum", 0.5), ("nesterov", False))


# -------------------------------------------------------------------------------------------- parallel
def test_shard_batch_splits_rows_over_devices_and_rejects_uneven_batches():
  batch = {"x": np.arange(24).reshape(8, 3), "y": np.arange(8)}
  sharded = parallel.shard_batch(batch)
  assert sharded["x"].shape == (4, 2, 3) and sharded["y"].shape == (4, 2)
  np.testing.assert_array_equal(sharded["x"].reshape(8, 3), batch["x"])
  with pytest.raises(ValueError, match="a batch of 6 rows does not divide by the local device count 4"):
    parallel.shard_batch({"x": np.zeros((6, 2))})
  with pytest.raises(ValueError, match="batch_size=10 does not divide by the device count 4"):
    parallel.process_rows(10)
  assert parallel.process_rows(8) == slice(0, 8)  # a single process owns every row


def test_replicate_roundtrip_and_per_device_keys():
  tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int32(5)}
  replicated = parallel.replicate(tree)
  assert replicated["w"].shape == (4, 2, 3)
  host = parallel.PmapParallelism().to_host(replicated)
  np.testing.assert_array_equal(host["w"], tree["w"])
  assert host["step"] == 5
  keys = jax.pmap(lambda k, s: jax.random.key_data(parallel.device_rng(jax.random.wrap_key_data(k), s)),
                  axis_name=parallel.AXIS_NAME)(
                      parallel.replicate(jax.random.key_data(jax.random.key(0))),
                      parallel.replicate(np.int32(3)))
  assert len({tuple(k.tolist()) for k in np.asarray(keys)}) == 4


def test_distributed_initialisation_is_opt_in():
  parallel.maybe_initialize_distributed(optimizer_config())  # no 'distributed' field: nothing happens
  assert not jax.distributed.is_initialized()


# ------------------------------------------------------------------------------------------ checkpoint
def checkpoint_state():
  params = toy_params()
  tx = optimizers.OptimizerSpec.from_config(optimizer_config(optimizer="adamw", weight_decay=0.1), 10).create()
  return jax.device_get({"step": np.int32(7), "params": params, "opt_state": tx.init(params),
                         "rng": np.array([1, 2], np.uint32)})


def test_checkpoint_roundtrip_keeps_structure_and_values(tmp_path):
  manager = checkpoint.CheckpointManager(str(tmp_path / "ckpt"))
  assert manager.restore_latest(checkpoint_state()) is None  # empty: a fresh start is right
  state = checkpoint_state()
  manager.save(7, state, {"data_position": 7, "signature": {"model": (1, 2)}})
  manager.wait_until_finished()
  restored, meta = manager.restore_latest(checkpoint_state(), {"model": (1, 2)})
  manager.close()
  assert meta["data_position"] == 7
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)
    assert np.asarray(a).dtype == np.asarray(b).dtype


@pytest.fixture
def saved_checkpoint(tmp_path):
  with checkpoint.CheckpointManager(str(tmp_path / "ckpt")) as manager:
    manager.save(3, checkpoint_state(), {"signature": {"optimizer": "adamw"}})
  return str(tmp_path / "ckpt")


def test_checkpoint_with_another_signature_is_an_error(saved_checkpoint):
  with pytest.raises(checkpoint.CheckpointError, match="different run setup: optimizer differ"):
    with checkpoint.CheckpointManager(saved_checkpoint) as manager:
      manager.restore_latest(checkpoint_state(), {"optimizer": "sgd"})


def test_a_signature_field_added_later_is_compared_only_when_the_checkpoint_has_it(saved_checkpoint, tmp_path):
  with checkpoint.CheckpointManager(saved_checkpoint) as manager:  # saved before the field existed: resumes
    assert manager.restore_latest(checkpoint_state(), {"optimizer": "adamw", "corpus_sha256": "ab"}) is not None
  with checkpoint.CheckpointManager(str(tmp_path / "new")) as manager:
    manager.save(3, checkpoint_state(), {"signature": {"optimizer": "adamw", "corpus_sha256": "ab"}})
  with pytest.raises(checkpoint.CheckpointError, match="different run setup: corpus_sha256 differ"):
    with checkpoint.CheckpointManager(str(tmp_path / "new")) as manager:
      manager.restore_latest(checkpoint_state(), {"optimizer": "adamw", "corpus_sha256": "cd"})


def test_checkpoint_with_other_shapes_is_an_error(saved_checkpoint):
  template = checkpoint_state()
  template["params"]["dense"]["kernel"] = np.zeros((3, 2), np.float32)
  with pytest.raises(checkpoint.CheckpointError, match=r"does not match this run's state at .*kernel"):
    with checkpoint.CheckpointManager(saved_checkpoint) as manager:
      manager.restore_latest(template)


def test_corrupt_checkpoint_data_is_an_error(saved_checkpoint):
  for root, _, files in os.walk(os.path.join(saved_checkpoint, "3", "state")):
    for name in files:
      if not name.startswith(("_", "commit")):
        path = os.path.join(root, name)
        with open(path, "wb") as f:
          f.write(b"garbage")
  with pytest.raises(checkpoint.CheckpointError, match="checkpoint step 3 in .* cannot restore the state"):
    with checkpoint.CheckpointManager(saved_checkpoint) as manager:
      manager.restore_latest(checkpoint_state())


def test_unreadable_step_folder_is_an_error(saved_checkpoint):
  os.makedirs(os.path.join(saved_checkpoint, "9"))
  # Orbax may list the empty folder as step 9 or skip it; either way it is an error, not a fresh start.
  with pytest.raises(checkpoint.CheckpointError, match=r"step 9 in .* cannot read|9 looks like a checkpoint"):
    with checkpoint.CheckpointManager(saved_checkpoint) as manager:
      manager.restore_latest(checkpoint_state())


def test_latest_meta_reads_only_the_newest_metadata(tmp_path):
  directory = str(tmp_path / "ckpt")
  with checkpoint.CheckpointManager(directory) as manager:
    manager.save(3, checkpoint_state(), {"data_position": 3, "signature": {"model": [1, 2]}})
    manager.save(5, checkpoint_state(), {"data_position": 5, "signature": {"model": [1, 2]}})
  # Without the state files a restore would fail; the metadata alone must still read.
  shutil.rmtree(os.path.join(directory, "5", "state"))
  with checkpoint.CheckpointManager(directory) as manager:
    step, meta = manager.latest_meta()
  assert meta.pop("fingerprints") == checkpoint.fingerprints(checkpoint_state())
  assert (step, meta) == (5, {"data_position": 5, "signature": {"model": [1, 2]}})


def test_latest_meta_of_an_empty_directory_is_file_not_found(tmp_path):
  with checkpoint.CheckpointManager(str(tmp_path / "empty_ckpt")) as manager:
    with pytest.raises(FileNotFoundError, match="No checkpoint under .*empty_ckpt"):
      manager.latest_meta()


def test_latest_meta_with_corrupt_metadata_is_an_error(saved_checkpoint):
  meta_dir = os.path.join(saved_checkpoint, "3", "meta")
  for name in os.listdir(meta_dir):  # the JSON file's name is Orbax's choice; spare only commit markers
    if not name.startswith("commit"):
      with open(os.path.join(meta_dir, name), "w") as f:
        f.write("{not json")
  with checkpoint.CheckpointManager(saved_checkpoint) as manager:
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint step 3 in .* cannot read its metadata"):
      manager.latest_meta()


# --------------------------------------------------------------------------------------------- metrics
def test_metric_writer_roundtrip_and_resume_truncation(tmp_path):
  writer = metrics_lib.MetricWriter(str(tmp_path))
  for step in range(1, 6):
    writer.write(step, {"train_loss": np.float32(1.0 / step), "lr": 0.1})
  writer.write(5, {"eval_loss": float("nan")})
  records = metrics_lib.read_metrics(writer.path)
  assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 5]
  assert math.isnan(records[-1]["eval_loss"])
  steps, losses = metrics_lib.metric_series(records, "train_loss")
  np.testing.assert_allclose(losses, 1.0 / steps, rtol=1e-6)
  metrics_lib.MetricWriter(str(tmp_path), resume_step=3)
  assert [r["step"] for r in metrics_lib.read_metrics(writer.path)] == [1, 2, 3]
  metrics_lib.MetricWriter(str(tmp_path))  # no resume: a new file
  assert metrics_lib.read_metrics(writer.path) == []


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics_lib.MetricWriter(str(tmp_path / "run"), enabled=False)
  writer.write(1, {"train_loss": 1.0})
  assert not os.path.exists(writer.path)
  bar = metrics_lib.progress_bar(10, enabled=False)
  bar.update(3)
  bar.close()


def test_loss_plot_is_written(tmp_path):
  writer = metrics_lib.MetricWriter(str(tmp_path))
  for step in range(1, 21):
    writer.write(step, {"train_loss": 5.0 / step})
  writer.write(20, {"eval_loss": 0.3})
  out = metrics_lib.plot_loss_curves({"run": writer.path}, str(tmp_path / "loss.png"), smoothing=3)
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def read_tensorboard_scalars(logdir):
  """(tag, step, value) of every scalar in the event files under `logdir`, in file order.

  As TensorBoard does, a SessionLog.START event at step s (a resumed writer's purge_step) drops the scalars
  read so far at steps >= s.
  """
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=g-import-not-at-top
  scalars = []
  for name in sorted(os.listdir(logdir)):
    with open(os.path.join(logdir, name), "rb") as f:
      data = f.read()
    position = 0
    while position < len(data):
      # TFRecord framing: uint64 length, uint32 masked CRC32C of the length, the record, uint32 masked CRC32C.
      header = data[position:position + 8]
      (length,) = struct.unpack("<Q", header)
      (header_crc,) = struct.unpack("<I", data[position + 8:position + 12])
      record = data[position + 12:position + 12 + length]
      (record_crc,) = struct.unpack("<I", data[position + 12 + length:position + 16 + length])
      assert header_crc == masked_crc32c(header) and record_crc == masked_crc32c(record)
      position += 16 + length
      event = event_pb2.Event.FromString(record)
      if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
        scalars = [scalar for scalar in scalars if scalar[1] < event.step]
      scalars += [(value.tag, event.step, value.simple_value) for value in event.summary.value]
  return scalars


def test_tensorboard_events_hold_the_written_scalars(tmp_path):
  pytest.importorskip("tensorboardX")
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=True)
  for step in range(1, 4):
    writer.write(step, {"train_loss": np.float32(1.0 / step), "learning_rate": jnp.asarray(0.1 * step),
                        "optimizer": "adamw"})
  writer.write(3, {"eval_loss": float("nan")})
  writer.close()
  scalars = read_tensorboard_scalars(str(tmp_path / "tensorboard"))
  expected = [(name, step, value) for step in range(1, 4)
              for name, value in (("train_loss", 1.0 / step), ("learning_rate", 0.1 * step))]
  assert [(tag, step) for tag, step, _ in scalars] == [(tag, step) for tag, step, _ in expected] + [
      ("eval_loss", 3)]  # strings ("optimizer") are not scalars and stay out of TensorBoard
  np.testing.assert_allclose([value for _, _, value in scalars[:-1]], [value for _, _, value in expected],
                             rtol=1e-6)
  assert math.isnan(scalars[-1][2])  # a diverged run shows as NaN, not as a missing point


def test_tensorboard_after_resume_shows_only_the_resumed_steps(tmp_path, monkeypatch):
  pytest.importorskip("tensorboardX")
  writer = metrics_lib.MetricWriter(str(tmp_path), tensorboard=True)
  for step in range(1, 5):
    writer.write(step, {"train_loss": float(step)})
  writer.close()
  # Event file names carry the second they were opened; the resumed run opens its file "two seconds later".
  opened = time.time()
  monkeypatch.setattr(time, "time", lambda: opened + 2.0)
  resumed = metrics_lib.MetricWriter(str(tmp_path), tensorboard=True, resume_step=2)
  for step in range(3, 5):
    resumed.write(step, {"train_loss": 10.0 * step})
  resumed.close()
  assert read_tensorboard_scalars(str(tmp_path / "tensorboard")) == [
      ("train_loss", 1, 1.0), ("train_loss", 2, 2.0), ("train_loss", 3, 30.0), ("train_loss", 4, 40.0)]
  assert [r["train_loss"] for r in metrics_lib.read_metrics(resumed.path)] == [1.0, 2.0, 30.0, 40.0]


def test_tensorboard_without_a_writer_library_is_a_clear_error(tmp_path, monkeypatch):
  for module in ("tensorboardX", "torch", "torch.utils.tensorboard"):
    monkeypatch.setitem(sys.modules, module, None)  # a None entry makes `import` raise ImportError
  with pytest.raises(ImportError, match=r"tensorboard=True needs `pip install tensorboardX` .*PyTorch"):
    metrics_lib.MetricWriter(str(tmp_path), tensorboard=True)


_TRUNCATED_RESTORE = r"""
import os, sys, time
import numpy as np
from experiments.common import checkpoint
directory = sys.argv[1]
state = {f"layer{i}": np.random.default_rng(i).normal(size=(64, 64)).astype(np.float32) for i in range(40)}
with checkpoint.CheckpointManager(directory) as manager:
  manager.save(1, state, {})
files = [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
os.truncate(max(files, key=os.path.getsize), 100)  # the data file: random values do not compress
manager = checkpoint.CheckpointManager(directory)
try:
  manager.restore_latest(state)
finally:
  time.sleep(1.0)  # the reads still in flight finish now
"""


def test_truncated_checkpoint_error_is_the_last_thing_printed(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  process = subprocess.run([sys.executable, "-c", _TRUNCATED_RESTORE, str(tmp_path / "ckpt")],
                           capture_output=True, text=True, timeout=120,
                           cwd=os.path.join(os.path.dirname(__file__), ".."),
                           env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert process.returncode == 1
  assert "Event loop is closed" not in process.stderr
  assert process.stderr.strip().splitlines()[-1].startswith(
      "experiments.common.checkpoint.CheckpointError: checkpoint step 1")
