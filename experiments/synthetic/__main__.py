"""CLI of the synthetic study: ``python -m experiments.synthetic --out DIR [--quick | --config NAME]``.

The mode is a config file, configs/NAME.py (full, quick, tiny; each docstring gives its expected time).
--seeds/--steps/--dims shrink a run further; --methods runs some of the config's methods only (the others'
numbers do not change: every method sees the same random numbers).
"""
from __future__ import annotations

import argparse
import sys

import ml_collections

from experiments.common import study_cli
from experiments.synthetic import study


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m experiments.synthetic", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  study_cli.add_config_arguments(parser, "experiments.synthetic")
  parser.add_argument("--seeds", type=int, help="evaluation seeds of every experiment (tuning seeds: a quarter, >= 2)")
  parser.add_argument("--steps", type=int, help="steps of every experiment")
  parser.add_argument("--dims", type=int, nargs="+", help="dimensions of the dimension study")
  parser.add_argument("--methods", help="comma-separated: run only these of the config's methods, in each experiment "
                      "that has them")
  return parser.parse_args(argv)


def config_from_args(args) -> ml_collections.ConfigDict:
  """The chosen config file's settings with --seeds, --steps, --dims and --methods applied.

  Raises:
    ValueError: --methods names a method the config does not run.
  """
  config = study_cli.study_config("experiments.synthetic", study_cli.config_name(args))
  if args.seeds is not None:
    tune = max(2, args.seeds // 4)
    config.update(eval_seeds=args.seeds, dim_eval_seeds=args.seeds, tune_seeds=tune, dim_tune_seeds=tune)
  if args.steps is not None:
    config.update(num_steps=args.steps, dim_steps=args.steps, nonconvex_steps=args.steps)
  if args.dims is not None:
    config.dims = tuple(args.dims)
  if args.methods is not None:
    chosen = study_cli.comma_list(args.methods)
    unknown = sorted(set(chosen) - set(config.methods))
    if unknown or not chosen:
      raise ValueError(f"--methods {args.methods!r}: {unknown or 'nothing'} not among the config's methods "
                       f"{', '.join(config.methods)}")
    for field in ("methods", "dim_methods", "nonconvex_methods"):
      config[field] = tuple(name for name in config[field] if name in chosen)
  return config


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  results = study.run(args.out, config_from_args(args))
  print(f"synthetic study ({results['mode']}) done in {results['wall_s']:.0f} s; see {args.out}/summary.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
