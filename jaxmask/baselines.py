r"""The methods Hard Concrete must beat at equal set size k, one registry entry each, evaluated under the same
intervention.

Every method picks its sets from the search items; every set is then evaluated on held-out items with the
same gated replacement :math:`\tilde s = (1 - z) s + z r` as the search (``interventions.margins``), all sets of
all methods in one vmapped pass. A new method is one entry of :data:`METHODS`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmask import attribution, interventions, models, objectives, search
from jaxmask.models import lstm


def random_sets(key: jax.Array, num_units: int, k: int, draws: int = 20) -> jax.Array:
  """``draws`` sets of k distinct units drawn uniformly: int32[draws, k], each row sorted."""
  pick = lambda kk: jnp.sort(jax.random.choice(kk, num_units, (k,), replace=False))
  return jax.vmap(pick)(jax.random.split(key, draws))


def top_k(scores_N, k: int) -> list[int]:
  """The sorted ids of the k largest scores; ties go to the lower id."""
  return sorted(np.argsort(-np.asarray(scores_N), kind="stable")[:k].tolist())


def _best(m_SxB: jax.Array) -> np.ndarray:
  """Row order, best first: more flips (margin < 0), then lower mean flip loss, then lower row index."""
  flips = np.asarray((m_SxB < 0).sum(axis=1))
  loss = np.asarray(objectives.flip_loss(m_SxB).mean(axis=1))
  return np.lexsort((np.arange(len(flips)), loss, -flips))


def greedy(params: lstm.Params, items: interventions.Items, k: int, replacement: str = "counterfactual",
           sites: str = "h", mean_h: dict | None = None) -> list[list[int]]:
  r"""Greedy activation patching (Vig et al. 2020): the nested sets of sizes 1..k, each sorted.

  Start from :math:`S_0 = \emptyset`; round j adds to :math:`S_{j-1}` the unit u that maximises the number of
  items flipped by :math:`S_{j-1} \cup \{u\}` (margin < 0); ties go to the lower mean flip loss, then to the
  lower id. Each round is one ``interventions.margins`` call over the N + 1 gate vectors
  :math:`[S_{j-1}, S_{j-1} \cup \{0\}, \dots, S_{j-1} \cup \{N-1\}]` (units already in the set are skipped),
  the same shape every round and as :func:`attribution.single_unit_effects`, so it compiles once. k is
  capped at N.
  """
  n = models.num_units(params, sites)
  chosen, out = [], []
  for _ in range(min(k, n)):
    gates_SxN = np.maximum(interventions.units_to_gates([chosen], n), np.eye(n + 1, n, k=-1, dtype=np.float32))
    order = _best(interventions.margins(params, items, gates_SxN, replacement, mean_h, sites, by_length=True)[1:])
    chosen = chosen + [next(int(u) for u in order if u not in chosen)]
    out.append(sorted(chosen))
  return out


def sweep_at_k(params: lstm.Params, items: interventions.Items, result: search.SweepResult, ks: Sequence[int],
               replacement: str = "counterfactual", sites: str = "h", mean_h: dict | None = None
               ) -> list[list[int]]:
  """For each k, the best set of at most k units that a sweep (Hard Concrete or REINFORCE) produced.

  Candidates: every lambda's selected set of size <= k, and, for every lambda whose set is larger than k,
  its k units with the largest gate logits (the sweep's own ranking, as single-unit effects and IG are
  ranked by score). Rule: the candidate with the highest flip rate on ``items`` (the search items: nothing
  held out is used); ties go to the lower mean flip loss, then to the smaller set; no candidate, the empty
  set. All candidates are evaluated in one ``interventions.margins`` call.
  """
  candidates = []
  for k in ks:
    for units, logits in zip(result.units, result.logits):
      units = list(units) if len(units) <= k else sorted(sorted(units, key=lambda u: -logits[u])[:k])
      if units not in candidates:
        candidates.append(units)
  gates_SxN = interventions.units_to_gates(candidates, models.num_units(params, sites))
  m_SxB = interventions.margins(params, items, gates_SxN, replacement, mean_h, sites)
  flip_rate = np.asarray((m_SxB < 0).mean(axis=1))
  loss = np.asarray(objectives.flip_loss(m_SxB).mean(axis=1))
  order = sorted(range(len(candidates)), key=lambda s: (-flip_rate[s], loss[s], len(candidates[s])))
  return [next((candidates[s] for s in order if len(candidates[s]) <= k), []) for k in ks]


# ----------------------------------------------------------------------------------------------------------
# The registry.


@dataclasses.dataclass(frozen=True)
class Context:
  """What a method may read to choose its sets: the model, the search items and the intervention.

  ``labels``: the search prefixes' binary probe labels (None: no probe). ``key``: for random sets.
  """
  params: lstm.Params
  items: interventions.Items
  replacement: str = "counterfactual"
  sites: str = "h"
  mean_h: dict | None = None
  labels: np.ndarray | None = None
  key: jax.Array | None = None
  ig_steps: int = 32
  draws: int = 20

  @property
  def scope(self) -> dict:
    return dict(replacement=self.replacement, sites=self.sites, mean_h=self.mean_h)


SetsFn = Callable[[Context, Sequence[int]], list[list[list[int]]] | None]


@dataclasses.dataclass(frozen=True)
class Method:
  """One method: its plot style and ``sets(context, ks)``.

  ``sets`` gives, for each k, a list of sets of at most k units (one set for a deterministic method, one
  per draw for random), or None when the method does not apply (the probe without labels). Search methods
  have ``sets=None``: their sets come from the caller (``compare``'s sweeps or ``search_sets``).
  """
  label: str
  color: str
  marker: str
  sets: SetsFn | None = None


def ranked(score: Callable[[Context], jax.Array | None]) -> SetsFn:
  """The ``sets`` of a scoring method: for each k, the top k units of ``score(context)`` (None: skipped)."""
  def sets(context: Context, ks: Sequence[int]) -> list[list[list[int]]] | None:
    scores_N = score(context)
    return None if scores_N is None else [[top_k(scores_N, k)] for k in ks]
  return sets


def _greedy_sets(context: Context, ks: Sequence[int]) -> list[list[list[int]]]:
  nested = greedy(context.params, context.items, max(ks, default=0), **context.scope)
  return [[nested[min(k, len(nested)) - 1] if k > 0 else []] for k in ks]


def _random_sets(context: Context, ks: Sequence[int]) -> list[list[list[int]]]:
  n = models.num_units(context.params, context.sites)
  keys = jax.random.split(jax.random.key(0) if context.key is None else context.key, len(ks))
  return [np.asarray(random_sets(key, n, k, context.draws)).tolist() for key, k in zip(keys, ks)]


METHODS: dict[str, Method] = {
    "hard_concrete": Method("Hard Concrete", "C0", "o"),
    "reinforce": Method("REINFORCE", "C1", "s"),
    "hard_concrete_kl": Method("Hard Concrete + KL control", "C9", "*"),
    "single_unit": Method("single-unit effects", "C2", "^", ranked(
        lambda c: attribution.single_unit_effects(c.params, c.items, **c.scope))),
    "integrated_gradients": Method("Integrated Gradients", "C3", "v", ranked(
        lambda c: attribution.integrated_gradients(c.params, c.items, c.ig_steps, **c.scope))),
    "gradient_x_activation": Method("gradient x activation", "C5", "<", ranked(
        lambda c: attribution.gradient_x_activation(c.params, c.items, c.sites))),
    "attribution_patching": Method("attribution patching", "C6", ">", ranked(
        lambda c: attribution.attribution_patching(c.params, c.items, **c.scope))),
    "greedy": Method("greedy patching", "C8", "P", _greedy_sets),
    "probe": Method("diagnostic probe", "C4", "D", ranked(
        lambda c: None if c.labels is None else attribution.probe(c.params, c.items, c.labels, c.sites))),
    "random": Method("random", "C7", "x", _random_sets),
}


# ----------------------------------------------------------------------------------------------------------
# Evaluation.


def bootstrap_rates(flips_SxB: np.ndarray, resamples: int = 1000, seed: int = 0) -> np.ndarray:
  r"""The flip rate of each of S sets on ``resamples`` bootstrap resamples of the B items: float[S, R].

  Resample r draws B items with replacement; item b is drawn :math:`c_{rb}` times, so the resampled rate is
  :math:`\frac1B \sum_b f_{sb} c_{rb}`: one matrix product. The same resamples (a fixed NumPy seed) serve
  every set, so differences between sets are paired.
  """
  b = flips_SxB.shape[1]
  counts_RxB = np.random.default_rng(seed).multinomial(b, np.full(b, 1.0 / b), size=resamples)
  return np.asarray(flips_SxB, np.float64) @ counts_RxB.T / b


def auc(rows: Sequence[dict]) -> float:
  r"""Normalised area under the held-out flip rate vs k: :math:`\frac{1}{k_{max} - k_{min}} \int f(k)\, dk`.

  Trapezoid rule over the rows' k (linear in k); in [0, 1]. A single k gives its flip rate.
  """
  k = np.array([r["k"] for r in rows], np.float64)
  f = np.array([r["heldout_flip_rate"] for r in rows], np.float64)
  order = np.argsort(k)
  k, f = k[order], f[order]
  if len(k) == 0:
    raise ValueError("auc needs at least one row.")
  if k[-1] == k[0]:
    return float(f.mean())
  return float(np.sum(np.diff(k) * (f[1:] + f[:-1]) / 2) / (k[-1] - k[0]))


def compare(params: lstm.Params, search_items: interventions.Items, heldout_items: interventions.Items, ks: Sequence[int],
            hard_concrete: search.SweepResult | None = None, reinforce: search.SweepResult | None = None,
            labels: np.ndarray | None = None, key: jax.Array | None = None,
            replacement: str = "counterfactual", sites: str = "h", mean_h: dict | None = None,
            draws: int = 20, ig_steps: int = 32,
            search_sets: dict[str, list[list[list[int]]]] | None = None,
            methods: Sequence[str] | None = None) -> dict[str, list[dict]]:
  r"""Every method's set of (at most) k units, chosen on ``search_items``, evaluated on ``heldout_items``.

  Search methods: ``search_sets[name]`` (a list over seeds of one set per k, computed by the caller; always
  evaluated) or, for "hard_concrete" and "reinforce" when not given there, ``sweep_at_k`` of the sweep
  passed. Every other entry of :data:`METHODS` chooses its own sets from a :class:`Context`; the probe needs
  ``labels``, random draws ``draws`` sets per k from ``key`` (default ``jax.random.key(0)``). ``methods``
  names the registry entries to run (default: all that apply). Every set of every method and k, and the
  clean model, are evaluated in one ``interventions.margins`` call with the same intervention (``replacement``,
  ``sites``, ``mean_h``) as the search.

  Returns:
    ``{method: [row, ...]}``, one row per k in order, each with "k", "units", "heldout_flip_rate" (the
    fraction of held-out items whose intervened margin m = logit(y) - logit(y') is < 0), "ci95" ([lo, hi]:
    the 2.5 and 97.5 percentiles over 1000 bootstrap resamples of the items, see :func:`bootstrap_rates`),
    "mean_logit_diff_change" (mean over items of :math:`m_{clean} - m_{intervened}`) and "auc" (the
    method's :func:`auc`, the same in every row). When a method has several sets per k (random draws,
    seeds), rates are means over them and the interval is that of the mean: random adds
    "heldout_flip_rate_sd" (over draws) and lists the draws in "units"; a method from ``search_sets`` has
    "units" of the first seed, "units_per_seed", "heldout_flip_rate_per_seed", "seed_min" and "seed_max".
  """
  ks = [int(k) for k in ks]
  n = models.num_units(params, sites)
  names = list(METHODS) if methods is None else list(methods)
  unknown = [m for m in [*names, *(search_sets or {})] if m not in METHODS]
  if unknown:
    raise ValueError(f"unknown methods {unknown}; the registry has {', '.join(METHODS)}.")
  context = Context(params, search_items, replacement, sites, mean_h, labels, key, ig_steps, draws)
  sweeps = {"hard_concrete": hard_concrete, "reinforce": reinforce}
  groups: dict[str, list[list[list[int]]]] = {}  # method -> per k -> sets
  for name in METHODS:
    if name in (search_sets or {}):
      per_seed = search_sets[name]
      if not per_seed or any(len(sets) != len(ks) for sets in per_seed):
        raise ValueError(f"search_sets[{name!r}] must list, for each seed, one set per k ({len(ks)}).")
      groups[name] = [[list(sets[i]) for sets in per_seed] for i in range(len(ks))]
    elif name not in names:
      continue
    elif METHODS[name].sets is None:
      if sweeps.get(name) is not None:
        groups[name] = [[units] for units in sweep_at_k(params, search_items, sweeps[name], ks, replacement,
                                                         sites, mean_h)]
    else:
      sets = METHODS[name].sets(context, ks)
      if sets is not None:
        groups[name] = sets
  for name, per_k in groups.items():
    for k, sets in zip(ks, per_k):
      if any(len(units) > k for units in sets):
        raise ValueError(f"{name} gave a set of more than k = {k} units.")

  flat = [units for per_k in groups.values() for sets in per_k for units in sets]
  m_SxB = np.asarray(interventions.margins(params, heldout_items, interventions.units_to_gates([[]] + flat, n), replacement,
                                           mean_h, sites))
  clean_B, m_SxB = m_SxB[0], m_SxB[1:]
  flips_SxB = m_SxB < 0
  rates_S, change_S = flips_SxB.mean(axis=1), (clean_B - m_SxB).mean(axis=1)
  boot_SxR = bootstrap_rates(flips_SxB)
  out, start = {}, 0
  for name, per_k in groups.items():
    rows = []
    for k, sets in zip(ks, per_k):
      part = slice(start, start + len(sets))
      start += len(sets)
      rates = rates_S[part]
      lo, hi = np.percentile(boot_SxR[part].mean(axis=0), [2.5, 97.5])
      row = {"k": k, "units": sets if name == "random" else sets[0], "heldout_flip_rate": float(rates.mean()),
             "ci95": [float(lo), float(hi)], "mean_logit_diff_change": float(change_S[part].mean())}
      if name == "random":
        row["heldout_flip_rate_sd"] = float(rates.std())
      elif name in (search_sets or {}):
        row.update(units_per_seed=sets, heldout_flip_rate_per_seed=rates.tolist(), seed_min=float(rates.min()),
                   seed_max=float(rates.max()))
      rows.append(row)
    area = auc(rows) if rows else None
    out[name] = [dict(row, auc=area) for row in rows]
  return out


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
  """|a ∩ b| / |a ∪ b| of two unit sets (1.0 when both are empty)."""
  a, b = set(a), set(b)
  return len(a & b) / len(a | b) if a | b else 1.0


def overlap_matrix(unit_sets: Sequence[Sequence[int]]) -> np.ndarray:
  """Pairwise Jaccard overlap of M unit sets (across methods or seeds): float[M, M], symmetric, unit diagonal."""
  return np.array([[jaccard(a, b) for b in unit_sets] for a in unit_sets])
