"""Hard Concrete and REINFORCE estimators against Monte Carlo, finite differences and analytic gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmask import gates

LOG_ALPHA = jnp.array([-3.0, -1.0, 0.0, 0.5, 2.0, 4.0])


def test_samples_in_unit_interval_and_hit_both_ends():
  z = gates.sample(jax.random.key(0), jnp.broadcast_to(LOG_ALPHA, (20000, 6)))
  assert float(z.min()) == 0.0 and float(z.max()) == 1.0
  assert np.all((z >= 0) & (z <= 1))
  assert 0 < float(jnp.mean((z > 0) & (z < 1))) < 1


def test_monte_carlo_prob_nonzero_matches_closed_form():
  z = gates.sample(jax.random.key(1), jnp.broadcast_to(LOG_ALPHA, (200000, 6)))
  np.testing.assert_allclose(np.mean(np.asarray(z) > 0, axis=0), gates.prob_nonzero(LOG_ALPHA), atol=4e-3)
  assert float(gates.expected_l0(LOG_ALPHA)) == pytest.approx(float(gates.prob_nonzero(LOG_ALPHA).sum()))


def test_deterministic_gate_threshold_is_log_alpha_zero():
  zd = gates.deterministic(LOG_ALPHA)
  np.testing.assert_array_equal(np.asarray(zd) > 0.5, np.asarray(LOG_ALPHA) > 0)
  assert float(gates.deterministic(jnp.array(-10.0))) == 0.0 and float(gates.deterministic(jnp.array(10.0))) == 1.0


def _expected_f_hard_concrete(log_alpha, key, n=400000):
  """Monte Carlo E[f(z)] with common random numbers (the same u for every log_alpha)."""
  z = gates.sample(key, jnp.broadcast_to(log_alpha, (n,) + log_alpha.shape))
  return jnp.mean(jnp.sum((z - 0.3) ** 2 * jnp.arange(1, 4), axis=-1))


@pytest.mark.parametrize("jit", [False, True])
def test_reparameterised_gradient_matches_finite_differences(jit):
  la = jnp.array([-0.5, 0.3, 1.2])
  key = jax.random.key(2)
  grad_fn = jax.grad(_expected_f_hard_concrete)
  if jit:
    grad_fn = jax.jit(grad_fn)
  g = np.asarray(grad_fn(la, key))
  eps = 1e-2
  fd = [(_expected_f_hard_concrete(la.at[i].add(eps), key) - _expected_f_hard_concrete(la.at[i].add(-eps), key))
        / (2 * eps) for i in range(3)]
  np.testing.assert_allclose(g, np.asarray(fd), rtol=2e-2, atol=2e-3)
  assert np.all(np.abs(g) > 1e-2)


def test_jitted_equals_unjitted():
  key = jax.random.key(3)
  np.testing.assert_allclose(gates.sample(key, LOG_ALPHA), jax.jit(gates.sample)(key, LOG_ALPHA), rtol=1e-6)
  np.testing.assert_allclose(gates.expected_l0(LOG_ALPHA), jax.jit(gates.expected_l0)(LOG_ALPHA), rtol=1e-6)


def test_bernoulli_log_prob():
  phi = jnp.array([0.0, 2.0, -1.0])
  z = jnp.array([1.0, 0.0, 1.0])
  expected = np.log(0.5) + np.log(1 - 1 / (1 + np.exp(-2.0))) + np.log(1 / (1 + np.exp(1.0)))
  assert float(gates.bernoulli_log_prob(phi, z)) == pytest.approx(expected, rel=1e-5)


def _toy(z):
  """f(z) = sum_i c_i z_i + z_0 z_1: E_q[f] = sum c_i p_i + p_0 p_1, so grad_phi is analytic."""
  c = jnp.array([1.0, -2.0, 0.5, 3.0])
  return jnp.sum(c * z) + z[0] * z[1]


def _analytic_grad(phi):
  c = np.array([1.0, -2.0, 0.5, 3.0])
  p = 1 / (1 + np.exp(-np.asarray(phi)))
  dp = p * (1 - p)
  g = c * dp
  g[0] += p[1] * dp[0]
  g[1] += p[0] * dp[1]
  return g


@pytest.mark.parametrize("leave_one_out", [False, True])
@pytest.mark.parametrize("jit", [False, True])
def test_reinforce_matches_analytic_gradient(leave_one_out, jit):
  phi = jnp.array([0.3, -0.5, 1.0, -1.5])
  # A good constant baseline (E[f]) for the moving-average variant; the leave-one-out one needs none.
  baseline = float(np.sum(np.array([1.0, -2.0, 0.5, 3.0]) / (1 + np.exp(-np.asarray(phi)))))
  fn = lambda key: gates.reinforce_grad(key, phi, _toy, num_samples=200000, baseline=baseline,
                                        leave_one_out=leave_one_out)
  if jit:
    fn = jax.jit(fn)
  g, mean_f = fn(jax.random.key(4))
  np.testing.assert_allclose(np.asarray(g), _analytic_grad(phi), atol=0.02)
  assert float(mean_f) == pytest.approx(baseline + 0.574 * 0.378, abs=0.03)


def test_baseline_reduces_variance_without_bias():
  """The same estimate with and without a baseline: equal means, smaller spread with the baseline."""
  phi = jnp.zeros(4)
  keys = jax.random.split(jax.random.key(5), 200)
  est = lambda b: jax.vmap(lambda k: gates.reinforce_grad(k, phi, lambda z: _toy(z) + 10.0, 16, baseline=b)[0])(keys)
  plain, based = est(0.0), est(11.25)
  np.testing.assert_allclose(plain.mean(0), based.mean(0), atol=0.35)
  assert float(based.std(0).mean()) < 0.3 * float(plain.std(0).mean())


def test_moving_average():
  assert float(gates.moving_average(jnp.array(1.0), jnp.array(2.0), 0.99)) == pytest.approx(1.01)
