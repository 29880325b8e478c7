"""The LSTM against a hand-written numpy LSTM with PyTorch's formulas, and the intervention identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmask.models import lstm

V, E, H, L, B, T = 11, 6, 5, 2, 3, 7


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def numpy_lstm(params, tokens):
  """torch.nn.LSTM's equations, step by step, layer by layer, in float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  x = p["embedding"][np.asarray(tokens)]
  hs, cs = [], []
  for layer in p["layers"]:
    h, c = np.zeros((x.shape[0], H)), np.zeros((x.shape[0], H))
    out_h, out_c = [], []
    for t in range(x.shape[1]):
      gates = x[:, t] @ layer["w_ih"].T + layer["b_ih"] + h @ layer["w_hh"].T + layer["b_hh"]
      i, f, g, o = np.split(gates, 4, axis=-1)
      c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
      h = _sigmoid(o) * np.tanh(c)
      out_h.append(h)
      out_c.append(c)
    x = np.stack(out_h, 1)
    hs.append(x)
    cs.append(np.stack(out_c, 1))
  logits = x @ p["decoder"]["w"].T + p["decoder"]["b"]
  return logits, np.stack(hs), np.stack(cs)


@pytest.fixture(scope="module")
def model():
  params = lstm.init(jax.random.key(0), V, E, H, L)
  tokens = jax.random.randint(jax.random.key(1), (B, T), 0, V)
  cf = jax.random.randint(jax.random.key(2), (B, T), 0, V)
  return params, tokens, cf


def test_init_shapes_follow_pytorch_layout():
  params = lstm.init(jax.random.key(0), V, E, H, L)
  assert params["embedding"].shape == (V, E)
  assert [l["w_ih"].shape for l in params["layers"]] == [(4 * H, E), (4 * H, H)]
  assert params["layers"][1]["w_hh"].shape == (4 * H, H) and params["layers"][0]["b_ih"].shape == (4 * H,)
  assert params["decoder"]["w"].shape == (V, H) and params["decoder"]["b"].shape == (V,)
  assert lstm.config_of(params) == {"vocab_size": V, "embed_size": E, "hidden_size": H, "num_layers": L}
  assert lstm.num_units(params) == L * H and lstm.num_units(params, "hc") == 2 * L * H
  tied = lstm.init(jax.random.key(0), V, H, H, 1, tie_weights=True)
  assert tied["decoder"]["w"] is tied["embedding"]


def test_apply_matches_numpy_lstm(model):
  params, tokens, _ = model
  logits, states = lstm.apply(params, tokens, return_states=True)
  ref_logits, ref_h, ref_c = numpy_lstm(params, tokens)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-5)
  np.testing.assert_allclose(states["h"], ref_h, atol=1e-5)
  np.testing.assert_allclose(states["c"], ref_c, atol=1e-5)
  assert states["h"].shape == (L, B, T, H)


def test_initial_state_continues_a_sequence(model):
  params, tokens, _ = model
  full = lstm.apply(params, tokens)
  _, states = lstm.apply(params, tokens[:, :3], return_states=True)
  rest = lstm.apply(params, tokens[:, 3:], initial_state=(states["h"][:, :, -1], states["c"][:, :, -1]))
  np.testing.assert_allclose(rest, full[:, 3:], atol=1e-5)


@pytest.mark.parametrize("sites", ["h", "hc"])
def test_zero_gates_give_plain_logits(model, sites):
  params, tokens, cf = model
  _, cf_states = lstm.apply(params, cf, return_states=True)
  iv = lstm.Intervention(gates_N=jnp.zeros(lstm.num_units(params, sites)), h_LxBxTxH=cf_states["h"],
                         c_LxBxTxH=cf_states["c"], sites=sites)
  np.testing.assert_array_equal(lstm.apply(params, tokens, intervention=iv), lstm.apply(params, tokens))


@pytest.mark.parametrize("sites", ["h", "hc"])
def test_all_gates_with_counterfactual_replacement_give_counterfactual_logits(model, sites):
  params, tokens, cf = model
  cf_logits, cf_states = lstm.apply(params, cf, return_states=True)
  iv = lstm.Intervention(gates_N=jnp.ones(lstm.num_units(params, sites)), h_LxBxTxH=cf_states["h"],
                         c_LxBxTxH=cf_states["c"], sites=sites)
  logits, states = lstm.apply(params, tokens, intervention=iv, return_states=True)
  np.testing.assert_allclose(logits, cf_logits, atol=1e-5)
  np.testing.assert_allclose(states["h"], cf_states["h"], atol=1e-5)


def test_one_unit_replaced_at_every_step_and_only_that_unit(model):
  """Gate one layer-0 unit to zero replacement: its h is 0 at every step; layer 1 and the logits change."""
  params, tokens, _ = model
  z = jnp.zeros(L * H).at[2].set(1.0)
  iv = lstm.Intervention(gates_N=z, h_LxBxTxH=jnp.zeros((L, 1, 1, H)))
  logits, states = lstm.apply(params, tokens, intervention=iv, return_states=True)
  _, clean = lstm.apply(params, tokens, return_states=True)
  np.testing.assert_array_equal(states["h"][0, :, :, 2], 0.0)
  # The other layer-0 units differ from the clean run only through the recurrence (from step 1 on).
  np.testing.assert_allclose(states["h"][0, :, 0, :2], clean["h"][0, :, 0, :2], atol=1e-6)
  assert float(jnp.abs(states["h"][1] - clean["h"][1]).max()) > 1e-4
  assert float(jnp.abs(logits - lstm.apply(params, tokens)).max()) > 1e-4


def test_span_limits_the_intervention_to_chosen_steps(model):
  params, tokens, cf = model
  _, cf_states = lstm.apply(params, cf, return_states=True)
  span = jnp.arange(T) >= 4
  iv = lstm.Intervention(gates_N=jnp.ones(L * H), h_LxBxTxH=cf_states["h"], span_BxT=span[None])
  logits = lstm.apply(params, tokens, intervention=iv)
  clean = lstm.apply(params, tokens)
  np.testing.assert_array_equal(logits[:, :4], clean[:, :4])
  assert float(jnp.abs(logits[:, 4:] - clean[:, 4:]).max()) > 1e-4


def test_readable_names_follow_lakretz():
  assert lstm.readable(775, 2, 650) == "L2:h:125"
  assert lstm.readable(3, 2, 8) == "L1:h:3" and lstm.readable(16 + 9, 2, 8) == "L2:c:1"
