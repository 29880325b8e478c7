r"""A GPT-2-style decoder as pure functions, with gated interventions on MLP neurons and attention heads.

Parameters are a plain pytree in which every tensor of a Hugging Face ``GPT2LMHeadModel`` is one leaf,
reshaped only to expose the heads (HF's ``Conv1D`` computes ``x @ W + b``, and so do we)::

    {"wte": (V, D), "wpe": (P, D), "lm_head": (V, D),
     "blocks": [{"ln_1": {"scale": (D,), "bias": (D,)},
                 "attn": {"w_qkv": (D, 3, nH, dh), "b_qkv": (3, nH, dh),      # c_attn (D, 3D), (3D,)
                          "w_out": (nH, dh, D), "b_out": (D,)},               # c_proj (D, D), (D,)
                 "ln_2": {...}, "mlp": {"w_in": (D, F), "b_in": (F,), "w_out": (F, D), "b_out": (D,)}}, ...],
     "ln_f": {"scale": (D,), "bias": (D,)}}

A block is pre-LayerNorm (:math:`\epsilon = 10^{-5}`), with causal attention and a tanh-GELU MLP::

    a = x + sum_n o_n W_out[n] + b_out,   o_n = softmax(q_n k_n^T / sqrt(dh) + causal) v_n
    x' = a + gelu(LN_2(a) W_in + b_in) W_out + b_out,   logits = LN_f(x_L) lm_head^T

Units are the MLP neurons (each layer's F post-GELU activations) and the attention heads (each head's
output o_n before the output projection, all dh coordinates gated together), chosen by ``sites``: "mlp",
"heads" or "mlp,heads"; flat ids run over [mlp of layer 0, ..., layer L-1, then heads of each layer].
"h", every engine function's default site, means "mlp" here (the hidden layer of each block's MLP), so
code written for the LSTM's default runs unchanged on a transformer.
An intervention replaces them at every position of a span as for the LSTM, s~ = (1 - z) s + z r.
"""

from __future__ import annotations

import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

Params = dict[str, Any]
SITES = ("mlp", "heads", "mlp,heads")
EPS = 1e-5          # GPT-2's layer_norm_epsilon
RESUMABLE = False   # attention reads every earlier position, so a run cannot start from a carried state


def init(key: jax.Array, vocab_size: int, max_positions: int, d_model: int, num_layers: int, num_heads: int,
         d_mlp: int, tie_weights: bool = True) -> Params:
  """Random parameters, initialised as GPT-2 (normal, sd 0.02; zero biases; unit LayerNorm scales)."""
  if d_model % num_heads:
    raise ValueError(f"d_model {d_model} is not a multiple of num_heads {num_heads}.")
  dh = d_model // num_heads
  keys = iter(jax.random.split(key, 3 + 4 * num_layers))
  n = lambda shape: 0.02 * jax.random.normal(next(keys), shape, jnp.float32)
  norm = lambda: {"scale": jnp.ones((d_model,)), "bias": jnp.zeros((d_model,))}
  blocks = [{"ln_1": norm(),
             "attn": {"w_qkv": n((d_model, 3, num_heads, dh)), "b_qkv": jnp.zeros((3, num_heads, dh)),
                      "w_out": n((num_heads, dh, d_model)), "b_out": jnp.zeros((d_model,))},
             "ln_2": norm(),
             "mlp": {"w_in": n((d_model, d_mlp)), "b_in": jnp.zeros((d_mlp,)),
                     "w_out": n((d_mlp, d_model)), "b_out": jnp.zeros((d_model,))}}
            for _ in range(num_layers)]
  wte = n((vocab_size, d_model))
  return {"wte": wte, "wpe": n((max_positions, d_model)), "blocks": blocks, "ln_f": norm(),
          "lm_head": wte if tie_weights else n((vocab_size, d_model))}


CONFIG_KEYS = ("vocab_size", "max_positions", "d_model", "num_layers", "num_heads", "d_mlp")


def config_of(params: Params) -> dict[str, int]:
  """The sizes of a parameter pytree (``CONFIG_KEYS``, ``init``'s arguments) and hidden_size = d_model."""
  vocab_size, d_model = params["wte"].shape
  block = params["blocks"][0]
  return {"vocab_size": int(vocab_size), "max_positions": int(params["wpe"].shape[0]), "d_model": int(d_model),
          "num_layers": len(params["blocks"]), "num_heads": int(block["attn"]["w_out"].shape[0]),
          "d_mlp": int(block["mlp"]["w_in"].shape[1]), "hidden_size": int(d_model)}


def _site_list(sites: str) -> list[str]:
  if sites == "h":
    return ["mlp"]
  if sites not in SITES:
    raise ValueError(f"transformer sites must be one of {', '.join(SITES)} (or h, the same as mlp); got {sites!r}.")
  return sites.split(",")


def units_per_layer(params: Params) -> dict[str, int]:
  """{"mlp": F, "heads": nH}: the gateable units of one layer at each site."""
  cfg = config_of(params)
  return {"mlp": cfg["d_mlp"], "heads": cfg["num_heads"]}


def num_units(params: Params, sites: str = "mlp") -> int:
  """N, the number of gateable units: L * (F if "mlp" is a site) + L * (nH if "heads" is a site)."""
  per = units_per_layer(params)
  return len(params["blocks"]) * sum(per[s] for s in _site_list(sites))


def state_shapes(params: Params) -> dict[str, tuple[int, ...]]:
  """Per state, (L, *one position's shape): {"mlp": (L, F), "heads": (L, nH, dh)}."""
  cfg = config_of(params)
  dh = cfg["d_model"] // cfg["num_heads"]
  return {"mlp": (cfg["num_layers"], cfg["d_mlp"]), "heads": (cfg["num_layers"], cfg["num_heads"], dh)}


def site_states(sites: str) -> tuple[str, ...]:
  """The states an intervention at ``sites`` reads replacements for."""
  return tuple(_site_list(sites))


@flax.struct.dataclass
class Intervention:
  """A gated replacement of units: s~ = (1 - z) * s + z * r at the positions where ``span`` is true.

  Attributes:
    gates_N: z, one gate per unit, flat over [mlp of each layer, then heads of each layer] (the sites').
    mlp_LxBxTxF: replacement r for the MLP neurons; broadcasts to (L, B, T, F).
    heads_LxBxTxHxK: replacement r for the head outputs; broadcasts to (L, B, T, nH, dh).
    span_BxT: where to intervene (bool, broadcasts to (B, T)); None means every position.
    sites: "mlp", "heads" or "mlp,heads".
  """
  gates_N: jax.Array
  mlp_LxBxTxF: jax.Array | None = None
  heads_LxBxTxHxK: jax.Array | None = None
  span_BxT: jax.Array | None = None
  sites: str = flax.struct.field(pytree_node=False, default="mlp")

  def layer_gates(self, layer: int, num_layers: int, per_layer: dict[str, int]) -> dict[str, jax.Array]:
    """{site: z of one layer's units at that site}, sliced from the flat gate vector."""
    out, offset = {}, 0
    for site in _site_list(self.sites):
      width = per_layer[site]
      out[site] = self.gates_N[..., offset + layer * width: offset + (layer + 1) * width]
      offset += num_layers * width
    return out


def intervention_of(gates_N: jax.Array, r: dict[str, jax.Array], sites: str,
                    span_BxT: jax.Array | None = None) -> Intervention:
  """The Intervention of gates and replacement states {"mlp", "heads"} (the interventions engine's form)."""
  return Intervention(gates_N=gates_N, mlp_LxBxTxF=r.get("mlp"), heads_LxBxTxHxK=r.get("heads"), span_BxT=span_BxT,
                      sites=sites)


def layer_norm(p: Params, x: jax.Array) -> jax.Array:
  """(x - mean) / sqrt(var + eps) * scale + bias over the last axis (biased variance, as torch)."""
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + EPS) * p["scale"] + p["bias"]


def _mix(s: jax.Array, z: jax.Array | None, r: jax.Array | None, on_BxT: jax.Array | None) -> jax.Array:
  if z is None:
    return s
  mixed = s + z * (r - s)  # == (1 - z) * s + z * r
  return mixed if on_BxT is None else jnp.where(on_BxT.reshape(on_BxT.shape + (1,) * (s.ndim - 2)), mixed, s)


def attention(p: Params, x_BxTxD: jax.Array) -> jax.Array:
  """Each head's causal attention output o_n (before the output projection): (B, T, nH, dh)."""
  q, k, v = jnp.einsum("btd,dcnk->cbtnk", x_BxTxD, p["w_qkv"]) + p["b_qkv"][:, None, None]
  steps = x_BxTxD.shape[1]
  scores_BxNxTxS = jnp.einsum("btnk,bsnk->bnts", q, k) / math.sqrt(q.shape[-1])
  causal = jnp.tril(jnp.ones((steps, steps), bool))
  scores_BxNxTxS = jnp.where(causal, scores_BxNxTxS, jnp.finfo(scores_BxNxTxS.dtype).min)
  return jnp.einsum("bnts,bsnk->btnk", jax.nn.softmax(scores_BxNxTxS, axis=-1), v)


def embed_inputs(params: Params, tokens_BxT: jax.Array) -> jax.Array:
  """The gate-independent input of the blocks: token plus position embeddings, (B, T, D)."""
  if tokens_BxT.shape[1] > params["wpe"].shape[0]:
    raise ValueError(f"a sequence of {tokens_BxT.shape[1]} tokens is longer than the model's "
                     f"{params['wpe'].shape[0]} positions; shorten the items or the text.")
  return params["wte"][tokens_BxT] + params["wpe"][:tokens_BxT.shape[1]]


def run(params: Params, x_BxTxD: jax.Array, intervention: Intervention | None = None, initial_state: None = None
        ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """All blocks on the embedded input: (LN_f of the top residual (B, T, D), {"mlp", "heads"} states after
  intervention, (L, B, T, F) and (L, B, T, nH, dh))."""
  if initial_state is not None:
    raise ValueError("a transformer run cannot start from a carried state; give the whole sequence.")
  num_layers = len(params["blocks"])
  batch, steps = x_BxTxD.shape[:2]
  shapes = state_shapes(params)
  span, gates = None, [{}] * num_layers
  if intervention is not None:
    if intervention.span_BxT is not None:
      span = jnp.broadcast_to(intervention.span_BxT, (batch, steps))
    gates = [intervention.layer_gates(l, num_layers, units_per_layer(params)) for l in range(num_layers)]
  full = lambda r, s: jnp.broadcast_to(r, (num_layers, batch, steps) + s[1:])
  mlps, heads = [], []
  x = x_BxTxD
  for l, block in enumerate(params["blocks"]):
    g = gates[l]
    o = attention(block["attn"], layer_norm(block["ln_1"], x))
    if "heads" in g:
      o = _mix(o, g["heads"][:, None], full(intervention.heads_LxBxTxHxK, shapes["heads"])[l], span)
    x = x + jnp.einsum("btnk,nkd->btd", o, block["attn"]["w_out"]) + block["attn"]["b_out"]
    m = jax.nn.gelu(layer_norm(block["ln_2"], x) @ block["mlp"]["w_in"] + block["mlp"]["b_in"], approximate=True)
    if "mlp" in g:
      m = _mix(m, g["mlp"], full(intervention.mlp_LxBxTxF, shapes["mlp"])[l], span)
    x = x + m @ block["mlp"]["w_out"] + block["mlp"]["b_out"]
    mlps.append(m)
    heads.append(o)
  return layer_norm(params["ln_f"], x), {"mlp": jnp.stack(mlps), "heads": jnp.stack(heads)}


def activation_floats(params: Params, steps: int) -> int:
  """Floats one intervened run holds per item and position: per layer the residual stream and its norms,
  q, k, v and the head outputs (about 8D), the MLP's hidden layer and its replacement (2F), and one row of
  attention scores per head (nH * steps)."""
  cfg = config_of(params)
  return cfg["num_layers"] * (8 * cfg["d_model"] + 2 * cfg["d_mlp"] + cfg["num_heads"] * steps)


def unembedding(params: Params) -> tuple[jax.Array, jax.Array]:
  """(W (V, D), b (V,)) with logits = top W^T + b; GPT-2's head has no bias."""
  return params["lm_head"], jnp.zeros((params["lm_head"].shape[0],), params["lm_head"].dtype)


def decode(params: Params, top: jax.Array) -> jax.Array:
  """Next-token logits from the normalised top residual (any leading shape)."""
  return top @ params["lm_head"].T


def apply(params: Params, tokens_BxT: jax.Array, return_states: bool = False,
          intervention: Intervention | None = None, initial_state: None = None):
  """Logits (B, T, V) of next tokens; with ``return_states`` also {"mlp", "heads"} (after intervention)."""
  top, states = run(params, embed_inputs(params, tokens_BxT), intervention, initial_state)
  logits = decode(params, top)
  return (logits, states) if return_states else logits


def unit_values(states: dict[str, jax.Array], sites: str = "mlp") -> jax.Array:
  """Every unit's value at every position, in the order of the gate vector: (B, T, N). A neuron's value is its
  activation; a head's, the Euclidean norm of its output o_n (a head has dh coordinates, one gate)."""
  values = {"mlp": states["mlp"], "heads": jnp.linalg.norm(states["heads"], axis=-1)}
  return jnp.concatenate([jnp.moveaxis(values[s], 0, 2).reshape(values[s].shape[1:3] + (-1,))
                          for s in _site_list(sites)], axis=-1)


def unit_name(params: Params, unit: int, sites: str = "mlp") -> str:
  """:func:`readable` with the sizes read from ``params``."""
  cfg = config_of(params)
  return readable(unit, cfg["num_layers"], cfg["d_mlp"], cfg["num_heads"], sites)


def readable(unit: int, num_layers: int, d_mlp: int, num_heads: int = 0, sites: str = "mlp") -> str:
  """A flat 0-based unit id as "L{layer, 1-based}:mlp:{neuron}" or "L{layer}:head:{head}" (0-based indices)."""
  for site in _site_list(sites):
    width = d_mlp if site == "mlp" else num_heads
    if unit < num_layers * width:
      layer, index = divmod(unit, width)
      return f"L{layer + 1}:{'mlp' if site == 'mlp' else 'head'}:{index}"
    unit -= num_layers * width
  raise ValueError(f"unit id out of range for {num_layers} layers at sites {sites!r}.")
