"""Pieces shared by the experiment drivers: optimizers, pmap plumbing, checkpoints, metrics."""
