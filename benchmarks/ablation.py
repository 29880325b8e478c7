"""Single-unit effects of every unit: jaxmask's one vmapped pass vs the loops researchers write.

The effect of unit u is the margin logit(y) - logit(y') of every item with u replaced by its counterfactual
state at every step (the identity gate matrix), on a random sample of the agreement items (every condition,
3 to 14 tokens). jaxmask: ``interventions.margins(params, items, eye(N), by_length=True)``, the pass
``baselines.single_unit_effects`` runs: all N interventions vmapped, the items grouped by length so that no
padded step runs, and the steps before the subject (where x and x' agree) run once, unintervened; also
timed as one padded pass (``by_length=False``) and with its compilation (the first call). (i) The Lakretz et al. way: PyTorch eager, one run per unit and per sentence at batch 1
(each sentence's counterfactual states computed once); a subset of units x sentences is timed and the
time per run scaled to N x B runs. (ii) A per-unit Python loop batched over the items: PyTorch eager
(all N units timed), and, for reference, a loop of N calls of one jitted JAX margin.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks.torch_ref import TorchLM, best_threads, torch, torch_items
from jaxmask import interventions, search
from jaxmask.models import lstm


def _jax_loop_seconds(params, items, num_units: int) -> float:
  """N calls of one jitted single-intervention margin (gate = one-hot), batched over items."""
  shared = search.prepare(params, items, search.SearchConfig())
  one = jax.jit(lambda z: interventions.margin(params, items, shared.inputs, z, shared.r))
  eye = jnp.eye(num_units)
  jax.block_until_ready(one(eye[0]))
  start = time.perf_counter()
  for u in range(num_units):
    jax.block_until_ready(one(eye[u]))
  return time.perf_counter() - start


def _torch_batch1_seconds_per_run(model: TorchLM, items: dict, units: list[int], sentences: list[int],
                                  check: np.ndarray) -> tuple[float, float]:
  """Seconds per (unit, sentence) run at batch 1, and the largest deviation from jaxmask's margins."""
  n = len(model.cells) * model.hidden
  deviation = 0.0
  start = time.perf_counter()
  with torch.no_grad():
    for b in sentences:
      length = int(items["length"][b])
      one = {k: v[b:b + 1] for k, v in items.items()}
      replacement = model.states(one["counterfactual"][:, :length])
      for u in units:
        z = torch.zeros(n)
        z[u] = 1.0
        top = model.states(one["prefix"][:, :length], z, replacement)[-1]
        m = model.margin(top, one["length"], one["target"], one["foil"])
        deviation = max(deviation, abs(float(m[0]) - float(check[u, b])))
  return (time.perf_counter() - start) / (len(units) * len(sentences)), deviation


def _torch_batched_loop_seconds(model: TorchLM, items: dict, units: list[int]) -> float:
  """Seconds of the counterfactual run plus one batched run per unit in ``units``."""
  num_units = len(model.cells) * model.hidden
  start = time.perf_counter()
  with torch.no_grad():
    replacement = model.states(items["counterfactual"])
    for u in units:
      z = torch.zeros(num_units)
      z[u] = 1.0
      top = model.states(items["prefix"], z, replacement)[-1]
      model.margin(top, items["length"], items["target"], items["foil"])
  return time.perf_counter() - start


def run(context: common.Context) -> dict[str, Any]:
  setup, quick = context.setup(), context.quick
  params = setup["params"]
  num_items = 128 if quick else 256
  sample = np.sort(np.random.default_rng(0).permutation(setup["items"].prefix.shape[0])[:num_items])
  items = setup["items"].take(sample)
  n = lstm.num_units(params)
  eye = np.eye(n, dtype=np.float32)
  all_units = lambda by_length: jax.block_until_ready(interventions.margins(params, items, eye, by_length=by_length))
  start = time.perf_counter()
  effects = np.asarray(all_units(True))
  first = time.perf_counter() - start
  t_jax = common.median_seconds(lambda: all_units(True), repeats=3)
  lengths = np.asarray(items.length)
  out = {"model": setup["description"], "units": n, "items": num_items, "mean_tokens": float(lengths.mean()),
         "max_tokens": int(lengths.max()), "jax_all_units_seconds": t_jax, "jax_first_call_seconds": first}
  if not quick:  # the references within JAX: one padded pass, and a loop over units
    all_units(False)
    out["jax_padded_pass_seconds"] = common.median_seconds(lambda: all_units(False), repeats=3)
    out["jax_loop_seconds"] = _jax_loop_seconds(params, items, n)
  if torch is None:
    out["skipped_torch"] = "torch is not installed"
    return out
  model, t_items = TorchLM(params), torch_items(items)
  sub_units = list(range(0, n, n // (4 if quick else 16)))
  sub_sentences = list(range(0, num_items, num_items // (4 if quick else 8)))
  threads = best_threads(params, items)
  per_run, deviation = _torch_batch1_seconds_per_run(model, t_items, sub_units, sub_sentences, effects)
  out.update({"lakretz_timed_runs": len(sub_units) * len(sub_sentences), "lakretz_seconds_per_run": per_run,
              "lakretz_seconds_extrapolated": per_run * n * num_items, "lakretz_extrapolated": True,
              "torch_max_abs_deviation_from_jax": deviation, "torch_threads": threads})
  loop_units = list(range(0, n, 4 if quick else 1))
  out["torch_batched_loop_units_timed"] = len(loop_units)
  out["torch_batched_loop_seconds"] = _torch_batched_loop_seconds(model, t_items, loop_units) * n / len(loop_units)
  out["speedup"] = out["lakretz_seconds_extrapolated"] / t_jax
  out["speedup_first_call"] = out["lakretz_seconds_extrapolated"] / first
  out["speedup_vs_batched_loop"] = out["torch_batched_loop_seconds"] / t_jax
  rows = [["jaxmask: all units vmapped, items grouped by length (interventions.margins(..., by_length=True))", t_jax, 1.0],
          ["the same, first call (compiling one program per length group)", first, first / t_jax],
          [f"PyTorch eager, batch 1, one run per unit and sentence (Lakretz et al.; {out['lakretz_timed_runs']} "
           f"runs timed, scaled to {n * num_items})", out["lakretz_seconds_extrapolated"], out["speedup"]],
          [f"PyTorch eager, loop over units, batched over items ({len(loop_units)} of {n} units timed)",
           out["torch_batched_loop_seconds"],
           out["speedup_vs_batched_loop"]]]
  if not quick:
    out["speedup_vs_jax_loop"] = out["jax_loop_seconds"] / t_jax
    rows += [["jaxmask: all units vmapped, one padded pass (by_length=False)", out["jax_padded_pass_seconds"],
              out["jax_padded_pass_seconds"] / t_jax],
             ["JAX, loop over units of one jitted margin, batched over items", out["jax_loop_seconds"],
              out["speedup_vs_jax_loop"]]]
  context.table(f"Ablation: single-unit effects of all {n} units on {num_items} random agreement items "
                f"({lengths.mean():.1f} tokens on average, up to {lengths.max()}; {setup['description']})",
                ["method", "seconds", "jaxmask's speedup"], rows)
  return out
