"""Each planted motif's truth, verified by exhaustive search: it flips every item, no smaller set flips any,
and it is the unique optimum at its size (or one of the documented tied optima)."""

import numpy as np
import pytest

from benchmarks import motifs
from jaxmask import exhaustive
from jaxmask.models import lstm


@pytest.mark.parametrize("name", list(motifs.MOTIFS))
def test_truth_is_the_exhaustive_optimum(name):
  m = motifs.motif(name, seed=0, num_items=32)
  k = len(m.true_set)
  found = exhaustive.optimum(m.params, m.items, ks=range(1, k + 1), sites=m.sites)
  assert found[k].units in m.true_sets and found[k].flips == 32
  assert found[k].ties == len(m.true_sets)
  for smaller in range(1, k):
    assert found[smaller].flips == 0
  flips = exhaustive.flip_counts(m.params, m.heldout, m.true_sets, sites=m.sites)
  np.testing.assert_array_equal(flips, 32)


def test_seeds_draw_other_weights_and_positions():
  a, b = motifs.motif("or", seed=0), motifs.motif("or", seed=1)
  assert a.true_set == [2, 8, 9] and b.true_set == [4, 8, 13]
  assert not np.allclose(a.params["layers"][0]["w_hh"], b.params["layers"][0]["w_hh"])
  assert lstm.num_units(a.params, a.sites) == 32 and lstm.num_units(motifs.motif("cell").params, "hc") == 32


def test_unknown_motif():
  with pytest.raises(ValueError, match="unknown motif"):
    motifs.motif("xor")
