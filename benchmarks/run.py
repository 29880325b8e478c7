"""Runs the benchmarks of issue 6 and writes every figure to one JSON file; each part prints its table.

    python -m benchmarks.run --output=results.json [--quick] [--checkpoint=workdir_lm] [--parts=sweep,torch]

``--quick`` (< 3 minutes on 2 cores) shortens every part; the published tables (RESULTS.md) come from a run
without it. Without ``--checkpoint`` the estimators and ablation use a random-weight LM and say so.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from benchmarks import ablation, common, estimators, kl, optimality, roofline, scaling, sweep, torch_ref
from benchmarks import torch_transformer
from jaxmask import report

# Every part is a module with run(context: common.Context) -> dict of its figures; a new part is one entry.
PARTS = {"estimators": estimators, "sweep": sweep, "torch": torch_ref, "ablation": ablation, "roofline": roofline,
         "scaling": scaling, "optimality": optimality, "kl": kl, "torch_transformer": torch_transformer}


def _define_flags() -> None:
  """The command line's flags, defined only when this runs as a program: importing the module (for ``PARTS``)
  defines none, so a process that also imports jaxmask.main (whose --checkpoint is its own flag) can."""
  global _OUTPUT, _QUICK, _CHECKPOINT, _ITEMS, _FORMAT, _PARTS, _TABLES, _LAMBDA, _SEEDS
  global _OPTIMALITY_PLOT, _OPTIMALITY_CACHE
  _OUTPUT = flags.DEFINE_string("output", None, "Where to write the JSON of every figure.", required=True)
  _QUICK = flags.DEFINE_bool("quick", False, "Shorter runs of every part (< 3 minutes on 2 cores).")
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Trained LM checkpoint directory, or 'default' for the "
                                    "shipped LM (unset: random weights).")
  _ITEMS = flags.DEFINE_string("items", None, "Items for the estimators and ablation parts (a file in --format); "
                               "unset: the generated agreement items.")
  _FORMAT = flags.DEFINE_string("format", "tsv", "Format of --items (jaxmask.formats.FORMATS: tsv, marvin_linzen, "
                                "blimp, lakretz, colorlessgreen).")
  _PARTS = flags.DEFINE_list("parts", list(PARTS), f"Which parts to run, of {', '.join(PARTS)}.")
  _TABLES = flags.DEFINE_string("tables", None, "Also write the printed tables to this Markdown file.")
  _LAMBDA = flags.DEFINE_float("estimators_lambda", 0.01, "The sparsity coefficient of the estimators part.")
  _SEEDS = flags.DEFINE_integer("estimators_seeds", 5, "Search seeds of the estimators part (--quick: 1).")
  _OPTIMALITY_PLOT = flags.DEFINE_string("optimality_plot", None,
                                         "The optimality part's figure (gap vs k); default: beside --output.")
  _OPTIMALITY_CACHE = flags.DEFINE_string("optimality_cache", None,
                                          "Where the optimality part caches its tiny LMs (default: a temp folder).")


def _headline(results: dict) -> dict:
  """The figures the issue names, in one place (None where a part did not run)."""
  get = lambda part, key: results.get(part, {}).get(key)
  return {"estimators": {"speedup_to_rf_best": get("estimators", "speedup_to_rf_best"),
                         "quality_met_seeds": get("estimators", "quality_met_seeds")},
          "sweep": {"throughput_ratio_16": get("sweep", "throughput_ratio_16")},
          "torch": {"speedup": get("torch", "speedup"), "speedup_vs_compile": get("torch", "speedup_vs_compile")},
          "torch_transformer": {"speedup": get("torch_transformer", "speedup"),
                                "speedup_vs_compile": get("torch_transformer", "speedup_vs_compile"),
                                "speedup_gpt2_small": get("torch_transformer", "speedup_gpt2_small")},
          "ablation": {"speedup": get("ablation", "speedup"),
                       "speedup_vs_batched_loop": get("ablation", "speedup_vs_batched_loop")},
          "roofline": {"fraction_of_peak": get("roofline", "fraction_of_peak"),
                       "fraction_of_peak_gulordava": get("roofline", "fraction_of_peak_gulordava")},
          "kl": {"overhead_default": get("kl", "overhead_default"),
                 "overhead_gulordava": get("kl", "overhead_gulordava")}}


GOALS = (  # (part, key, goal, what): jaxmask's advantage or fraction, and the goal for it
    ("estimators", "speedup_to_rf_best", 10.0, "Hard Concrete reaches REINFORCE's best objective sooner (time, median)"),
    ("sweep", "throughput_ratio_16", 1.5, "16 lambdas vmapped vs looped, throughput"),
    ("torch", "speedup", 2.0, "16-lambda sweep vs PyTorch eager, default size"),
    ("torch", "speedup_vs_compile", 1.0, "16-lambda sweep vs torch.compile, default size"),
    ("torch_transformer", "speedup", None, "16-lambda sweep vs PyTorch forward hooks (eager), default transformer"),
    ("torch_transformer", "speedup_vs_compile", None, "the same vs torch.compile with hooks, default transformer"),
    ("torch_transformer", "speedup_gpt2_small", None, "16-lambda sweep vs PyTorch hooks (eager), GPT-2 small"),
    ("ablation", "speedup", 50.0, "all-unit pass vs Lakretz et al. (PyTorch eager, batch 1)"),
    ("ablation", "speedup_vs_batched_loop", None, "all-unit pass vs per-unit PyTorch loop batched over items"),
    ("roofline", "fraction_of_peak", 0.4, "16-lambda step, default size: fraction of matmul peak"),
    ("roofline", "fraction_of_peak_gulordava", 0.6, "16-lambda step, Gulordava size: fraction of matmul peak"),
    ("kl", "overhead_default", 2.0, "sweep time with mu > 0 over mu = 0, default size (at most)"),
    ("kl", "overhead_gulordava", 2.0, "sweep time with mu > 0 over mu = 0, Gulordava size (at most)"),
)


def _goals_table(context: common.Context, results: dict) -> None:
  rows = []
  for part, key, goal, what in GOALS:
    value = results.get(part, {}).get(key)
    at_most = part == "kl"  # a cost, not an advantage
    met = "-" if value is None or goal is None else ("yes" if (value <= goal if at_most else value >= goal) else "NO")
    rows.append([f"{part}.{key}", what, "none" if goal is None else f"{'<=' if at_most else '>='} {goal:g}",
                 "not run" if value is None else f"{value:.3g}", met])
  context.table("Goals of issues 6, 14 and 18", ["figure", "what", "goal", "measured", "met"], rows)


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint read at INFO
  unknown = sorted(set(_PARTS.value) - set(PARTS))
  if unknown:
    raise app.UsageError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}.")
  quick = _QUICK.value
  results = {"command": " ".join(["python -m benchmarks.run"] + sys.argv[1:]), "quick": quick,
             "machine": common.machine(),
             "gpu": "no GPU was lent to this run; CPU only"}
  context = common.Context(
      quick=quick, checkpoint=_CHECKPOINT.value, items=_ITEMS.value, fmt=_FORMAT.value, estimators_lambda=_LAMBDA.value, estimators_seeds=_SEEDS.value,
      optimality_plot=_OPTIMALITY_PLOT.value or os.path.splitext(_OUTPUT.value)[0] + "_optimality.png",
      optimality_cache=_OPTIMALITY_CACHE.value)
  context.table("Machine", ["cores", "CPU", "JAX backend", "load average at start"],
                [[results["machine"]["cores"], results["machine"]["cpu_model"], results["machine"]["jax_backend"],
                  " ".join(f"{x:.2f}" for x in results["machine"]["load_average_at_start"])]])
  timings = {}
  for part, module in PARTS.items():
    if part not in _PARTS.value:
      continue
    start = time.perf_counter()
    results[part] = module.run(context)
    timings[part] = time.perf_counter() - start
    print(f"[{part}: {timings[part]:.1f} s]\n", flush=True)
  results["part_seconds"] = timings
  results["total_seconds"] = sum(timings.values())
  results["headline"] = _headline(results)
  _goals_table(context, results)
  with open(_OUTPUT.value, "w", encoding="utf-8") as f:
    json.dump(report.finite(results), f, indent=1, default=float)
  if _TABLES.value:
    with open(_TABLES.value, "w", encoding="utf-8") as f:
      f.write(f"Command: `{results['command']}`\n\n" + "\n".join(context.tables))
  print(json.dumps(results["headline"], indent=1, default=float))
  print(f"total {results['total_seconds']:.1f} s; wrote {_OUTPUT.value}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
