"""The command line every driver's main.py runs: `--config FILE --workdir DIR [--config.FIELD=VALUE ...]`."""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

from absl import app
from absl import flags
from ml_collections import config_flags


def run(train_and_evaluate: Callable[[Any, str], dict], *, workdir_help: str, config_help: str) -> None:
  """Defines --workdir and --config, parses argv, runs `train_and_evaluate(config, workdir)`, prints JSON.

  The process exits with status 1 when the run diverged (its result says `diverged`), 0 otherwise.

  Args:
    train_and_evaluate: the driver's `train_and_evaluate(config, workdir) -> dict`.
    workdir_help: the --workdir help text (what the run writes there).
    config_help: the --config help text (where the config files are).
  """
  main_module = sys.argv[0]  # where absl's --help looks for the program's own flags
  workdir = flags.DEFINE_string("workdir", None, workdir_help, module_name=main_module)
  config = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
  flags.FLAGS.register_flag_by_module(main_module, flags.FLAGS[config.name])
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = train_and_evaluate(config.value, workdir.value)
    print(json.dumps(result, indent=2, default=str))
    if result.get("diverged"):
      checkpoint_step = result.get("checkpoint_step")
      raise SystemExit(
          f"Training diverged (a non-finite loss or state) by step {result['steps']}; "
          + (f"the newest checkpoint, step {checkpoint_step}, is the last finite state."
             if checkpoint_step is not None else "no checkpoint was written."))

  app.run(main)
