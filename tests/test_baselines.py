"""The methods and their evaluation: random sets, sweep read-out, greedy patching, the registry, compare()."""

import dataclasses

import jax
import numpy as np
import pytest

import planted
from jaxmask import baselines, interventions, objectives, search
from jaxmask.models import lstm
from test_attribution import margins, random_lstm  # noqa: F401  (a fixture)

N = 8  # planted units
ALL = {"hard_concrete", "reinforce", "single_unit", "integrated_gradients", "gradient_x_activation",
       "attribution_patching", "greedy", "probe", "random"}


@pytest.fixture(scope="module")
def sweep():
  """A small Hard Concrete sweep on the planted LSTM: lambda 0.02 finds the planted set, lambda 5 nothing."""
  result = search.sweep(planted.params(), planted.items(), [0.02, 5.0], steps=100, learning_rate=0.1,
                        batch_size=32)
  assert result.units == [planted.PLANTED, []]
  return result


def flip_rates(params, items, unit_sets):
  return np.asarray((margins(params, items, interventions.units_to_gates(unit_sets, N)) < 0).mean(axis=1))


def test_random_sets_flip_less_than_the_planted_set():
  draws = baselines.random_sets(jax.random.key(0), N, 3, draws=20)
  assert draws.shape == (20, 3) and draws.dtype == np.int32
  d = np.asarray(draws)
  assert np.all(np.diff(d, axis=1) > 0) and d.min() >= 0 and d.max() < N  # sorted, distinct, in range
  assert len({tuple(row) for row in d.tolist()}) > 10
  rates = flip_rates(planted.params(), planted.items(seed=1), [planted.PLANTED] + d.tolist())
  # A random 3-set flips every item iff it holds >= 2 planted units: probability 16/56 = 0.29.
  assert rates[0] == 1.0 and rates[1:].mean() < 0.6


def test_sweep_at_k_picks_the_best_set_of_at_most_k_units(sweep):
  params, items = planted.params(), planted.items()
  # k = 2: the lambda-0.02 set cut to its 2 largest logits (two of the three equal planted units, whichever the
  # optimisation's noise favours) already flips every item (margin -0.76).
  top_2 = sorted(sorted(planted.PLANTED, key=lambda u: -sweep.logits[0, u])[:2])
  assert baselines.sweep_at_k(params, items, sweep, [0, 2, 3, 8]) == [[], top_2, planted.PLANTED, planted.PLANTED]
  # Every tie rule, with the ranking 0 > 1 > 2 > 3 = 4 for every set: at k = 1 nothing flips and [0] lowers the
  # loss most; [3] and [] tie (a distractor does nothing); the 5-set ties with the planted set at k = 5: the
  # smaller wins.
  handmade = dataclasses.replace(sweep, units=[[0, 1, 2, 3, 4], [3], [0, 3], [], planted.PLANTED],
                                 logits=np.tile(np.array([4.0, 3.0, 2.0, 1.0, 1.0, -1.0, -1.0, -1.0]), (5, 1)))
  assert baselines.sweep_at_k(params, items, handmade, [1, 2, 3, 5]) == [[0], [0, 1], planted.PLANTED,
                                                                         planted.PLANTED]
  only_small = dataclasses.replace(sweep, units=[[3], []], logits=-np.ones_like(sweep.logits))
  assert baselines.sweep_at_k(params, items, only_small, [1]) == [[]]


def best_extension(params, items, chosen, sites):
  """Brute force: the unit whose addition to ``chosen`` flips most items (ties: lower mean flip loss, lower id)."""
  n = lstm.num_units(params, sites)
  scored = []
  for unit in sorted(set(range(n)) - set(chosen)):
    m = margins(params, items, interventions.units_to_gates([chosen + [unit]], n), sites=sites)[0]
    scored.append((-int((m < 0).sum()), float(objectives.flip_loss(m).mean()), unit))
  return min(scored)


def test_greedy_adds_the_best_unit_each_round(random_lstm):
  params, items = random_lstm
  nested = baselines.greedy(params, items, 2, sites="hc")
  first = best_extension(params, items, [], "hc")
  second = best_extension(params, items, [first[2]], "hc")
  assert -first[0] >= 1  # some single unit flips an item: the flip count, not only the loss, decides
  assert nested == [[first[2]], sorted([first[2], second[2]])]
  # The planted circuit: no single unit flips, so round 1 goes to the lowest loss (a planted unit, the lower
  # id of three equals); two planted units flip every item, and the third lowers the loss further.
  assert baselines.greedy(planted.params(), planted.items(), 3) == [[0], [0, 1], planted.PLANTED]


def test_bootstrap_rates_resample_items_for_every_set_alike():
  rng = np.random.default_rng(0)
  flips_SxB = np.stack([rng.random(400) < 0.3, np.ones(400, bool), np.zeros(400, bool)])
  flips_SxB = np.concatenate([flips_SxB, flips_SxB[:1]])
  boot = baselines.bootstrap_rates(flips_SxB, resamples=1000, seed=0)
  assert boot.shape == (4, 1000)
  p = flips_SxB[0].mean()
  assert abs(boot[0].mean() - p) < 0.003
  np.testing.assert_allclose(boot[0].std(), np.sqrt(p * (1 - p) / 400), rtol=0.1)  # 0.0229
  np.testing.assert_array_equal(boot[1:3], [[1.0] * 1000, [0.0] * 1000])
  np.testing.assert_array_equal(boot[3], boot[0])  # the same resamples for every set: paired
  np.testing.assert_array_equal(baselines.bootstrap_rates(flips_SxB, 1000, seed=0), boot)


def test_auc_is_the_normalised_trapezoid_over_k():
  rows = [{"k": 4, "heldout_flip_rate": 1.0}, {"k": 1, "heldout_flip_rate": 0.0}, {"k": 2, "heldout_flip_rate": 0.5}]
  assert baselines.auc(rows) == pytest.approx((1 * 0.25 + 2 * 0.75) / 3)  # 0.5833
  assert baselines.auc(rows[:1]) == 1.0
  with pytest.raises(ValueError, match="at least one row"):
    baselines.auc([])


def test_compare_returns_every_method_at_every_k(sweep):
  ks = [1, 3]
  # The same sweep stands in for REINFORCE's: only the structure of its rows is checked.
  out = baselines.compare(planted.params(), planted.items(), planted.items(seed=1), ks, hard_concrete=sweep,
                          reinforce=sweep, labels=planted.labels(), key=jax.random.key(1), draws=5)
  assert set(out) == ALL
  for method, rows in out.items():
    assert [row["k"] for row in rows] == ks
    assert all(row["ci95"][0] <= row["heldout_flip_rate"] <= row["ci95"][1] for row in rows)
    assert ("heldout_flip_rate_sd" in rows[0]) == (method == "random")
  # At k = 1 the sweeps give the planted unit with the largest logit; the other methods break the tie of the
  # three equal planted units by the lower id.
  top_1 = [max(planted.PLANTED, key=lambda u: sweep.logits[0, u])]
  for method in ALL - {"random"}:
    got = [(row["units"], row["heldout_flip_rate"], row["ci95"], row["auc"]) for row in out[method]]
    first = top_1 if method in ("hard_concrete", "reinforce") else [0]
    assert got == [(first, 0.0, [0.0, 0.0], 0.5), (planted.PLANTED, 1.0, [1.0, 1.0], 0.5)], method
    # Each planted unit lowers the margin by 2.278 - 0.759 = 1.519, and the three add up (one layer, w_hh = 0).
    np.testing.assert_allclose([row["mean_logit_diff_change"] for row in out[method]], [1.519, 4.557], atol=2e-3)
  assert [np.shape(row["units"]) for row in out["random"]] == [(5, 1), (5, 3)]
  assert out["random"][1]["heldout_flip_rate"] < 1.0
  # Without labels or REINFORCE, those two drop out; ``methods`` picks registry entries.
  without = baselines.compare(planted.params(), planted.items(), planted.items(seed=1), [3], hard_concrete=sweep,
                              draws=2, methods=["hard_concrete", "reinforce", "probe", "random"])
  assert set(without) == {"hard_concrete", "random"}


def test_compare_search_sets_over_seeds_and_a_new_registry_entry(monkeypatch):
  params, items, heldout = planted.params(), planted.items(), planted.items(seed=1)
  # Seed 0 finds the planted set, seed 1 the distractors (which change nothing) at k = 3.
  per_seed = [[[0], planted.PLANTED], [[1], planted.DISTRACTORS]]
  monkeypatch.setitem(baselines.METHODS, "first_units", baselines.Method(
      "first k ids", "k", ".", lambda context, ks: [[list(range(k))] for k in ks]))
  out = baselines.compare(params, items, heldout, [1, 3], search_sets={"hard_concrete": per_seed},
                          methods=["hard_concrete", "first_units"])
  assert list(out) == ["hard_concrete", "first_units"]
  hc = out["hard_concrete"][1]
  assert hc["units"] == planted.PLANTED and hc["units_per_seed"] == [planted.PLANTED, planted.DISTRACTORS]
  assert (hc["heldout_flip_rate"], hc["seed_min"], hc["seed_max"]) == (0.5, 0.0, 1.0)
  assert hc["heldout_flip_rate_per_seed"] == [1.0, 0.0]
  assert hc["ci95"] == [0.5, 0.5]  # every item is flipped by exactly one seed's set
  assert [row["units"] for row in out["first_units"]] == [[0], [0, 1, 2]]
  with pytest.raises(ValueError, match="one set per k"):
    baselines.compare(params, items, heldout, [1, 3], search_sets={"hard_concrete": [[[0]]]}, methods=[])
  with pytest.raises(ValueError, match="more than k = 1"):
    baselines.compare(params, items, heldout, [1], search_sets={"hard_concrete": [[[0, 1]]]})
  with pytest.raises(ValueError, match="unknown methods"):
    baselines.compare(params, items, heldout, [1], methods=["lasso"])


def test_jaccard_and_overlap_matrix():
  assert baselines.jaccard([0, 1, 2], [1, 2, 3]) == 0.5
  assert baselines.jaccard([], []) == 1.0 and baselines.jaccard([1], []) == 0.0
  np.testing.assert_allclose(baselines.overlap_matrix([[0, 1], [1], [2]]),
                             [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
