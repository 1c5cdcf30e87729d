"""CLI of the gradient-noise study: ``python -m experiments.noise --out DIR [--quick | --config NAME]``.

The mode is a config file, configs/NAME.py (full, quick, tiny; each docstring gives its expected time). See
`experiments.noise.study`. --models/--steps/--sweep-steps/--seeds shrink a run further.
"""
from __future__ import annotations

import argparse
import logging
import sys

import ml_collections

from experiments.common import study_cli
from experiments.noise import study


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m experiments.noise", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  study_cli.add_config_arguments(parser, "experiments.noise")
  parser.add_argument("--models", nargs="+", choices=study.MODELS, help="only these models")
  parser.add_argument("--steps", type=int, help="training steps of the noise trajectory")
  parser.add_argument("--sweep-steps", type=int, help="steps of each SGD/Adam run")
  parser.add_argument("--seeds", type=int, help="seeds per learning rate of the SGD/Adam comparison")
  return parser.parse_args(argv)


def config_from_args(args) -> ml_collections.ConfigDict:
  """The chosen config file's settings with --models, --steps, --sweep-steps and --seeds applied."""
  config = study_cli.study_config("experiments.noise", study_cli.config_name(args))
  config.update({name: value for name, value in (("models", tuple(args.models or ()) or None),
                                                 ("train_steps", args.steps),
                                                 ("sweep_steps", args.sweep_steps),
                                                 ("sweep_seeds", args.seeds)) if value is not None})
  return config


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  args = parse_args(sys.argv[1:] if argv is None else argv)
  results = study.run(args.out, config_from_args(args))
  print(f"noise study ({results['mode']}) done in {results['wall_s']:.0f} s; see {args.out}/summary.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
