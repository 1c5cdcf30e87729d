"""Preemption: SIGTERM as a notice that the run stops at the next step boundary with a checkpoint, and the
`Preempted` exit (status 75) that lets a scheduler requeue the run."""
from __future__ import annotations

import itertools
import logging
import signal
import threading

import jax

# The exit status of a process a preemption notice stopped: EX_TEMPFAIL of sysexits.h, "a temporary failure;
# retry", so that a scheduler can requeue it (a failure exits 1).
PREEMPTED_EXIT_STATUS = 75


class Preempted(SystemExit):
  """A preemption notice (SIGTERM) stopped the process at a step boundary; a rerun resumes.

  The loop saves the state of that step (if it is finite and config.save_checkpoints is on) before it
  raises, so rerunning the same command continues from there and loses no progress. It subclasses
  SystemExit, as KeyboardInterrupt does BaseException, so that code which records a failure and goes on
  (`except Exception`) does not swallow it: the process stops with exit status `PREEMPTED_EXIT_STATUS` (75);
  the loop logs the message (str of this exception) as it raises.

  Attributes:
    workdir: the run's directory.
    step: the step at which the notice stopped the run.
    checkpoint_step: the newest checkpoint on disk, where a rerun resumes (None: there is none).
  """

  def __init__(self, workdir: str, step: int, checkpoint_step: int | None):
    self.workdir, self.step, self.checkpoint_step = workdir, step, checkpoint_step
    where = (f"the newest checkpoint is step {checkpoint_step} in {workdir}; rerun the same command to resume "
             "from it" if checkpoint_step is not None else f"no checkpoint in {workdir}; a rerun starts over")
    super().__init__(f"Preempted (SIGTERM) at step {step}: {where}.")
    self.code = PREEMPTED_EXIT_STATUS  # the interpreter exits with `code`; str(self) keeps the message


# The ids this process gives JAX's preemption sync point: one per loop iteration of every `train` call in
# the process, increasing, so that a notice between two runs, or before a resumed run's first step, is
# still met at the next iteration (the sync point is the largest id any process has passed, plus one).
_SYNC_POINT_IDS = itertools.count(1)


class PreemptionNotice:
  """SIGTERM as a preemption notice, checked by the loop after every step (a context manager).

  One process: a handler that only sets a flag, installed while the loop runs (from the main thread; the
  previous Python handler, or the default action, comes back on exit). Several processes
  (`jax.distributed`): JAX's preemption sync manager (`multihost_utils.reached_preemption_sync_point`, fed
  one increasing id per iteration, `_SYNC_POINT_IDS`), which hears the notice on any process and picks one
  iteration at which every process stops and saves. A loop in another thread, or several processes
  without JAX's preemption service, gets no notice: SIGTERM then acts as it would without us.
  """

  def __init__(self):
    self._requested = False
    self._installed = False
    self._previous = None
    self._multi_host = False

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self._requested = True
    logging.warning("SIGTERM: stopping after this step with a checkpoint")

  def __enter__(self) -> "PreemptionNotice":
    if jax.process_count() > 1:
      self._multi_host = bool(jax.config.jax_enable_preemption_service)
      if not self._multi_host:
        logging.warning("jax_enable_preemption_service is off: SIGTERM will end the run without a checkpoint")
    elif threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True
    return self

  def __exit__(self, *exc_info) -> None:
    if self._installed:  # None: the previous handler was not set from Python; the default is the closest
      signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
      self._installed = False

  @property
  def requested(self) -> bool:
    """Whether a notice has been heard (by this process's handler, or at a multi-process sync point)."""
    return self._requested

  def reached(self) -> bool:
    """Whether to stop and save after this iteration; call once per iteration (every process agrees)."""
    if self._multi_host and not self._requested:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      try:
        self._requested = multihost_utils.reached_preemption_sync_point(next(_SYNC_POINT_IDS))
      except RuntimeError as error:  # no sync manager in this runtime: no notice, as documented
        logging.warning("No preemption notice: %s", error)
        self._multi_host = False
    return self._requested
