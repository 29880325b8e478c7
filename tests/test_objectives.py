"""Tests for jaxmask.objectives: the flip loss and the (merged) control KL, on numbers worked by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmask import objectives


def _kl(p, q, classes=None):
  log_p = jnp.log(jnp.asarray(p, jnp.float32))[None, None]
  logits_q = jnp.log(jnp.asarray(q, jnp.float32))[None, None]
  return float(objectives.kl_control(log_p, logits_q, jnp.ones((1, 1)),
                                     None if classes is None else jnp.asarray(classes, jnp.int32)))


def test_flip_loss_is_softplus_of_margin():
  np.testing.assert_allclose(objectives.flip_loss(jnp.asarray([0.0, 2.0, -3.0])),
                             [np.log(2.0), np.log1p(np.exp(2.0)), np.log1p(np.exp(-3.0))], rtol=1e-6)


def test_merged_kl_by_hand():
  p = [0.5, 0.3, 0.2]
  # Mass moved only inside the merged class {0, 1}: the plain KL sees it, the merged KL does not.
  q = [0.2, 0.6, 0.2]
  assert _kl(p, q) == pytest.approx(0.5 * np.log(0.5 / 0.2) + 0.3 * np.log(0.3 / 0.6), rel=1e-5)
  assert _kl(p, q, [0, 0, 2]) == pytest.approx(0.0, abs=1e-6)
  # Mass moved out of the class: P = (0.8, 0.2), Q = (0.4, 0.6).
  q = [0.1, 0.3, 0.6]
  assert _kl(p, q, [0, 0, 2]) == pytest.approx(0.8 * np.log(2.0) + 0.2 * np.log(0.2 / 0.6), rel=1e-5)


def test_merged_kl_never_exceeds_plain_and_singletons_change_nothing():
  k1, k2 = jax.random.split(jax.random.key(0))
  log_p = jax.nn.log_softmax(3.0 * jax.random.normal(k1, (4, 5, 12)), axis=-1)
  logits_q = 3.0 * jax.random.normal(k2, (4, 5, 12))
  mask = jnp.ones((4, 5)).at[0, 3:].set(0.0)
  plain = float(objectives.kl_control(log_p, logits_q, mask))
  assert float(objectives.kl_control(log_p, logits_q, mask, jnp.arange(12))) == pytest.approx(plain, rel=1e-5)
  merged = float(objectives.kl_control(log_p, logits_q, mask, jnp.asarray([0, 0, 2, 2, 2, 5, 6, 7, 8, 8, 10, 11])))
  assert 0.0 <= merged < plain
  assert float(objectives.kl_control(log_p, logits_q, mask, jnp.zeros(12, jnp.int32))) == pytest.approx(0.0, abs=1e-5)


def test_merged_kl_gradient_matches_explicit_class_sums():
  """The gradient the search's mu term uses equals that of the KL written with a one-hot class matrix."""
  k1, k2 = jax.random.split(jax.random.key(1))
  log_p = jax.nn.log_softmax(jax.random.normal(k1, (2, 3, 6)), axis=-1)
  logits_q = jax.random.normal(k2, (2, 3, 6))
  classes = jnp.asarray([0, 0, 2, 3, 3, 3])
  onehot = jax.nn.one_hot(classes, 6)  # (V, C)
  mask = jnp.ones((2, 3))

  def explicit(lq):
    big_p, big_q = jnp.exp(log_p) @ onehot, jax.nn.softmax(lq, axis=-1) @ onehot
    used = onehot.sum(0) > 0
    return jnp.sum(jnp.where(used, big_p * (jnp.log(jnp.where(used, big_p, 1.0)) - jnp.log(jnp.where(used, big_q, 1.0))),
                             0.0)) / 6.0

  ours = lambda lq: objectives.kl_control(log_p, lq, mask, classes)
  assert float(ours(logits_q)) == pytest.approx(float(explicit(logits_q)), rel=1e-5)
  np.testing.assert_allclose(jax.grad(ours)(logits_q), jax.grad(explicit)(logits_q), atol=1e-6)


@pytest.mark.parametrize("chunk", [None, 4])
def test_kl_control_decoded_equals_the_full_softmax_kl_and_its_gradient(chunk):
  keys = jax.random.split(jax.random.key(3), 4)
  h, w = jax.random.normal(keys[0], (3, 5, 6)), jax.random.normal(keys[1], (11, 6))
  b, log_p = jax.random.normal(keys[2], (11,)), jax.nn.log_softmax(jax.random.normal(keys[3], (3, 5, 11)))
  mask = jnp.asarray([[1.0] * 5, [1.0] * 3 + [0.0] * 2, [1.0] * 2 + [0.0] * 3])
  for classes in (None, jnp.asarray([0, 0, 2, 2, 2, 5, 6, 7, 8, 8, 10])):
    full = lambda h: objectives.kl_control(log_p, h @ w.T + b, mask, classes)
    decoded = lambda h: objectives.kl_control_decoded(log_p, h, w, b, mask, classes, chunk)
    assert float(decoded(h)) == pytest.approx(float(full(h)), rel=1e-5)
    np.testing.assert_allclose(jax.grad(decoded)(h), jax.grad(full)(h), rtol=1e-4, atol=1e-6)
