"""ResNet driver: models, data loaders on generated files, the missing-dataset path, a pmapped step."""
import gzip
import os
import pickle
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.common import metrics as metrics_lib
from experiments.common import optimizers
from experiments.common import parallel
from experiments.resnet import input_pipeline
from experiments.resnet import models
from experiments.resnet import train
from experiments.resnet.configs import tiny


def _write_idx(path, array):
  """IDX writer from the format's definition: 0, 0, dtype code 0x08, ndim, big-endian int32 sizes, data."""
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _idx_folder(folder, num_train=32, num_test=12, size=12, gz=True, seed=0):
  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  arrays = {}
  for split, n in (("train", num_train), ("t10k", num_test)):
    labels = np.arange(n) % 10
    # Class-dependent brightness, so the images carry their label.
    images = np.clip(rng.integers(0, 60, (n, size, size)) + 19 * labels[:, None, None], 0, 255)
    suffix = ".gz" if gz else ""
    _write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte{suffix}"), images)
    _write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte{suffix}"), labels)
    arrays[split] = (images.astype(np.uint8), labels)
  return arrays


def _config(**overrides):
  config = tiny.get_config()
  config.update(dict(allow_digits_fallback=False, max_train_examples=0, max_eval_examples=0,
                     augment=False, **overrides))
  return config


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_round_trip(tmp_path, gz):
  arrays = _idx_folder(str(tmp_path), gz=gz)
  train_images, train_labels, test_images, test_labels = input_pipeline.load_idx_folder(str(tmp_path))
  np.testing.assert_array_equal(train_images[..., 0], arrays["train"][0])
  np.testing.assert_array_equal(train_labels, arrays["train"][1])
  np.testing.assert_array_equal(test_images[..., 0], arrays["t10k"][0])
  assert train_images.dtype == np.uint8 and test_labels.dtype == np.int32


def test_read_idx_rejects_bad_files(tmp_path):
  path = str(tmp_path / "bad-images-idx3-ubyte")
  with open(path, "wb") as f:
    f.write(b"PK\x03\x04 not an idx file")
  with pytest.raises(ValueError, match="not an IDX file"):
    input_pipeline.read_idx(path)
  _write_idx(path, np.zeros((2, 3, 3)))
  with open(path, "ab") as f:
    f.write(b"\x00")  # one byte more than the header announces
  with pytest.raises(ValueError, match="header says shape .* the file is damaged. Get the file again"):
    input_pipeline.read_idx(path)
  _write_idx(path, np.arange(4000).reshape(10, 20, 20) % 251)
  with open(path, "rb") as f:
    compressed = gzip.compress(f.read())
  with open(path + ".gz", "wb") as f:
    f.write(compressed[:len(compressed) // 2])  # a download cut short
  with pytest.raises(ValueError, match=r"bad-images-idx3-ubyte\.gz: not a complete gzip stream"):
    input_pipeline.read_idx(path + ".gz")


def test_a_damaged_embedded_subset_says_how_to_restore_it(tmp_path, monkeypatch):
  folder = str(tmp_path / "fashion_mnist_subset")
  _idx_folder(folder)
  path = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError, match="Get the file again: install the Debian package"):  # a user's folder
    input_pipeline.load_idx_folder(folder)
  monkeypatch.setattr(input_pipeline, "FASHION_MNIST_SUBSET_DIR", folder)  # the repository's own subset
  with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: not a complete gzip stream .*`git checkout"):
    input_pipeline.load_idx_folder(folder)


def test_cifar10_pickle_layout(tmp_path):
  root = tmp_path / "cifar-10-batches-py"
  root.mkdir()
  rng = np.random.default_rng(0)
  images = {}
  for name, n in (("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 5)):
    hwc = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[name] = hwc
    # CIFAR stores each image as 3072 bytes: the red plane, then green, then blue (row-major 32x32).
    rows = hwc.transpose(0, 3, 1, 2).reshape(n, 3072)
    with open(root / name, "wb") as f:
      pickle.dump({b"data": rows, b"labels": list(range(n))}, f)
  train_images, train_labels, test_images, test_labels = input_pipeline.load_cifar10_folder(str(tmp_path))
  np.testing.assert_array_equal(train_images, np.concatenate([images["data_batch_1"], images["data_batch_2"]]))
  np.testing.assert_array_equal(test_images, images["test_batch"])
  np.testing.assert_array_equal(train_labels, [0, 1, 2, 3, 4, 5, 0, 1, 2, 3])
  assert test_labels.shape == (5,)
  # A truncated batch is named, with what to do.
  data = open(root / "data_batch_2", "rb").read()
  with open(root / "data_batch_2", "wb") as f:
    f.write(data[:len(data) // 2])
  damaged = re.escape(str(root / "data_batch_2"))
  with pytest.raises(ValueError, match=rf"{damaged}: not a CIFAR-10 python batch .*Download"):
    input_pipeline.load_cifar10_folder(str(tmp_path))


def test_image_folder_dataset(tmp_path):
  from PIL import Image
  colours = {"blue": (0, 0, 255), "red": (255, 0, 0)}
  for split, count in (("train", 3), ("val", 2)):
    for name, colour in colours.items():
      os.makedirs(tmp_path / split / name)
      for i in range(count):
        Image.new("RGB", (20 + 3 * i, 17), colour).save(tmp_path / split / name / f"{i}.JPEG")
  (tmp_path / "train" / "red" / "notes.txt").write_text("not an image")
  data = input_pipeline.create_datasets(_config(dataset="imagenet", data_dir=str(tmp_path), image_size=16))
  assert data.num_classes == 2 and len(data.train_labels) == 6 and len(data.test_labels) == 4
  batch = data.train_batch(0, 4)
  assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.float32
  # Normalised colours: blue images have their largest channel last, red ones first ("blue" < "red").
  pixels = batch["image"][:, 8, 8] * input_pipeline.IMAGENET_STD + input_pipeline.IMAGENET_MEAN
  np.testing.assert_array_equal(np.argmax(pixels, axis=1), np.where(batch["label"] == 0, 2, 0))
  evaluation = data.eval_batches(3)
  assert [b["weight"].sum() for b in evaluation] == [3.0, 1.0]


def test_missing_dataset_says_how_to_get_it(tmp_path):
  config = _config(dataset="fashion_mnist", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as error:
    input_pipeline.create_datasets(config)
  assert str(tmp_path) in str(error.value)
  config.allow_digits_fallback = True
  with pytest.warns(UserWarning, match="FALLING BACK to scikit-learn's digits"):
    data = input_pipeline.create_datasets(config)
  assert data.name == "digits" and data.image_shape == (8, 8, 1) and data.num_classes == 10
  with pytest.raises(ValueError, match="dataset='mnist_typo'"):
    input_pipeline.create_datasets(_config(dataset="mnist_typo"))


def test_parameter_counts_and_groups():
  def count(name, small, size, classes):
    model = models.create_model(name, num_classes=classes, small_images=small)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  resnet50 = count("resnet50", False, 224, 1000)["params"]
  assert models.count_params(resnet50) == 25_557_032  # torchvision's resnet50 (v1.5)
  groups = jax.tree_util.tree_map_with_path(lambda p, _: models.parameter_group(p), resnet50)
  assert set(jax.tree.leaves(groups)) == {"conv", "batch_norm", "dense"}
  assert groups["head"]["kernel"] == "dense" and groups["conv_init"]["kernel"] == "conv"
  assert groups["bn_init"]["scale"] == "batch_norm"
  with pytest.raises(ValueError, match="model='resnet19'"):
    models.create_model("resnet19", num_classes=10)


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("idx"))
  _idx_folder(folder, num_train=64, num_test=12, size=12)
  return folder


def _step_config(idx_dir):
  return _config(dataset="fashion_mnist", data_dir=idx_dir, num_filters=4, batch_size=16,
                 eval_batch_size=8, num_train_steps=2, warmup_steps=1, log_every_steps=1, plot=False)


def test_pmapped_step_syncs_batch_norm_across_replicas(idx_dir):
  assert jax.local_device_count() == 4
  config = _step_config(idx_dir)
  data = input_pipeline.create_datasets(config)
  spec = train.model_spec(config, data)
  opt_config = ml_collections.ConfigDict(config.to_dict())
  opt_config.learning_rate = train.peak_learning_rate(config)
  optimizer = optimizers.OptimizerSpec.from_config(opt_config, 2)
  compiled = train.compiled_steps(spec, optimizer.step_key(), parallel.PmapParallelism())
  variables = compiled.init_variables(jax.random.key(0))
  tx = optimizer.create()
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                           batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))
  batch = data.train_batch(0, 16)
  new_state, metrics = compiled.train_step(parallel.replicate(state), parallel.shard_batch(batch))

  # Every replica holds the same params and BatchNorm statistics...
  for leaf in jax.tree.leaves((new_state.params, new_state.batch_stats)):
    copies = np.asarray(leaf)
    np.testing.assert_array_equal(copies, np.broadcast_to(copies[0], copies.shape))
  # ...and the statistics are those of the global batch (a local BatchNorm would give each device its own).
  _, reference = spec.create().apply(variables, batch["image"], train=True, mutable=["batch_stats"])
  for synced, expected in zip(jax.tree.leaves(new_state.batch_stats),
                              jax.tree.leaves(reference["batch_stats"])):
    np.testing.assert_allclose(np.asarray(synced)[0], expected, rtol=1e-4, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(metrics["train_loss"])))


def test_train_and_evaluate_two_steps(idx_dir, tmp_path):
  result = train.train_and_evaluate(_step_config(idx_dir), str(tmp_path))
  assert result["steps"] == 2 and result["dataset"] == "fashion_mnist" and not result["diverged"]
  assert np.isfinite(result["eval_loss"]) and 0.0 <= result["eval_accuracy"] <= 1.0
  records = [line for line in open(result["metrics_path"]) if line.strip()]
  assert len(records) == 3  # two steps and the final evaluation
  assert os.path.isdir(tmp_path / "checkpoints" / "2")
  config = _step_config(idx_dir)
  config.batch_size = 18
  with pytest.raises(ValueError, match="batch_size=18 does not divide by the device count 4"):
    train.train_and_evaluate(config, str(tmp_path / "bad_batch"))


def test_learning_rate_scales_with_batch():
  config = tiny.get_config()
  config.base_learning_rate, config.batch_size = 0.1, 1024
  assert train.peak_learning_rate(config) == pytest.approx(0.4)
  config.base_learning_rate = None
  config.learning_rate = 0.05
  assert train.peak_learning_rate(config) == 0.05


@pytest.mark.parametrize("mesh_shape", [(2, 2)])
def test_mesh_path_equals_pmap_with_batch_norm_over_the_global_batch(idx_dir, tmp_path, mesh_shape):
  """jit over a (data, fsdp) mesh: BatchNorm averages over both axes, so the statistics, losses and
  evaluation are the pmap run's."""
  config = _step_config(idx_dir)
  config.update(num_train_steps=4, save_checkpoints=False)
  pmap = train.train_and_evaluate(config, str(tmp_path / "pmap"))
  config.update(parallelism="mesh", mesh_shape=mesh_shape)
  mesh = train.train_and_evaluate(config, str(tmp_path / "mesh"))
  losses = {name: [r["train_loss"] for r in metrics_lib.read_metrics(result["metrics_path"]) if "train_loss" in r]
            for name, result in [("pmap", pmap), ("mesh", mesh)]}
  assert len(losses["pmap"]) == 4
  np.testing.assert_allclose(losses["mesh"], losses["pmap"], rtol=1e-5)
  np.testing.assert_allclose(mesh["eval_loss"], pmap["eval_loss"], rtol=1e-5)
