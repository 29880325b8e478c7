"""The end-game: ramp, target size, hard phase, straight-through gates, Lagrange multiplier, read-out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import planted
from jaxmask import endgame, search


def test_ramp_rises_linearly_then_holds():
  total = jnp.asarray(100.0)
  values = [float(endgame.progress(jnp.asarray(s), total, 0.3)) for s in (0, 14, 29, 30, 99)]
  np.testing.assert_allclose(values, [1 / 30, 15 / 30, 1.0, 1.0, 1.0], rtol=1e-6)
  assert float(endgame.progress(jnp.asarray(0), total, 0.0)) == 1.0  # no ramp: full pressure at once


def test_target_size_runs_from_every_unit_down_to_k():
  np.testing.assert_allclose([float(endgame.target_size(3.0, 64, r)) for r in (0.0, 0.5, 1.0)], [64, 33.5, 3])


def test_hard_phase_is_the_last_fraction_of_the_steps():
  hard = [bool(endgame.in_hard_phase(jnp.asarray(s), jnp.asarray(10.0), 0.7)) for s in range(10)]
  assert hard == [False] * 3 + [True] * 7
  assert not any(bool(endgame.in_hard_phase(jnp.asarray(s), jnp.asarray(10.0), 0.0)) for s in range(10))


def test_top_k_mask_breaks_ties_to_the_lower_index_and_takes_traced_k():
  logits = jnp.array([0.5, 2.0, 0.5, -1.0, 2.0])
  np.testing.assert_array_equal(endgame.top_k_mask(logits, 3.0), [1, 1, 0, 0, 1])
  k_masks = jax.jit(jax.vmap(endgame.top_k_mask, in_axes=(None, 0)))(logits, jnp.arange(6.0))
  np.testing.assert_array_equal(k_masks.sum(axis=1), np.arange(6))
  assert endgame.read_out(np.asarray(logits)[None], np.array([3])) == [[0, 1, 4]]
  assert endgame.read_out(np.asarray(logits)[None]) == [[0, 1, 2, 4]]


def test_straight_through_is_hard_forward_and_sigmoid_backward():
  logits = jnp.array([-2.0, 0.3, 4.0])
  hard = endgame.read_out_mask(logits)
  np.testing.assert_array_equal(endgame.straight_through(logits, hard), [0.0, 1.0, 1.0])
  weights = jnp.array([1.0, -2.0, 3.0])
  grad = jax.grad(lambda la: weights @ endgame.straight_through(la, endgame.read_out_mask(la)))(logits)
  s = jax.nn.sigmoid(logits)
  np.testing.assert_allclose(grad, weights * s * (1 - s), rtol=1e-6)


def test_multiplier_rises_with_excess_and_is_clamped_at_zero():
  assert float(endgame.multiplier_update(jnp.asarray(0.5), 12.0, 10.0, 0.1)) == pytest.approx(0.7)
  assert float(endgame.multiplier_update(jnp.asarray(0.05), 2.0, 10.0, 0.1)) == 0.0


def test_target_sweep_reads_out_exactly_k_units_and_finds_the_planted_set():
  result = search.sweep(planted.params(), planted.items(), [1, 3, 5], steps=150, batch_size=32, targets=True)
  assert [len(u) for u in result.units] == [1, 3, 5]
  assert result.units[1] == planted.PLANTED
  np.testing.assert_array_equal(result.targets, [1, 3, 5])
  assert np.all(result.lambdas >= 0)  # the final Lagrange multipliers


@pytest.mark.parametrize("targets", [[0], [1.5]])
def test_target_sizes_must_be_positive_integers(targets):
  with pytest.raises(ValueError, match="positive integers"):
    search.sweep(planted.params(), planted.items(), targets, steps=2, targets=True)


def test_hard_phase_optimises_the_read_out_set():
  """On the planted circuit the read-out set after the hard phase is the planted set at lambda 0.02 (every
  unit pays for itself), and empty at lambda 5 (no unit's flip-loss reduction is worth 5)."""
  result = search.sweep(planted.params(), planted.items(), [0.02, 5.0], steps=150, batch_size=32)
  assert result.units == [planted.PLANTED, []]
  plain = search.sweep(planted.params(), planted.items(), [0.02], steps=150, batch_size=32, init_logit=0.0,
                       schedule="fixed", hard_fraction=0.0)
  assert plain.units == [planted.PLANTED]  # the control method agrees on this easy case
