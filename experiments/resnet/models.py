"""ResNet v1.5 in Flax linen (He et al. 2016; the stride sits on the 3x3 conv of a bottleneck block).

    ResNet-18: BasicBlock x [2, 2, 2, 2]        ResNet-50: BottleneckBlock x [3, 4, 6, 3]

Stems: the ImageNet stem (7x7/2 conv, BatchNorm, ReLU, 3x3/2 max-pool) for 224 px inputs, and the
small-image stem (3x3/1 conv, BatchNorm, ReLU, no pool) for 28-32 px inputs (CIFAR/Fashion-MNIST), which
keeps the 4 stages at 28/14/7/4 px instead of shrinking the image to 1 px.

BatchNorm statistics: with `axis_name` set (the pmap axis), batch means and variances are computed over the
global batch (`lax.pmean` across devices) in training, so the running averages stay identical on every
replica and equal those of a 1-device run on the same global batch. The last BatchNorm of each residual
branch starts with scale 0, so every block starts as the identity (Goyal et al. 2017; Flax example).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any


class BasicBlock(nn.Module):
  """Two 3x3 convs: y = relu(x' + BN(conv3(relu(BN(conv3_s(x)))))), x' a 1x1/s projection if shapes differ."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
  """1x1 (filters), 3x3/s (filters), 1x1 (4 filters) convs with BatchNorm; v1.5: the stride on the 3x3."""
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = nn.relu(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.conv(self.filters * 4, (1, 1))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """A ResNet classifier: `(images [B, H, W, C], train) -> float32 logits [B, num_classes]`.

  Attributes:
    stage_sizes: blocks per stage (each stage after the first halves the resolution, doubles the width).
    block_cls: BasicBlock or BottleneckBlock.
    num_classes: output classes.
    num_filters: width of the first stage (64 for the standard models; smaller for CPU studies).
    small_images: the 3x3 stem without max-pool (28-32 px inputs) instead of the ImageNet stem.
    axis_name: the pmap axis over which training BatchNorm averages its batch statistics (None: local).
    dtype: computation dtype (e.g. bfloat16 on TPU/GPU); parameters and logits stay float32.
  """
  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int
  num_filters: int = 64
  small_images: bool = False
  axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, axis_name=self.axis_name if train else None)
    x = jnp.asarray(x, self.dtype)
    if self.small_images:
      x = conv(self.num_filters, (3, 3), name="conv_init")(x)
    else:
      x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
    x = nn.relu(norm(name="bn_init")(x))
    if not self.small_images:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        strides = (2, 2) if stage > 0 and block == 0 else (1, 1)
        x = self.block_cls(self.num_filters * 2 ** stage, conv=conv, norm=norm, strides=strides)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x).astype(jnp.float32)


ARCHITECTURES: dict[str, tuple[tuple[int, ...], ModuleDef]] = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet34": ((3, 4, 6, 3), BasicBlock),
    "resnet50": ((3, 4, 6, 3), BottleneckBlock),
    "resnet101": ((3, 4, 23, 3), BottleneckBlock),
}


def create_model(name: str, *, num_classes: int, num_filters: int = 64, small_images: bool = False,
                 axis_name: Optional[str] = None, dtype: str = "float32") -> ResNet:
  """The ResNet called `name` (one of ARCHITECTURES); ValueError naming the choices otherwise."""
  if name not in ARCHITECTURES:
    raise ValueError(f"model={name!r} is not one of {', '.join(ARCHITECTURES)}")
  for arg, value in (("num_classes", num_classes), ("num_filters", num_filters)):
    if value < 1:
      raise ValueError(f"{arg}={value} must be >= 1")
  try:
    floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
  except TypeError:
    floating = False
  if not floating:
    raise ValueError(f"dtype={dtype!r} is not a floating-point dtype (float32, bfloat16, float16)")
  stage_sizes, block_cls = ARCHITECTURES[name]
  return ResNet(stage_sizes=stage_sizes, block_cls=block_cls, num_classes=num_classes,
                num_filters=num_filters, small_images=small_images, axis_name=axis_name,
                dtype=jnp.dtype(dtype))


def parameter_group(path: tuple) -> str:
  """'conv', 'batch_norm' or 'dense' for a parameter's key path in a ResNet params tree."""
  names = [str(getattr(key, "key", key)) for key in path]
  if names and names[0] == "head":
    return "dense"
  return "conv" if names[-1] == "kernel" else "batch_norm"


def count_params(params: Any) -> int:
  """The number of scalars in a parameter tree."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
