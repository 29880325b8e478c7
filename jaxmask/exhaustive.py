r"""The exact best set of k units, by trying every one: ground truth for the search and the baselines on small models.

For a model with N gateable units, every k-subset S (:math:`\binom{N}{k}` of them, k = 1, 2, 3, and 4 where
N <= 32) is scored on the items with the same intervention as the search (``interventions.margins``):

.. math::
   F(S) = \#\{b : m_b(z_S) < 0\}, \qquad \overline{\ell}(S) = \mathrm{mean}_b\, \mathrm{softplus}(m_b(z_S))

with :math:`z_S` the 0/1 gate vector of S and :math:`m_b` item b's margin logit(y) - logit(y'). The optimum
of size k maximises F; ties go to the lower mean flip loss, then to the lexicographically smaller set
(``itertools.combinations`` order). Sets are built from ``itertools.combinations`` in blocks of ``block``
gate vectors, each block one vmapped ``interventions.margins`` call (``chunk`` sets at a time), so memory stays
bounded by the block, whatever :math:`\binom{N}{k}`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Sequence

import jax
import numpy as np

from jaxmask import interventions, models, objectives
from jaxmask.models import lstm


@dataclasses.dataclass(frozen=True)
class Optimum:
  """The best set of one size k on some items.

  Attributes:
    k: the set size.
    units: the sorted flat unit ids of the best set.
    flips: how many items the set flips (intervened margin < 0).
    num_items: how many items were scored.
    mean_flip_loss: the set's mean flip loss softplus(m) over the items.
    ties: how many sets of size k flip as many items (>= 1; the tie-breaks then pick ``units``).
    num_sets: how many sets of size k were scored, C(N, k).
  """
  k: int
  units: list[int]
  flips: int
  num_items: int
  mean_flip_loss: float
  ties: int
  num_sets: int

  @property
  def flip_rate(self) -> float:
    """flips / num_items."""
    return self.flips / max(self.num_items, 1)


def default_sizes(num_units: int) -> tuple[int, ...]:
  """The set sizes searched by default: 1, 2, 3, and 4 when N <= 32 (C(32, 4) = 35,960 sets)."""
  return (1, 2, 3, 4) if num_units <= 32 else (1, 2, 3)


@jax.jit
def _reduce(margins_SxB: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(flip count int32[S], mean flip loss float32[S]) of S sets' margins."""
  return (margins_SxB < 0).sum(axis=1), objectives.flip_loss(margins_SxB).mean(axis=1)


def _gates(sets_SxK: np.ndarray, num_units: int) -> np.ndarray:
  """The (S, N) 0/1 gate matrix of S sets of k unit ids."""
  gates_SxN = np.zeros((len(sets_SxK), num_units), np.float32)
  np.put_along_axis(gates_SxN, sets_SxK, 1.0, axis=1)
  return gates_SxN


def set_scores(params: lstm.Params, items: interventions.Items, k: int, *, sites: str = "h",
               replacement: str = "counterfactual", mean_h: dict | None = None, block: int = 2048,
               chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
  """Flip count int32[C] and mean flip loss float32[C] of every k-subset, in ``itertools.combinations`` order.

  C = C(N, k). Each block of ``block`` sets is one ``interventions.margins`` call; the last block is padded with
  copies of its first set so that every block has the same shape (one compilation per k).
  """
  n = models.num_units(params, sites)
  if not 1 <= k <= n:
    raise ValueError(f"k must lie in [1, {n}], got {k}.")
  total = math.comb(n, k)
  width = max(1, min(block, total))
  combos = itertools.combinations(range(n), k)
  flips, losses = [], []
  for start in range(0, total, width):
    sets = np.asarray(list(itertools.islice(combos, width)), np.int32).reshape(-1, k)
    padded = np.concatenate([sets, np.broadcast_to(sets[:1], (width - len(sets), k))])
    m_SxB = interventions.margins(params, items, _gates(padded, n), replacement, mean_h, sites, min(chunk, width))
    f, l = _reduce(m_SxB)
    flips.append(np.asarray(f)[:len(sets)])
    losses.append(np.asarray(l)[:len(sets)])
  return np.concatenate(flips).astype(np.int32), np.concatenate(losses)


def nth_combination(n: int, k: int, index: int) -> list[int]:
  """The index-th k-subset of range(n) in lexicographic (``itertools.combinations``) order."""
  out, first = [], 0
  for remaining in range(k, 0, -1):
    for u in range(first, n):
      count = math.comb(n - u - 1, remaining - 1)
      if index < count:
        out.append(u)
        first = u + 1
        break
      index -= count
  return out


def best(flips_C: np.ndarray, losses_C: np.ndarray) -> tuple[int, int]:
  """(index of the best set, number of sets tied at the top flip count): most flips, lower loss, lower index."""
  order = np.lexsort((np.arange(len(flips_C)), losses_C, -flips_C))
  return int(order[0]), int((flips_C == flips_C.max()).sum())


def optimum(params: lstm.Params, items: interventions.Items, ks: Sequence[int] | None = None, *, sites: str = "h",
            replacement: str = "counterfactual", mean_h: dict | None = None, block: int = 2048,
            chunk: int = 128) -> dict[int, Optimum]:
  """The best set of each size in ``ks`` (default ``default_sizes(N)``) on ``items``: {k: Optimum}.

  Args:
    params: the LSTM LM.
    items: the items to flip (the search items; evaluate the sets on held-out items apart).
    ks: set sizes.
    sites, replacement, mean_h: the intervention, as in ``interventions.margins``.
    block: gate vectors per ``interventions.margins`` call (memory: block x items x steps x 4H floats at most,
      in ``chunk``-sized pieces).
    chunk: sets run vmapped at once inside a block.
  """
  n = models.num_units(params, sites)
  num_items = int(items.prefix.shape[0])
  out = {}
  for k in (default_sizes(n) if ks is None else ks):
    flips_C, losses_C = set_scores(params, items, int(k), sites=sites, replacement=replacement, mean_h=mean_h,
                                   block=block, chunk=chunk)
    index, ties = best(flips_C, losses_C)
    out[int(k)] = Optimum(k=int(k), units=nth_combination(n, int(k), index), flips=int(flips_C[index]),
                          num_items=num_items, mean_flip_loss=float(losses_C[index]), ties=ties,
                          num_sets=len(flips_C))
  return out


def flip_counts(params: lstm.Params, items: interventions.Items, unit_sets: Sequence[Sequence[int]], *, sites: str = "h",
                replacement: str = "counterfactual", mean_h: dict | None = None) -> np.ndarray:
  """How many items each of S given unit sets flips, int32[S] (one ``interventions.margins`` call)."""
  if not unit_sets:
    return np.zeros((0,), np.int32)
  gates_SxN = interventions.units_to_gates([list(s) for s in unit_sets], models.num_units(params, sites))
  m_SxB = interventions.margins(params, items, gates_SxN, replacement, mean_h, sites)
  return np.asarray(_reduce(m_SxB)[0]).astype(np.int32)
