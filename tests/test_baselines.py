"""The baselines: single-unit effects, Integrated Gradients, probe, random sets, sweep read-out, compare()."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import planted
from jaxmask import baselines, lstm, objectives, search

N = 8  # planted units
margins = jax.jit(search.margins, static_argnames=("replacement", "sites", "chunk"))  # one compile per shape


@pytest.fixture(scope="module")
def random_lstm():
  """A random 2-layer LSTM (V = 11, E = 4, H = 3) with large weights, so margins are far from linear in the
  gates; gating h and c: N = 12. Built with numpy: cheaper than lstm.init's eager ops."""
  rng = np.random.default_rng(0)
  u = lambda *shape: jnp.asarray(rng.uniform(-1.5, 1.5, shape), jnp.float32)
  params = {"embedding": u(11, 4),
            "layers": [{"w_ih": u(12, 4), "w_hh": u(12, 3), "b_ih": u(12), "b_hh": u(12)},
                       {"w_ih": u(12, 3), "w_hh": u(12, 3), "b_ih": u(12), "b_hh": u(12)}],
            "decoder": {"w": u(11, 3), "b": u(11)}}
  items = search.Items(prefix=jnp.asarray(rng.integers(0, 11, (6, 5)), jnp.int32),
                       counterfactual=jnp.asarray(rng.integers(0, 11, (6, 5)), jnp.int32),
                       length=jnp.array([5, 4, 5, 3, 5, 2]), target=jnp.arange(6), foil=jnp.arange(6) + 5)
  return params, items


@pytest.fixture(scope="module")
def sweep():
  """A small Hard Concrete sweep on the planted LSTM: lambda 0.02 finds the planted set, lambda 5 nothing."""
  result = search.sweep(planted.params(), planted.items(), [0.02, 5.0], steps=100, learning_rate=0.1,
                        batch_size=32)
  assert result.units == [planted.PLANTED, []]
  return result


def flip_rates(params, items, unit_sets):
  return np.asarray((margins(params, items, search.units_to_gates(unit_sets, N)) < 0).mean(axis=1))


def test_single_unit_effects_and_integrated_gradients_rank_the_planted_units_first():
  params, items = planted.params(), planted.items()
  effects = np.asarray(baselines.single_unit_effects(params, items))
  # Alone, a planted unit moves the margin from 2.278 to 0.759: softplus(2.278) - softplus(0.759) = 1.2325.
  np.testing.assert_allclose(effects, [1.2325] * 3 + [0.0] * 5, atol=1e-4)
  ig = np.asarray(baselines.integrated_gradients(params, items))
  for scores in (effects, ig):
    assert baselines.top_k(scores, 3) == planted.PLANTED
    assert np.min(scores[planted.PLANTED]) > 0.5
    np.testing.assert_allclose(scores[3:], 0.0, atol=1e-6)


def test_single_unit_effects_equal_a_loop_over_units(random_lstm):
  params, items = random_lstm
  n = lstm.num_units(params, "hc")
  vmapped = np.asarray(baselines.single_unit_effects(params, items, sites="hc"))
  looped = []
  for unit in range(n):
    m = margins(params, items, search.units_to_gates([[], [unit]], n), sites="hc")
    loss = np.asarray(objectives.flip_loss(m).mean(axis=1))
    looped.append(loss[0] - loss[1])
  assert np.abs(vmapped).max() > 0.05  # not trivially zero
  np.testing.assert_allclose(vmapped, looped, atol=1e-5)


def test_integrated_gradients_completeness(random_lstm):
  params, items = random_lstm
  n = lstm.num_units(params, "hc")
  loss = np.asarray(objectives.flip_loss(margins(params, items, np.stack([np.zeros(n), np.ones(n)]),
                                                        sites="hc")).mean(axis=1))
  attributions = np.asarray(baselines.integrated_gradients(params, items, steps=32, sites="hc"))
  assert abs(loss[0] - loss[1]) > 0.05
  np.testing.assert_allclose(attributions.sum(), loss[0] - loss[1], rtol=5e-3)  # trapezoid error: 2e-3
  # The planted circuit's three units share the whole intervention's loss reduction.
  params, items = planted.params(), planted.items()
  ig = np.asarray(baselines.integrated_gradients(params, items))
  full = np.asarray(objectives.flip_loss(margins(params, items, np.stack([np.zeros(N), np.ones(N)])))
                    .mean(axis=1))
  np.testing.assert_allclose(ig[planted.PLANTED], (full[0] - full[1]) / 3, rtol=1e-3)


def test_gradient_x_activation_is_the_first_order_effect_of_each_gate(random_lstm):
  params, items = random_lstm
  n, eps = lstm.num_units(params, "hc"), 1e-2
  m = margins(params, items, np.concatenate([eps * np.eye(n), -eps * np.eye(n)]), sites="hc")
  loss = np.asarray(objectives.flip_loss(m).mean(axis=1))
  finite_difference = (loss[n:] - loss[:n]) / (2 * eps)  # -dL/dz_i
  np.testing.assert_allclose(baselines.gradient_x_activation(params, items, sites="hc"), finite_difference,
                             atol=2e-4)


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
  fit = baselines.fit_probe(params, items, jnp.asarray(labels))
  weights = np.abs(np.asarray(fit.weights_N))
  assert float(fit.accuracy) == 1.0
  # The probe cannot tell the distractors from the planted units: equal weights, only a tie-break between them.
  np.testing.assert_allclose(weights[planted.DISTRACTORS], weights[0], rtol=1e-4)
  assert weights[0] > 0.5 and np.all(weights[5:] < 1e-3)
  # When the distractors encode the label more cleanly than the units the model reads, the probe prefers them.
  noisy = with_noisy_planted_units()
  probe_scores = baselines.probe(noisy, items, labels)
  probe_top3 = baselines.top_k(probe_scores, 3)
  assert set(planted.DISTRACTORS) <= set(probe_top3)
  probe_scores = np.asarray(probe_scores)
  assert np.min(probe_scores[planted.DISTRACTORS]) > 2 * np.max(probe_scores[planted.PLANTED])
  assert baselines.top_k(baselines.single_unit_effects(noisy, items), 3) == planted.PLANTED
  heldout = planted.items(seed=1)
  np.testing.assert_array_equal(flip_rates(noisy, heldout, [planted.PLANTED, probe_top3]), [1.0, 0.0])


def test_random_sets_flip_less_than_the_planted_set():
  draws = baselines.random_sets(jax.random.key(0), N, 3, draws=20)
  assert draws.shape == (20, 3) and draws.dtype == jnp.int32
  d = np.asarray(draws)
  assert np.all(np.diff(d, axis=1) > 0) and d.min() >= 0 and d.max() < N  # sorted, distinct, in range
  assert len({tuple(row) for row in d.tolist()}) > 10
  rates = flip_rates(planted.params(), planted.items(seed=1), [planted.PLANTED] + d.tolist())
  # A random 3-set flips every item iff it holds >= 2 planted units: probability 16/56 = 0.29.
  assert rates[0] == 1.0 and rates[1:].mean() < 0.6


def test_sweep_at_k_picks_the_best_set_of_at_most_k_units(sweep):
  params, items = planted.params(), planted.items()
  # k = 2: the lambda-0.02 set cut to its 2 largest logits (units 0, 1) already flips every item (margin -0.76).
  assert baselines.sweep_at_k(params, items, sweep, [0, 2, 3, 8]) == [[], [0, 1], planted.PLANTED, planted.PLANTED]
  # Every tie rule, with the sweep's ranking 0 > 1 > 2 > 3 = 4 for every set: at k = 1 nothing flips and [0]
  # lowers the loss most; [3] and [] tie (a distractor does nothing); the 5-set ties with the planted set at
  # k = 5: the smaller wins.
  handmade = dataclasses.replace(sweep, units=[[0, 1, 2, 3, 4], [3], [0, 3], [], planted.PLANTED],
                                 logits=np.repeat(sweep.logits[:1], 5, axis=0))
  assert baselines.sweep_at_k(params, items, handmade, [1, 2, 3, 5]) == [[0], [0, 1], planted.PLANTED,
                                                                         planted.PLANTED]
  only_small = dataclasses.replace(sweep, units=[[3], []], logits=-np.ones_like(sweep.logits))
  assert baselines.sweep_at_k(params, items, only_small, [1]) == [[]]


def test_compare_returns_every_method_at_every_k(sweep):
  ks = [1, 3]
  # The same sweep stands in for REINFORCE's: only the structure of its rows is checked.
  out = baselines.compare(planted.params(), planted.items(), planted.items(seed=1), ks, hard_concrete=sweep,
                          reinforce=sweep, labels=planted.labels(), key=jax.random.key(1), draws=5)
  assert set(out) == {"hard_concrete", "reinforce", "single_unit", "integrated_gradients", "probe", "random"}
  for method, rows in out.items():
    assert [row["k"] for row in rows] == ks
    assert all(0.0 <= row["heldout_flip_rate"] <= 1.0 for row in rows)
    assert ("heldout_flip_rate_sd" in rows[0]) == (method == "random")
  at_1 = {"hard_concrete": [0], "reinforce": [0], "single_unit": [0], "integrated_gradients": [0], "probe": [0]}
  for method, units in at_1.items():
    got = [(row["units"], row["heldout_flip_rate"]) for row in out[method]]
    assert got == [(units, 0.0), (planted.PLANTED, 1.0)]
  assert [np.shape(row["units"]) for row in out["random"]] == [(5, 1), (5, 3)]
  assert out["random"][1]["heldout_flip_rate"] < 1.0
  without = baselines.compare(planted.params(), planted.items(), planted.items(seed=1), [3], hard_concrete=sweep,
                              draws=2)
  assert set(without) == {"hard_concrete", "single_unit", "integrated_gradients", "random"}


def test_jaccard_and_overlap_matrix():
  assert baselines.jaccard([0, 1, 2], [1, 2, 3]) == 0.5
  assert baselines.jaccard([], []) == 1.0 and baselines.jaccard([1], []) == 0.0
  np.testing.assert_allclose(baselines.overlap_matrix([[0, 1], [1], [2]]),
                             [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
