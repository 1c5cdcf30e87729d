"""CLI of the BERT optimizer comparison: ``python -m experiments.comparison --out DIR [--quick | --config NAME]``.

The mode is a config file, configs/NAME.py (full, quick; each docstring gives its expected time).
--weight-decay and --optimizers change the config as `experiments.reproduce` does; --squad-dir adds SQuAD
v1.1 fine-tuning. Rerunning into the same folder reuses every finished run.
"""
from __future__ import annotations

import argparse
import sys

from experiments.common import study_cli
from experiments.comparison import study


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.comparison", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  study_cli.add_config_arguments(parser, "experiments.comparison")
  parser.add_argument("--weight-decay", type=float, default=None, help="the weight decay of every optimizer")
  parser.add_argument("--optimizers", default=None, help="comma-separated registry names (default: the config's)")
  parser.add_argument("--squad-dir", default=None, help="folder with train-v1.1.json and dev-v1.1.json")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  optimizers = study_cli.comma_list(args.optimizers)
  try:
    config = study.with_flags(study_cli.study_config("experiments.comparison", study_cli.config_name(args)),
                              args.weight_decay, optimizers)
  except ValueError as error:
    parser.error(str(error))
  summary = study.run(args.out, config, squad_dir=args.squad_dir)
  print(f"BERT comparison ({summary['mode']}) done; see {args.out}/results.json")
  return 0


if __name__ == "__main__":
  sys.exit(main())
