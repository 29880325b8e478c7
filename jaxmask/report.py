"""The main job's outputs: results.json, pareto.png (set size vs held-out flip rate), specificity.png, traces.png,
summary.md."""

from __future__ import annotations

import os
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxmask import baselines, files  # noqa: E402

# (label, color, marker) of every method, search methods included: from the one registry.
METHOD_STYLE = {name: (m.label, m.color, m.marker) for name, m in baselines.METHODS.items()}


def finite(tree: Any) -> Any:
  """The same tree with NaN (no items to score, a constant variable) as None, so its JSON stays standard."""
  if isinstance(tree, dict):
    return {k: finite(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [finite(v) for v in tree]
  return None if isinstance(tree, float) and np.isnan(tree) else tree


def write(workdir: str, results: dict[str, Any], traces: dict[str, Any]) -> None:
  """Writes the four files into ``workdir``, each atomically and results.json last (a run killed before it
  left no results; the rerun writes them all)."""
  pareto(results, os.path.join(workdir, "pareto.png"))
  if _has_side_effects(results):
    specificity(results, os.path.join(workdir, "specificity.png"))
  trace_plot(traces, results, os.path.join(workdir, "traces.png"))
  files.write_text(os.path.join(workdir, "summary.md"), summary(results))
  files.write_json(os.path.join(workdir, "results.json"), results, indent=1)


def _save(fig: plt.Figure, path: str, dpi: int) -> None:
  files.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi), binary=True)
  plt.close(fig)


def pareto(results: dict[str, Any], path: str) -> None:
  """Set size (log scale) vs held-out flip rate: every method's curve over k with its 95% band, and every
  lambda of each sweep as hollow points."""
  fig, ax = plt.subplots(figsize=(9, 4.8))
  for method in dict.fromkeys(r["method"] for r in results["sweep"]):
    rows = sorted((r for r in results["sweep"] if r["method"] == method and r["units"]), key=lambda r: len(r["units"]))
    if rows:
      label, color, marker = METHOD_STYLE[method]
      ax.scatter([len(r["units"]) for r in rows], [r["heldout_flip_rate"] for r in rows], marker=marker,
                 facecolors="none", edgecolors=color, label=f"{label}: every lambda", zorder=3)
  for method, rows in results.get("baselines", {}).items():
    label, color, marker = METHOD_STYLE[method]
    ks = [r["k"] for r in rows]
    search_method = baselines.METHODS[method].sets is None
    ax.plot(ks, [r["heldout_flip_rate"] for r in rows], color=color, marker=marker, ms=4,
            label=label + (": target-size sweep" if search_method else ""), linestyle="-" if search_method else ":")
    if all("ci95" in r for r in rows):
      ax.fill_between(ks, [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows], color=color, alpha=0.12, lw=0)
    if method == "random":
      ax.errorbar(ks, [r["heldout_flip_rate"] for r in rows], yerr=[r["heldout_flip_rate_sd"] for r in rows],
                  color=color, linestyle="none", capsize=3)
  sel = results["selected"]
  ax.scatter([sel["size"]], [sel["heldout_flip_rate"]], s=180, facecolors="none", edgecolors="k", zorder=5,
             label=f"selected ({sel['size']} units)")
  ax.axhline(results["config"]["target_flip"], color="k", lw=0.8, ls="--")
  if sel["size"] or any(r["units"] for r in results["sweep"]) or results.get("baselines"):
    ax.set_xscale("log", base=2)
  ax.set_xlabel("units intervened (set size)")
  ax.set_ylabel("held-out flip rate")
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(f"{results['config']['phenomenon']}: {results['model']['num_units']} units, "
               f"{results['config']['replacement']} intervention")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  fig.tight_layout()
  _save(fig, path, 120)


def _has_side_effects(results: dict[str, Any]) -> bool:
  rows = [r for m, rs in results.get("baselines", {}).items() if m != "random" for r in rs]
  return bool(rows) and all("control_kl_merged" in r for r in rows)


def specificity(results: dict[str, Any], path: str) -> None:
  """Held-out flip rate against the merged control KL of each method's set, one line per method over k:
  up and to the left is a set that flips the phenomenon and changes nothing else."""
  fig, ax = plt.subplots(figsize=(8, 4.8))
  for method, rows in results["baselines"].items():
    if method == "random":
      continue
    label, color, marker = METHOD_STYLE[method]
    ax.plot([r["control_kl_merged"] for r in rows], [r["heldout_flip_rate"] for r in rows], color=color,
            marker=marker, ms=4, label=label)
  ax.set_xscale("symlog", linthresh=1e-3)
  ax.set_xlabel("control KL, phenomenon's word pairs merged (nats/token)")
  ax.set_ylabel("held-out flip rate")
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(f"{results['config']['phenomenon']}: flip rate vs side effects, each method's set at every k")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  fig.tight_layout()
  _save(fig, path, 120)


def trace_plot(traces: dict[str, Any], results: dict[str, Any], path: str) -> None:
  """One panel per selected unit: its mean activation at each word, for the two groups of items."""
  units = traces["units"]
  count = max(1, len(units))
  cols = min(4, count)
  rows = (count + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
  words = traces["words"][:traces["positions"]]
  for i, ax in enumerate(axes.flat):
    if i >= len(units):
      ax.axis("off")
      continue
    for (name, acts), color in zip(traces["groups"].items(), ("C0", "C3", "C2", "C1")):
      ax.plot(range(traces["positions"]), acts[i], color=color, marker="o", ms=3, label=name)
    ax.set_title(units[i], fontsize=9)
    ax.set_xticks(range(len(words)))
    ax.set_xticklabels(words, rotation=60, fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.grid(alpha=0.3)
    if i == 0:
      ax.legend(fontsize=7)
  if not units:
    axes.flat[0].text(0.5, 0.5, "no unit selected", ha="center", va="center")
  fig.suptitle(f"Activation (h or c) of the selected units, mean over held-out items "
               f"({results['config']['phenomenon']})", fontsize=10)
  fig.tight_layout()
  _save(fig, path, 110)


def _pct(x: float | None) -> str:
  return "n/a" if x is None else f"{100 * x:.1f}%"


def _methods_table(base: dict[str, list[dict]]) -> list[str]:
  """One row per method: the held-out flip rate at each k with its 95% interval, and the AUC over k."""
  ks = [r["k"] for r in next(iter(base.values()))]

  def cell(r):
    text = _pct(r["heldout_flip_rate"])
    if "ci95" in r:
      text += f" [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"
    if "heldout_flip_rate_sd" in r:
      text += f" (sd {_pct(r['heldout_flip_rate_sd'])})"
    if "seed_min" in r:
      text += f" (seeds {_pct(r['seed_min'])} to {_pct(r['seed_max'])})"
    return text

  lines = ["", "## Methods at equal set size", "",
           "Held-out flip rate of each method's set of at most k units, with its 95% bootstrap interval over "
           "items (random: mean over draws; several seeds: mean over seeds); AUC: the area under the flip rate "
           "vs k, trapezoid rule, divided by the range of k.", "",
           "| method | " + " | ".join(f"k={k}" for k in ks) + " | AUC |", "|---" * (len(ks) + 2) + "|"]
  lines += [f"| {METHOD_STYLE[method][0]} | " + " | ".join(cell(r) for r in rows) + f" | {baselines.auc(rows):.3f} |"
            for method, rows in base.items()]
  if all("mean_logit_diff_change" in r for rows in base.values() for r in rows):
    lines += ["", "Mean over held-out items of the clean margin minus the intervened margin, logit(y) - logit(y'):", "",
              "| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    lines += [f"| {METHOD_STYLE[method][0]} | " + " | ".join(f"{r['mean_logit_diff_change']:.3f}" for r in rows) + " |"
              for method, rows in base.items()]
  if all("control_kl_merged" in r for m, rows in base.items() if m != "random" for r in rows):
    lines += ["", "Side effects of the same sets (specificity.png): merged control KL in nats/token, and in brackets "
              "the flip rate of the other phenomenon's items:", "",
              "| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    lines += [f"| {METHOD_STYLE[method][0]} | " + " | ".join(
        f"{r['control_kl_merged']:.4f} ({_pct(r['other_phenomenon_flip_rate'])})" for r in rows) + " |"
              for method, rows in base.items() if method != "random"]
  return lines


def summary(results: dict[str, Any]) -> str:
  """The table a person reads first."""
  sel, model, cfg = results["selected"], results["model"], results["config"]
  lines = [f"# jaxmask: {cfg['phenomenon']}", "",
           f"Model: `{model['checkpoint']}` ({model['layers']} x {model['hidden']} "
           f"{'LSTM' if model.get('family', 'lstm') == 'lstm' else model['family']}, {model['num_units']} units). "
           f"Clean held-out accuracy: {_pct(results['items']['heldout_clean_accuracy'])} "
           f"on {results['items']['heldout']['items']} items "
           f"({results['items']['heldout']['skipped_oov']} skipped as out of vocabulary). "
           + (f"Flip rates are measured on the {results['items']['heldout']['known']} held-out items (and "
              f"{results['items']['search']['known']} search items) that the clean model gets right on both the "
              f"prefix and the counterfactual." if results["config"]["only_known"] else
              "Flip rates are measured on all items (--only_known=false), including those the clean model gets wrong."),
           "",
           *([f"**Warning: the clean model gets only {results['items']['heldout']['known']} held-out items right on both "
              f"the prefix and the counterfactual: it barely computes this behaviour, so there is little to find "
              f"and the figures below say little.**", ""]
             if results["config"]["only_known"] and results["items"]["heldout"]["known"] < 50 else []),
           "## Selected set", "",
           f"The smallest set whose held-out flip rate reaches {cfg['target_flip']:.2f}"
           + (" in every condition" if cfg.get("select_by") == "every_condition" else " overall")
           + ("" if sel["reached_target"] else " (**no set reached it: the best set is shown**)") + ":", "",
           "| | |", "|---|---|",
           f"| method, lambda | {sel['method']}, {sel['lambda']:.4g} |",
           f"| units | {sel['size']} of {model['num_units']} ({_pct(sel['fraction_of_units'])}): "
           f"{', '.join(sel['units_readable'])} |",
           f"| Lakretz-style 1-based ids | {', '.join(map(str, sel['units_lakretz']))} |",
           f"| held-out flip rate | {_pct(sel['heldout_flip_rate'])} |",
           f"| worst condition | {min(sel['heldout_flip_rate_by_condition'].items(), key=lambda kv: kv[1])[0]}: "
           f"{_pct(min(sel['heldout_flip_rate_by_condition'].values()))} |",
           f"| control KL (mean replacement, held-out text) | {sel['control_kl']:.4f} nats/token |",
           f"| control KL with each item's y, y' merged (all but the phenomenon's own choice) | "
           f"{sel['control_kl_merged']:.4f} nats/token |",
           f"| control perplexity, clean -> intervened | {results['items']['control_clean_perplexity']:.2f} -> "
           f"{sel['control_perplexity']:.2f} |",
           f"| flip rate on {sel['other_phenomenon']} items | {_pct(sel['other_phenomenon_flip_rate'])} |", "",
           "### Held-out flip rate by condition", "", "| condition | clean accuracy | flip rate |", "|---|---|---|"]
  clean = results["items"]["heldout_clean_accuracy_by_condition"]
  lines += [f"| {c} | {_pct(clean.get(c, float('nan')))} | {_pct(v)} |"
            for c, v in sel["heldout_flip_rate_by_condition"].items()]
  lines += ["", "## Sweep", ""]
  if results.get("diverged"):
    lines += ["**Diverged (NaN or inf), so left out of this table, the selection and the plots: "
              + ", ".join(f"lambda={d['lambda']:.4g} at step {d['step']}" for d in results["diverged"])
              + f"; lower --learning_rate (now {cfg['learning_rate']}) or drop them from --lambdas.**", ""]
  lines += ["| method | lambda | size | E[L0] | train flip | held-out flip | control KL | "
            "merged KL | control ppl | other phenomenon flip |", "|---|---|---|---|---|---|---|---|---|---|"]
  lines += [f"| {r['method']} | {r['lambda']:.4g} | {len(r['units'])} | {r['expected_l0']:.1f} | "
            f"{_pct(r['train_flip_rate'])} | {_pct(r['heldout_flip_rate'])} | {r['control_kl']:.4f} | "
            f"{r['control_kl_merged']:.4f} | {r['control_perplexity']:.2f} | {_pct(r['other_phenomenon_flip_rate'])} |" for r in results["sweep"]]
  if "baselines" in results:
    lines += _methods_table(results["baselines"])
    if "overlap" in results:
      names = results["overlap"]["methods"]
      lines += ["", f"Jaccard overlap of the methods' sets at k = {sel['size']}:", "",
                "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
      lines += [f"| {a} | " + " | ".join(f"{x:.2f}" for x in row) + " |"
                for a, row in zip(names, results["overlap"]["jaccard"])]
  if "seeds" in results:
    seeds = results["seeds"]
    lines += ["", "## Stability across optimisation seeds (same items, same selection rule)", "",
              "| seed | size | held-out flip | units | Jaccard with seed " + str(seeds["seeds"][0]) + " |",
              "|---|---|---|---|---|"]
    lines += [f"| {s} | {len(u)} | {_pct(f)} | {', '.join(map(str, u))} | {j:.2f} |"
              for s, u, f, j in zip(seeds["seeds"], seeds["units"], seeds["heldout_flip_rate"], seeds["jaccard"][0])]
  timing = results["timing"]
  lines += ["", "## Timing (seconds)", "", " | ".join(f"{k}: {v:.1f}" for k, v in timing.items()), ""]
  return "\n".join(lines)
