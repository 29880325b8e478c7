"""A hand-built LSTM with a known circuit, for tests of the search and the baselines.

One layer of H = 8 units over a vocabulary of 8 one-hot tokens: <eos>, A, B, three fillers, ya, yb.
Items read "<eos> A|B f f f" and must predict ya after A, yb after B; the counterfactual flips A <-> B.
- Units 0, 1, 2 (PLANTED) store +-1 for A/B in their cell at the first token and keep it (forget gate
  ~1); the decoder reads their sum: logit(ya) - logit(yb) = sum_i h_i. Replacing all three flips every
  item (margin about -2.3); replacing only two leaves a small margin (-0.8), so the search needs all three.
- Units 3, 4 (DISTRACTORS) store the same feature the same way, but the decoder ignores them:
  a probe on activations finds them; interventions on them change nothing.
- Units 5, 6, 7 (NOISE) follow the fillers and are ignored by the decoder.
"""

import jax.numpy as jnp
import numpy as np

from jaxmask import interventions

PLANTED = [0, 1, 2]
DISTRACTORS = [3, 4]
V = H = 8
A, B, YA, YB = 1, 2, 6, 7


def params():
  rng = np.random.default_rng(0)
  w_ih = np.zeros((4 * H, V), np.float32)
  b = np.zeros(4 * H, np.float32)
  i_, f_, g_, o_ = (slice(k * H, (k + 1) * H) for k in range(4))
  feature = PLANTED + DISTRACTORS
  for u in feature:
    w_ih[i_.start + u, [A, B]] = 20.0   # input gate opens on A or B only
    b[i_.start + u] = -10.0
    b[f_.start + u] = 10.0              # remember
    w_ih[g_.start + u, A], w_ih[g_.start + u, B] = 3.0, -3.0
  for u in range(5, 8):
    w_ih[g_.start + u, 3:6] = rng.normal(size=3)
  b[o_] = 10.0
  dec = np.zeros((V, H), np.float32)
  dec[YA, PLANTED], dec[YB, PLANTED] = 0.5, -0.5
  return {"embedding": jnp.eye(V), "layers": [{"w_ih": jnp.asarray(w_ih), "w_hh": jnp.zeros((4 * H, H)),
                                               "b_ih": jnp.asarray(b), "b_hh": jnp.zeros(4 * H)}],
          "decoder": {"w": jnp.asarray(dec), "b": jnp.zeros(V)}}


def items(n=64, seed=0):
  rng = np.random.default_rng(seed)
  first = rng.choice([A, B], size=n)
  fill = rng.integers(3, 6, size=(n, 3))
  prefix = np.concatenate([np.zeros((n, 1), int), first[:, None], fill], axis=1)
  cf = prefix.copy()
  cf[:, 1] = A + B - first
  target = np.where(first == A, YA, YB)
  return interventions.Items(prefix=jnp.asarray(prefix, jnp.int32), counterfactual=jnp.asarray(cf, jnp.int32),
                             length=jnp.full((n,), 5, jnp.int32), target=jnp.asarray(target, jnp.int32),
                             foil=jnp.asarray(YA + YB - target, jnp.int32))


def labels(n=64, seed=0):
  """The feature (1 for A) of each item's prefix row."""
  return (np.asarray(items(n, seed).prefix[:, 1]) == A).astype(np.int32)
