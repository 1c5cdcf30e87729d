"""Makes the Fashion-MNIST subset embedded in the repository (the quick mode's image set).

    apt-get install dataset-fashion-mnist      # the full set, in /usr/share/datasets/fashion-mnist
    python -m experiments.resnet.make_fashion_mnist_subset [--source DIR] [--check]

The rule: for each of the 10 classes, `TRAIN_PER_CLASS` training and `TEST_PER_CLASS` test images are
drawn without replacement by `numpy.random.default_rng(seed).choice` over that class's indices, seed 0 for
the training file and 1 for the test file, classes in label order from one generator per file; the chosen
images keep their order in the original files. They are written in the IDX format, gzip level 9 with a
zero timestamp, so the files are byte-identical on every run: `--check` recomputes them and compares their
sha256 with SHA256 below (and with the files in the repository) without writing.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import struct

import numpy as np

from experiments.common import results
from experiments.resnet import input_pipeline

SUBSET_DIR = os.path.join(os.path.dirname(__file__), "data", "fashion_mnist_subset")
TRAIN_PER_CLASS, TEST_PER_CLASS = 1000, 200
SHA256 = {
    "train-images-idx3-ubyte.gz": "9926eb4b3b6478b38d5424faf98d80b901e01f89056187dbc9d6341f468085f1",
    "train-labels-idx1-ubyte.gz": "2cd7babdefcf440b5b89efa307cbd83bd01dbefde25d0c3a5eb5a670ac4d75a2",
    "t10k-images-idx3-ubyte.gz": "5ded534bcae417c4257c8be7ae5c7af027917f437ae9751beba35ea97265b18e",
    "t10k-labels-idx1-ubyte.gz": "9fbc8fea91e72c05109d72bc76b9434777723d91d171983d021bc8cd1e8b39c6",
}


def choose(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Sorted indices of `per_class` examples of every class, drawn by the rule in the module docstring."""
  rng = np.random.default_rng(seed)
  chosen = [rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
            for c in range(int(labels.max()) + 1)]
  return np.sort(np.concatenate(chosen))


def idx_bytes(array: np.ndarray) -> bytes:
  """An uint8 array in the IDX format: 0, 0, 0x08 (uint8), ndim, big-endian int32 sizes, the data."""
  if array.dtype != np.uint8:
    raise ValueError(f"only uint8 arrays are written, not {array.dtype}")
  return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()


def subset_files(source: str) -> dict[str, bytes]:
  """File name -> gzipped IDX bytes of the subset of the Fashion-MNIST files in `source`."""
  train_images, train_labels, test_images, test_labels = input_pipeline.load_idx_folder(source)
  files = {}
  for split, images, labels, per_class, seed in (("train", train_images, train_labels, TRAIN_PER_CLASS, 0),
                                                 ("t10k", test_images, test_labels, TEST_PER_CLASS, 1)):
    keep = choose(labels, per_class, seed)
    for kind, array, rank in (("images", images[keep, ..., 0], 3), ("labels", labels[keep], 1)):
      files[f"{split}-{kind}-idx{rank}-ubyte.gz"] = gzip.compress(
          idx_bytes(array.astype(np.uint8)), compresslevel=9, mtime=0)
  return files


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", default=input_pipeline.DEFAULT_DIRS["fashion_mnist"][0],
                      help="the folder of the four Fashion-MNIST *-ubyte.gz files")
  parser.add_argument("--check", action="store_true", help="compare with the embedded files; write nothing")
  args = parser.parse_args(argv)
  files = subset_files(args.source)
  for name, data in files.items():
    digest = hashlib.sha256(data).hexdigest()
    print(f"{name}: {len(data):,} bytes, sha256 {digest}")
    if args.check:
      with open(os.path.join(SUBSET_DIR, name), "rb") as f:
        if f.read() != data or (SHA256[name] and SHA256[name] != digest):
          raise SystemExit(f"{name}: the embedded file differs from the one this rule makes")
    else:
      os.makedirs(SUBSET_DIR, exist_ok=True)
      results.write_bytes(os.path.join(SUBSET_DIR, name), data)


if __name__ == "__main__":
  main()
