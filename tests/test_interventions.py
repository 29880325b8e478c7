"""The interventions: margins against full logits, the span and length groups, the planted circuit, control effects."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import planted
from jaxmask import interventions
from jaxmask.models import lstm


def test_margins_match_full_logits_at_the_last_real_token():
  params = lstm.init(jax.random.key(0), 13, 6, 5, 2)
  prefix = jax.random.randint(jax.random.key(1), (4, 6), 0, 13)
  cf = jax.random.randint(jax.random.key(2), (4, 6), 0, 13)
  items = interventions.Items(prefix=prefix, counterfactual=cf, length=jnp.array([6, 3, 1, 5]),
                       target=jnp.array([1, 2, 3, 4]), foil=jnp.array([5, 6, 7, 8]))
  logits = np.asarray(lstm.apply(params, prefix))
  rows = np.arange(4)
  expected = logits[rows, [5, 2, 0, 4], [1, 2, 3, 4]] - logits[rows, [5, 2, 0, 4], [5, 6, 7, 8]]
  got = interventions.margins(params, items, np.stack([np.zeros(10), np.ones(10)]))
  np.testing.assert_allclose(got[0], expected, atol=1e-5)
  cf_logits = np.asarray(lstm.apply(params, cf))
  cf_expected = cf_logits[rows, [5, 2, 0, 4], [1, 2, 3, 4]] - cf_logits[rows, [5, 2, 0, 4], [5, 6, 7, 8]]
  np.testing.assert_allclose(got[1], cf_expected, atol=1e-5)


def _shared_prefix_items(lengths=(4, 7, 3, 7, 5, 6), steps=8, vocab=13):
  """Rows whose x and x' agree on their first two tokens (like "<eos> the boy" / "<eos> the boys"), varied lengths."""
  prefix = np.array(jax.random.randint(jax.random.key(3), (len(lengths), steps), 0, vocab))
  cf = np.array(jax.random.randint(jax.random.key(4), (len(lengths), steps), 0, vocab))
  cf[:, :2] = prefix[:, :2]
  cf[:, 2] = (prefix[:, 2] + 1) % vocab
  n = len(lengths)
  return interventions.Items(prefix=jnp.asarray(prefix), counterfactual=jnp.asarray(cf), length=jnp.asarray(lengths),
                      target=jnp.arange(n) % vocab, foil=(jnp.arange(n) + 5) % vocab)


def test_span_skips_the_shared_prefix_and_the_padding():
  items = _shared_prefix_items()
  assert interventions.span(items) == (2, 7)
  assert interventions.span(items, "mean") == (0, 7)
  # x == x' everywhere: the start stops at the shortest row's last step, which must still be run.
  same = items.replace(counterfactual=items.prefix)
  assert interventions.span(same) == (2, 7)
  assert interventions.span(same.replace(length=jnp.asarray([2, 7, 3, 7, 5, 6]))) == (1, 7)


@pytest.mark.parametrize("replacement", ["counterfactual", "mean", "zero"])
def test_shortened_and_grouped_margins_equal_the_full_width_run(replacement, monkeypatch):
  params = lstm.init(jax.random.key(0), 13, 6, 5, 2)
  items = _shared_prefix_items()
  gates = np.asarray(jax.random.bernoulli(jax.random.key(5), 0.3, (5, 10)), np.float32)
  full = np.asarray(interventions.span_margins(params, items, gates, replacement, None, "h", 32, 0, 8))
  np.testing.assert_allclose(interventions.margins(params, items, gates, replacement), full, atol=1e-5)
  # Groups of at least 2 rows: lengths {3, 4}, {5, 6}, {7, 7}; results come back in the original row order.
  groups = functools.partial(interventions.length_groups, min_rows=2)
  assert [sorted(np.asarray(items.length)[g].tolist()) for g in groups(np.asarray(items.length))] == [
      [3, 4], [5, 6], [7, 7]]
  monkeypatch.setattr(interventions, "length_groups", groups)
  np.testing.assert_allclose(interventions.margins(params, items, gates, replacement, by_length=True), full, atol=1e-5)


def test_planted_margins():
  got = np.asarray(interventions.margins(planted.params(), planted.items(),
                                  interventions.units_to_gates([[], planted.PLANTED, [0, 1], planted.DISTRACTORS], 8)))
  np.testing.assert_allclose(got[:, 0], [2.278, -2.278, -0.759, 2.278], atol=1e-3)


def test_control_effects_give_kl_and_perplexity():
  p, it = planted.params(), planted.items()
  control = interventions.Control(tokens=it.prefix, length=it.length)
  n = lstm.num_units(p)
  effects = interventions.control_effects(p, control, np.stack([np.zeros(n), np.ones(n)]))
  kl, kl_merged, ppl = (np.asarray(effects[k]) for k in ("kl", "kl_merged", "perplexity"))
  # Reference perplexity: exp of the mean next-token NLL inside each row, straight from lstm.apply.
  log_p = np.asarray(jax.nn.log_softmax(lstm.apply(p, it.prefix), axis=-1))
  tokens, length = np.asarray(it.prefix), np.asarray(it.length)
  nll = [-log_p[b, t, tokens[b, t + 1]] for b in range(len(tokens)) for t in range(length[b] - 1)]
  assert kl[0] == pytest.approx(0.0, abs=1e-6)
  assert ppl[0] == pytest.approx(np.exp(np.mean(nll)), rel=1e-5)
  assert kl[1] > 0.01 and ppl[1] != pytest.approx(ppl[0], rel=1e-3)
  np.testing.assert_allclose(kl, interventions.control_kl(p, control, np.stack([np.zeros(n), np.ones(n)])), rtol=1e-6)
  np.testing.assert_array_equal(kl_merged, kl)  # no classes: nothing merged
  # Every word in one class: a single outcome, nothing can change.
  merged = interventions.control_effects(p, control.replace(classes_V=jnp.zeros(p["decoder"]["w"].shape[0], jnp.int32)),
                                  np.ones((1, n)))
  assert float(merged["kl_merged"][0]) == pytest.approx(0.0, abs=1e-5)
  assert float(merged["kl"][0]) == pytest.approx(kl[1], rel=1e-6)


def test_control_kl_at_every_or_drawn_positions_and_chunk_sizes():
  p, it = planted.params(), planted.items()
  control = interventions.Control(tokens=it.prefix, length=it.length)
  n = lstm.num_units(p, "h")
  gates_N = jnp.asarray(np.random.default_rng(0).uniform(size=n), jnp.float32)
  exact = float(interventions.control_kl(p, control, gates_N[None])[0])
  mean = interventions.mean_states(p, control.tokens, control.length)
  shape = (len(p["layers"]), 1, 1, -1)
  iv = lstm.Intervention(gates_N=gates_N, h_LxBxTxH=mean["h"].reshape(shape), c_LxBxTxH=mean["c"].reshape(shape))
  xproj0 = lstm.input_projection(p["layers"][0], p["embedding"][control.tokens])
  log_p = jax.nn.log_softmax(lstm.apply(p, control.tokens), axis=-1)
  mask = interventions.length_mask(control.length, control.tokens.shape[1])
  top, _ = lstm.run(p, xproj0, iv)
  for chunk in (1, 5, 1000):
    assert float(interventions.control_kl_at(p, top, log_p, mask, None, None, chunk)) == pytest.approx(exact,
                                                                                                               rel=1e-5)
  # Positions drawn uniformly from the real tokens estimate the same mean: taking each real token once gives it.
  every = jnp.flatnonzero(mask.reshape(-1))
  assert float(interventions.control_kl_at(p, top, log_p, mask, None, every, 7)) == pytest.approx(exact, rel=1e-5)
  assert interventions.kl_chunk(50_000, 16) == 20 and interventions.kl_chunk(5596, 16) == 187 and interventions.kl_chunk(100, 1) == 1024
