"""CLI of the stability-margin study: ``python -m experiments.stability --out DIR [--quick | --config NAME]
[--finished-only]``.

The mode is a config file, configs/NAME.py (full, quick, tiny; each docstring gives its expected time). See
`experiments.stability.study`. Rerunning the same command into the same DIR continues the study.
"""
from __future__ import annotations

import argparse
import logging
import sys

from experiments.common import study_cli
from experiments.stability import study


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  parser = argparse.ArgumentParser(prog="python -m experiments.stability", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  study_cli.add_config_arguments(parser, "experiments.stability")
  parser.add_argument("--finished-only", action="store_true",
                      help="train nothing: summarize the runs in DIR that have finished, whatever their order")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  summary = study.run(args.out, study_cli.study_config("experiments.stability", study_cli.config_name(args)),
                      finished_only=args.finished_only)
  print(f"stability study ({summary['mode']}) done: {summary['runs_done']} runs; see {args.out}/summary.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
