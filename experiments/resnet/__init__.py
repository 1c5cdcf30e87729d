"""Flax ResNet-18/50 image classification driver (data-parallel with pmap), Flax ImageNet recipe."""
