"""The intervention engine and the sweep on a transformer: a planted head that alone carries the flipped word.

In a random 2-layer model every head's output projection is zeroed except layer 0's head 1, whose query
and key weights are zeroed too (it averages the values of every earlier position), so the only path from
position 1 (where x and x' differ) to the last position is that head: replacing it by its counterfactual
value flips every item, and no other head can.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmask import interventions, search, sweeps
from jaxmask.items import Control, Items
from jaxmask.models import transformer

V, P, D, NH, F, L, T = 12, 8, 16, 4, 24, 2, 6
HEAD = 1                       # layer 0's head 1
HEAD_UNIT = L * F + HEAD       # its flat id with sites "mlp,heads"


def planted_params():
  params = jax.tree.map(lambda a: 25.0 * a, transformer.init(jax.random.key(0), V, P, D, L, NH, F))
  for l, block in enumerate(params["blocks"]):
    keep = jnp.zeros((NH, 1, 1)).at[HEAD].set(1.0 if l == 0 else 0.0)
    uniform = jnp.ones((3, NH, 1)).at[:2, HEAD].set(0.0 if l == 0 else 1.0)  # no q, k: uniform causal attention
    block["attn"] = dict(block["attn"], w_out=block["attn"]["w_out"] * keep, w_qkv=block["attn"]["w_qkv"] * uniform)
  return params


def planted_items(params, n=800, seed=0):
  """Items whose target y (foil y') is the token the clean (counterfactual) prefix prefers most over the other."""
  rng = np.random.default_rng(seed)
  prefix = rng.integers(0, V, (n, T))
  cf = prefix.copy()
  cf[:, 1] = (prefix[:, 1] + rng.integers(1, V, n)) % V
  last = lambda tokens: np.asarray(transformer.apply(params, jnp.asarray(tokens)))[:, -1]
  clean, counter = last(prefix), last(cf)
  target, foil = (clean - counter).argmax(-1), (clean - counter).argmin(-1)
  rows = np.arange(n)
  ok = ((clean[rows, target] - clean[rows, foil] > 0.5) & (counter[rows, target] - counter[rows, foil] < -0.5))
  i = np.flatnonzero(ok)[:64]
  as_int = lambda a: jnp.asarray(a, jnp.int32)
  return Items(as_int(prefix[i]), as_int(cf[i]), as_int(np.full(len(i), T)), as_int(target[i]), as_int(foil[i]))


@pytest.fixture(scope="module")
def planted():
  params = planted_params()
  return params, planted_items(params)


def test_engine_margins_are_the_models_logits(planted):
  params, items = planted
  assert items.prefix.shape[0] >= 32
  logits = np.asarray(transformer.apply(params, items.prefix))[:, -1]
  rows = np.arange(items.prefix.shape[0])
  clean = logits[rows, items.target] - logits[rows, items.foil]
  np.testing.assert_allclose(np.asarray(interventions.margins(params, items))[0], clean, atol=1e-4)
  n = transformer.num_units(params, "mlp,heads")
  gates = interventions.units_to_gates([[HEAD_UNIT], [HEAD_UNIT + 1], [0, 5, F + 3]], n)
  m = np.asarray(interventions.margins(params, items, gates, sites="mlp,heads"))
  assert (m[0] < 0).all() and (m[1] > 0).all()  # the planted head flips every item; its silent neighbour none
  _, r = transformer.apply(params, items.counterfactual, return_states=True)
  direct = transformer.apply(params, items.prefix, intervention=transformer.intervention_of(jnp.asarray(gates[2]), r,
                                                                                            "mlp,heads"))
  np.testing.assert_allclose(m[2], np.asarray(direct)[rows, -1, items.target] - np.asarray(direct)[rows, -1, items.foil],
                             atol=1e-4)
  for replacement in ("zero", "mean"):  # every replacement kind runs on the transformer's states
    assert np.isfinite(np.asarray(interventions.margins(params, items, gates, replacement, sites="mlp,heads"))).all()


@pytest.mark.parametrize("sites,unit", [("heads", HEAD), ("mlp,heads", HEAD_UNIT)])
def test_sweep_finds_the_planted_head(planted, sites, unit):
  params, items = planted
  result = search.sweep(params, items, [0.05, 1e3], seed=0, steps=200, batch_size=32, sites=sites)
  assert result.units == [[unit], []]  # margins are tens of nats: only a huge lambda outweighs the head
  flip, _ = sweeps.flip_rates(np.asarray(interventions.margins(
      params, items, interventions.units_to_gates(result.units, transformer.num_units(params, sites)), sites=sites)),
      [type("Pair", (), {"condition": "all"})()] * items.prefix.shape[0])
  assert flip == [1.0, 0.0]


def test_sweep_with_control_term_and_refused_learned_replacement(planted):
  params, items = planted
  control = Control(tokens=items.prefix[:8], length=items.length[:8])
  result = search.sweep(params, items, [0.05], seed=0, steps=60, batch_size=16, sites="heads", mu=0.1, control=control,
                        method="reinforce")
  assert np.isfinite(result.loss_trace).all()
  effects = interventions.control_effects(params, control, interventions.units_to_gates([[HEAD], []], L * NH),
                                          sites="heads")
  assert float(effects["kl"][0]) > 0 and float(effects["kl"][1]) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ValueError, match="learned replacement learns one h vector per LSTM layer"):
    search.sweep(params, items, [0.05], steps=2, sites="heads", replacement="learned")
