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


def kl_control(log_p_BxTxV: jax.Array, logits_q_BxTxV: jax.Array, mask_BxT: jax.Array) -> jax.Array:
  r"""Mean over masked positions of :math:`\mathrm{KL}(p \,\|\, q) = \sum_v p_v (\log p_v - \log q_v)`, in nats.

  Args:
    log_p_BxTxV: log-probabilities of the unintervened model (constants).
    logits_q_BxTxV: logits of the intervened model.
    mask_BxT: 1 at positions that must not change (real tokens), 0 at padding.
  """
  log_q = jax.nn.log_softmax(logits_q_BxTxV, axis=-1)
  kl_BxT = jnp.sum(jnp.exp(log_p_BxTxV) * (log_p_BxTxV - log_q), axis=-1)
  return jnp.sum(kl_BxT * mask_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1.0)
