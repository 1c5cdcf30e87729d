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
# How many learning rates a sweep may add beyond each end of its grid while the best sits at that end.
MAX_EXTENSIONS = 2


def next_learning_rate(learning_rate: float, direction: int, grid: Sequence[float]) -> float:
  """The learning rate one grid step beyond `learning_rate` (direction +1 up, -1 down).

  A grid on the 1-3-10 ladder (every value 1 or 3 times a power of ten) continues the ladder (0.003 -> 0.001
  -> 0.0003; 30 -> 100); any other grid continues geometrically with the ratio of its two values at that end
  (a one-value grid: a factor sqrt(10)).
  """
  def on_ladder(lr: float) -> bool:
    mantissa = lr / 10 ** math.floor(math.log10(lr) + 1e-9)
    return any(abs(mantissa - m) < 1e-6 for m in (1.0, 3.0))

  grid = sorted(grid)
  if all(on_ladder(lr) for lr in grid):
    power = 10 ** math.floor(math.log10(learning_rate) + 1e-9)
    mantissa = round(learning_rate / power)
    following = {(1, 1): 3 * power, (3, 1): 10 * power, (1, -1): 0.3 * power, (3, -1): power}[mantissa, direction]
  else:
    ratio = (grid[-1] / grid[-2] if direction > 0 else grid[1] / grid[0]) if len(grid) > 1 else math.sqrt(10)
    following = learning_rate * ratio ** direction
  return float(f"{following:.6g}")


def at_edge(final_losses: Mapping[float, float | None], divergence_loss: float = math.inf) -> str | None:
  """"low" or "high" when the best learning rate (`best_learning_rate`) is the smallest or largest one that
  ran (its optimum may lie beyond); None when it lies inside, or nothing trained."""
  best = best_learning_rate(final_losses, divergence_loss)
  if best is None or len(final_losses) < 2:
    return None
  return "low" if best == min(final_losses) else "high" if best == max(final_losses) else None


def sweep_learning_rates(grid: Sequence[float], validation_loss: Callable[[float], float | None],
                         min_points: int = MIN_SWEEP_POINTS,
                         divergence_loss: float = math.inf,
                         max_extensions: int = MAX_EXTENSIONS) -> dict[float, float | None]:
  """Validation losses of an adaptive sweep over ``grid``: learning rate -> ``validation_loss(lr)``.

  Runs the middle ``min_points`` values of the sorted grid, then, while the best learning rate
  (`best_learning_rate`) is the smallest or largest value run so far, runs the next value beyond it: the
  grid's next value, and past the grid's end up to ``max_extensions`` more (`next_learning_rate`); when every
  run so far diverged it goes down. It stops with the best inside the values run (a diverged run beyond the
  best counts as a bound), or after the extensions (then `at_edge` says the optimum may lie outside). A grid
  of at most ``min_points`` values is run whole. ``divergence_loss`` is `best_learning_rate`'s.
  """
  grid = sorted(set(float(lr) for lr in grid))
  if not grid:
    raise ValueError("sweep_learning_rates: the learning-rate grid is empty")
  if min_points < 1:
    raise ValueError(f"sweep_learning_rates: min_points must be >= 1, got {min_points}")
  if max_extensions < 0:
    raise ValueError(f"sweep_learning_rates: max_extensions must be >= 0, got {max_extensions}")
  lo = max(0, (len(grid) - min_points) // 2)
  hi = min(len(grid), lo + min_points)  # runs grid[lo:hi]
  losses = {lr: validation_loss(lr) for lr in grid[lo:hi]}
  extended = {-1: 0, 1: 0}

  def can_extend(direction: int) -> bool:
    if extended[direction] >= max_extensions:
      return False
    extended[direction] += 1
    end = grid[0] if direction < 0 else grid[-1]
    grid.insert(0 if direction < 0 else len(grid), next_learning_rate(end, direction, grid))
    return True

  while True:
    best = best_learning_rate(losses, divergence_loss)
    if (best is None or best == grid[lo]) and (lo > 0 or can_extend(-1)):
      if lo == 0:  # the grid grew at the bottom: indices shift up by one
        hi += 1
      else:
        lo -= 1
      losses[grid[lo]] = validation_loss(grid[lo])
    elif best is not None and best == grid[hi - 1] and (hi < len(grid) or can_extend(1)):
      hi += 1
      losses[grid[hi - 1]] = validation_loss(grid[hi - 1])
    else:
      return {lr: losses[lr] for lr in grid[lo:hi]}
