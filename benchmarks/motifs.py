"""Hand-built LSTMs with a planted circuit whose minimal mediating set is known: ground truth for every method.

Every motif reads items "<eos> A|B f f f ?" (fillers f drawn at random, "?" a query token) over 11 one-hot
tokens and must prefer ya to yb after A; the counterfactual swaps A for B. Items go one way only (x has A,
x' has B): with interchange interventions a set that must be taken whole for A -> B items can never be
needed whole for B -> A items too (the A item with S swapped is the B item with the complement swapped, so
one of the two directions always flips with a proper subset); one-way items keep each motif's truth exact.

Building blocks (a = tanh(tanh(3)) ~ 0.76 is a stored value's |h|):
- memory unit (layer 1): its input gate opens on A or B only, it stores +-1 in its cell and keeps it
  (forget gate ~ 1); h = +a after A, -a after B.
- reader (a memoryless unit one layer up): h ~ tanh(tanh(K (w . h_below + bias))), saturating, so a reader
  of redundant copies stays at +a until every copy is swapped.
- the decoder reads margin = logit(ya) - logit(yb) = sum_j d_j h_j + beta with beta = 0.5 > 0: a set that
  swaps exactly half of the read weight leaves margin beta (no flip), so "needed" is strict.

Per ``seed``: circuit units sit at random positions; every other unit gets random weights (its input weight
on A/B small, so it carries a little of the feature, and the decoder reads it with weight ~0.05: small,
non-zero effects); every planted weight gets N(0, 0.02) noise. ``tests/test_motifs.py`` verifies each truth
with ``jaxmask.exhaustive``: the true set flips >= 0.99 of the items, no smaller set flips any, and the
true set is the unique optimum at its size (``true_sets`` lists the tied optima where there are several).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxmask import interventions

V = 11
EOS, A, B, QUERY, YA, YB = 0, 1, 2, 8, 9, 10
FILLERS = (3, 4, 5, 6, 7)
BETA = 0.5     # the decoder's bias towards ya
NOISE = 0.02   # sd of the noise on planted weights


@dataclasses.dataclass
class Motif:
  """A planted LSTM with its items and known answer.

  Attributes:
    name: the motif's name (a key of MOTIFS).
    params: the LSTM LM (lstm.Params).
    items, heldout: search and held-out items (different fillers).
    labels: the probe's binary label of each search prefix (1 = A; every prefix has A).
    sites: "h" or "hc".
    true_set: the minimal mediating set (flat unit ids, sorted).
    true_sets: every optimum of that size (``true_set`` first); one entry where the truth is unique.
    description: what is planted.
  """
  name: str
  params: dict
  items: interventions.Items
  heldout: interventions.Items
  labels: np.ndarray
  sites: str
  true_set: list[int]
  true_sets: list[list[int]]
  description: str


class _Builder:
  """Weights of an L-layer LSTM over the one-hot vocabulary, filled unit by unit; unit j of a layer sits at a
  random position."""

  def __init__(self, rng: np.random.Generator, num_layers: int, hidden: int):
    self.rng, self.num_layers, self.hidden = rng, num_layers, hidden
    self.position = [rng.permutation(hidden) for _ in range(num_layers)]
    self.w_ih = [np.zeros((4 * hidden, V if l == 0 else hidden)) for l in range(num_layers)]
    self.w_hh = [np.zeros((4 * hidden, hidden)) for _ in range(num_layers)]
    self.b = [np.zeros(4 * hidden) for _ in range(num_layers)]
    self.decoder = np.zeros((V, hidden))
    self.circuit = [set() for _ in range(num_layers)]

  def unit(self, layer: int, j: int) -> int:
    """The position of circuit unit j of a layer (marked as part of the circuit)."""
    u = int(self.position[layer][j])
    self.circuit[layer].add(u)
    return u

  def flat(self, layer: int, j: int, site: str = "h") -> int:
    """The flat id of circuit unit j of a layer (c sites follow all h sites)."""
    offset = self.num_layers * self.hidden if site == "c" else 0
    return offset + layer * self.hidden + self.unit(layer, j)

  def _gates(self, layer: int, u: int, input_bias: float, forget_bias: float, output_bias: float) -> None:
    h, b = self.hidden, self.b[layer]
    b[u], b[h + u], b[3 * h + u] = input_bias, forget_bias, output_bias

  def memory(self, j: int, strength: float = 3.0, query_only: bool = False) -> int:
    """A layer-1 unit that stores +-1 on A/B and keeps it; ``query_only``: its output gate opens only on the query."""
    u, h = self.unit(0, j), self.hidden
    self._gates(0, u, -10.0, 10.0, -10.0 if query_only else 10.0)
    self.w_ih[0][u, [A, B]] = 20.0
    self.w_ih[0][2 * h + u, A], self.w_ih[0][2 * h + u, B] = strength, -strength
    if query_only:
      self.w_ih[0][3 * h + u, QUERY] = 20.0
    return u

  def reader(self, layer: int, j: int, sources: list[int], bias: float, gain: float = 4.0) -> int:
    """A memoryless unit of ``layer`` >= 1 with h ~ tanh(tanh(gain (sum of the sources' h + bias)))."""
    u, h = self.unit(layer, j), self.hidden
    self._gates(layer, u, 10.0, -10.0, 10.0)
    self.w_ih[layer][2 * h + u, sources] = gain
    self.b[layer][2 * h + u] = gain * bias
    return u

  def read(self, j: int, weight: float) -> None:
    """The decoder reads top-layer circuit unit j: margin += weight * h."""
    u = self.unit(self.num_layers - 1, j)
    self.decoder[YA, u], self.decoder[YB, u] = weight / 2, -weight / 2

  def params(self) -> dict:
    """The finished parameters: random non-circuit units, noise on the planted weights, the decoder bias."""
    rng, h = self.rng, self.hidden
    for l in range(self.num_layers):
      free = np.array(sorted(set(range(h)) - self.circuit[l]), int)
      planted = np.array(sorted(self.circuit[l]), int)
      rows = np.concatenate([free + k * h for k in range(4)])
      inputs = self.w_ih[l].shape[1]
      self.w_ih[l][rows] = rng.normal(0, 1.0 if l == 0 else 1.0 / np.sqrt(h), (len(rows), inputs))
      if l == 0:  # a little of the feature, so the free units' interventions do something, not much
        self.w_ih[l][rows[:, None], [A, B]] = rng.normal(0, 0.3, (len(rows), 2))
      self.w_hh[l][rows[:, None], free] = rng.normal(0, 1.0 / np.sqrt(h), (len(rows), len(free)))
      self.b[l][rows] = rng.normal(0, 0.5, len(rows))
      if len(planted):
        prow = np.concatenate([planted + k * h for k in range(4)])
        self.w_ih[l][prow] += rng.normal(0, NOISE, (len(prow), inputs))
        self.w_hh[l][prow] += rng.normal(0, NOISE, (len(prow), h))
        self.b[l][prow] += rng.normal(0, NOISE, len(prow))
    top_free = np.array(sorted(set(range(h)) - self.circuit[-1]), int)
    top_planted = np.array(sorted(self.circuit[-1]), int)
    self.decoder[np.ix_([YA, YB], top_free)] = rng.normal(0, 0.05, (2, len(top_free)))
    self.decoder[np.ix_([YA, YB], top_planted)] += rng.normal(0, NOISE, (2, len(top_planted)))
    bias = np.zeros(V)
    bias[YA], bias[YB] = BETA / 2, -BETA / 2
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    layers = [{"w_ih": f32(self.w_ih[l]), "w_hh": f32(self.w_hh[l]), "b_ih": f32(self.b[l]),
               "b_hh": jnp.zeros(4 * h)} for l in range(self.num_layers)]
    return {"embedding": jnp.eye(V), "layers": layers, "decoder": {"w": f32(self.decoder), "b": f32(bias)}}


def items(n: int, seed: int) -> interventions.Items:
  """n items "<eos> A f f f ?" -> ya, counterfactual "<eos> B f f f ?" -> yb, random fillers."""
  rng = np.random.default_rng(seed)
  fill = rng.choice(FILLERS, size=(n, 3))
  prefix = np.concatenate([np.full((n, 1), EOS), np.full((n, 1), A), fill, np.full((n, 1), QUERY)], axis=1)
  counterfactual = prefix.copy()
  counterfactual[:, 1] = B
  i32 = lambda a: jnp.asarray(a, jnp.int32)
  return interventions.Items(prefix=i32(prefix), counterfactual=i32(counterfactual), length=i32(np.full(n, 6)),
                             target=i32(np.full(n, YA)), foil=i32(np.full(n, YB)))


def _pair(b: _Builder) -> tuple[list[int], list[list[int]]]:
  units = [b.flat(0, j) for j in (0, 1)]
  for j in (0, 1):
    b.memory(j)
    b.read(j, 1.5)
  return units, [units]


def _copies_and_readers(b: _Builder, copies: int, readers: int = 6) -> tuple[list[int], list[list[int]]]:
  units = [b.flat(0, j) for j in range(copies)]
  sources = [b.memory(j) for j in range(copies)]
  for j in range(readers):  # +a unless every copy is swapped: the threshold is one copy's worth above -all
    b.reader(1, j, sources, bias=0.76 * (copies - 1))
    b.read(j, 1.0)  # 6 readers: 3 swapped leave margin beta, so a set of readers needs 4
  return units, [units]


def _decoy(b: _Builder) -> tuple[list[int], list[list[int]]]:
  units, truth = _pair(b)
  for j in (2, 3, 4):  # store the feature more strongly than the real path, read by nothing
    b.memory(j, strength=5.0)
  return units, truth


def _relay(b: _Builder) -> tuple[list[int], list[list[int]]]:
  units = [b.flat(0, 0)]
  source = b.memory(0)
  for j in range(4):  # four layer-2 relays, all read: two swapped leave margin beta, so relays need three
    b.reader(1, j, [source], bias=0.0)
    b.read(j, 1.0)
  return units, [units]


def _cell(b: _Builder) -> tuple[list[int], list[list[int]]]:
  b.memory(0, query_only=True)
  b.read(0, 2.0)
  return [b.flat(0, 0, "h")], [[b.flat(0, 0, "h")], [b.flat(0, 0, "c")]]


MOTIFS = {  # name: (layers, hidden, sites, build, description)
    "pair": (1, 16, "h", _pair,
             "two layer-1 units read additively by the decoder; either alone halves the margin, both flip it"),
    "and": (2, 16, "h", lambda b: _copies_and_readers(b, 2),
            "two layer-1 units read by six saturating layer-2 units: either alone has no effect, both flip"),
    "or": (2, 16, "h", lambda b: _copies_and_readers(b, 3),
           "three redundant layer-1 copies read by six saturating layer-2 units: all three are needed"),
    "decoy": (1, 16, "h", _decoy,
              "a real pair as in 'pair' plus three units storing the feature more strongly, read by nothing"),
    "relay": (2, 16, "h", _relay,
              "one layer-1 unit relayed by four layer-2 units the decoder reads: the layer-1 unit alone suffices"),
    "cell": (1, 16, "hc", _cell,
             "one unit keeps the feature in its cell, its output gate open only on the query token; sites h "
             "and c: its h and its c tie (h is c's only outlet, so h always does what c does)"),
}


def motif(name: str, seed: int = 0, num_items: int = 64) -> Motif:
  """The planted model ``name`` (a key of MOTIFS) with weights drawn from ``seed``, and its items."""
  if name not in MOTIFS:
    raise ValueError(f"unknown motif {name!r}; use one of {', '.join(MOTIFS)}.")
  layers, hidden, sites, build, description = MOTIFS[name]
  builder = _Builder(np.random.default_rng([seed, sorted(MOTIFS).index(name)]), layers, hidden)
  true_set, true_sets = build(builder)
  return Motif(name=name, params=builder.params(), items=items(num_items, 2 * seed),
               heldout=items(num_items, 2 * seed + 1), labels=np.ones(num_items, np.int32), sites=sites,
               true_set=sorted(true_set), true_sets=[sorted(s) for s in true_sets], description=description)
