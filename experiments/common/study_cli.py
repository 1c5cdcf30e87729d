"""What the studies' command lines share: choosing a config file (a mode) and printing where results went."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
from typing import Optional

import ml_collections


def study_config(package: str, name: str) -> ml_collections.ConfigDict:
  """`<package>.configs.<name>.get_config()`, e.g. ("experiments.synthetic", "quick").

  Raises:
    ValueError: the package has no such config (naming the ones to choose from).
  """
  try:
    module = importlib.import_module(f"{package}.configs.{name}")
  except ModuleNotFoundError as error:
    raise ValueError(f"{package} has no config {name!r}; choose one of {', '.join(config_names(package))}") from error
  return module.get_config()


def config_names(package: str) -> list[str]:
  """The names of a study's configs (its configs/*.py)."""
  configs = importlib.import_module(f"{package}.configs")
  return sorted(m.name for m in pkgutil.iter_modules(configs.__path__))


def add_config_arguments(parser: argparse.ArgumentParser, package: str) -> None:
  """--out, --quick and --config NAME (configs/NAME.py of the study `package`; default: full)."""
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--quick", action="store_true", help="the quick config (same as --config quick)")
  parser.add_argument("--config", default=None, choices=config_names(package),
                      help="configs/NAME.py of the study (default: full)")


def comma_list(text: Optional[str]) -> Optional[list[str]]:
  """The names in a comma-separated flag ("a, b,," -> ["a", "b"]); None when the flag was not given."""
  return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def config_name(args: argparse.Namespace) -> str:
  """The config the parsed arguments choose (--quick and a different --config together are an error)."""
  if args.quick and args.config not in (None, "quick"):
    raise ValueError(f"--quick and --config {args.config} contradict each other")
  return "quick" if args.quick else (args.config or "full")


def dataclass_from_config(cls, config, study: str):
  """A study's frozen settings dataclass `cls` from a config (a ConfigDict, or the dict a summary.json
  recorded), lists as tuples, checked by its `validate()`.

  Raises:
    ValueError: a field `cls` does not have (naming the study), or one `validate` refuses.
  """
  values = dict(config.to_dict() if hasattr(config, "to_dict") else config)
  unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
  if unknown:
    raise ValueError(f"{study} study config: unknown field(s) {unknown}")
  settings = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
  settings.validate()
  return settings
