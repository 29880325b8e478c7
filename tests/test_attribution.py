"""The unit scores: single-unit effects, Integrated Gradients, attribution patching, gradient x activation, probe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import planted
from jaxmask import attribution, baselines, interventions, objectives
from jaxmask.models import lstm

N = 8  # planted units
margins = jax.jit(interventions.margins, static_argnames=("replacement", "sites", "chunk"))  # one compile per shape


def random_params(rng, layers=2, w_hh=True):
  """A random LSTM (V = 11, E = 4, H = 3) with large weights, so margins are far from linear in the gates.
  Built with numpy: cheaper than lstm.init's eager ops."""
  u = lambda *shape: jnp.asarray(rng.uniform(-1.5, 1.5, shape), jnp.float32)
  return {"embedding": u(11, 4),
          "layers": [{"w_ih": u(12, 4 if l == 0 else 3), "w_hh": u(12, 3) if w_hh else jnp.zeros((12, 3)),
                      "b_ih": u(12), "b_hh": u(12)} for l in range(layers)],
          "decoder": {"w": u(11, 3), "b": u(11)}}


def random_items(rng):
  return interventions.Items(prefix=jnp.asarray(rng.integers(0, 11, (6, 5)), jnp.int32),
                             counterfactual=jnp.asarray(rng.integers(0, 11, (6, 5)), jnp.int32),
                             length=jnp.array([5, 4, 5, 3, 5, 2]), target=jnp.arange(6), foil=jnp.arange(6) + 5)


@pytest.fixture(scope="module")
def random_lstm():
  """A random 2-layer LSTM gating h and c: N = 12, and 6 random items of lengths 2 to 5."""
  rng = np.random.default_rng(0)
  return random_params(rng), random_items(rng)


def identity(m):
  return m


def mean_loss(params, items, gates, loss_fn=objectives.flip_loss, **scope):
  return np.asarray(loss_fn(margins(params, items, gates, **scope)).mean(axis=1))


def test_single_unit_effects_and_integrated_gradients_rank_the_planted_units_first():
  params, items = planted.params(), planted.items()
  effects = np.asarray(attribution.single_unit_effects(params, items))
  # Alone, a planted unit moves the margin from 2.278 to 0.759: softplus(2.278) - softplus(0.759) = 1.2325.
  np.testing.assert_allclose(effects, [1.2325] * 3 + [0.0] * 5, atol=1e-4)
  ig = np.asarray(attribution.integrated_gradients(params, items))
  # The margin is affine in the gates (one layer, w_hh = 0): AtP = sigmoid(2.278) * (2.278 - 0.759) = 1.3776.
  atp = np.asarray(attribution.attribution_patching(params, items))
  np.testing.assert_allclose(atp, [1.3776] * 3 + [0.0] * 5, atol=1e-4)
  for scores in (effects, ig, atp):
    assert baselines.top_k(scores, 3) == planted.PLANTED
    assert np.min(scores[planted.PLANTED]) > 0.5
    np.testing.assert_allclose(scores[3:], 0.0, atol=1e-6)


def test_single_unit_effects_equal_a_loop_over_units(random_lstm):
  params, items = random_lstm
  n = lstm.num_units(params, "hc")
  vmapped = np.asarray(attribution.single_unit_effects(params, items, sites="hc"))
  looped = []
  for unit in range(n):
    loss = mean_loss(params, items, interventions.units_to_gates([[], [unit]], n), sites="hc")
    looped.append(loss[0] - loss[1])
  assert np.abs(vmapped).max() > 0.05  # not trivially zero
  np.testing.assert_allclose(vmapped, looped, atol=1e-5)


def test_integrated_gradients_completeness(random_lstm):
  params, items = random_lstm
  n = lstm.num_units(params, "hc")
  loss = mean_loss(params, items, np.stack([np.zeros(n), np.ones(n)]), sites="hc")
  attributions = np.asarray(attribution.integrated_gradients(params, items, steps=32, sites="hc"))
  assert abs(loss[0] - loss[1]) > 0.05
  np.testing.assert_allclose(attributions.sum(), loss[0] - loss[1], rtol=5e-3)  # trapezoid error: 2e-3
  # The planted circuit's three units share the whole intervention's loss reduction.
  params, items = planted.params(), planted.items()
  ig = np.asarray(attribution.integrated_gradients(params, items))
  full = mean_loss(params, items, np.stack([np.zeros(N), np.ones(N)]))
  np.testing.assert_allclose(ig[planted.PLANTED], (full[0] - full[1]) / 3, rtol=1e-3)


@pytest.mark.parametrize("replacement", ["counterfactual", "zero"])
def test_attribution_patching_and_gradient_x_activation_are_first_order_effects_of_the_gates(random_lstm,
                                                                                             replacement):
  params, items = random_lstm
  n, eps = lstm.num_units(params, "hc"), 1e-2
  loss = mean_loss(params, items, np.concatenate([eps * np.eye(n), -eps * np.eye(n)]), replacement=replacement,
                   sites="hc")
  finite_difference = (loss[n:] - loss[:n]) / (2 * eps)  # -dL/dz_i at z = 0
  assert np.abs(finite_difference).max() > 0.05
  atp = attribution.attribution_patching(params, items, replacement, sites="hc")
  np.testing.assert_allclose(atp, finite_difference, atol=2e-4)
  if replacement == "zero":  # sum_t s_t . dL/ds_t: the first-order effect of zero-ablating each unit
    np.testing.assert_allclose(attribution.gradient_x_activation(params, items, sites="hc"), finite_difference,
                               atol=2e-4)


def test_attribution_patching_is_exact_when_the_margin_is_affine_in_the_gates():
  """One layer with w_hh = 0, gating h: h at a step never feeds a later step, so the margin, read from the
  last h, is affine in z, and AtP on the margin is the exact single-unit margin change."""
  rng = np.random.default_rng(1)
  params, items = random_params(rng, layers=1, w_hh=False), random_items(rng)
  n = lstm.num_units(params, "h")
  m = mean_loss(params, items, np.eye(n + 1, n, k=-1), loss_fn=identity)
  exact = m[0] - m[1:]
  atp = np.asarray(attribution.attribution_patching(params, items, loss_fn=identity))
  assert np.abs(exact).max() > 0.1
  np.testing.assert_allclose(atp, exact, atol=1e-5)
  # With recurrent weights the same estimate is only first order: it misses by more than 1e-2.
  params = random_params(rng, layers=1)
  m = mean_loss(params, items, np.eye(n + 1, n, k=-1), loss_fn=identity)
  atp = np.asarray(attribution.attribution_patching(params, items, loss_fn=identity))
  assert np.abs(atp - (m[0] - m[1:])).max() > 1e-2


def with_noisy_planted_units():
  """The planted LSTM where the planted units' output gate also reads the last filler (o = sigma(2), sigma(0)
  or sigma(-2)): they still carry the feature the decoder reads, less cleanly than the distractors do."""
  params = planted.params()
  layer = dict(params["layers"][0])
  w_ih, b = np.array(layer["w_ih"]), np.array(layer["b_ih"])
  o = 3 * N + np.array(planted.PLANTED)
  b[o] = 0.0
  w_ih[o, 3:6] = [2.0, 0.0, -2.0]
  params["layers"] = [dict(layer, w_ih=jnp.asarray(w_ih), b_ih=jnp.asarray(b))]
  return params


def test_the_probe_finds_the_distractors_and_is_not_causal():
  params, items, labels = planted.params(), planted.items(), planted.labels()
  fit = attribution.fit_probe(params, items, jnp.asarray(labels))
  weights = np.abs(np.asarray(fit.weights_N))
  assert float(fit.accuracy) == 1.0
  # The probe cannot tell the distractors from the planted units: equal weights, only a tie-break between them.
  np.testing.assert_allclose(weights[planted.DISTRACTORS], weights[0], rtol=1e-4)
  assert weights[0] > 0.5 and np.all(weights[5:] < 1e-3)
  # When the distractors encode the label more cleanly than the units the model reads, the probe prefers them.
  noisy = with_noisy_planted_units()
  probe_scores = attribution.probe(noisy, items, labels)
  probe_top3 = baselines.top_k(probe_scores, 3)
  assert set(planted.DISTRACTORS) <= set(probe_top3)
  probe_scores = np.asarray(probe_scores)
  assert np.min(probe_scores[planted.DISTRACTORS]) > 2 * np.max(probe_scores[planted.PLANTED])
  assert baselines.top_k(attribution.single_unit_effects(noisy, items), 3) == planted.PLANTED
  flips = np.asarray(margins(noisy, planted.items(seed=1), interventions.units_to_gates([planted.PLANTED, probe_top3], N)) < 0)
  np.testing.assert_array_equal(flips.mean(axis=1), [1.0, 0.0])
