"""CLI of the synthetic study: ``python -m experiments.synthetic --out DIR [--quick]``.

Quick (--quick): about 1-2 minutes on 2 CPU cores. Full: see `experiments.synthetic.study` for sizes and the
measured time. --seeds/--steps/--dims shrink a run further (tests use them).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from experiments.synthetic import study


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m experiments.synthetic", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="output folder (PNGs, results.csv, summary.md, summary.json)")
  parser.add_argument("--quick", action="store_true", help="the quick sizes (about 1-2 minutes on 2 cores)")
  parser.add_argument("--seeds", type=int, help="evaluation seeds of every experiment (tuning seeds: a quarter, >= 2)")
  parser.add_argument("--steps", type=int, help="steps of every experiment")
  parser.add_argument("--dims", type=int, nargs="+", help="dimensions of the dimension study")
  return parser.parse_args(argv)


def config_from_args(args) -> study.StudyConfig:
  config = study.quick_config() if args.quick else study.full_config()
  overrides = {}
  if args.seeds is not None:
    tune = max(2, args.seeds // 4)
    overrides.update(eval_seeds=args.seeds, dim_eval_seeds=args.seeds, tune_seeds=tune, dim_tune_seeds=tune)
  if args.steps is not None:
    overrides.update(num_steps=args.steps, dim_steps=args.steps, nonconvex_steps=args.steps)
  if args.dims is not None:
    overrides.update(dims=tuple(args.dims))
  return dataclasses.replace(config, **overrides)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  results = study.run(args.out, quick=args.quick, config=config_from_args(args))
  print(f"synthetic study ({results['mode']}) done in {results['wall_s']:.0f} s; see {args.out}/summary.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
