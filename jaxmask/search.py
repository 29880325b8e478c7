"""Differentiable-mask search (placeholder while the core is written; Items is final)."""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class Items:
  """Minimal pairs as token arrays (right-padded): the prediction is read at position ``length - 1``.

  Attributes:
    prefix: int32[B, T] tokens of x.
    counterfactual: int32[B, T] tokens of x', aligned with x (same length).
    length: int32[B] number of real tokens in each row.
    target: int32[B] y, the token the model should emit after x.
    foil: int32[B] y', the token that agrees with x'.
  """
  prefix: jax.Array
  counterfactual: jax.Array
  length: jax.Array
  target: jax.Array
  foil: jax.Array
