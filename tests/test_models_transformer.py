"""The GPT-2-style transformer: shapes, causality, and the intervention identities on MLP neurons and heads.

Logit parity with Hugging Face's GPT2LMHeadModel is tests/test_convert_gpt2.py's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmask import models
from jaxmask.models import transformer

V, P, D, NH, F, L, B, T = 13, 9, 12, 3, 20, 2, 4, 7
_apply = jax.jit(transformer.apply, static_argnames="return_states")


@pytest.fixture(scope="module")
def model():
  params = jax.tree.map(lambda a: 10.0 * a, transformer.init(jax.random.key(0), V, P, D, L, NH, F, tie_weights=False))
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), params)  # biases too
  tokens = jax.random.randint(jax.random.key(1), (B, T), 0, V)
  cf = jax.random.randint(jax.random.key(2), (B, T), 0, V)
  return params, tokens, cf


def test_shapes_config_units_and_names():
  params = transformer.init(jax.random.key(0), V, P, D, L, NH, F)
  assert params["wte"].shape == (V, D) and params["wpe"].shape == (P, D) and params["lm_head"] is params["wte"]
  assert params["blocks"][1]["attn"]["w_qkv"].shape == (D, 3, NH, D // NH)
  assert params["blocks"][0]["attn"]["w_out"].shape == (NH, D // NH, D)
  cfg = transformer.config_of(params)
  assert {k: cfg[k] for k in transformer.CONFIG_KEYS} == {"vocab_size": V, "max_positions": P, "d_model": D,
                                                         "num_layers": L, "num_heads": NH, "d_mlp": F}
  assert transformer.num_units(params, "mlp") == L * F and transformer.num_units(params, "heads") == L * NH
  assert transformer.num_units(params, "mlp,heads") == L * (F + NH) and transformer.num_units(params, "h") == L * F
  assert transformer.readable(F + 3, L, F, NH, "mlp") == "L2:mlp:3"
  assert transformer.readable(L * F + NH + 1, L, F, NH, "mlp,heads") == "L2:head:1"
  assert transformer.readable(1, L, F, NH, "heads") == "L1:head:1"
  assert models.get("transformer") is transformer and models.of_params(params) is transformer
  with pytest.raises(ValueError, match="transformer sites must be one of mlp, heads, mlp,heads .or h, the same as mlp.; got 'hc'"):
    transformer.num_units(params, "hc")


def test_causal_and_states(model):
  params, tokens, cf = model
  logits, states = _apply(params, tokens, return_states=True)
  assert logits.shape == (B, T, V)
  assert states["mlp"].shape == (L, B, T, F) and states["heads"].shape == (L, B, T, NH, D // NH)
  changed = tokens.at[:, 4:].set(cf[:, 4:])  # later tokens never change earlier logits
  np.testing.assert_allclose(_apply(params, changed)[:, :4], logits[:, :4], atol=1e-5)
  assert np.abs(np.asarray(_apply(params, changed)[:, 4:] - logits[:, 4:])).max() > 1e-2


def _zeroed(params, layer, site, index):
  """The parameters with one unit's outgoing weights removed: its output projection row (MLP) or head slice."""
  out = jax.tree.map(lambda a: a, params)
  key = "mlp" if site == "mlp" else "attn"
  out["blocks"][layer][key] = dict(out["blocks"][layer][key], w_out=params["blocks"][layer][key]["w_out"].at[index].set(0))
  return out


@pytest.mark.parametrize("sites,unit,layer,site,index", [
    ("mlp", F + 5, 1, "mlp", 5), ("heads", 2, 0, "heads", 2), ("mlp,heads", L * F + NH + 1, 1, "heads", 1),
    ("mlp,heads", 7, 0, "mlp", 7)])
def test_zero_replacement_of_a_unit_is_removing_its_output(model, sites, unit, layer, site, index):
  params, tokens, _ = model
  z = jnp.zeros(transformer.num_units(params, sites)).at[unit].set(1.0)
  iv = transformer.intervention_of(z, {"mlp": jnp.zeros((L, 1, 1, F)), "heads": jnp.zeros((L, 1, 1, NH, D // NH))}, sites)
  np.testing.assert_allclose(_apply(params, tokens, intervention=iv), _apply(_zeroed(params, layer, site, index), tokens),
                             atol=1e-4)


def test_gates_mix_states_inside_the_span(model):
  params, tokens, cf = model
  _, clean = _apply(params, tokens, return_states=True)
  logits0 = _apply(params, tokens)
  _, r = _apply(params, cf, return_states=True)
  n = transformer.num_units(params, "mlp,heads")
  off = transformer.intervention_of(jnp.zeros(n), r, "mlp,heads")
  np.testing.assert_array_equal(_apply(params, tokens, intervention=off), logits0)
  own = transformer.intervention_of(jnp.ones(n), clean, "mlp,heads")
  np.testing.assert_allclose(_apply(params, tokens, intervention=own), logits0, atol=1e-4)
  span = jnp.zeros((B, T), bool).at[:, 3:].set(True)
  half = transformer.Intervention(gates_N=jnp.full(n, 0.5), mlp_LxBxTxF=r["mlp"], heads_LxBxTxHxK=r["heads"],
                                  span_BxT=span, sites="mlp,heads")
  logits, states = _apply(params, tokens, return_states=True, intervention=half)
  np.testing.assert_allclose(states["heads"][0, :, 3:], 0.5 * (clean["heads"][0] + r["heads"][0])[:, 3:], atol=1e-5)
  np.testing.assert_allclose(states["heads"][0, :, :3], clean["heads"][0, :, :3], atol=1e-6)
  np.testing.assert_allclose(logits[:, :3], logits0[:, :3], atol=1e-5)  # before the span: unchanged
  with pytest.raises(ValueError, match="cannot start from a carried state"):
    transformer.apply(params, tokens, initial_state=(0, 0))
