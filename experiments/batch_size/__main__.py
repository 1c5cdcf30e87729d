"""CLI of the batch-size study (RQ8): ``python -m experiments.batch_size --out DIR [--quick | --config NAME]``.

The mode is a config file, configs/NAME.py (full, quick, tiny; each docstring gives its expected time). See
`experiments.batch_size.study`. Rerunning the same command into the same DIR continues the study.
"""
from __future__ import annotations

import argparse
import logging
import sys

from experiments.common import study_cli
from experiments.batch_size import study


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  parser = argparse.ArgumentParser(prog="python -m experiments.batch_size", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  study_cli.add_config_arguments(parser, "experiments.batch_size")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    config = study_cli.study_config("experiments.batch_size", study_cli.config_name(args))
  except ValueError as error:
    parser.error(str(error))
  summary = study.run(args.out, config)
  print(f"batch-size study ({summary['mode']}) done: {summary['cells_done']} of {summary['cells_planned']} cells; "
        f"see {args.out}/summary.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
