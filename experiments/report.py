"""The reproduction's report.md: it presents the studies' results and the verdicts their rules computed.

The verdicts come from each study's verdict.py (`experiments.noise.verdict`, `experiments.synthetic.verdict`,
`experiments.comparison.verdict`, `experiments.stability.verdict`, `experiments.decay.verdict`,
`experiments.batch_size.verdict`) through `experiments.reproduce`; nothing here judges a number. Also the
environment a run records (packages, devices, commit).
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from experiments.common import results as results_lib
from experiments.common import verdicts
from experiments.common.results import format_number, markdown_table

# Packages whose versions decide the numbers (jaxlib holds XLA; the rest build the models and data).
_PACKAGES = ("jax", "jaxlib", "optax", "flax", "chex", "orbax-checkpoint", "numpy", "scipy",
             "tokenizers", "ml_collections", "matplotlib")


def _git_commit() -> str | None:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                            timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + (" (with uncommitted changes)" if dirty else "")


def environment() -> dict[str, Any]:
  """Versions, devices and host facts that the numbers depend on (JSON-able)."""
  import jax  # Imported here so that the report's rules stay importable without initialising a backend.
  versions = {}
  for name in _PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  devices = jax.devices()
  return {
      "python": sys.version.split()[0],
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
      "jax_backend": jax.default_backend(),
      "devices": [f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in devices],
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "packages": versions,
      "git_commit": _git_commit(),
      "utc_time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
  }


# ---------------------------------------------------------------------------------------------------------
# The paper's claims (Zhang et al., "Why are Adaptive Methods Good for Attention Models?", NeurIPS 2020; its
# table values are not quoted).

PAPER_CLAIMS = {
    "RQ1": ("Gradient noise in BERT pretraining is heavy-tailed, in ResNet/ImageNet concentrated "
            "(Gaussian-like); tuned SGD is far behind Adam on BERT but competitive on ResNet."),
    "RQ2": ("Under noise with only a bounded alpha-moment (alpha in (1, 2]) SGD can diverge, while "
            "global-norm clipping (GClip) converges, at rate O(k^(-2(alpha-1)/alpha)) when strongly convex."),
    "RQ3": ("With a per-coordinate alpha-moment bound, coordinate-wise clipping (CClip) removes the "
            "dimension dependence that GClip has."),
    "RQ4": ("ACClip beats Adam in BERT pretraining (lower MLM loss, higher MLM accuracy) and in SQuAD v1.1 "
            "fine-tuning (higher EM/F1); the margins were small."),
    "RQ5": ("(Beyond the paper: no claim of its own.) The clipping methods that came after it - ZClip, AdaGC, "
            "AutoClip, SPAM - are what practitioners now use against loss spikes; do they beat its rules and "
            "Adam(W)?"),
    "RQ6": ("(Beyond the paper: a question of our own.) The spike-clipping methods are sold on stability: "
            "do ZClip, SPAM, Stable-SPAM and skip-step train at larger learning rates than AdamW before BERT "
            "collapses?"),
    "RQ7": ("(Beyond the paper: a question of our own.) In RQ4 the optimizers split by their weight decay, not "
            "by clipping: what separates the paper's ACClip from Adam(W), the clip or the weight decay?"),
    "RQ8": ("(The paper's mechanism, tested.) The paper explains Adam's lead over SGD on BERT by heavy-tailed "
            "gradient noise; Kunstner et al. (2023) find the gap persists with full batches. Does the SGD-Adam "
            "gap shrink as the batch grows to the whole objective?"),
}

RQ_TITLES = {
    "RQ1": "RQ1: is the gradient noise heavy-tailed for BERT and not for ResNet?",
    "RQ2": "RQ2: does clipping converge where SGD fails under heavy-tailed noise?",
    "RQ3": "RQ3: does coordinate-wise clipping remove the dimension dependence?",
    "RQ4": "RQ4: does ACClip beat Adam on BERT?",
    "RQ5": "RQ5: do the clipping methods that came after the paper beat its rules and Adam(W)?",
    "RQ6": "RQ6: do the spike-clipping methods stretch the largest learning rate at which BERT trains?",
    "RQ7": "RQ7: the clip or the weight decay: what separates the paper's ACClip from Adam(W)?",
    "RQ8": "RQ8: does the Adam-SGD gap on BERT shrink with the gradient noise (the batch size)?",
}


# ---------------------------------------------------------------------------------------------------------
# The Markdown report.

def _figures(out_dir: str, part_dir: str, keywords: Sequence[str] = ()) -> list[str]:
  """PNG files under ``out_dir/part_dir`` (relative paths), those whose names hold a keyword if given."""
  root = os.path.join(out_dir, part_dir)
  found = []
  for folder, _, files in os.walk(root):
    for name in sorted(files):
      if name.endswith(".png") and (not keywords or any(k in name for k in keywords)):
        found.append(os.path.relpath(os.path.join(folder, name), out_dir))
  return sorted(found)


def _figure_lines(paths: Sequence[str]) -> list[str]:
  return [f"![{os.path.splitext(os.path.basename(p))[0]}]({p})" for p in paths] or ["(no figure was written)"]


def write_report(out_dir: str, results: Mapping[str, Any],
                 figure_keywords: Mapping[str, Sequence[str]] | None = None,
                 extra_sections: Mapping[str, Sequence[str]] | None = None) -> str:
  """Writes ``out_dir/report.md`` from a results dict (see `experiments.reproduce.run`); returns its path.

  Args:
    out_dir: the run's output folder; figures are linked relative to it.
    results: the reproduction's results, with ``research_questions`` from `assess_all`.
    figure_keywords: RQ -> substrings that select that RQ's figures among its part's PNGs (all if absent).
    extra_sections: RQ -> Markdown lines appended to that RQ's section (tables the part adds).
  """
  figure_keywords = figure_keywords or {}
  extra_sections = extra_sections or {}
  rqs = results["research_questions"]
  parts = results["parts"]
  mode = results["mode"]
  lines = [
      '# Reproducing "Why are Adaptive Methods Good for Attention Models?" at small scale',
      "",
      f"Mode: **{mode}**. Written {results['environment']['utc_time']}; wall time of the parts "
      f"{format_number(sum(p.get('wall_s', 0.0) for p in parts.values()) / 60, 3)} min "
      f"(this invocation: {format_number(results['wall_s'] / 60, 3)} min). "
      f"Command: `{results.get('command') or '(called from Python)'}`.",
      "",
      "Verdicts are computed from the numbers below by the stated rules, never set by hand: **supported** "
      "(the effect goes the paper's way by more than the margin), **not supported** (the other way by more "
      "than the margin) or **inconclusive at this scale**.",
      "",
      "## Summary",
      "",
      markdown_table(["question", "paper's claim", "our verdict", "from"],
                     [[rq, rqs[rq]["paper"], f"**{rqs[rq]['verdict']}**", f"{rqs[rq]['part']} part"]
                      for rq in sorted(rqs)]),
      "",
  ]
  for rq in sorted(rqs):
    assessed = rqs[rq]
    part = parts.get(assessed["part"], {})
    lines += [f"## {RQ_TITLES[rq]}", "", f"Paper: {assessed['paper']}", "",
              f"Part: `{assessed['part']}` ({part.get('status', 'not run')}, "
              f"{format_number(part.get('wall_s', float('nan')) / 60, 3)} min, output in `{part.get('dir', assessed['part'])}/`).",
              ""]
    data = part.get("summary", {}).get("data_description", [])
    if data:  # what the part loaded, as it recorded it (never a description typed for the mode)
      lines += ["Data:", ""] + [f"- {sentence}" for sentence in data] + [""]
    lines += verdict_lines(assessed)
    lines += list(extra_sections.get(rq, ()))
    lines += ["", "Figures:", ""]
    lines += _figure_lines(_figures(out_dir, part.get("dir", assessed["part"]), figure_keywords.get(rq, ())))
    lines += [""]
  failed = {name: p for name, p in parts.items() if p.get("status") != "ok"}
  if failed:
    lines += ["## Failed parts", ""]
    for name, part in failed.items():
      lines += [f"### {name}", "", "```", (part.get("error") or part.get("status", "")).strip()[-3000:], "```", ""]
  lines += list(extra_sections.get("appendix", ()))
  lines += _environment_lines(results)
  path = os.path.join(out_dir, "report.md")
  results_lib.write_text(path, "\n".join(lines).rstrip() + "\n")
  return path


def verdict_lines(assessed: Mapping[str, Any]) -> list[str]:
  """A research question's rows (measure, ours, paper, verdict), its rules and its verdict, in Markdown."""
  lines = []
  if assessed["rows"]:
    lines += [markdown_table(["measure", "ours", "paper", "verdict"],
                             [[r["measure"], r["ours"], r["paper"],
                               r["verdict"] if r["verdict"] == "—" else f"**{r['verdict']}**"]
                              for r in assessed["rows"]]), "", "Rules:", ""]
    lines += [f"- {r['measure']}: {r['rule']}" for r in assessed["rows"]]
  return lines + [f"- {assessed['overall_rule']}", "",
                  f"**Verdict: {assessed['verdict']}.**{verdicts.edges_sentence(assessed.get('edges'))}", ""]


def _environment_lines(results: Mapping[str, Any]) -> list[str]:
  env = results["environment"]
  packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
  walls = [[name, part.get("status"), format_number(part.get("wall_s", float("nan")) / 60, 3),
            format_number(part.get("cpu_s"), 3), format_number(part.get("load_average_end"), 3)]
           for name, part in results["parts"].items()]
  return [
      "## Environment", "",
      f"- Python {env['python']} on {env['platform']}; {env['cpu_count']} CPUs "
      f"({env['cpu_affinity']} usable); JAX backend `{env['jax_backend']}`, {env['device_count']} device(s): "
      f"{', '.join(sorted(set(env['devices'])))}; {env['process_count']} process(es).",
      f"- Packages: {packages}.",
      f"- Code: git commit {env['git_commit'] or 'unknown'}.",
      f"- XLA_FLAGS: `{env['xla_flags'] or '(none)'}`.",
      "",
      markdown_table(["part", "status", "wall time (min)", "CPU time of this process (s)",
                      "1-min load average at its end"], walls),
      "",
      f"The machine has {env['cpu_count']} CPUs; a load average above that means other programs shared "
      "them, and the wall times above are longer than on an idle machine.",
      "",
  ]


