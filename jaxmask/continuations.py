r"""Several-token targets and foils (a subword tokenizer, subword.py): the margin as summed log-probabilities.

A target y of tokens y_1 .. y_K is scored :math:`\sum_k \log p(y_k \mid x, y_{<k})`, and the margin is the target's
score minus the foil's. Each word's tokens are read from a run on x followed by them (:func:`continued`), two runs
per item, intervened at every step (the counterfactual replacement comes from x' followed by the same tokens).
Items carry the tokens after the first in ``Items.target_rest`` / ``foil_rest`` (None when every word is one
token: interventions.py's single-token path, logit(y) - logit(y'), runs unchanged).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmask import models
from jaxmask.items import Items

Params = dict


def rest_width(items: Items) -> int:
  """K, the number of tokens after the first of the items' longest target or foil (0: every word is one token)."""
  return 0 if items.target_rest is None else int(items.target_rest.shape[1])


def check_continued(model) -> None:
  if model.RESUMABLE:
    raise ValueError("several-token targets and foils come from a subword tokenizer, which only transformer "
                     "checkpoints have; an LSTM's items must be single words.")


def continued(items: Items, tokens_BxT: jax.Array, model=None) -> jax.Array:
  """Each row of ``tokens_BxT`` (x or x') followed, from its own length on, by the tokens that predict the rest
  of its target (row 0) and of its foil (row 1): the word's tokens but its last. int32[B, 2, T + K].

  Token k of the rest (``target_rest[:, k]``) is then predicted at position length + k, the first token at
  length - 1 as for a one-token word. Padding (-1) becomes token 0: it lies after every position that is read.
  """
  if model is not None:
    check_continued(model)
  batch = tokens_BxT.shape[0]
  k = items.target_rest.shape[1]
  at = items.length[:, None] + jnp.arange(k)[None, :]
  padded = jnp.concatenate([tokens_BxT, jnp.zeros((batch, k), tokens_BxT.dtype)], axis=1)
  rows = []
  for first, rest in ((items.target, items.target_rest), (items.foil, items.foil_rest)):
    word = jnp.maximum(jnp.concatenate([first[:, None], rest[:, :-1]], axis=1), 0).astype(tokens_BxT.dtype)
    rows.append(padded.at[jnp.arange(batch)[:, None], at].set(word))
  return jnp.stack(rows, axis=1)


def model_inputs(params: Params, items: Items) -> jax.Array:
  """The gate-independent input of the margin engine: the family's ``embed_inputs`` of the prefixes, (B, T, ...);
  with several-token words, of both continued rows (:func:`continued`), (B, 2, T + K, ...)."""
  model = models.of_params(params)
  if items.target_rest is None:
    return model.embed_inputs(params, items.prefix)
  tokens = continued(items, items.prefix, model)
  x = model.embed_inputs(params, tokens.reshape(2 * tokens.shape[0], -1))
  return x.reshape((tokens.shape[0], 2) + x.shape[1:])


def run_size(items: Items, start: int, end: int) -> tuple[int, int]:
  """(rows, steps) of one intervened run over the steps [start, end): two rows of end + K steps per item with
  several-token words."""
  batch, k = int(items.prefix.shape[0]), rest_width(items)
  return (batch, end - start) if k == 0 else (2 * batch, end + k)


@jax.checkpoint  # the backward pass recomputes the V-wide rows instead of keeping them
def _token_log_probs(top_BxKxD: jax.Array, w_VxD: jax.Array, b_V: jax.Array, tokens_BxK: jax.Array) -> jax.Array:
  logits = top_BxKxD @ w_VxD.T + b_V
  picked = jnp.take_along_axis(logits, tokens_BxK[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def summed_margin(params: Params, items: Items, inputs: jax.Array, gates_N: jax.Array | None, r: dict | None,
                   sites: str, initial_state) -> jax.Array:
  """``interventions.margin`` of items with several-token words: the summed log-probability of the target's tokens minus
  the foil's, each word's tokens read from a run on x followed by them, intervened at every step."""
  model = models.of_params(params)
  check_continued(model)
  if initial_state is not None:
    raise ValueError("a transformer reads every prefix from its start; give no initial state.")
  batch, k = items.length.shape[0], items.target_rest.shape[1]
  intervention = None
  if gates_N is not None:
    shapes = model.state_shapes(params)

    def rows(name, v):  # per item and row, (L, B or 1, 2, W, ...) -> (L, 2B, W, ...); a per-unit r broadcasts as is
      if v.ndim != len(shapes[name]) + 3:
        return v
      v = jnp.broadcast_to(v, (v.shape[0], batch) + v.shape[2:])
      return v.reshape((v.shape[0], 2 * batch) + v.shape[3:])

    intervention = model.intervention_of(gates_N, {name: rows(name, v) for name, v in r.items()}, sites)
  top, _ = model.run(params, inputs.reshape((2 * batch,) + inputs.shape[2:]), intervention)
  top = top.reshape((batch, 2) + top.shape[1:])
  w, b = model.unembedding(params)
  # The first tokens: both rows read x alone up to length - 1, so their log-probabilities differ by their logits.
  last_BxD = top[jnp.arange(batch), 0, items.length - 1]
  m = jnp.sum((w[items.target] - w[items.foil]) * last_BxD, axis=-1) + b[items.target] - b[items.foil]
  at = items.length[:, None, None, None] + jnp.arange(k)[None, None, :, None]
  rest = jnp.stack([items.target_rest, items.foil_rest], axis=1)  # (B, 2, K)
  log_p = _token_log_probs(jnp.take_along_axis(top, at, axis=2), w, b, jnp.maximum(rest, 0))
  log_p = jnp.where(rest >= 0, log_p, 0.0).sum(axis=-1)
  return m + log_p[:, 0] - log_p[:, 1]
