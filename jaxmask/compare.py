"""What the main job measures about unit sets besides the selection: side effects, seed stability, and every
method of ``baselines.METHODS`` compared at equal set size."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmask import baselines, data, interventions, models, phenomena
from jaxmask.config import Config
from jaxmask.models import lstm
from jaxmask.sweeps import flip_rates, run_sweep, select


def side_effects(params: lstm.Params, unit_sets: list[list[int]], config: Config,
                 other: tuple[interventions.Items, list[data.Pair]], control: interventions.Control) -> list[dict[str, Any]]:
  """Per set, what it does besides flipping the phenomenon: control KL (plain, merged), perplexity, the other
  phenomenon's flip rate (None when the model gets none of its items right)."""
  gates_SxN = interventions.units_to_gates(unit_sets, models.num_units(params, config.sites))
  other_flip = [None] * len(unit_sets)
  if other[1]:
    other_flip, _ = flip_rates(np.asarray(interventions.margins(params, other[0], gates_SxN, replacement=config.replacement,
                                                         sites=config.sites)), other[1])
  effects = {k: np.asarray(v) for k, v in interventions.control_effects(params, control, gates_SxN, sites=config.sites).items()}
  return [{"control_kl": float(effects["kl"][s]), "control_kl_merged": float(effects["kl_merged"][s]),
           "control_perplexity": float(effects["perplexity"][s]), "other_phenomenon_flip_rate": other_flip[s]}
          for s in range(len(unit_sets))]


def evaluate_sets(params: lstm.Params, unit_sets: list[list[int]], config: Config, search_items: interventions.Items,
                  heldout: tuple[interventions.Items, list[data.Pair]], other: tuple[interventions.Items, list[data.Pair]],
                  control: interventions.Control) -> list[dict[str, Any]]:
  """Per set: train and held-out flip rates (by condition), and its :func:`side_effects`."""
  gates_SxN = interventions.units_to_gates(unit_sets, models.num_units(params, config.sites))
  scope = dict(replacement=config.replacement, sites=config.sites)
  train_flip = np.asarray((interventions.margins(params, search_items, gates_SxN, **scope) < 0).mean(axis=1))
  heldout_flip, by_condition = flip_rates(np.asarray(interventions.margins(params, heldout[0], gates_SxN, **scope)),
                                          heldout[1])
  return [{"train_flip_rate": float(train_flip[s]), "heldout_flip_rate": heldout_flip[s],
           "heldout_flip_rate_by_condition": by_condition[s], **effects}
          for s, effects in enumerate(side_effects(params, unit_sets, config, other, control))]


def seed_stability(params: lstm.Params, search_items: interventions.Items, config: Config, selected_row: dict,
                   heldout: tuple[interventions.Items, list[data.Pair]], control: interventions.Control | None,
                   extra_seeds: int = 2) -> dict[str, Any]:
  """The same search and selection rule with ``extra_seeds`` more optimisation seeds (same items).

  Returns ``{"seeds", "units" (the selected set per seed), "heldout_flip_rate", "jaccard"}``, where
  ``jaccard`` is the pairwise overlap matrix of the selected sets; the first seed is ``config.seed``,
  whose selected row is passed in. Only the held-out flip rates that the selection reads are computed
  for the extra seeds' sets.
  """
  seeds, sets, rates = [config.seed], [selected_row["units"]], [selected_row["heldout_flip_rate"]]
  for seed in range(config.seed + 1, config.seed + 1 + extra_seeds):
    result = run_sweep(params, search_items, dataclasses.replace(config, seed=seed), config.method, control,
                       name=f"search_{config.method}_seed{seed}").finite()
    gates_SxN = interventions.units_to_gates(result.units, models.num_units(params, config.sites))
    flips, by_condition = flip_rates(np.asarray(interventions.margins(
        params, heldout[0], gates_SxN, replacement=config.replacement, sites=config.sites)), heldout[1])
    rows = [{"units": u, "heldout_flip_rate": f, "heldout_flip_rate_by_condition": c}  # what select reads
            for u, f, c in zip(result.units, flips, by_condition)]
    chosen, _ = select(rows, config.target_flip, config.select_by == "every_condition")
    seeds.append(seed)
    sets.append(result.units[chosen])
    rates.append(flips[chosen])
  return {"seeds": seeds, "units": sets, "heldout_flip_rate": rates,
          "jaccard": baselines.overlap_matrix(sets).tolist()}


def compare_methods(params: lstm.Params, config: Config, search_items: interventions.Items, search_pairs: list[data.Pair],
                    heldout_items: interventions.Items, selected: list[int], other: tuple[interventions.Items, list[data.Pair]],
                    control: interventions.Control, timing: dict[str, float]
                    ) -> tuple[dict[str, list[dict]], dict[str, Any]]:
  """Every method of ``baselines.METHODS`` at each k of ``config.baseline_ks`` (and the selected set's size).

  Both search estimators answer "the best set of k units" directly, with a target-size sweep vmapped over
  the ks, for ``config.search_seeds`` seeds each; with ``config.specificity_mu`` > 0, one more Hard
  Concrete target-size sweep adds mu * (merged control KL) to its objective ("hard_concrete_kl"): only a
  joint search can trade flip rate against side effects. The other methods choose from the same search
  items. All sets are judged on the held-out items (``baselines.compare``), and every method's set at
  every k (the first seed's) also on :func:`side_effects`. Returns (comparison, Jaccard overlap of the
  methods' sets at the selected set's size).
  """
  ks = tuple(sorted(set(config.baseline_ks) | ({len(selected)} if selected else set())))
  ks = tuple(k for k in ks if k <= models.num_units(params, config.sites))
  search_sets = {}
  for method in ("hard_concrete", "reinforce"):
    t0 = time.perf_counter()
    search_sets[method] = [
        run_sweep(params, search_items, dataclasses.replace(config, seed=seed), method, control,
                  name=f"target_{method}_seed{seed}", targets=ks).units
        for seed in range(config.seed, config.seed + config.search_seeds)]
    timing[f"target_sweeps_{method}_seconds"] = time.perf_counter() - t0
  if config.specificity_mu > 0:
    t0 = time.perf_counter()
    search_sets["hard_concrete_kl"] = [run_sweep(params, search_items, dataclasses.replace(config, mu=config.specificity_mu),
                                                 "hard_concrete", control, name=f"target_hard_concrete_kl_seed{config.seed}",
                                                 targets=ks).units]
    timing["target_sweep_hard_concrete_kl_seconds"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  labels = phenomena.get(config.phenomenon).probe_labels(search_pairs)
  comparison = baselines.compare(
      params, search_items, heldout_items, ks, labels=None if labels is None else jnp.asarray(labels),
      key=jax.random.key(config.seed), replacement=config.replacement, sites=config.sites,
      draws=config.random_draws, search_sets=search_sets)
  rows = [row for method, rows in comparison.items() if method != "random" for row in rows]
  for row, effects in zip(rows, side_effects(params, [row["units"] for row in rows], config, other, control)):
    row.update(effects)
  timing["baselines_seconds"] = time.perf_counter() - t0
  tops = {m: next((r["units"] for r in rows if r["k"] == len(selected)), [])
          for m, rows in comparison.items() if m != "random"}
  return comparison, {"methods": list(tops), "jaccard": baselines.overlap_matrix(list(tops.values())).tolist()}
