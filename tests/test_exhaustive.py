"""The exhaustive optimum: equal to a brute-force loop over sets, and independent of the block and chunk sizes."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import planted
from jaxmask import exhaustive, interventions, objectives


@pytest.fixture(scope="module")
def random_lstm():
  """A random 2-layer LSTM (V = 8, H = 4, N = 8 h units) with large weights, on the planted items."""
  rng = np.random.default_rng(1)
  u = lambda *shape: jnp.asarray(rng.uniform(-1.5, 1.5, shape), jnp.float32)
  params = {"embedding": u(8, 4),
            "layers": [{"w_ih": u(16, 4), "w_hh": u(16, 4), "b_ih": u(16), "b_hh": u(16)},
                       {"w_ih": u(16, 4), "w_hh": u(16, 4), "b_ih": u(16), "b_hh": u(16)}],
            "decoder": {"w": u(8, 4), "b": u(8)}}
  return params, planted.items(24, seed=3)


def brute_force(params, items, k, sites="h"):
  """The best k-set by a plain Python loop, one set per interventions.margins call: (units, flips, loss, ties)."""
  n = 8 * len(sites)
  rows = []
  for s in itertools.combinations(range(n), k):
    m = np.asarray(interventions.margins(params, items, interventions.units_to_gates([list(s)], n), sites=sites))[0]
    rows.append((-int((m < 0).sum()), float(np.asarray(objectives.flip_loss(m)).mean()), list(s)))
  top = min(rows)
  return top[2], -top[0], top[1], sum(r[0] == top[0] for r in rows)


@pytest.mark.parametrize("model", ["planted", "random"])
def test_equals_brute_force(model, random_lstm):
  params, items = (planted.params(), planted.items(24)) if model == "planted" else random_lstm
  found = exhaustive.optimum(params, items, ks=[1, 2, 3])
  for k in (1, 2, 3):
    units, flips, loss, ties = brute_force(params, items, k)
    assert (found[k].units, found[k].flips, found[k].ties) == (units, flips, ties)
    np.testing.assert_allclose(found[k].mean_flip_loss, loss, rtol=1e-5)
    assert found[k].num_sets == [8, 28, 56][k - 1]
  if model == "planted":  # no single unit flips; any two planted units flip every item (3 tied pairs)
    assert (found[1].flips, found[1].ties) == (0, 8)
    assert (found[2].units, found[2].flips, found[2].ties) == ([0, 1], 24, 3)
    assert found[3].units == planted.PLANTED and found[3].flips == 24  # of 16 tied triples, the lowest loss


def test_chunking_does_not_change_the_answer(random_lstm):
  params, items = random_lstm
  whole = exhaustive.optimum(params, items, ks=[2, 3, 4])
  pieces = exhaustive.optimum(params, items, ks=[2, 3, 4], block=9, chunk=4)  # padded last blocks
  for k in (2, 3, 4):
    assert (whole[k].units, whole[k].flips, whole[k].ties, whole[k].num_sets) == (
        pieces[k].units, pieces[k].flips, pieces[k].ties, pieces[k].num_sets)
    np.testing.assert_allclose(whole[k].mean_flip_loss, pieces[k].mean_flip_loss, rtol=1e-5)
  flips, _ = exhaustive.set_scores(params, items, 3, sites="hc", block=300)
  assert flips.shape == (560,)  # C(16, 3) sets of h and c units, in two blocks
  assert exhaustive.flip_counts(params, items, [whole[4].units])[0] == whole[4].flips


def test_nth_combination_matches_itertools():
  for k in (1, 2, 3):
    for i, s in enumerate(itertools.combinations(range(7), k)):
      assert exhaustive.nth_combination(7, k, i) == list(s)


def test_default_sizes_and_errors():
  assert exhaustive.default_sizes(32) == (1, 2, 3, 4)
  assert exhaustive.default_sizes(64) == (1, 2, 3)
  with pytest.raises(ValueError, match="k must lie"):
    exhaustive.set_scores(planted.params(), planted.items(8), 9)
