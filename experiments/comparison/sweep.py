"""The learning-rate sweep of the comparison: which runs diverged, which learning rate is best, what to run next."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

def is_diverged(loss: float | None, divergence_loss: float = math.inf) -> bool:
  """Whether a final loss means the run diverged: missing, not finite, or at least ``divergence_loss``."""
  return loss is None or not math.isfinite(loss) or loss >= divergence_loss


def best_learning_rate(final_losses: Mapping[float, float | None],
                       divergence_loss: float = math.inf) -> float | None:
  """The learning rate with the lowest final validation loss among the runs that did not diverge
  (`is_diverged`); None when every run diverged."""
  finite = {lr: loss for lr, loss in final_losses.items() if not is_diverged(loss, divergence_loss)}
  if not finite:
    return None
  return min(finite, key=lambda lr: (finite[lr], lr))


MIN_SWEEP_POINTS = 3


def sweep_learning_rates(grid: Sequence[float], validation_loss: Callable[[float], float | None],
                         min_points: int = MIN_SWEEP_POINTS,
                         divergence_loss: float = math.inf) -> dict[float, float | None]:
  """Validation losses of an adaptive sweep over ``grid``: learning rate -> ``validation_loss(lr)``.

  Runs the middle ``min_points`` values of the sorted grid, then, while the best learning rate
  (`best_learning_rate`) is the smallest or largest value run so far and the grid goes further that way,
  runs the next grid value beyond it; when every run so far diverged it goes down. It stops with the best
  inside the values run, or at an end of the grid (then the optimum may lie outside). A grid of at most
  ``min_points`` values is run whole, so every optimizer gets at least ``min(min_points, len(grid))`` runs
  and at most ``len(grid)``. ``divergence_loss`` is `best_learning_rate`'s.
  """
  grid = sorted(set(float(lr) for lr in grid))
  if not grid:
    raise ValueError("sweep_learning_rates: the learning-rate grid is empty")
  if min_points < 1:
    raise ValueError(f"sweep_learning_rates: min_points must be >= 1, got {min_points}")
  lo = max(0, (len(grid) - min_points) // 2)
  hi = min(len(grid), lo + min_points)  # runs grid[lo:hi]
  losses = {lr: validation_loss(lr) for lr in grid[lo:hi]}
  while True:
    best = best_learning_rate(losses, divergence_loss)
    if (best is None or best == grid[lo]) and lo > 0:
      lo -= 1
      losses[grid[lo]] = validation_loss(grid[lo])
    elif best is not None and best == grid[hi - 1] and hi < len(grid):
      hi += 1
      losses[grid[hi - 1]] = validation_loss(grid[hi - 1])
    else:
      return {lr: losses[lr] for lr in grid[lo:hi]}
