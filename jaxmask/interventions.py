r"""Interventions on a model's units and what they do: replacement kinds, the margin engine, control effects.

An intervention replaces the states of the gated units at every step, :math:`\tilde s = (1 - z) s + z r`
(models/lstm.py, models/transformer.py), with ``z`` one gate per unit and ``r`` the replacement states of a kind in
``REPLACEMENTS`` (counterfactual, zero, mean, learned). Its effect on a minimal pair is the margin
:math:`m = \mathrm{logit}(y) - \mathrm{logit}(y')` at the last real token (:func:`margin`,
:func:`margins`), the difference of the two words' log-probabilities; a target or foil of several subword
tokens (``Items.target_rest``, transformers) is scored by its summed log-probability,
:math:`m = \sum_k \log p(y_k \mid x, y_{<k}) - \sum_k \log p(y'_k \mid x, y'_{<k})`, the model run on x followed
by each word's tokens and intervened at every step of both runs (continuations.py); its side effects on
plain text are :func:`control_effects`. A new replacement kind is
one function and one ``REPLACEMENTS`` entry. Every function takes any model family's parameters: the
family is read from the pytree (``models.of_params``), and the states are the family's (LSTM: {"h", "c"},
transformer: {"mlp", "heads"}).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmask import objectives
from jaxmask.continuations import continued, model_inputs, rest_width, run_size, summed_margin  # noqa: F401 (re-exported)
from jaxmask import models
from jaxmask.items import Control, Items

Params = dict


def length_mask(length_B: jax.Array, steps: int) -> jax.Array:
  """1.0 on each row's real tokens, 0.0 on its padding: float32[B, steps]."""
  return (jnp.arange(steps)[None, :] < length_B[:, None]).astype(jnp.float32)


def mean_states(params: Params, tokens_BxT: jax.Array, length_B: jax.Array) -> dict[str, jax.Array]:
  """Each unit's mean state over the real tokens of a reference corpus, e.g. {"h": (L, H), "c": (L, H)}."""
  _, states = models.of_params(params).apply(params, tokens_BxT, return_states=True)
  mask = length_mask(length_B, tokens_BxT.shape[1])
  means = {}
  for k, v in states.items():
    m = mask.reshape((1,) + mask.shape + (1,) * (v.ndim - 3))
    means[k] = (v * m).sum(axis=(1, 2)) / m.sum(axis=(1, 2))
  return means


# ----------------------------------------------------------------------------------------------------------
# Replacement kinds: each gives the states r of every state kind, broadcastable to (L, B, T, ...).


def counterfactual_states(params: Params, items: Items, mean: dict | None) -> dict[str, jax.Array]:
  """r = the states of the run on the counterfactual prefix x' (its logits are never needed).

  With several-token words, the states of x' followed by each word's tokens (``continuations.continued``), so that the
  continuation's steps are replaced too: (L, B, 2, T + K, ...), row 0 the target's, row 1 the foil's.
  """
  del mean
  model = models.of_params(params)
  if items.target_rest is None:
    return model.run(params, model.embed_inputs(params, items.counterfactual))[1]
  tokens = continued(items, items.counterfactual, model)
  batch = tokens.shape[0]
  states = model.run(params, model.embed_inputs(params, tokens.reshape(2 * batch, -1)))[1]
  return {k: v.reshape((v.shape[0], batch, 2) + v.shape[2:]) for k, v in states.items()}


def unit_shapes(params: Params) -> dict[str, tuple[int, ...]]:
  """Per state kind, the shape (L, 1, 1, ...) of one value per unit broadcast over items and steps."""
  return {k: (s[0], 1, 1) + s[1:] for k, s in models.of_params(params).state_shapes(params).items()}


def zero_states(params: Params, items: Items, mean: dict | None) -> dict[str, jax.Array]:
  """r = 0 for every unit, item and step (ablation)."""
  del items, mean
  return {k: jnp.zeros(shape) for k, shape in unit_shapes(params).items()}


def mean_replacement_states(params: Params, items: Items, mean: dict | None) -> dict[str, jax.Array]:
  """r = each unit's mean state: ``mean`` (from :func:`mean_states`), default the mean over the prefixes.

  Also the starting point of the learned replacement, which the search then optimises per unit.
  """
  mean = mean if mean is not None else mean_states(params, items.prefix, items.length)
  shapes = unit_shapes(params)
  return {k: v.reshape(shapes[k]) for k, v in mean.items()}


@dataclasses.dataclass(frozen=True)
class Replacement:
  """A replacement kind.

  Attributes:
    states: (params, items, mean or None) -> replacement states ({"h", "c"} for an LSTM), broadcastable to
      (L, B, T, ...).
    per_item: r comes from each item's own counterfactual, so steps before x and x' differ are unchanged.
    uses_mean: r is (or starts at) the units' mean states, which a caller may give precomputed.
    learned: the search optimises r (one vector per layer and run) along with the gates (LSTMs only).
  """
  states: Callable[[Params, Items, dict | None], dict[str, jax.Array]]
  per_item: bool = False
  uses_mean: bool = False
  learned: bool = False


REPLACEMENTS: dict[str, Replacement] = {
    "counterfactual": Replacement(counterfactual_states, per_item=True),
    "zero": Replacement(zero_states),
    "mean": Replacement(mean_replacement_states, uses_mean=True),
    "learned": Replacement(mean_replacement_states, uses_mean=True, learned=True),
}


def replacement_kind(replacement: str) -> Replacement:
  """The ``REPLACEMENTS`` entry of a name; one-sentence error for an unknown one."""
  if replacement not in REPLACEMENTS:
    raise ValueError(f"unknown replacement {replacement!r}; use one of {', '.join(REPLACEMENTS)}.")
  return REPLACEMENTS[replacement]


def replacement_states(params: Params, items: Items, replacement: str, mean: dict | None
                       ) -> dict[str, jax.Array]:
  """The replacement states r of a kind in ``REPLACEMENTS`` ({"h", "c"} for an LSTM), broadcastable to
  (L, B, T, ...)."""
  return replacement_kind(replacement).states(params, items, mean)


# ----------------------------------------------------------------------------------------------------------
# The margin engine.


def margin(params: Params, items: Items, inputs: jax.Array, gates_N: jax.Array | None, r: dict | None,
           sites: str = "h", initial_state: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """logit(target) - logit(foil) at position length - 1 under the intervention (none when gates_N is None); (B,).

  ``inputs`` is ``model_inputs`` of the items (the family's ``embed_inputs`` of the prefixes, an LSTM's
  layer-0 input projection), ``r`` the replacement states of the sites' state kinds. Only the output rows of
  the target and foil are used: the full softmax is never needed. With several-token words
  (``items.target_rest``), the difference of the words' summed log-probabilities (``continuations.summed_margin``),
  whose full softmax is taken only at the B x 2 x K positions that predict the words' later tokens.
  """
  if items.target_rest is not None:
    return summed_margin(params, items, inputs, gates_N, r, sites, initial_state)
  model = models.of_params(params)
  intervention = None if gates_N is None else model.intervention_of(gates_N, r, sites)
  top, _ = model.run(params, inputs, intervention, initial_state)
  top_last_BxD = top[jnp.arange(top.shape[0]), items.length - 1]
  w, b = model.unembedding(params)
  return jnp.sum((w[items.target] - w[items.foil]) * top_last_BxD, axis=-1) + b[items.target] - b[items.foil]


def units_to_gates(unit_sets: list[list[int]], num_units: int) -> np.ndarray:
  """A (S, N) 0/1 gate matrix from S lists of flat unit ids."""
  out = np.zeros((len(unit_sets), num_units), np.float32)
  for s, units in enumerate(unit_sets):
    units = list(units)
    if units and (min(units) < 0 or max(units) >= num_units):
      raise ValueError(f"unit ids must lie in [0, {num_units}), got {units}.")
    out[s, units] = 1.0
  return out


def _concrete(*arrays) -> tuple[np.ndarray, ...] | None:
  """The arrays as NumPy arrays, or None when any is traced (called inside jit)."""
  try:
    return tuple(np.asarray(a) for a in arrays)
  except jax.errors.TracerArrayConversionError:
    return None


def span(items: Items, replacement: str = "counterfactual") -> tuple[int, int]:
  """(start, end): the steps an intervention can change and the margins read, when ``items`` are concrete.

  ``end`` is the longest row's length: later steps are padding and never read. ``start`` is, for the
  counterfactual replacement, the first step at which some row's x and x' differ (capped so that every
  row's last real step is still run): before it the replacement states equal the clean ones, so any gate
  leaves those steps unchanged and they can be run once, unintervened. Traced items give (0, T).
  """
  steps = items.prefix.shape[1]
  arrays = _concrete(items.prefix, items.counterfactual, items.length)
  if arrays is None or arrays[2].size == 0:  # traced (inside jit) or empty: the full width, no skipping
    return 0, steps
  prefix, counterfactual, length = arrays
  end = int(length.max())
  if not replacement_kind(replacement).per_item:
    return 0, end
  differs = prefix[:, :end] != counterfactual[:, :end]
  first = np.where(differs.any(axis=1), differs.argmax(axis=1), end)
  return int(min(first.min(), length.min() - 1)), end


def length_groups(length_B: np.ndarray, min_rows: int = 32) -> list[np.ndarray]:
  """Row indices grouped by length: consecutive lengths join until a group has ``min_rows`` rows (or B / 8).

  Few groups keep compilations and per-step overheads down; a group is padded only to its longest row.
  """
  min_rows = max(min_rows, len(length_B) // 8)
  groups, current = [], []
  for value in np.unique(length_B):
    current.extend(np.flatnonzero(length_B == value).tolist())
    if len(current) >= min_rows:
      groups.append(current)
      current = []
  if current:  # the longest rows left over join the last group (or are the only one)
    groups[-1:] = [(groups[-1] if groups else []) + current]
  return [np.asarray(g) for g in groups]


STATE_BYTES = 2 ** 30  # the memory one chunk of intervened runs may hold


def rows_per_chunk(params: Params, batch: int, steps: int, backward: bool = False,
                   budget: int = STATE_BYTES) -> int:
  """How many gate vectors to run at once (at most 32) so that their states fit in ``budget`` bytes.

  One run holds, per item and step, the family's ``activation_floats`` (an LSTM: about 8H per layer, the
  4H-wide gate pre-activations, h and c and their replacements); a backward pass keeps about twice that.
  So the chunk follows from the shapes: 32 on small models, fewer at Gulordava size (2 x 650) or with
  thousands of items.
  """
  floats = models.of_params(params).activation_floats(params, steps)
  per_row = batch * steps * floats * 4 * (2 if backward else 1)
  return int(max(1, min(32, budget // max(per_row, 1))))


KL_BYTES = 2 ** 28  # the memory the control term's logits may hold at once, over every vmapped run


def kl_chunk(vocab_size: int, runs: int, budget: int = KL_BYTES) -> int:
  """Control positions whose logits are decoded at once so that ``runs`` vmapped runs stay under ``budget`` bytes.

  Each position holds about four V-wide float32 arrays (logits, log q, p, their product): 20 positions a run for 16
  runs at 50,000 words, 187 for 16 runs at the default LM's 5,596 (capped at 1,024).
  """
  return int(max(1, min(1024, budget // max(1, runs * vocab_size * 4 * 4))))


def control_kl_at(params: Params, top_BxTxD: jax.Array, log_p_BxTxV: jax.Array, mask_BxT: jax.Array,
                  classes_V: jax.Array | None, positions_P: jax.Array | None, chunk: int) -> jax.Array:
  """KL(p_model || p_intervened) per token on control rows, over the full vocabulary, exactly.

  ``top_BxTxD`` is the intervened run's top state (any family's ``run``); every family decodes it linearly
  (``unembedding``: an LSTM's decoder, a transformer's head after the final norm ``run`` applies). Read at the
  flat positions ``positions_P`` of the rows (an unbiased estimate of the rows' mean when they are drawn
  uniformly from the real tokens), or at every real token when None; decoded ``chunk`` positions at a time
  (``objectives.kl_control_decoded``), merged over ``classes_V`` when given.
  """
  w_VxD, b_V = models.of_params(params).unembedding(params)
  top, log_p, mask = top_BxTxD, log_p_BxTxV, mask_BxT
  if positions_P is not None:
    top = top.reshape(-1, top.shape[-1])[positions_P][None]
    log_p = log_p.reshape(-1, log_p.shape[-1])[positions_P][None]
    mask = jnp.ones((1, positions_P.shape[0]))
  return objectives.kl_control_decoded(log_p, top, w_VxD, b_V, mask, classes_V, chunk)


def clean_margins(params: Params, items: Items) -> tuple[np.ndarray, np.ndarray]:
  """The clean model's margins after x and after x' (no intervention), float32[B] each.

  An item is *known* where the first is > 0 and the second < 0 (target over foil after x, foil over target
  after x'): only there does a flip mean that the intervention, not the model's own error, changed the choice.
  """
  m_x = np.asarray(margins(params, items))[0]
  m_cf = np.asarray(margins(params, items.replace(prefix=items.counterfactual)))[0]
  return m_x, m_cf


def margins(params: Params, items: Items, gates_SxN: jax.Array | np.ndarray | None = None,
            replacement: str = "counterfactual", mean_h: dict | None = None, sites: str = "h",
            chunk: int | None = None, by_length: bool = False) -> jax.Array:
  """Margins logit(y) - logit(y') of every item under each of S gate vectors (:func:`margin`): float32[S, B].

  ``gates_SxN=None`` gives the unintervened model, shape (1, B). The S interventions run vmapped in
  chunks of ``chunk`` (``lax.map`` with a batch size; default :func:`rows_per_chunk`, from the shapes),
  sharing the replacement states and input projection.
  ``mean_h`` is the {"h", "c"} dict of ``mean_states`` for mean replacement (default: means over the prefixes).
  Only the steps :func:`span` gives are run per gate vector: padding after the longest row is dropped, and
  (for a family that can start from a carried state, ``RESUMABLE``: the LSTM) the steps before x and x'
  first differ run once, clean, and start every intervened run.

  ``by_length=True`` runs rows of similar length apart, each group only over its own steps (little
  padding): worth it when S is large (the all-unit pass), since each group's shape compiles once.
  """
  concrete = _concrete(items.length) if by_length else None
  if concrete is not None:
    (length,) = concrete
    if replacement_kind(replacement).uses_mean and mean_h is None:  # the mean over all rows, not over each group
      mean_h = mean_states(params, items.prefix, items.length)
    groups = length_groups(length)
    parts = [margins(params, items.take(g), gates_SxN, replacement, mean_h, sites, chunk) for g in groups]
    return jnp.concatenate(parts, axis=1)[:, np.argsort(np.concatenate(groups))]
  start, end = span(items, replacement)
  start = start if models.of_params(params).RESUMABLE and items.target_rest is None else 0
  chunk = chunk or rows_per_chunk(params, *run_size(items, start, end))
  return span_margins(params, items, gates_SxN, replacement, mean_h, sites, chunk, start, end)


@functools.partial(jax.jit, static_argnames=("replacement", "sites", "chunk", "start", "end"))
def span_margins(params: Params, items: Items, gates_SxN: jax.Array | np.ndarray | None, replacement: str,
                 mean_h: dict | None, sites: str, chunk: int, start: int, end: int) -> jax.Array:
  """:func:`margins` over the steps [start, end) only (jitted): steps before ``start`` run once, clean.

  Exact when no replacement state differs from the clean one before ``start`` (:func:`span` gives the
  widest such range); (0, T) is always exact.
  """
  model = models.of_params(params)
  if gates_SxN is None:
    gates_SxN = jnp.zeros((1, model.num_units(params, sites)))
  items = items.replace(prefix=items.prefix[:, :end], counterfactual=items.counterfactual[:, :end])
  r = replacement_states(params, items, replacement, mean_h)
  inputs = model_inputs(params, items)
  initial_state = None
  if start > 0:  # only a RESUMABLE family is given start > 0 (margins)
    initial_state = model.state_at(model.run(params, inputs[:, :start])[1], start - 1)
  late = lambda a: a if a.shape[2] == 1 else a[:, :, start:]
  r = {k: late(r[k]) for k in model.site_states(sites)}
  items = items.replace(length=items.length - start)
  return jax.lax.map(lambda z: margin(params, items, inputs[:, start:], z, r, sites, initial_state),
                     jnp.asarray(gates_SxN, jnp.float32), batch_size=chunk)


def control_kl(params: Params, control: Control, gates_SxN: jax.Array | np.ndarray, mean_h: dict | None = None,
               sites: str = "h", max_floats: int = 2 ** 25) -> jax.Array:
  """KL(p_model || p_intervened) in nats per token on control text, for each of S gate vectors: float32[S].

  Plain text has no counterfactual, so the units are replaced by their mean (``mean_h``, default: the
  mean over the control text itself) at every step. Sets are processed a few at a time so that the
  (sets, B, T, V) log-probabilities stay under ``max_floats`` floats (128 MiB by default).
  """
  return control_effects(params, control, gates_SxN, mean_h, sites, max_floats)["kl"]


def control_effects(params: Params, control: Control, gates_SxN: jax.Array | np.ndarray,
                    mean_h: dict | None = None, sites: str = "h", max_floats: int = 2 ** 25
                    ) -> dict[str, jax.Array]:
  r"""The intervened model on control text, as :func:`control_kl`: {"kl", "kl_merged", "perplexity"}, each float32[S].

  "kl" compares full next-word distributions; "kl_merged" the same distributions with the words of
  ``control.classes_V`` merged (the phenomenon's own choice, y vs y', not counted; equal to "kl" without
  classes). Perplexity is :math:`\exp(-\frac{1}{N}\sum_t \log q(w_{t+1} \mid w_{\le t}))` over the N
  next-token predictions inside the rows, under the same mean-replacement intervention; an all-zero gate
  vector gives the clean model's perplexity.
  """
  batch, steps = control.tokens.shape
  vocab_size = models.of_params(params).config_of(params)["vocab_size"]
  chunk = max(1, min(32, max_floats // (batch * steps * vocab_size)))
  kl, kl_merged, perplexity = control_effects_chunk(params, control, gates_SxN, mean_h, sites, chunk)
  return {"kl": kl, "kl_merged": kl_merged, "perplexity": perplexity}


@functools.partial(jax.jit, static_argnames=("sites", "chunk"))
def control_effects_chunk(params, control, gates_SxN, mean_h, sites, chunk):
  """:func:`control_effects` compiled for one chunk size: (kl, kl_merged, perplexity), each float32[S]."""
  model = models.of_params(params)
  mean_h = mean_h if mean_h is not None else mean_states(params, control.tokens, control.length)
  shapes = unit_shapes(params)
  r = {k: mean_h[k].reshape(shapes[k]) for k in model.site_states(sites)}
  log_p = jax.nn.log_softmax(model.apply(params, control.tokens), axis=-1)
  inputs = model.embed_inputs(params, control.tokens)
  mask = length_mask(control.length, control.tokens.shape[1])
  next_mask = mask[:, 1:]

  def one(z_N):
    top, _ = model.run(params, inputs, model.intervention_of(z_N, r, sites))
    logits = model.decode(params, top)
    log_q_next = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1], axis=-1), control.tokens[:, 1:, None],
                                     axis=-1)[..., 0]
    nll = -jnp.sum(log_q_next * next_mask) / jnp.maximum(jnp.sum(next_mask), 1.0)
    kl = objectives.kl_control(log_p, logits, mask)
    kl_merged = kl if control.classes_V is None else objectives.kl_control(log_p, logits, mask, control.classes_V)
    return kl, kl_merged, jnp.exp(nll)

  return jax.lax.map(one, jnp.asarray(gates_SxN, jnp.float32), batch_size=chunk)
