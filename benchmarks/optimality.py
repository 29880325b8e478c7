"""How far is each method's set from the true optimum? Exhaustive ground truth on tiny trained LMs and planted motifs.

Trained LMs: tiny LSTMs (``configs/lm_tiny.cfg`` with 1x32, 2x16 and 2x32 units, two training seeds each,
cached under ``cache_dir``) on the generated English. Per phenomenon (agreement; gender when the model gets
enough gender items right), the items the clean model gets right both ways (target over foil after x, foil
over target after x') are split into search and held-out items. For k = 1, 2, 3 (and 4 where N <= 32)
``exhaustive.optimum`` scores every k-set on the search items; each method then picks its k-set from the
same search items, and both are evaluated on the held-out items. Per row: the optimality gap (optimum's
held-out flip rate minus the method's; negative when the method's set generalises better) and whether the
method's set is optimal (it flips as many search items as the optimum: ties count).

Motifs (``benchmarks/motifs.py``): hand-built LSTMs whose minimal mediating set is known; per motif and
method, exact recoveries of the true set at k = |true set| over several weight seeds, and the precision and
recall of the units found (against the closest of the tied true sets).

The methods come from one table (:func:`methods`): Hard Concrete and REINFORCE run ``search.sweep`` in its
target-size mode (one run per k, each reading out k units; ``baselines.sweep_at_k`` then takes, per k, the
best of these sets of at most k units on the search items), with several seeds; every other entry of
``baselines.METHODS`` is used as registered (random: one draw per seed).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from benchmarks import common, motifs
from jaxmask import baselines, checkpoints, data, exhaustive, interventions, phenomena, search, train_lm
from jaxmask.corpus import build_corpus
from jaxmask.models import lstm

ARCHITECTURES = ((1, 32), (2, 16), (2, 32))  # (layers, hidden units)
LM_CONFIG = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "lm_tiny.cfg")
# lm_tiny.cfg's 150 steps on 4,000 sentences learn no agreement (no item right both ways); these 3,000 steps
# on 40,000 sentences (~25 s per model on 2 cores) give a 1x32 or 2x32 LM ~95% of the items; a 2x16 LM
# still learns little (measured: 10 of 126 search items right both ways at 3,000 steps, 17 at 4,000 with
# twice the learning rate).
LM_OVERRIDES = dict(steps=3000, num_sentences=40_000, learning_rate=0.02, warmup_steps=50, eval_every=3000,
                    checkpoint_every=3000)
STOCHASTIC = ("hard_concrete", "reinforce", "random")
MIN_ITEMS = 16  # fewer known items than this in either split: the phenomenon is recorded as not learned

FULL = dict(architectures=ARCHITECTURES, lm_seeds=(0, 1), phenomena=("agreement", "gender"), search_items=40,
            heldout_items=80, max_k=4, search_seeds=(0, 1, 2), search_steps=1000, motif_seeds=(0, 1, 2, 3, 4),
            motifs=tuple(motifs.MOTIFS))
QUICK = dict(architectures=((1, 32),), lm_seeds=(0,), phenomena=("agreement",), search_items=24,
             heldout_items=48, max_k=2, search_seeds=(0, 1), search_steps=300, motif_seeds=(0, 1),
             motifs=("and", "or", "relay"))

SetsFn = Callable[[baselines.Context, Sequence[int], int], "list[list[int]] | None"]


def _search_sets(method: str, steps: int) -> SetsFn:
  """A sweep in target-size mode (one run per k), then ``sweep_at_k``: one set of at most k units per k."""
  def sets(context: baselines.Context, ks: Sequence[int], seed: int) -> list[list[int]]:
    result = search.sweep(context.params, context.items, list(ks), seed, method=method, targets=True,
                          steps=steps, batch_size=32, sites=context.sites, replacement=context.replacement)
    return baselines.sweep_at_k(context.params, context.items, result, ks, **context.scope)
  return sets


def _registered(name: str) -> SetsFn:
  """A ``baselines.METHODS`` entry's first set per k (random: one draw from ``seed``); None if it does not apply."""
  def sets(context: baselines.Context, ks: Sequence[int], seed: int) -> list[list[int]] | None:
    per_k = baselines.METHODS[name].sets(dataclasses.replace(context, key=jax.random.key(seed), draws=1), ks)
    return None if per_k is None else [list(group[0]) for group in per_k]
  return sets


def methods(search_steps: int) -> dict[str, SetsFn]:
  """Every method: name -> sets(context, ks, seed), one set of at most k units per k (None: not applicable)."""
  table = {name: _registered(name) for name, m in baselines.METHODS.items() if m.sets is not None}
  table.update({name: _search_sets(name, search_steps) for name in ("hard_concrete", "reinforce")})
  return {name: table[name] for name in baselines.METHODS if name in table}


# ----------------------------------------------------------------------------------------------------------
# Trained models and their items.


def trained_models(architectures, lm_seeds, cache_dir: str) -> list[tuple[str, lstm.Params, list[str]]]:
  """(name, params, vocabulary) of each tiny LM, trained once into ``cache_dir`` and loaded after."""
  base = train_lm.read_flagfile(LM_CONFIG)
  out = []
  for seed in lm_seeds:
    corpus = None
    for layers, hidden in architectures:
      config = dataclasses.replace(base, num_layers=layers, hidden_size=hidden, embed_size=hidden, seed=seed,
                                   **LM_OVERRIDES)
      workdir = os.path.join(cache_dir, f"lm_tiny_{layers}x{hidden}_seed{seed}")
      if os.path.exists(os.path.join(workdir, "config.json")):
        params, _, vocab = checkpoints.load(workdir)
      else:
        corpus = corpus or build_corpus(config)
        params, vocab = train_lm.train(config, workdir, progress=False, corpus=corpus), corpus[0]
      out.append((f"{layers}x{hidden}/seed{seed}", params, vocab))
  return out


def _known(params: lstm.Params, pairs: list[data.Pair], vocab: list[str], count: int, seed: int
           ) -> tuple[interventions.Items | None, list[data.Pair], int]:
  """Up to ``count`` items (a seeded sample) the clean model gets right both ways, their pairs, and how many it knew."""
  items, kept, _ = data.encode(pairs, vocab)
  pairs = [pairs[i] for i in kept]
  m_x, m_cf = interventions.clean_margins(params, items)
  known = np.flatnonzero((m_x > 0) & (m_cf < 0))
  if len(known) == 0:
    return None, [], 0
  pick = np.sort(np.random.default_rng(seed).permutation(known)[:count])
  return items.take(pick), [pairs[i] for i in pick], int(len(known))


def phenomenon_items(params: lstm.Params, vocab: list[str], phenomenon: str, search_count: int,
                     heldout_count: int) -> dict[str, Any]:
  """Known search and held-out items of a phenomenon, with probe labels and counts."""
  entry = phenomena.get(phenomenon)  # the small language of the lm_tiny models
  splits = {"search": entry.items("search", 3, 0, "small"), "heldout": entry.items("heldout", 4, 1, "small")}
  search_items, search_pairs, known_search = _known(params, splits["search"], vocab, search_count, 0)
  heldout, _, known_heldout = _known(params, splits["heldout"], vocab, heldout_count, 1)
  return {"items": search_items, "heldout": heldout, "labels": entry.probe_labels(search_pairs),
          "known": {"search": known_search, "search_total": len(splits["search"]), "heldout": known_heldout,
                    "heldout_total": len(splits["heldout"])}}


def _flip_rates(params, items, unit_sets, sites="h") -> np.ndarray:
  return exhaustive.flip_counts(params, items, unit_sets, sites=sites) / int(items.prefix.shape[0])


def model_rows(name: str, params: lstm.Params, phenomenon: str, task: dict, table: dict[str, SetsFn],
               settings: dict) -> tuple[list[dict], list[dict]]:
  """The rows of one model and phenomenon, and its optimum per k."""
  n = lstm.num_units(params)
  ks = [k for k in exhaustive.default_sizes(n) if k <= settings["max_k"]]
  start = time.perf_counter()
  optimum = exhaustive.optimum(params, task["items"], ks)
  seconds = time.perf_counter() - start
  context = baselines.Context(params, task["items"], labels=task["labels"])
  picks = []  # (method, seed, k, units)
  for method, sets_fn in table.items():
    for seed in (settings["search_seeds"] if method in STOCHASTIC else (0,)):
      per_k = sets_fn(context, ks, seed)
      if per_k is not None:
        picks += [(method, seed, k, units) for k, units in zip(ks, per_k)]
  sets = [optimum[k].units for k in ks] + [units for *_, units in picks]
  search_rate = _flip_rates(params, task["items"], sets)
  heldout_rate = _flip_rates(params, task["heldout"], sets)
  best = {k: (search_rate[i], heldout_rate[i]) for i, k in enumerate(ks)}
  rows = []
  for i, (method, seed, k, units) in enumerate(picks, start=len(ks)):
    rows.append({"model": name, "phenomenon": phenomenon, "k": k, "method": method, "seed": seed,
                 "flip_rate": float(heldout_rate[i]), "optimum_flip_rate": float(best[k][1]),
                 "optimal": bool(search_rate[i] >= best[k][0]), "gap": float(best[k][1] - heldout_rate[i]),
                 "units": list(units), "search_flip_rate": float(search_rate[i]),
                 "optimum_search_flip_rate": float(best[k][0])})
  optima = [{"model": name, "phenomenon": phenomenon, "k": k, "units": optimum[k].units,
             "search_flip_rate": optimum[k].flip_rate, "heldout_flip_rate": float(best[k][1]),
             "ties": optimum[k].ties, "num_sets": optimum[k].num_sets, "seconds": seconds} for k in ks]
  return rows, optima


# ----------------------------------------------------------------------------------------------------------
# Motifs.


def motif_rows(names: Sequence[str], seeds: Sequence[int], table: dict[str, SetsFn]) -> list[dict]:
  """Per motif and method: exact recoveries of the true set over ``seeds``, mean precision and recall."""
  out = []
  for name in names:
    found = {method: [] for method in table}
    for seed in seeds:
      m = motifs.motif(name, seed)
      k = len(m.true_set)
      context = baselines.Context(m.params, m.items, sites=m.sites, labels=m.labels)
      for method, sets_fn in table.items():
        per_k = sets_fn(context, [k], seed)
        if per_k is not None:
          units = set(per_k[0])
          truth = max(m.true_sets, key=lambda t: len(units & set(t)))
          hit = len(units & set(truth))
          found[method].append((sorted(units) in m.true_sets, hit / max(len(units), 1), hit / len(truth)))
    for method, results in found.items():
      if results:
        exact, precision, recall = zip(*results)
        out.append({"motif": name, "method": method, "seeds": len(results), "exact": int(sum(exact)),
                    "precision": float(np.mean(precision)), "recall": float(np.mean(recall))})
  return out


# ----------------------------------------------------------------------------------------------------------
# Summary, tables, figure.


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
  """Per method: share of rows whose set is optimal, and the mean optimality gap (held-out flip rate)."""
  out = {}
  for method in dict.fromkeys(r["method"] for r in rows):
    mine = [r for r in rows if r["method"] == method]
    out[method] = {"rows": len(mine), "share_optimal": float(np.mean([r["optimal"] for r in mine])),
                   "mean_gap": float(np.mean([r["gap"] for r in mine]))}
  return out


def plot(rows: list[dict], path: str) -> None:
  """Mean optimality gap vs k, one line per method (registry colours and markers)."""
  import matplotlib  # the plotting edge
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for method in dict.fromkeys(r["method"] for r in rows):
    ks = sorted({r["k"] for r in rows if r["method"] == method})
    gaps = [np.mean([r["gap"] for r in rows if r["method"] == method and r["k"] == k]) for k in ks]
    style = baselines.METHODS[method]
    ax.plot(ks, gaps, marker=style.marker, color=style.color, label=style.label)
  ax.axhline(0.0, color="grey", lw=0.8)
  ax.set_xlabel("set size k")
  ax.set_ylabel("optimality gap (held-out flip rate)")
  ax.set_xticks(sorted({r["k"] for r in rows}))
  ax.set_title("Exhaustive optimum minus each method's set, tiny trained LMs")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _tables(context: common.Context, rows: list[dict], optima: list[dict], motif_results: list[dict], skipped: list[dict]) -> None:
  context.table("Exhaustive optimum per model, phenomenon and k (search items; held-out flip rate)",
                ["model", "phenomenon", "k", "units", "search flip", "held-out flip", "tied sets", "sets",
                 "seconds"],
                [[o["model"], o["phenomenon"], o["k"], o["units"], o["search_flip_rate"],
                  o["heldout_flip_rate"], o["ties"], o["num_sets"], o["seconds"]] for o in optima])
  if skipped:
    context.table("Phenomena not learned (too few items right both ways)",
                  ["model", "phenomenon", "known search", "known held-out"],
                  [[s["model"], s["phenomenon"], f"{s['known']['search']}/{s['known']['search_total']}",
                    f"{s['known']['heldout']}/{s['known']['heldout_total']}"] for s in skipped])
  ks = sorted({r["k"] for r in rows})
  by_k = []
  for method, stats in summary(rows).items():
    cells = []
    for k in ks:
      mine = [r for r in rows if r["method"] == method and r["k"] == k]
      cells.append(f"{np.mean([r['optimal'] for r in mine]):.2f} / {np.mean([r['gap'] for r in mine]):+.3f}"
                   if mine else "-")
    by_k.append([method, stats["rows"], stats["share_optimal"], stats["mean_gap"]] + cells)
  context.table("Methods vs the exhaustive optimum: share of rows optimal, mean gap (per k: optimal / gap)",
                ["method", "rows", "share optimal", "mean gap"] + [f"k={k}" for k in ks], by_k)
  context.table("Planted motifs: exact recoveries at k = |true set|, precision and recall of the units",
                ["motif", "method", "exact / seeds", "precision", "recall"],
                [[m["motif"], m["method"], f"{m['exact']}/{m['seeds']}", m["precision"], m["recall"]]
                 for m in motif_results])


def run(context: common.Context) -> dict[str, Any]:
  """The optimality part of benchmarks/run.py: rows, optima, motifs, summary (and the figure at
  ``context.optimality_plot``; tiny LMs cached in ``context.optimality_cache``)."""
  quick, plot_path, cache_dir = context.quick, context.optimality_plot, context.optimality_cache
  settings = QUICK if quick else FULL
  cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "jaxmask_optimality_lms")
  table = methods(settings["search_steps"])
  timings, start = {}, time.perf_counter()
  models = trained_models(settings["architectures"], settings["lm_seeds"], cache_dir)
  timings["models"] = time.perf_counter() - start
  rows, optima, skipped, known = [], [], [], []
  for name, params, vocab in models:
    for phenomenon in settings["phenomena"]:
      task = phenomenon_items(params, vocab, phenomenon, settings["search_items"], settings["heldout_items"])
      known.append({"model": name, "phenomenon": phenomenon, **task["known"]})
      if min(task["known"]["search"], task["known"]["heldout"]) < MIN_ITEMS:
        skipped.append({"model": name, "phenomenon": phenomenon, "known": task["known"]})
        continue
      r, o = model_rows(name, params, phenomenon, task, table, settings)
      rows += r
      optima += o
  timings["trained_lms"] = time.perf_counter() - start - timings["models"]
  start = time.perf_counter()
  motif_results = motif_rows(settings["motifs"], settings["motif_seeds"], table)
  timings["motifs"] = time.perf_counter() - start
  _tables(context, rows, optima, motif_results, skipped)
  if plot_path and rows:
    plot(rows, plot_path)
  return {"rows": rows, "motifs": motif_results, "optima": optima, "known_items": known, "skipped": skipped,
          "summary": summary(rows), "settings": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in settings.items()},
          "methods": list(table), "cache_dir": cache_dir, "plot": plot_path if rows else None, "seconds": timings}
