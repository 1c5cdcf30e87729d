"""Image classification data without downloads: Fashion-MNIST (IDX), CIFAR-10 (python pickles), ImageNet
(class folders, decoded with Pillow), and scikit-learn's digits as a loud last resort.

`config.dataset` names the set and `config.data_dir` the folder holding it ('' searches the usual places):

* `fashion_mnist`: a folder with the four IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, gzipped (`.gz`) or raw (the Debian package
  dataset-fashion-mnist installs them in /usr/share/datasets/fashion-mnist). MNIST's files work too.
* `fashion_mnist_subset`: 10,000 training and 2,000 test images of Fashion-MNIST embedded in the repository
  (`experiments/resnet/data/fashion_mnist_subset`, with its licence, provenance, sha256 and the seeded rule
  that drew it); never missing, so the quick studies run the same on every machine.
* `cifar10`: the `cifar-10-batches-py` folder (`data_batch_1..5`, `test_batch`) or its parent.
* `imagenet`: `DIR/train/<class>/*.JPEG` and `DIR/val/<class>/*.JPEG` (any Pillow-readable image; the
  classes are the sorted names of the train sub-folders). Decoded per batch, resized and cropped to
  `config.image_size`.
* `digits`: scikit-learn's 8x8 handwritten digits (1797 real images shipped inside scikit-learn).

When the named set is not found and `config.allow_digits_fallback` is true, a warning says how to get it
and the run continues on `digits`; otherwise FileNotFoundError with the same instructions. There is never a
fallback to random data.

Batches are deterministic functions of (seed, step): the global batch of step s is the s-th slice of a
seeded permutation of the training set (a new permutation each epoch), so runs resume exactly and every
process takes its own rows of the same global batch. Training augmentation (config.augment): random crop
after 4-px zero padding and a horizontal flip for array sets (not for digits); random crop of the resized
image and a flip for folders. Pixels are scaled to [0, 1] and normalised per channel with the training
set's mean and standard deviation (ImageNet's usual constants for folders).
"""
from __future__ import annotations

import dataclasses
import glob
import gzip
import logging
import os
import pickle
import warnings
import zlib
from typing import Optional, Sequence

import numpy as np

from experiments.common import results

DATASETS = ("fashion_mnist", "fashion_mnist_subset", "cifar10", "imagenet", "digits")
FASHION_MNIST_SUBSET_DIR = os.path.join(os.path.dirname(__file__), "data", "fashion_mnist_subset")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_DIRS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", "~/.keras/datasets/fashion-mnist",
                      "~/data/fashion-mnist", "~/data/FashionMNIST/raw"),
    "cifar10": ("/usr/share/datasets/cifar-10-batches-py", "~/.keras/datasets/cifar-10-batches-py",
                "~/data/cifar-10-batches-py"),
    "imagenet": (),
}

HOW_TO_GET = {
    "fashion_mnist": (
        "install the Debian package (`sudo apt-get install dataset-fashion-mnist`, files in "
        "/usr/share/datasets/fashion-mnist), or put the four *-ubyte.gz files from "
        "https://github.com/zalandoresearch/fashion-mnist in a folder and pass --config.data_dir=FOLDER"),
    "cifar10": (
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
        "`tar xzf` it and pass --config.data_dir=.../cifar-10-batches-py"),
    "imagenet": (
        "get ILSVRC2012 from https://image-net.org, arrange it as DIR/train/<wnid>/*.JPEG and "
        "DIR/val/<wnid>/*.JPEG (e.g. with the widely used valprep.sh) and pass --config.data_dir=DIR"),
}


def missing_dataset_message(dataset: str, searched: Sequence[str]) -> str:
  """What to tell a user whose dataset was not found: where we looked and how to get it."""
  where = ", ".join(searched) if searched else "no folder (config.data_dir is empty)"
  return (f"dataset={dataset!r} not found (searched: {where}). To get it: {HOW_TO_GET[dataset]}.")


# ------------------------------------------------------------------------------------------------ IDX
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str, remedy: str | None = None) -> np.ndarray:
  """An IDX file (LeCun's MNIST format), gzipped or raw, as a NumPy array.

  Layout: 2 zero bytes, a dtype code (0x08 = uint8, ...), the number of dimensions n, n big-endian int32
  sizes, then the data in C order.

  Raises:
    results.DamagedFileError: a bad header, a truncated gzip stream or a size that does not match the data
      (naming the file and ``remedy``, by default how to get Fashion-MNIST again).
  """
  remedy = remedy or f"Get the file again: {HOW_TO_GET['fashion_mnist']}."
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (EOFError, gzip.BadGzipFile, zlib.error) as error:
    raise results.DamagedFileError(f"{path}: not a complete gzip stream ({error}); the file is damaged. "
                                   f"{remedy}") from None
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise results.DamagedFileError(f"{path!r} is not an IDX file (header bytes {data[:4]!r}). {remedy}")
  num_dims = data[3]
  shape = tuple(int(s) for s in np.frombuffer(data, ">i4", count=num_dims, offset=4))
  dtype = np.dtype(_IDX_DTYPES[data[2]])
  offset = 4 + 4 * num_dims
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(data) - offset != expected:
    raise results.DamagedFileError(f"{path!r}: header says shape {shape} ({expected} bytes) but "
                                   f"{len(data) - offset} bytes of data follow; the file is damaged. {remedy}")
  return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: str, split: str, kind: str) -> Optional[str]:
  """The IDX file of `split` (train/t10k) and `kind` (images/labels) in folder: '-idx' or '.idx', .gz or raw."""
  rank = 3 if kind == "images" else 1
  for pattern in (f"{split}-{kind}-idx{rank}-ubyte", f"{split}-{kind}.idx{rank}-ubyte"):
    for suffix in ("", ".gz"):
      path = os.path.join(folder, pattern + suffix)
      if os.path.isfile(path):
        return path
  return None


def has_idx_files(folder: str) -> bool:
  return all(_find_idx(folder, s, k) for s in ("train", "t10k") for k in ("images", "labels"))


def load_idx_folder(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(train_images [N, H, W, 1] uint8, train_labels, test_images, test_labels) from the four IDX files."""
  paths = {(s, k): _find_idx(folder, s, k) for s in ("train", "t10k") for k in ("images", "labels")}
  missing = [f"{s}-{k}" for (s, k), p in paths.items() if p is None]
  if missing:
    raise FileNotFoundError(f"{folder!r} lacks the IDX file(s) {missing} (raw or .gz)")
  remedy = None
  if os.path.realpath(folder) == os.path.realpath(FASHION_MNIST_SUBSET_DIR):
    remedy = ("Restore the embedded subset: `git checkout -- experiments/resnet/data/fashion_mnist_subset` "
              "(or remake it: python -m experiments.resnet.make_fashion_mnist_subset).")
  arrays = {key: read_idx(path, remedy) for key, path in paths.items()}
  for split in ("train", "t10k"):
    images, labels = arrays[(split, "images")], arrays[(split, "labels")]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
      raise ValueError(f"{folder!r}: {split} images {images.shape} and labels {labels.shape} do not match "
                       "(expected [N, H, W] and [N])")
  return (arrays[("train", "images")][..., None], arrays[("train", "labels")].astype(np.int32),
          arrays[("t10k", "images")][..., None], arrays[("t10k", "labels")].astype(np.int32))


# ---------------------------------------------------------------------------------------------- CIFAR
def _cifar_folder(folder: str) -> Optional[str]:
  for candidate in (folder, os.path.join(folder, "cifar-10-batches-py")):
    if os.path.isfile(os.path.join(candidate, "test_batch")) and os.path.isfile(
        os.path.join(candidate, "data_batch_1")):
      return candidate
  return None


def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    with open(path, "rb") as f:
      batch = pickle.load(f, encoding="bytes")
    data = np.asarray(batch[b"data"], np.uint8)
    labels = np.asarray(batch[b"labels"], np.int32)
  except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError) as error:
    raise results.DamagedFileError(
        f"{path}: not a CIFAR-10 python batch ({type(error).__name__}: {error}); the file is damaged or "
        "truncated. Download and unpack cifar-10-python.tar.gz again.") from None
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
    raise ValueError(f"{path!r}: data {data.shape} / labels {labels.shape} are not CIFAR-10's "
                     "[N, 3072] / [N]")
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10_folder(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(train_images [N, 32, 32, 3] uint8, train_labels, test_images, test_labels) from the pickled batches."""
  root = _cifar_folder(folder)
  if root is None:
    raise FileNotFoundError(f"{folder!r} holds no CIFAR-10 python batches (data_batch_1, test_batch)")
  train_paths = sorted(glob.glob(os.path.join(root, "data_batch_*")))
  train = [_read_cifar_batch(p) for p in train_paths]
  test_images, test_labels = _read_cifar_batch(os.path.join(root, "test_batch"))
  return (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
          test_images, test_labels)


# -------------------------------------------------------------------------------------- image folders
def list_image_folder(split_dir: str, classes: Optional[Sequence[str]] = None
                      ) -> tuple[list[str], np.ndarray, list[str]]:
  """(paths, int32 labels, class names) of `split_dir/<class>/<image>`; classes default to the sub-folders."""
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(f"image folder {split_dir!r} does not exist")
  if classes is None:
    classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
  if not classes:
    raise FileNotFoundError(f"image folder {split_dir!r} has no class sub-folders")
  paths, labels = [], []
  for label, name in enumerate(classes):
    class_dir = os.path.join(split_dir, name)
    if not os.path.isdir(class_dir):
      continue
    for file in sorted(os.listdir(class_dir)):
      if file.lower().endswith(IMAGE_SUFFIXES):
        paths.append(os.path.join(class_dir, file))
        labels.append(label)
  if not paths:
    raise FileNotFoundError(f"image folder {split_dir!r} holds no {'/'.join(IMAGE_SUFFIXES)} images")
  return paths, np.asarray(labels, np.int32), list(classes)


def decode_image(path: str, image_size: int, rng: Optional[np.random.Generator]) -> np.ndarray:
  """A uint8 [S, S, 3] RGB image: shorter side resized to S*8/7, then a random (rng) or centre S x S crop."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
      resize = max(image_size, round(image_size * 8 / 7))
      scale = resize / min(image.size)
      image = image.resize((max(resize, round(image.size[0] * scale)),
                            max(resize, round(image.size[1] * scale))), Image.BILINEAR)
      pixels = np.asarray(image, np.uint8)
  except OSError as error:
    raise ValueError(f"cannot decode image {path!r}: {error}") from error
  height, width = pixels.shape[:2]
  if rng is None:
    top, left = (height - image_size) // 2, (width - image_size) // 2
  else:
    top, left = rng.integers(height - image_size + 1), rng.integers(width - image_size + 1)
  pixels = pixels[top:top + image_size, left:left + image_size]
  if rng is not None and rng.random() < 0.5:
    pixels = pixels[:, ::-1]
  return pixels


# -------------------------------------------------------------------------------------------- dataset
@dataclasses.dataclass
class ImageData:
  """Train/test splits and the batch functions of one run.

  Array sets hold uint8 images [N, H, W, C]; folder sets hold file paths, decoded per batch. `name` is the
  set actually loaded (`digits` after a fallback), `requested` the one the config named and `source` where
  it came from (a folder, or scikit-learn).
  """
  name: str
  train_images: np.ndarray | list
  train_labels: np.ndarray
  test_images: np.ndarray | list
  test_labels: np.ndarray
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: np.ndarray
  std: np.ndarray
  seed: int
  augment: bool
  requested: str = ""
  source: str = ""

  def description(self) -> dict:
    """What was loaded, for reports: name, requested name, source, example counts, image shape, classes."""
    return {"name": self.name, "requested": self.requested or self.name, "source": self.source,
            "train_examples": len(self.train_labels), "test_examples": len(self.test_labels),
            "image_shape": list(self.image_shape), "num_classes": self.num_classes}

  @property
  def from_files(self) -> bool:
    return isinstance(self.train_images, list)

  def steps_per_epoch(self, global_batch_size: int) -> int:
    steps = len(self.train_labels) // global_batch_size
    if steps == 0:
      raise ValueError(f"batch_size={global_batch_size} exceeds the {len(self.train_labels)} training "
                       f"images of {self.name}; use a smaller batch")
    return steps

  def _images(self, source, ids: np.ndarray, rng: Optional[np.random.Generator]) -> np.ndarray:
    """Normalised float32 [n, H, W, C] images; rng given: training augmentation."""
    if self.from_files:
      pixels = np.stack([decode_image(source[i], self.image_shape[0], rng if self.augment else None)
                         for i in ids])
    else:
      pixels = source[ids]
      if rng is not None and self.augment:
        pixels = _pad_crop_flip(pixels, rng)
    return ((pixels.astype(np.float32) / 255.0 - self.mean) / self.std).astype(np.float32)

  def train_batch(self, step: int, global_batch_size: int, rows: slice = slice(None)) -> dict:
    """The rows `rows` of the global training batch of `step`: {'image', 'label'}."""
    epoch, index = divmod(step, self.steps_per_epoch(global_batch_size))
    order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train_labels))
    ids = order[index * global_batch_size:(index + 1) * global_batch_size][rows]
    rng = np.random.default_rng([self.seed, epoch, index, rows.start or 0])
    return {"image": self._images(self.train_images, ids, rng), "label": self.train_labels[ids]}

  def eval_batches(self, global_batch_size: int, rows: slice = slice(None),
                   max_examples: int = 0) -> list[dict]:
    """Test batches {'image', 'label', 'weight'}; the last is padded with weight-0 repeats to full size."""
    num = len(self.test_labels) if not max_examples else min(max_examples, len(self.test_labels))
    padded = -(-num // global_batch_size) * global_batch_size
    fill = np.arange(padded) % num
    weight = (np.arange(padded) < num).astype(np.float32)
    batches = []
    for start in range(0, padded, global_batch_size):
      ids = fill[start:start + global_batch_size][rows]
      batches.append({"image": self._images(self.test_images, ids, None), "label": self.test_labels[ids],
                      "weight": weight[start:start + global_batch_size][rows]})
    return batches


def _pad_crop_flip(pixels: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
  """Random crop of the 4-px zero-padded images (same size back) and a random horizontal flip."""
  n, height, width, _ = pixels.shape
  padded = np.pad(pixels, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  tops, lefts = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
  flips = rng.random(n) < 0.5
  out = np.empty_like(pixels)
  for i in range(n):
    crop = padded[i, tops[i]:tops[i] + height, lefts[i]:lefts[i] + width]
    out[i] = crop[:, ::-1] if flips[i] else crop
  return out


def _load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """scikit-learn's digits as uint8 [N, 8, 8, 1] (0..16 scaled to 0..255); a fixed 80/20 split."""
  try:
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("the digits image set comes from scikit-learn, which is not installed: "
                      "pip install -e \".[digits]\"") from error
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(0).permutation(len(labels))
  cut = int(0.8 * len(labels))
  return images[order[:cut]], labels[order[:cut]], images[order[cut:]], labels[order[cut:]]


def _search_dirs(config) -> list[str]:
  if config.data_dir:
    return [config.data_dir]
  return [os.path.expanduser(d) for d in DEFAULT_DIRS.get(config.dataset, ())]


def _find_dataset(dataset: str, dirs: Sequence[str]) -> Optional[str]:
  for folder in dirs:
    if dataset == "fashion_mnist" and os.path.isdir(folder) and has_idx_files(folder):
      return folder
    if dataset == "cifar10" and os.path.isdir(folder) and _cifar_folder(folder):
      return folder
    if dataset == "imagenet" and os.path.isdir(os.path.join(folder, "train")):
      return folder
  return None


def check_settings(config) -> None:
  """The data fields of a config, checked before any data is read: ValueError naming the field."""
  if config.dataset not in DATASETS:
    raise ValueError(f"dataset={config.dataset!r} is not one of {', '.join(DATASETS)}")
  if config.image_size < 1:
    raise ValueError(f"image_size={config.image_size} must be >= 1")
  for name in ("max_train_examples", "max_eval_examples"):
    if config.get(name, 0) < 0:
      raise ValueError(f"{name}={config[name]} must be >= 0 (0: all)")


def create_datasets(config) -> ImageData:
  """Loads `config.dataset` (see the module docstring).

  Reads config.dataset, data_dir, allow_digits_fallback, image_size (folders), augment, seed,
  max_train_examples (0: all; the first n of a fixed shuffle, for short studies).

  Raises:
    ValueError: an unknown dataset name; FileNotFoundError: the dataset is missing and the fallback is off.
  """
  check_settings(config)
  dataset = config.dataset
  if dataset == "fashion_mnist_subset":
    folder = FASHION_MNIST_SUBSET_DIR
  elif dataset != "digits":
    searched = _search_dirs(config)
    folder = _find_dataset(dataset, searched)
    if folder is None:
      message = missing_dataset_message(dataset, searched)
      if not config.get("allow_digits_fallback", False):
        raise FileNotFoundError(message)
      banner = ("!" * 100 + f"\n{message}\nFALLING BACK to scikit-learn's digits (1797 real 8x8 images): "
                "results are NOT comparable with the named dataset.\n" + "!" * 100)
      logging.warning(banner)
      warnings.warn(banner, stacklevel=2)
      dataset = "digits"
  source = "scikit-learn (sklearn.datasets.load_digits)" if dataset == "digits" else folder
  if dataset == "imagenet":
    train_paths, train_labels, classes = list_image_folder(os.path.join(folder, "train"))
    test_paths, test_labels, _ = list_image_folder(os.path.join(folder, "val"), classes)
    size = config.image_size
    data = ImageData(dataset, train_paths, train_labels, test_paths, test_labels, len(classes),
                     (size, size, 3), np.asarray(IMAGENET_MEAN, np.float32),
                     np.asarray(IMAGENET_STD, np.float32), config.seed, config.augment)
  else:
    loader = {"fashion_mnist": lambda: load_idx_folder(folder),
              "fashion_mnist_subset": lambda: load_idx_folder(folder),
              "cifar10": lambda: load_cifar10_folder(folder), "digits": _load_digits}[dataset]
    train_images, train_labels, test_images, test_labels = loader()
    scaled = train_images.astype(np.float32) / 255.0
    mean = scaled.mean(axis=(0, 1, 2))
    std = np.maximum(scaled.std(axis=(0, 1, 2)), 1e-3)
    data = ImageData(dataset, train_images, train_labels, test_images, test_labels,
                     int(max(train_labels.max(), test_labels.max())) + 1, tuple(train_images.shape[1:]),
                     mean.astype(np.float32), std.astype(np.float32), config.seed,
                     config.augment and dataset != "digits")
  if config.get("max_train_examples"):
    keep = np.random.default_rng(0).permutation(len(data.train_labels))[:config.max_train_examples]
    keep.sort()
    data.train_images = ([data.train_images[i] for i in keep] if data.from_files
                         else data.train_images[keep])
    data.train_labels = data.train_labels[keep]
  data.requested, data.source = config.dataset, source
  return data
