"""The losses of a masked intervention: flip, gender neutralise, and the KL control term.

All act on the margin m = logit(y) - logit(y'), the target's logit minus the foil's, under intervention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def flip_loss(margin_B: jax.Array) -> jax.Array:
  r"""Per-item flip loss :math:`\mathrm{softplus}(m) = -\log\sigma(\mathrm{logit}(y') - \mathrm{logit}(y))`.

  Small once the intervened model prefers the foil y' (the counterfactual's answer) to the target y.
  """
  return jax.nn.softplus(margin_B)


def neutralise_loss(margin_B: jax.Array) -> jax.Array:
  r"""Per-item :math:`|\log p(y) - \log p(y')| = |m|`: zero when the model no longer prefers either word (gender)."""
  return jnp.abs(margin_B)


LOSSES = {"flip": flip_loss, "neutralise": neutralise_loss}


def class_log_totals(log_p_BxTxV: jax.Array, classes_V: jax.Array) -> jax.Array:
  r"""For every word v, the log-probability of its whole outcome class: :math:`\log \sum_{u: c(u) = c(v)} p_u`.

  ``classes_V`` maps each vocabulary entry to a class id in [0, V) (a word alone in its class keeps its
  own log-probability). Computed with a segment log-sum-exp over the vocabulary axis; any leading shape.
  """
  x = jnp.moveaxis(log_p_BxTxV, -1, 0)
  v = x.shape[0]
  top = jax.lax.stop_gradient(jax.ops.segment_max(x, classes_V, num_segments=v))  # for stability only
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  total = jax.ops.segment_sum(jnp.exp(x - top[classes_V]), classes_V, num_segments=v)
  return jnp.moveaxis((top + jnp.log(total))[classes_V], 0, -1)


def kl_control(log_p_BxTxV: jax.Array, logits_q_BxTxV: jax.Array, mask_BxT: jax.Array,
               classes_V: jax.Array | None = None) -> jax.Array:
  r"""Mean over masked positions of :math:`\mathrm{KL}(p \,\|\, q) = \sum_v p_v (\log p_v - \log q_v)`, in nats.

  With ``classes_V`` the KL is taken between the distributions over outcome classes instead, each class
  (e.g. a verb's singular and plural form, the target and foil of a minimal pair) one outcome:

  .. math::
     \mathrm{KL}(\bar p \,\|\, \bar q) = \sum_c P_c \log \frac{P_c}{Q_c}
       = \sum_v p_v \big(\log P_{c(v)} - \log Q_{c(v)}\big),\qquad P_c = \sum_{v: c(v) = c} p_v.

  It ignores how mass moves inside a class (which of y, y' the model predicts: the phenomenon itself)
  and counts every other change; it never exceeds the plain KL (merging outcomes loses information).

  Args:
    log_p_BxTxV: log-probabilities of the unintervened model (constants).
    logits_q_BxTxV: logits of the intervened model.
    mask_BxT: 1 at positions that must not change (real tokens), 0 at padding.
    classes_V: optional int32[V] class id of each vocabulary entry (see ``data.outcome_classes``).
  """
  kl_BxT = _kl_per_position(log_p_BxTxV, jax.nn.log_softmax(logits_q_BxTxV, axis=-1), classes_V)
  return jnp.sum(kl_BxT * mask_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1.0)


def _kl_per_position(log_p: jax.Array, log_q: jax.Array, classes_V: jax.Array | None) -> jax.Array:
  if classes_V is None:
    log_ratio = log_p - log_q
  else:
    log_ratio = class_log_totals(log_p, classes_V) - class_log_totals(log_q, classes_V)
  return jnp.sum(jnp.exp(log_p) * log_ratio, axis=-1)


def kl_control_decoded(log_p_BxTxV: jax.Array, h_BxTxH: jax.Array, w_VxH: jax.Array, b_V: jax.Array,
                       mask_BxT: jax.Array, classes_V: jax.Array | None = None, chunk: int | None = None
                       ) -> jax.Array:
  r""":func:`kl_control` of the logits :math:`q = h W^\top + b`, exactly, holding at most ``chunk`` x V logits.

  The positions are flattened and taken ``chunk`` at a time (``lax.map``); each chunk's logits are
  recomputed in the backward pass (``jax.checkpoint``) rather than kept, so memory is bounded by the chunk,
  not by the number of positions times the vocabulary (2.4 GB a step at 50,000 words as first written).

  Args:
    log_p_BxTxV: log-probabilities of the unintervened model (constants).
    h_BxTxH: the intervened model's top-layer states.
    w_VxH, b_V: the decoder.
    mask_BxT: 1 at positions that must not change, 0 at padding.
    classes_V: optional outcome classes (merged KL), as in :func:`kl_control`.
    chunk: positions per chunk; None takes them all at once.
  """
  v, hidden = log_p_BxTxV.shape[-1], h_BxTxH.shape[-1]
  log_p, h, mask = log_p_BxTxV.reshape(-1, v), h_BxTxH.reshape(-1, hidden), mask_BxT.reshape(-1)
  positions = mask.shape[0]
  chunk = max(1, min(chunk or positions, positions))
  pad = -positions % chunk
  log_p, h, mask = (jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)) for a in (log_p, h, mask))

  @jax.checkpoint
  def chunk_sum(args):
    log_p_CxV, h_CxH, mask_C = args
    log_q = jax.nn.log_softmax(h_CxH @ w_VxH.T + b_V, axis=-1)
    return jnp.sum(_kl_per_position(log_p_CxV, log_q, classes_V) * mask_C)

  split = lambda a: a.reshape((-1, chunk) + a.shape[1:])
  sums = jax.lax.map(chunk_sum, (split(log_p), split(h), split(mask)))
  return jnp.sum(sums) / jnp.maximum(jnp.sum(mask), 1.0)
