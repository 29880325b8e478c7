"""Hard Concrete vs REINFORCE on quality and speed: who reaches the better discrete set, and how soon.

Both run the same objective, data, optimiser (Adam, lr 0.1), minibatches and schedule (``search.SearchConfig``
defaults: gates start open at logit 3, lambda ramped in over the first 30% of the steps; Hard Concrete
then runs its last 70% on straight-through hard gates, which REINFORCE, already discrete, has no use
for). REINFORCE draws 8 samples per step with a 0.99 moving-average baseline. The plain method of
METHOD.md (logit 0, fixed lambda, relaxed gates throughout) runs as the control. Every ``chunk`` steps the
logits are recorded with the compute time so far (compile excluded, reported apart); afterwards every
recorded read-out set S (logit > 0) is scored, all at once, with the discrete objective

    J(S) = mean over the search items of softplus(logit(y) - logit(y') with S replaced) + lambda * |S|

and its flip rate on held-out items (both on fixed random subsets of SCORE_ITEMS items).

Per seed: Hard Concrete's final J, REINFORCE's best J anywhere in its budget (``budget_factor`` x Hard
Concrete's time), and the time each needs to first reach that best J. The speedup of a seed is REINFORCE's
time to its best J over Hard Concrete's time to reach it (0 when Hard Concrete never does); the headline
``speedup_to_rf_best`` is the median over seeds. Also: the time each needs to reach a fixed quality, a
read-out set that flips >= 0.95 of the held-out items with no more units than the smallest such set that
either estimator found on that seed.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import jax
import numpy as np

from benchmarks import common
from jaxmask import interventions, search

SCORE_ITEMS = 512
TOLERANCE = 1e-3  # the quality bar: Hard Concrete's final J <= REINFORCE's best J + this


def _trajectory(program: common.SearchProgram, budget_seconds: float, max_chunks: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """Runs chunks until the budget or max_chunks; returns (seconds, logits (K+1, N)) at each record."""
  key = jax.random.key(seed)
  state = program.initial_state()
  seconds, logits = [0.0], [np.asarray(state.logits[0])]
  elapsed = 0.0
  for c in range(max_chunks):
    start = time.perf_counter()
    state, _, _ = program.run(state, first_step=c * program.chunk, key=key)
    elapsed += time.perf_counter() - start
    seconds.append(elapsed)
    logits.append(np.asarray(state.logits[0]))
    if elapsed >= budget_seconds:
      break
  return np.asarray(seconds), np.stack(logits)


def _score(params, items: interventions.Items, heldout: interventions.Items, logits_KxN: np.ndarray, lam: float
           ) -> dict[str, np.ndarray]:
  """J, set size and held-out flip rate of the read-out set of every recorded logits row (distinct sets once)."""
  sets, inverse = np.unique(logits_KxN > 0, axis=0, return_inverse=True)
  gates_SxN = sets.astype(np.float32)
  margins = np.asarray(interventions.margins(params, items, gates_SxN))
  held = np.asarray(interventions.margins(params, heldout, gates_SxN))
  size = gates_SxN.sum(axis=1)
  flip_loss = np.logaddexp(0.0, margins).mean(axis=1)
  inverse = inverse.reshape(-1)
  return {"objective": (flip_loss + lam * size)[inverse], "size": size[inverse],
          "flip_rate": (held < 0).mean(axis=1)[inverse]}


def _first(mask: np.ndarray) -> int | None:
  hits = np.flatnonzero(mask)
  return int(hits[0]) if hits.size else None


def _seconds_at(seconds: np.ndarray, index: int | None) -> float | None:
  return None if index is None else float(seconds[index])


def _row(seed: int, runs: dict[str, tuple[np.ndarray, dict]], target_flip: float) -> dict[str, Any]:
  """One seed's figures from each run's (seconds, scores)."""
  (hc_t, hc), (rf_t, rf), (pl_t, pl) = runs["hc"], runs["rf"], runs["plain"]
  rf_best = float(rf["objective"].min())
  rf_i = _first(rf["objective"] <= rf_best + 1e-9)
  hc_i = _first(hc["objective"] <= rf_best + 1e-9)
  good = lambda s: (s["flip_rate"] >= target_flip) & (s["size"] > 0)
  sizes = [s["size"][good(s)].min() for s in (hc, rf) if good(s).any()]
  quality_size = int(min(sizes)) if sizes else None
  reach = lambda s: None if quality_size is None else _first(good(s) & (s["size"] <= quality_size))
  r = {"seed": seed,
       "hc_final_objective": float(hc["objective"][-1]), "hc_final_size": int(hc["size"][-1]),
       "hc_final_flip_rate": float(hc["flip_rate"][-1]), "hc_best_objective": float(hc["objective"].min()),
       "rf_best_objective": rf_best, "rf_best_size": int(rf["size"][rf_i]),
       "rf_best_flip_rate": float(rf["flip_rate"][rf_i]),
       "rf_final_objective": float(rf["objective"][-1]), "rf_final_size": int(rf["size"][-1]),
       "plain_final_objective": float(pl["objective"][-1]), "plain_final_size": int(pl["size"][-1]),
       "hc_seconds": float(hc_t[-1]), "rf_budget_seconds": float(rf_t[-1]), "plain_seconds": float(pl_t[-1]),
       "rf_seconds_to_rf_best": float(rf_t[rf_i]), "hc_seconds_to_rf_best": _seconds_at(hc_t, hc_i),
       "plain_seconds_to_rf_best": _seconds_at(pl_t, _first(pl["objective"] <= rf_best + 1e-9)),
       "quality_size": quality_size, "hc_seconds_to_quality": _seconds_at(hc_t, reach(hc)),
       "rf_seconds_to_quality": _seconds_at(rf_t, reach(rf)),
       "plain_seconds_to_quality": _seconds_at(pl_t, reach(pl)),
       "traces": {name: {"seconds": t.tolist(), "objective": s["objective"].tolist(), "size": s["size"].tolist()}
                  for name, (t, s) in runs.items()}}
  r["quality_met"] = r["hc_final_objective"] <= rf_best + TOLERANCE
  r["speedup_to_rf_best"] = 0.0 if hc_i is None else r["rf_seconds_to_rf_best"] / max(hc_t[hc_i], 1e-9)
  return r


TARGET_FLIP = 0.95  # time to a fixed quality: the smallest set flipping this share of held-out items


def run(context: common.Context) -> dict[str, Any]:
  setup, quick = context.setup(), context.quick
  lam, seeds, target_flip = context.estimators_lambda, context.estimators_seeds, TARGET_FLIP
  params, items, heldout = setup["params"], setup["items"], setup["heldout"]
  rng = np.random.default_rng(0)  # J and the flip rate are scored on fixed random subsets
  score_items = items.take(np.sort(rng.permutation(items.prefix.shape[0])[:SCORE_ITEMS]))
  score_heldout = heldout.take(np.sort(rng.permutation(heldout.prefix.shape[0])[:SCORE_ITEMS]))
  hc_steps, chunk = (100, 10) if quick else (300, 10)
  budget_factor = 4.0 if quick else 12.0
  seed_list = tuple(range(1 if quick else seeds))
  base = search.SearchConfig(steps=hc_steps)
  plain = dataclasses.replace(base, init_logit=0.0, schedule="fixed", hard_fraction=0.0)
  programs = {"hc": common.SearchProgram(params, items, [lam], base, chunk=chunk),
              "plain": common.SearchProgram(params, items, [lam], plain, chunk=chunk),
              # REINFORCE keeps the schedule's step indices (ramp over Hard Concrete's first 90 steps) and then
              # runs on at the full lambda for the rest of its longer budget.
              "rf": common.SearchProgram(params, items, [lam], dataclasses.replace(base, method="reinforce"),
                                         chunk=chunk)}
  per_seed, rows = [], []
  for seed in seed_list:
    runs = {}
    for name in ("hc", "plain"):
      t, logits = _trajectory(programs[name], float("inf"), hc_steps // chunk, seed)
      runs[name] = (t, _score(params, score_items, score_heldout, logits, lam))
    t, logits = _trajectory(programs["rf"], budget_factor * runs["hc"][0][-1], 10 ** 6, seed)
    runs["rf"] = (t, _score(params, score_items, score_heldout, logits, lam))
    r = _row(seed, runs, target_flip)
    per_seed.append(r)
    fmt = lambda x: "never" if x is None else f"{x:.3g}"
    rows.append([seed, f"{r['hc_final_objective']:.4f} ({r['hc_final_size']})",
                 f"{r['rf_best_objective']:.4f} ({r['rf_best_size']})",
                 f"{r['plain_final_objective']:.4f} ({r['plain_final_size']})", "yes" if r["quality_met"] else "NO",
                 fmt(r["hc_seconds_to_rf_best"]), fmt(r["rf_seconds_to_rf_best"]), f"{r['speedup_to_rf_best']:.3g}",
                 r["quality_size"], fmt(r["hc_seconds_to_quality"]), fmt(r["rf_seconds_to_quality"])])
  out = {"lambda": lam, "hc_steps": hc_steps, "record_every_steps": chunk, "budget_factor": budget_factor,
         "schedule": dataclasses.asdict(base), "control": dataclasses.asdict(plain), "reinforce_samples": 8,
         "num_items": int(items.prefix.shape[0]), "num_heldout": int(heldout.prefix.shape[0]),
         "scored_on_items": int(score_items.prefix.shape[0]), "scored_on_heldout": int(score_heldout.prefix.shape[0]),
         "model": setup["description"], "target_flip": target_flip,
         "compile_seconds": {name: p.compile_seconds for name, p in programs.items()},
         "speedup_to_rf_best": statistics.median(r["speedup_to_rf_best"] for r in per_seed),
         "quality_met_seeds": sum(r["quality_met"] for r in per_seed), "seeds": per_seed}
  context.table(
      f"Estimators: Hard Concrete vs REINFORCE (lambda={lam}, {setup['description']}; J = flip loss + lambda |S| "
      f"of the read-out set, (size) in brackets; REINFORCE budget {budget_factor:g}x Hard Concrete's time; "
      f"quality = flips >= {target_flip} of held-out items with <= the smallest such set's size)",
      ["seed", "HC final J", "RF best J", "plain HC final J", "HC <= RF best + 1e-3", "HC s to RF best",
       "RF s to RF best", "speedup", "quality size", "HC s to quality", "RF s to quality"], rows)
  return out
