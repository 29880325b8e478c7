"""A multi-layer LSTM language model as pure functions, with gated interventions inside the recurrence.

Parameters are a plain pytree laid out like PyTorch's word_language_model / colorlessgreenRNNs
``RNNModel``, so real checkpoints map one to one (gate order i, f, g, o)::

    {"embedding": (V, E),
     "layers": [{"w_ih": (4H, in), "w_hh": (4H, H), "b_ih": (4H,), "b_hh": (4H,)}, ...],
     "decoder": {"w": (V, H), "b": (V,)}}

The cell (PyTorch's formulas)::

    i, f, g, o = split(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)

An intervention acts at every time step of a span, after the cell update and before the state feeds
the next step and the next layer::

    s~_t = (1 - z) * s_t + z * r_t

with ``z`` one gate per unit (shared over items and steps) and ``r`` the replacement states (a
counterfactual run, zeros, a mean, or a learned vector). Units are flat ids over the concatenation
[h of layer 0, ..., h of layer L-1, then c of each layer when c is a site].
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

Params = dict[str, Any]
SITES = ("h", "hc")
RESUMABLE = True  # a run can start from the (h, c) state carried over from earlier steps
CONFIG_KEYS = ("vocab_size", "embed_size", "hidden_size", "num_layers")


def init(key: jax.Array, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
         tie_weights: bool = False) -> Params:
  """Random parameters, initialised as PyTorch does (uniform +-0.1 for embeddings, +-1/sqrt(H) for the LSTM)."""
  if tie_weights and embed_size != hidden_size:
    raise ValueError(f"tie_weights needs embed_size == hidden_size, got {embed_size} and {hidden_size}.")
  keys = jax.random.split(key, 2 + 4 * num_layers)
  bound = 1.0 / hidden_size ** 0.5
  u = lambda k, shape, b: jax.random.uniform(k, shape, jnp.float32, -b, b)
  embedding = u(keys[0], (vocab_size, embed_size), 0.1)
  layers = []
  for l in range(num_layers):
    in_size = embed_size if l == 0 else hidden_size
    k = keys[2 + 4 * l: 6 + 4 * l]
    layers.append({"w_ih": u(k[0], (4 * hidden_size, in_size), bound),
                   "w_hh": u(k[1], (4 * hidden_size, hidden_size), bound),
                   "b_ih": u(k[2], (4 * hidden_size,), bound),
                   "b_hh": u(k[3], (4 * hidden_size,), bound)})
  decoder_w = embedding if tie_weights else u(keys[1], (vocab_size, hidden_size), 0.1)
  return {"embedding": embedding, "layers": layers,
          "decoder": {"w": decoder_w, "b": jnp.zeros((vocab_size,), jnp.float32)}}


def config_of(params: Params) -> dict[str, int]:
  """The sizes of a parameter pytree: vocab_size, embed_size, hidden_size, num_layers."""
  vocab_size, embed_size = params["embedding"].shape
  return {"vocab_size": int(vocab_size), "embed_size": int(embed_size),
          "hidden_size": int(params["layers"][0]["w_hh"].shape[1]), "num_layers": len(params["layers"])}


def num_units(params: Params, sites: str = "h") -> int:
  """N, the number of gateable units: L * H per site in ``sites`` ("h" or "hc")."""
  cfg = config_of(params)
  return len(sites) * cfg["num_layers"] * cfg["hidden_size"]


@flax.struct.dataclass
class Intervention:
  """A gated replacement of recurrent states: s~ = (1 - z) * s + z * r on the steps where ``span`` is true.

  Attributes:
    gates_N: z, one gate per unit, flat over [h of each layer, then c of each layer if "c" in sites].
    h_LxBxTxH: replacement r for h; any shape that broadcasts to (L, B, T, H).
    c_LxBxTxH: replacement r for c (only read when "c" is a site); broadcasts to (L, B, T, H).
    span_BxT: where to intervene (bool, broadcasts to (B, T)); None means every step.
    sites: "h" (default) or "hc".
  """
  gates_N: jax.Array
  h_LxBxTxH: jax.Array | None = None
  c_LxBxTxH: jax.Array | None = None
  span_BxT: jax.Array | None = None
  sites: str = flax.struct.field(pytree_node=False, default="h")

  def layer_gates(self, layer: int, num_layers: int, hidden: int) -> tuple[jax.Array, jax.Array | None]:
    """(z for h, z for c or None) of one layer, sliced from the flat gate vector."""
    zh = self.gates_N[..., layer * hidden:(layer + 1) * hidden]
    zc = None
    if "c" in self.sites:
      off = num_layers * hidden
      zc = self.gates_N[..., off + layer * hidden: off + (layer + 1) * hidden]
    return zh, zc


def intervention_of(gates_N: jax.Array, r: dict[str, jax.Array], sites: str,
                    span_BxT: jax.Array | None = None) -> Intervention:
  """The Intervention of gates and replacement states {"h", "c"} (the interventions engine's form)."""
  return Intervention(gates_N=gates_N, h_LxBxTxH=r.get("h"), c_LxBxTxH=r.get("c"), span_BxT=span_BxT, sites=sites)


def state_shapes(params: Params) -> dict[str, tuple[int, ...]]:
  """Per state, (L, *one step's shape): {"h": (L, H), "c": (L, H)}."""
  cfg = config_of(params)
  return {"h": (cfg["num_layers"], cfg["hidden_size"]), "c": (cfg["num_layers"], cfg["hidden_size"])}


def site_states(sites: str) -> tuple[str, ...]:
  """The states an intervention at ``sites`` reads replacements for: ("h",) or ("h", "c")."""
  return ("h", "c") if "c" in sites else ("h",)


def input_projection(layer: Params, x_BxTxI: jax.Array) -> jax.Array:
  """W_ih x_t + b_ih + b_hh for every step at once: one large matmul outside the recurrence."""
  return x_BxTxI @ layer["w_ih"].T + (layer["b_ih"] + layer["b_hh"])


def cell(w_hh: jax.Array, xproj_Bx4H: jax.Array, h_BxH: jax.Array, c_BxH: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One LSTM step given the precomputed input projection; PyTorch's gate order i, f, g, o."""
  i, f, g, o = jnp.split(xproj_Bx4H + h_BxH @ w_hh.T, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c_BxH + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return h, c


def _mix(s: jax.Array, z: jax.Array | None, r: jax.Array | None, on: jax.Array | None) -> jax.Array:
  if z is None:
    return s
  mixed = s + z * (r - s)  # == (1 - z) * s + z * r
  return mixed if on is None else jnp.where(on[:, None], mixed, s)


def run_layer(w_hh: jax.Array, xproj_BxTx4H: jax.Array, h0_BxH: jax.Array, c0_BxH: jax.Array,
              zh_H: jax.Array | None = None, rh_BxTxH: jax.Array | None = None,
              zc_H: jax.Array | None = None, rc_BxTxH: jax.Array | None = None,
              span_BxT: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The recurrence of one layer over time (``lax.scan``), with the intervention applied at each step.

  Returns the (intervened) states h, c of shape (B, T, H): the sequence that feeds the next layer.
  """
  tm = lambda a: None if a is None else jnp.swapaxes(a, 0, 1)  # batch-major -> time-major

  def step(carry, xs):
    h, c = carry
    xp, rh, rc, on = xs
    h, c = cell(w_hh, xp, h, c)
    h, c = _mix(h, zh_H, rh, on), _mix(c, zc_H, rc, on)
    return (h, c), (h, c)

  _, (h_TxBxH, c_TxBxH) = jax.lax.scan(
      step, (h0_BxH, c0_BxH), (tm(xproj_BxTx4H), tm(rh_BxTxH), tm(rc_BxTxH), tm(span_BxT)))
  return tm(h_TxBxH), tm(c_TxBxH)


def run_layers(params: Params, xproj0_BxTx4H: jax.Array, intervention: Intervention | None = None,
               initial_state: tuple[jax.Array, jax.Array] | None = None) -> tuple[jax.Array, jax.Array]:
  """All layers, given layer 0's input projection. Returns h, c of shape (L, B, T, H)."""
  layers = params["layers"]
  num_layers, hidden = len(layers), layers[0]["w_hh"].shape[1]
  batch, steps = xproj0_BxTx4H.shape[:2]
  if initial_state is None:
    zeros = jnp.zeros((num_layers, batch, hidden), xproj0_BxTx4H.dtype)
    initial_state = (zeros, zeros)
  span = None
  if intervention is not None and intervention.span_BxT is not None:
    span = jnp.broadcast_to(intervention.span_BxT, (batch, steps))
  full = lambda r: None if r is None else jnp.broadcast_to(r, (num_layers, batch, steps, hidden))
  hs, cs = [], []
  xproj = xproj0_BxTx4H
  for l, layer in enumerate(layers):
    if l > 0:
      xproj = input_projection(layer, hs[-1])
    zh = zc = rh = rc = None
    if intervention is not None:
      zh, zc = intervention.layer_gates(l, num_layers, hidden)
      rh = full(intervention.h_LxBxTxH)[l]
      if zc is not None:
        rc = full(intervention.c_LxBxTxH)[l]
    h, c = run_layer(layer["w_hh"], xproj, initial_state[0][l], initial_state[1][l], zh, rh, zc, rc, span)
    hs.append(h)
    cs.append(c)
  return jnp.stack(hs), jnp.stack(cs)


def embed_inputs(params: Params, tokens_BxT: jax.Array) -> jax.Array:
  """The gate-independent input of the recurrence: layer 0's input projection (B, T, 4H)."""
  return input_projection(params["layers"][0], params["embedding"][tokens_BxT])


def run(params: Params, xproj0_BxTx4H: jax.Array, intervention: Intervention | None = None,
        initial_state: tuple[jax.Array, jax.Array] | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``run_layers`` in the family protocol's form: (top layer's h (B, T, H), {"h", "c"} (L, B, T, H))."""
  h, c = run_layers(params, xproj0_BxTx4H, intervention, initial_state)
  return h[-1], {"h": h, "c": c}


def state_at(states: dict[str, jax.Array], step: int) -> tuple[jax.Array, jax.Array]:
  """The carried state (h, c), each (L, B, H), after ``step``: a later run's ``initial_state``."""
  return states["h"][:, :, step], states["c"][:, :, step]


def activation_floats(params: Params, steps: int) -> int:
  """Floats one intervened run holds per item and step: about 8H per layer (gate pre-activations, h, c, r)."""
  del steps
  cfg = config_of(params)
  return cfg["num_layers"] * cfg["hidden_size"] * 8


def unembedding(params: Params) -> tuple[jax.Array, jax.Array]:
  """(W (V, H), b (V,)) with logits = h W^T + b."""
  return params["decoder"]["w"], params["decoder"]["b"]


def decode(params: Params, h_top: jax.Array) -> jax.Array:
  """Next-token logits from the top layer's h (any leading shape)."""
  return h_top @ params["decoder"]["w"].T + params["decoder"]["b"]


def apply(params: Params, tokens_BxT: jax.Array, return_states: bool = False,
          intervention: Intervention | None = None,
          initial_state: tuple[jax.Array, jax.Array] | None = None):
  """Logits (B, T, V) of next tokens, from the zero initial state unless ``initial_state`` = (h, c), each (L, B, H).

  With ``return_states`` also returns ``{"h": (L, B, T, H), "c": (L, B, T, H)}`` (after intervention).
  """
  x_BxTxE = params["embedding"][tokens_BxT]
  xproj0 = input_projection(params["layers"][0], x_BxTxE)
  h, c = run_layers(params, xproj0, intervention, initial_state)
  logits = decode(params, h[-1])
  if return_states:
    return logits, {"h": h, "c": c}
  return logits


def unit_values(states: dict[str, jax.Array], sites: str = "h") -> jax.Array:
  """Every unit's value at every step, in the order of the gate vector: (B, T, N) from {"h", "c"} (L, B, T, H)."""
  return jnp.concatenate([jnp.moveaxis(states[s], 0, 2).reshape(states[s].shape[1:3] + (-1,))
                          for s in site_states(sites)], axis=-1)


def unit_name(params: Params, unit: int, sites: str = "h") -> str:
  """:func:`readable` with the sizes read from ``params``."""
  del sites
  cfg = config_of(params)
  return readable(unit, cfg["num_layers"], cfg["hidden_size"])


def readable(unit: int, num_layers: int, hidden_size: int) -> str:
  """A flat 0-based unit id as "L{layer, 1-based}:{h|c}:{index, 0-based}", e.g. 775 of 2x650 -> "L2:h:125".

  Lakretz et al.'s 1-based flat id is ``unit + 1`` for h units (776 for "L2:h:125").
  """
  site, rest = divmod(unit, num_layers * hidden_size)
  layer, index = divmod(rest, hidden_size)
  return f"L{layer + 1}:{'hc'[site]}:{index}"
