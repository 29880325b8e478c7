r"""The baselines Hard Concrete must beat at equal set size k, scored and evaluated under the same intervention.

Every method ranks (or selects) units from the search items; every set is then evaluated on held-out items
with the same gated replacement :math:`\tilde s = (1 - z) s + z r` as the search (``search.margins``), all
sets in one vmapped pass. Methods: single-unit effects (Lakretz et al. 2019), Integrated Gradients and
gradient x activation of the flip loss with respect to the gates, a diagnostic probe, random sets, and the
best set of at most k units a Hard Concrete (or REINFORCE) sweep produced.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmask import lstm, objectives, search


def _mean_flip_losses(params: lstm.Params, items: search.Items, gates_SxN, replacement: str,
                      mean_h: dict | None, sites: str, chunk: int = 32, by_length: bool = False) -> jax.Array:
  """Mean flip loss over the items under each of S gate vectors (``chunk`` at a time): float32[S]."""
  m = search.margins(params, items, gates_SxN, replacement, mean_h, sites, chunk, by_length)
  return objectives.flip_loss(m).mean(axis=1)


def single_unit_effects(params: lstm.Params, items: search.Items, replacement: str = "counterfactual",
                        sites: str = "h", mean_h: dict | None = None) -> jax.Array:
  r"""Each unit's effect alone: the flip loss it removes when it is the only one intervened, float32[N].

  .. math::
     e_i = \overline{\ell}(0) - \overline{\ell}(e_i), \qquad \overline{\ell}(z) = \mathrm{mean}_{items}\,
     \mathrm{softplus}(m(z))

  with :math:`e_i` the i-th one-hot gate vector. The clean run and the N single-unit interventions are the
  N + 1 rows of one ``search.margins`` call (vmapped, in chunks, the items grouped by length so that no
  padded step is run). Larger = more important.
  """
  n = lstm.num_units(params, sites)
  losses = _mean_flip_losses(params, items, jnp.eye(n + 1, n, k=-1), replacement, mean_h, sites, by_length=True)
  return losses[0] - losses[1:]


@functools.partial(jax.jit, static_argnames=("replacement", "sites"))
def _gate_gradients(params: lstm.Params, items: search.Items, gates_SxN: jax.Array, replacement: str,
                    mean_h: dict | None, sites: str) -> jax.Array:
  """The gradient of the mean flip loss with respect to the gates at each of S points: float32[S, N].

  The S losses are independent, so the gradient of their sum is, row by row, each point's gradient. All S
  points run in one vmapped batch (memory grows with S; a single chunk also halves the compile time).
  """
  loss = lambda z: _mean_flip_losses(params, items, z, replacement, mean_h, sites, chunk=z.shape[0]).sum()
  return jax.grad(loss)(gates_SxN)


def integrated_gradients(params: lstm.Params, items: search.Items, steps: int = 32,
                         replacement: str = "counterfactual", sites: str = "h", mean_h: dict | None = None
                         ) -> jax.Array:
  r"""Integrated Gradients of the mean flip loss along the straight gate path z = 0 -> 1, as a loss reduction.

  .. math::
     a_i = -\int_0^1 \frac{\partial \overline{\ell}}{\partial z_i}(\alpha \mathbf 1)\, d\alpha
         \approx -\sum_{s=0}^{S} w_s \frac{\partial \overline{\ell}}{\partial z_i}(\tfrac{s}{S} \mathbf 1)

  with trapezoid weights :math:`w = (\tfrac12, 1, \dots, 1, \tfrac12)/S`, S = ``steps``. The S + 1 gradients
  come from one backward pass through one ``search.margins`` call, vmapped over the path. Completeness: since
  :math:`\frac{d}{d\alpha}\overline{\ell}(\alpha\mathbf 1) = \sum_i \partial_i \overline{\ell}`,
  :math:`\sum_i a_i = \overline{\ell}(0) - \overline{\ell}(\mathbf 1)` up to the quadrature error: the whole
  intervention's loss reduction, shared among the units. Larger = more important.
  """
  if steps < 1:
    raise ValueError(f"steps must be positive, got {steps}.")
  n = lstm.num_units(params, sites)
  alphas = jnp.linspace(0.0, 1.0, steps + 1)
  grads_SxN = _gate_gradients(params, items, alphas[:, None] * jnp.ones((1, n)), replacement, mean_h, sites)
  weights_S = jnp.full((steps + 1,), 1.0 / steps).at[jnp.array([0, steps])].set(0.5 / steps)
  return -weights_S @ grads_SxN


def gradient_x_activation(params: lstm.Params, items: search.Items, replacement: str = "counterfactual",
                          sites: str = "h", mean_h: dict | None = None) -> jax.Array:
  r"""Each unit's first-order loss reduction: :math:`-\partial\overline{\ell}/\partial z_i` at z = 0, float32[N].

  Gradient x (replacement - activation): since :math:`\tilde s_{i,t} = s_{i,t} + z_i (r_{i,t} - s_{i,t})`
  at every step t, the chain rule gives, at z = 0 (the clean run),

  .. math::
     \frac{\partial \overline{\ell}}{\partial z_i}
       = \sum_t \frac{\partial \overline{\ell}}{\partial \tilde s_{i,t}}\,(r_{i,t} - s_{i,t}),

  the gradient with respect to the state injected at step t (through every later step and layer) times the
  counterfactual-minus-factual activation, summed over time (and averaged over items inside
  :math:`\overline{\ell}`). It is the Taylor estimate of ``single_unit_effects`` and the one-point
  (left Riemann) version of ``integrated_gradients``. Larger = more important.
  """
  n = lstm.num_units(params, sites)
  return -_gate_gradients(params, items, jnp.zeros((1, n)), replacement, mean_h, sites)[0]


@flax.struct.dataclass
class Probe:
  """A logistic-regression probe on standardised activations: weights, bias and training accuracy."""
  weights_N: jax.Array
  bias: jax.Array
  accuracy: jax.Array


def _activations(params: lstm.Params, tokens_BxT: jax.Array, length_B: jax.Array, sites: str) -> jax.Array:
  """Every unit's state at position length - 1, flat in the order of the gate vector: float32[B, N]."""
  _, states = lstm.apply(params, tokens_BxT, return_states=True)
  rows = jnp.arange(tokens_BxT.shape[0])
  return jnp.concatenate([jnp.swapaxes(states[s][:, rows, length_B - 1], 0, 1).reshape(len(rows), -1)
                          for s in sites], axis=1)


@functools.partial(jax.jit, static_argnames=("sites", "steps"))
def fit_probe(params: lstm.Params, items: search.Items, labels_B: jax.Array, sites: str = "h",
              steps: int = 500, learning_rate: float = 0.05, l2: float = 1e-2) -> Probe:
  r"""Logistic regression of a binary label from the units' activations at the prediction position.

  Rows: the prefixes with ``labels_B`` (e.g. 1 = singular subject, or the antecedent's gender) and the
  counterfactuals with ``1 - labels_B``, so the two classes balance and each pair differs only in the
  feature. Each unit is standardised over these rows (constant units get weight 0). Full-batch Adam,
  ``steps`` steps, on

  .. math::
     \mathrm{mean}_{rows}\, \mathrm{BCE}(\sigma(x^\top w + b), y) + \tfrac{l_2}{2} \lVert w \rVert^2 .

  The L2 term makes the optimum unique when the classes separate, so the ranking does not depend on when
  the optimiser stops.
  """
  x = jnp.concatenate([_activations(params, items.prefix, items.length, sites),
                       _activations(params, items.counterfactual, items.length, sites)])
  y = jnp.concatenate([labels_B, 1 - labels_B]).astype(jnp.float32)
  x = (x - x.mean(0)) / jnp.maximum(x.std(0), 1e-6)

  def loss(p):
    w, b = p
    return optax.sigmoid_binary_cross_entropy(x @ w + b, y).mean() + 0.5 * l2 * jnp.sum(w ** 2)

  opt = optax.adam(learning_rate)

  def step(carry, _):
    p, state = carry
    updates, state = opt.update(jax.grad(loss)(p), state, p)
    return (optax.apply_updates(p, updates), state), None

  p0 = (jnp.zeros(x.shape[1]), jnp.zeros(()))
  ((w, b), _), _ = jax.lax.scan(step, (p0, opt.init(p0)), length=steps)
  return Probe(weights_N=w, bias=b, accuracy=jnp.mean((x @ w + b > 0) == (y > 0.5)))


def probe(params: lstm.Params, items: search.Items, labels_B: jax.Array, sites: str = "h") -> jax.Array:
  """The diagnostic probe's ranking: |weight| of each unit in ``fit_probe``, float32[N]. Larger = more important.

  Correlational, not causal: a unit that encodes the label but that the model never reads scores as high.
  """
  return jnp.abs(fit_probe(params, items, jnp.asarray(labels_B), sites).weights_N)


def random_sets(key: jax.Array, num_units: int, k: int, draws: int = 20) -> jax.Array:
  """``draws`` sets of k distinct units drawn uniformly: int32[draws, k], each row sorted."""
  pick = lambda kk: jnp.sort(jax.random.choice(kk, num_units, (k,), replace=False))
  return jax.vmap(pick)(jax.random.split(key, draws))


def top_k(scores_N, k: int) -> list[int]:
  """The sorted ids of the k largest scores; ties go to the lower id."""
  return sorted(np.argsort(-np.asarray(scores_N), kind="stable")[:k].tolist())


def sweep_at_k(params: lstm.Params, items: search.Items, result: search.SweepResult, ks: Sequence[int],
               replacement: str = "counterfactual", sites: str = "h", mean_h: dict | None = None
               ) -> list[list[int]]:
  """For each k, the best set of at most k units that a sweep (Hard Concrete or REINFORCE) produced.

  Candidates: every lambda's selected set of size <= k, and, for every lambda whose set is larger than k,
  its k units with the largest gate logits (the sweep's own ranking, as single-unit effects and IG are
  ranked by score). Rule: the candidate with the highest flip rate on ``items`` (the search items: nothing
  held out is used); ties go to the lower mean flip loss, then to the smaller set; no candidate, the empty
  set. All candidates are evaluated in one ``search.margins`` call.
  """
  candidates = []
  for k in ks:
    for units, logits in zip(result.units, result.logits):
      units = list(units) if len(units) <= k else sorted(sorted(units, key=lambda u: -logits[u])[:k])
      if units not in candidates:
        candidates.append(units)
  m_SxB = search.margins(params, items, search.units_to_gates(candidates, lstm.num_units(params, sites)),
                         replacement, mean_h, sites)
  flip_rate = np.asarray((m_SxB < 0).mean(axis=1))
  loss = np.asarray(objectives.flip_loss(m_SxB).mean(axis=1))
  order = sorted(range(len(candidates)), key=lambda s: (-flip_rate[s], loss[s], len(candidates[s])))
  return [next((candidates[s] for s in order if len(candidates[s]) <= k), []) for k in ks]


def compare(params: lstm.Params, search_items: search.Items, heldout_items: search.Items, ks: Sequence[int],
            hard_concrete: search.SweepResult, reinforce: search.SweepResult | None = None,
            labels: np.ndarray | None = None, key: jax.Array | None = None,
            replacement: str = "counterfactual", sites: str = "h", mean_h: dict | None = None,
            draws: int = 20, ig_steps: int = 32) -> dict[str, list[dict]]:
  """Every method's set of (at most) k units, chosen on ``search_items``, evaluated on ``heldout_items``.

  Sets: ``hard_concrete`` and ``reinforce`` by ``sweep_at_k``; ``single_unit``, ``integrated_gradients``
  and ``probe`` (only when ``labels``, the search prefixes' binary labels, are given) by ``top_k`` of their
  scores; ``random``: ``draws`` uniform draws per k (from ``key``, default ``jax.random.key(0)``). Every set
  of every method and k is evaluated in one ``search.margins`` call with the same intervention
  (``replacement``, ``sites``, ``mean_h``) as the search.

  Returns:
    ``{method: [{"k", "units", "heldout_flip_rate"}, ...]}``, one entry per k in order; the flip rate is
    the fraction of held-out items whose intervened margin logit(y) - logit(y') is < 0. For ``random``,
    "units" lists the draws, "heldout_flip_rate" is their mean and "heldout_flip_rate_sd" their standard
    deviation.
  """
  ks = [int(k) for k in ks]
  n = lstm.num_units(params, sites)
  scope = dict(replacement=replacement, sites=sites, mean_h=mean_h)
  sets = {"hard_concrete": sweep_at_k(params, search_items, hard_concrete, ks, **scope)}
  if reinforce is not None:
    sets["reinforce"] = sweep_at_k(params, search_items, reinforce, ks, **scope)
  scores = {"single_unit": single_unit_effects(params, search_items, **scope),
            "integrated_gradients": integrated_gradients(params, search_items, ig_steps, **scope)}
  if labels is not None:
    scores["probe"] = probe(params, search_items, labels, sites)
  sets.update({name: [top_k(s, k) for k in ks] for name, s in scores.items()})
  groups = [(name, k, [units]) for name, per_k in sets.items() for k, units in zip(ks, per_k)]
  keys = jax.random.split(jax.random.key(0) if key is None else key, len(ks))
  groups += [("random", k, np.asarray(random_sets(kk, n, k, draws)).tolist()) for kk, k in zip(keys, ks)]

  flat = [units for _, _, group in groups for units in group]
  flips_S = np.asarray((search.margins(params, heldout_items, search.units_to_gates(flat, n),
                                 replacement, mean_h, sites) < 0).mean(axis=1))
  out = {name: [] for name, _, _ in groups}
  start = 0
  for name, k, group in groups:
    rates = flips_S[start:start + len(group)]
    start += len(group)
    row = {"k": k, "units": group if name == "random" else group[0], "heldout_flip_rate": float(rates.mean())}
    if name == "random":
      row["heldout_flip_rate_sd"] = float(rates.std())
    out[name].append(row)
  return out


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
  """|a ∩ b| / |a ∪ b| of two unit sets (1.0 when both are empty)."""
  a, b = set(a), set(b)
  return len(a & b) / len(a | b) if a | b else 1.0


def overlap_matrix(unit_sets: Sequence[Sequence[int]]) -> np.ndarray:
  """Pairwise Jaccard overlap of M unit sets (across methods or seeds): float[M, M], symmetric, unit diagonal."""
  return np.array([[jaccard(a, b) for b in unit_sets] for a in unit_sets])
