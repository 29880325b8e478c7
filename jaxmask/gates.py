"""Stochastic gates over any array of logits: Hard Concrete (Louizos et al. 2018) and Bernoulli with REINFORCE.

Importable alone (``from jaxmask import gates``); every function is pure, works elementwise on arrays of
any shape, and can be jitted and vmapped.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1


def sample(key: jax.Array, log_alpha: jax.Array, beta: float = BETA, gamma: float = GAMMA,
           zeta: float = ZETA) -> jax.Array:
  r"""A reparameterised Hard Concrete sample in [0, 1], with exact zeros and ones.

  .. math::
     u \sim U(0, 1),\quad s = \sigma\big((\log u - \log(1-u) + \log\alpha)/\beta\big),\quad
     z = \min(1, \max(0, s(\zeta - \gamma) + \gamma)).

  Gradients with respect to ``log_alpha`` flow through ``s`` (zero where the clip is active).
  """
  u = jax.random.uniform(key, jnp.shape(log_alpha), jnp.result_type(log_alpha, jnp.float32),
                         minval=1e-6, maxval=1.0 - 1e-6)
  s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha) / beta)
  return jnp.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)


def prob_nonzero(log_alpha: jax.Array, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA) -> jax.Array:
  r""":math:`P(z \neq 0) = \sigma(\log\alpha - \beta \log(-\gamma/\zeta))`, elementwise."""
  return jax.nn.sigmoid(log_alpha - beta * math.log(-gamma / zeta))


def expected_l0(log_alpha: jax.Array, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA) -> jax.Array:
  r""":math:`E[L_0(z)] = \sum_i P(z_i \neq 0)` over the last axis."""
  return prob_nonzero(log_alpha, beta, gamma, zeta).sum(axis=-1)


def deterministic(log_alpha: jax.Array, gamma: float = GAMMA, zeta: float = ZETA) -> jax.Array:
  r"""The test-time gate :math:`\min(1, \max(0, \sigma(\log\alpha)(\zeta - \gamma) + \gamma))`.

  It exceeds 0.5 exactly when ``log_alpha > 0`` (with the default constants).
  """
  return jnp.clip(jax.nn.sigmoid(log_alpha) * (zeta - gamma) + gamma, 0.0, 1.0)


def bernoulli_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
  """z ~ Bernoulli(sigmoid(logits)) as float 0/1, elementwise."""
  return jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(jnp.result_type(logits, jnp.float32))


def bernoulli_log_prob(logits: jax.Array, z: jax.Array) -> jax.Array:
  r""":math:`\log q_\phi(z) = \sum_i z_i \log\sigma(\phi_i) + (1 - z_i)\log\sigma(-\phi_i)` over the last axis."""
  return (z * jax.nn.log_sigmoid(logits) + (1.0 - z) * jax.nn.log_sigmoid(-logits)).sum(axis=-1)


def reinforce_surrogate(logits: jax.Array, z_KxN: jax.Array, f_K: jax.Array, baseline: jax.Array | float,
                        leave_one_out: bool = False) -> jax.Array:
  r"""A surrogate whose gradient in ``logits`` is the score-function (REINFORCE) estimate of :math:`\nabla E_q[f(z)]`.

  .. math::
     \hat g = \frac{1}{K} \sum_k \big(f(z_k) - b_k\big)\, \nabla_\phi \log q_\phi(z_k)

  with :math:`b_k` = ``baseline`` (e.g. a moving average of f), or, when ``leave_one_out``, the mean of
  the other K - 1 values :math:`b_k = \frac{1}{K-1}\sum_{j \neq k} f(z_j)` (needs K >= 2). The values
  f and b are constants (no gradient flows through them).

  Args:
    logits: phi, shape (N,).
    z_KxN: K samples from Bernoulli(sigmoid(phi)).
    f_K: f at each sample.
    baseline: a scalar, ignored when ``leave_one_out``.
    leave_one_out: use the leave-one-out baseline.

  Returns:
    A scalar; ``jax.grad`` of it with respect to ``logits`` is the estimate.
  """
  f_K = jax.lax.stop_gradient(f_K)
  k = f_K.shape[0]
  if leave_one_out:
    b_K = (f_K.sum() - f_K) / (k - 1)
  else:
    b_K = jnp.broadcast_to(jax.lax.stop_gradient(jnp.asarray(baseline, f_K.dtype)), f_K.shape)
  log_q_K = jax.vmap(bernoulli_log_prob, in_axes=(None, 0))(logits, z_KxN)
  return jnp.mean((f_K - b_K) * log_q_K)


def reinforce_grad(key: jax.Array, logits: jax.Array, f: Callable[[jax.Array], jax.Array], num_samples: int,
                   baseline: jax.Array | float = 0.0, leave_one_out: bool = False) -> tuple[jax.Array, jax.Array]:
  """The score-function estimate of grad E_{z~Bernoulli(sigmoid(logits))}[f(z)] from ``num_samples`` samples.

  Returns (gradient with the shape of ``logits``, the mean of f over the samples: use it to update a
  moving-average baseline ``b <- decay * b + (1 - decay) * mean_f``).
  """
  z_KxN = bernoulli_sample(key, jnp.broadcast_to(logits, (num_samples,) + jnp.shape(logits)))
  f_K = jax.vmap(f)(z_KxN)
  grad = jax.grad(reinforce_surrogate)(logits, z_KxN, f_K, baseline, leave_one_out)
  return grad, f_K.mean()


def moving_average(baseline: jax.Array, value: jax.Array, decay: float = 0.99) -> jax.Array:
  """b <- decay * b + (1 - decay) * value: the moving-average baseline of DiffMask's REINFORCE gate."""
  return decay * baseline + (1.0 - decay) * value
