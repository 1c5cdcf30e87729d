"""CLI of the gradient-noise study: ``python -m experiments.noise --out DIR [--quick]``.

Quick (--quick): about 4 minutes of CPU time (measured; 11 minutes wall on 2 shared cores); full: roughly an
hour of CPU time (not measured). See `experiments.noise.study`.
--models/--steps/--sweep-steps/--seeds shrink a run further.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from experiments.noise import study


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m experiments.noise", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="output folder (PNGs, results.csv, summary.md, summary.json)")
  parser.add_argument("--quick", action="store_true", help="the quick sizes (about 4 minutes of CPU time)")
  parser.add_argument("--models", nargs="+", choices=study.MODELS, help="only these models")
  parser.add_argument("--steps", type=int, help="training steps of the noise trajectory")
  parser.add_argument("--sweep-steps", type=int, help="steps of each SGD/Adam run")
  parser.add_argument("--seeds", type=int, help="seeds per learning rate of the SGD/Adam comparison")
  return parser.parse_args(argv)


def config_from_args(args) -> study.StudyConfig:
  config = study.quick_config() if args.quick else study.full_config()
  overrides = {name: value for name, value in (("models", tuple(args.models or ()) or None),
                                               ("train_steps", args.steps),
                                               ("sweep_steps", args.sweep_steps),
                                               ("sweep_seeds", args.seeds)) if value is not None}
  return dataclasses.replace(config, **overrides)


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  args = parse_args(sys.argv[1:] if argv is None else argv)
  results = study.run(args.out, quick=args.quick, config=config_from_args(args))
  print(f"noise study ({results['mode']}) done in {results['wall_s']:.0f} s; see {args.out}/summary.md")
  return 0


if __name__ == "__main__":
  sys.exit(main())
