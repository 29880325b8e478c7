"""Hard Concrete vs REINFORCE: wall time and steps until the objective reaches Hard Concrete's final value.

Both run the same objective, data, optimiser (Adam, lr 0.1), minibatches and read-out (``search.sweep``'s
step, method "hard_concrete" or "reinforce" with 8 samples and a 0.99 moving-average baseline). Every
``chunk`` steps the state's logits are recorded with the compute time so far (compile excluded, reported
apart); afterwards each recorded read-out set S (logit > 0) is scored, all at once, with the comparable
objective

    J(S) = mean over the search items of softplus(logit(y) - logit(y') with S replaced) + lambda * |S|

and its flip rate on held-out items (both on fixed random subsets of SCORE_ITEMS items). Hard Concrete's
final J is the bar; the speedup is the time REINFORCE needs to reach it divided by the time Hard Concrete
needs to reach it (first recorded J <= bar). If REINFORCE never reaches the bar within its budget, the speedup is a lower bound and says so.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np

from benchmarks import common
from jaxmask import search

SCORE_ITEMS = 512


def _trajectory(program: common.SearchProgram, budget_seconds: float, max_chunks: int, seed: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Runs chunks until the budget or max_chunks; returns (seconds, steps, logits (K+1, N)) at each record."""
  key = jax.random.key(seed)
  state = program.initial_state()
  seconds, steps, logits = [0.0], [0], [np.asarray(state.logits[0])]
  elapsed = 0.0
  for c in range(max_chunks):
    start = time.perf_counter()
    state, _, _ = program.run(state, first_step=c * program.chunk, key=key)
    elapsed += time.perf_counter() - start
    seconds.append(elapsed)
    steps.append((c + 1) * program.chunk)
    logits.append(np.asarray(state.logits[0]))
    if elapsed >= budget_seconds:
      break
  return np.asarray(seconds), np.asarray(steps), np.stack(logits)


def _score(params, items: search.Items, heldout: search.Items, logits_KxN: np.ndarray, lam: float
           ) -> dict[str, np.ndarray]:
  """J, set size and held-out flip rate of the read-out set of every recorded logits row (distinct sets once)."""
  sets, inverse = np.unique(logits_KxN > 0, axis=0, return_inverse=True)
  gates_SxN = sets.astype(np.float32)
  margins = np.asarray(search.margins(params, items, gates_SxN))
  held = np.asarray(search.margins(params, heldout, gates_SxN))
  size = gates_SxN.sum(axis=1)
  flip_loss = np.logaddexp(0.0, margins).mean(axis=1)
  inverse = inverse.reshape(-1)
  return {"objective": (flip_loss + lam * size)[inverse], "size": size[inverse],
          "flip_rate": (held < 0).mean(axis=1)[inverse], "flip_loss": flip_loss[inverse]}


def _first_reach(objective: np.ndarray, bar: float) -> int | None:
  hits = np.flatnonzero(objective <= bar + 1e-6)
  return int(hits[0]) if hits.size else None


def run(setup: dict[str, Any], quick: bool, lam: float = 0.01, init_logit: float = 0.0) -> dict[str, Any]:
  params, items, heldout = setup["params"], setup["items"], setup["heldout"]
  # J and the flip rate are scored on fixed random subsets (the search still samples from every item).
  rng = np.random.default_rng(0)
  score_items = items.take(np.sort(rng.permutation(items.prefix.shape[0])[:SCORE_ITEMS]))
  score_heldout = heldout.take(np.sort(rng.permutation(heldout.prefix.shape[0])[:SCORE_ITEMS]))
  hc_steps = 60 if quick else 300
  chunk = 10
  budget_factor = 4.0 if quick else 12.0
  seeds = (0,) if quick else (0, 1, 2)
  config = lambda method: search.SearchConfig(method=method, steps=hc_steps, init_logit=init_logit)
  hc = common.SearchProgram(params, items, [lam], config("hard_concrete"), chunk=chunk)
  rf = common.SearchProgram(params, items, [lam], config("reinforce"), chunk=chunk)
  per_seed, rows = [], []
  for seed in seeds:
    hc_t, hc_s, hc_logits = _trajectory(hc, float("inf"), hc_steps // chunk, seed)
    hc_score = _score(params, score_items, score_heldout, hc_logits, lam)
    bar = float(hc_score["objective"][-1])
    hc_i = _first_reach(hc_score["objective"], bar)
    budget = budget_factor * hc_t[-1]
    rf_t, rf_s, rf_logits = _trajectory(rf, budget, 10 ** 6, seed)
    rf_score = _score(params, score_items, score_heldout, rf_logits, lam)
    rf_i = _first_reach(rf_score["objective"], bar)
    equal = int(np.searchsorted(rf_t, hc_t[-1], side="right") - 1)  # REINFORCE's last record by HC's end
    r = {"seed": seed, "bar_objective": bar, "hc_seconds_to_bar": float(hc_t[hc_i]), "hc_steps_to_bar": int(hc_s[hc_i]),
         "hc_total_seconds": float(hc_t[-1]), "hc_final_size": int(hc_score["size"][-1]),
         "hc_final_flip_rate": float(hc_score["flip_rate"][-1]),
         "rf_reached": rf_i is not None, "rf_budget_seconds": float(rf_t[-1]), "rf_budget_steps": int(rf_s[-1]),
         "rf_seconds_to_bar": float(rf_t[rf_i]) if rf_i is not None else None,
         "rf_steps_to_bar": int(rf_s[rf_i]) if rf_i is not None else None,
         "rf_size_at_equal_time": int(rf_score["size"][equal]),
         "rf_flip_rate_at_equal_time": float(rf_score["flip_rate"][equal]),
         "rf_objective_at_equal_time": float(rf_score["objective"][equal]),
         "rf_final_size": int(rf_score["size"][-1]), "rf_final_flip_rate": float(rf_score["flip_rate"][-1]),
         "rf_final_objective": float(rf_score["objective"][-1]),
         "hc_ms_per_step": 1e3 * hc_t[-1] / hc_s[-1], "rf_ms_per_step": 1e3 * rf_t[-1] / rf_s[-1],
         "hc_trace": {"seconds": hc_t.tolist(), "objective": hc_score["objective"].tolist(),
                      "size": hc_score["size"].tolist()},
         "rf_trace": {"seconds": rf_t.tolist(), "objective": rf_score["objective"].tolist(),
                      "size": rf_score["size"].tolist()}}
    reach = r["rf_seconds_to_bar"] if r["rf_reached"] else r["rf_budget_seconds"]
    # A bar met by the empty starting set (HC kept nothing) measures nothing: no speedup then.
    r["degenerate"] = hc_i == 0
    r["speedup"] = float("nan") if r["degenerate"] else reach / r["hc_seconds_to_bar"]
    r["speedup_steps"] = float("nan") if r["degenerate"] else (
        (r["rf_steps_to_bar"] if r["rf_reached"] else r["rf_budget_steps"]) / r["hc_steps_to_bar"])
    per_seed.append(r)
    rows.append([seed, bar, r["hc_steps_to_bar"], r["hc_seconds_to_bar"],
                 r["rf_steps_to_bar"] if r["rf_reached"] else f"> {r['rf_budget_steps']}",
                 r["rf_seconds_to_bar"] if r["rf_reached"] else f"> {r['rf_budget_seconds']:.3g}",
                 ("" if r["rf_reached"] else ">= ") + f"{r['speedup']:.3g}",
                 f"{r['hc_final_size']} / {r['hc_final_flip_rate']:.3f}",
                 f"{r['rf_size_at_equal_time']} / {r['rf_flip_rate_at_equal_time']:.3f}",
                 f"{r['rf_final_size']} / {r['rf_final_flip_rate']:.3f}"])
  speedups = [r["speedup"] for r in per_seed if not r["degenerate"]] or [float("nan")]
  out = {"lambda": lam, "init_logit": init_logit, "hc_steps": hc_steps, "record_every_steps": chunk, "budget_factor": budget_factor,
         "batch_size": 64, "reinforce_samples": 8, "learning_rate": 0.1, "num_items": int(items.prefix.shape[0]),
         "num_heldout": int(heldout.prefix.shape[0]),
         "scored_on_items": int(score_items.prefix.shape[0]), "scored_on_heldout": int(score_heldout.prefix.shape[0]), "model": setup["description"],
         "hc_compile_seconds": hc.compile_seconds, "rf_compile_seconds": rf.compile_seconds,
         "speedup": statistics.median(speedups), "speedup_min": min(speedups),
         "speedup_is_lower_bound": not all(r["rf_reached"] for r in per_seed),
         "speedup_steps": statistics.median(r["speedup_steps"] for r in per_seed),
         "degenerate_seeds": [r["seed"] for r in per_seed if r["degenerate"]], "seeds": per_seed}
  print(common.table(
      f"Estimators: Hard Concrete vs REINFORCE (lambda={lam}, initial logit {init_logit:g}, {setup['description']}; "
      f"J = flip loss + lambda |S| "
      f"of the read-out set; REINFORCE budget {budget_factor:g}x HC's time)",
      ["seed", "HC final J (bar)", "HC steps to bar", "HC s to bar", "RF steps to bar", "RF s to bar",
       "speedup (time)", "HC |S| / flip (end)", "RF |S| / flip at HC's end time", "RF |S| / flip (end of budget)"],
      rows))
  return out
