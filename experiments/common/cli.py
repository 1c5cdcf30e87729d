"""The command line every driver's main.py runs: `--config FILE --workdir DIR [--config.FIELD=VALUE ...]`."""
from __future__ import annotations

import ast
import contextlib
import json
import sys
from typing import Any, Callable

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.common import optimizers


def run(train_and_evaluate: Callable[[Any, str], dict], *, workdir_help: str, config_help: str) -> None:
  """Defines --workdir and --config, parses argv, runs `train_and_evaluate(config, workdir)`, prints JSON.

  The process exits with status 1 when the run diverged (its result says `diverged`) or a setting is refused
  (one line naming the field: a misspelled --config.FIELD, or an optimizer field the chosen optimizer does
  not read), 75 (`training_loop.PREEMPTED_EXIT_STATUS`) when a preemption notice stopped it, 0 otherwise.

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
    try:
      optimizers.check_fields_read(config.value, config_flags.get_override_values(flags.FLAGS[config.name]))
    except ValueError as error:
      raise SystemExit(f"Error: {error}") from None
    result = train_and_evaluate(config.value, workdir.value)
    print(json.dumps(result, indent=2, default=str))
    if result.get("diverged"):
      checkpoint_step = result.get("checkpoint_step")
      raise SystemExit(
          f"Training diverged (a non-finite loss or state) by step {result['steps']}; "
          + (f"the newest checkpoint, step {checkpoint_step}, is the last finite state."
             if checkpoint_step is not None else "no checkpoint was written."))

  app.run(main, flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad --config.FIELD in one line (a misspelled field, a bad value) instead
  of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as error:
    raise SystemExit(f"Error: {flag_error_text(error)}") from None


def flag_error_text(error: BaseException) -> str:
  """One line from a flag-parsing error: ml_collections' KeyError message (a quoted, escaped field name and a
  'Did you mean' line) becomes "--config.FIELD: the config has no field FIELD. Did you mean ...?"."""
  text = str(error)
  with contextlib.suppress(ValueError, SyntaxError):
    unquoted = ast.literal_eval(text)
    text = unquoted if isinstance(unquoted, str) else text
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if lines and len(lines[0].split()) == 1 and lines[0].startswith("'"):  # "'field'" then "Did you mean ..."
    field = lines[0].strip("'")
    return " ".join([f"--config.{field}: the config has no field {field!r}."] + lines[1:])
  return " ".join(lines)
