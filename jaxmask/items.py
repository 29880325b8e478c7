"""The data of an intervention as JAX pytrees: minimal pairs (``Items``) and control text (``Control``).

Plain JAX (``jax.tree_util.register_dataclass``), so that the text readers (data.py) need no model or
optimiser code.
"""

from __future__ import annotations

import dataclasses

import jax


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Items:
  """Minimal pairs as token arrays (right-padded): the prediction is read at position ``length - 1``.

  Attributes:
    prefix: int32[B, T] tokens of x.
    counterfactual: int32[B, T] tokens of x', aligned with x (same length).
    length: int32[B] number of real tokens in each row.
    target: int32[B] y, the token the model should emit after x (the first token of a several-token word).
    foil: int32[B] y', the token that agrees with x' (likewise its word's first token).
    target_rest, foil_rest: optional int32[B, K], the tokens of a several-token target (foil) after its first,
      right-padded with -1; None (the default, and always for word-level vocabularies) when every target and
      foil is one token. With them the margin is the difference of the two words' summed log-probabilities
      (``interventions.margin``).
  """
  prefix: jax.Array
  counterfactual: jax.Array
  length: jax.Array
  target: jax.Array
  foil: jax.Array
  target_rest: jax.Array | None = None
  foil_rest: jax.Array | None = None

  def take(self, index) -> "Items":
    """The items at ``index`` (an int array or slice)."""
    return jax.tree.map(lambda a: a[index], self)

  def replace(self, **changes) -> "Items":
    """A copy with the given fields replaced."""
    return dataclasses.replace(self, **changes)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Control:
  """Control text for the KL term: token rows (B, T) starting at the initial state, and their lengths.

  ``classes_V`` (optional, int32[V]) groups the words whose choice is the phenomenon itself (each item's
  target and foil, ``data.outcome_classes``): the merged KL treats each group as one outcome, so it counts
  only what the intervention changes besides that choice (``objectives.kl_control``).
  """
  tokens: jax.Array
  length: jax.Array
  classes_V: jax.Array | None = None

  def replace(self, **changes) -> "Control":
    """A copy with the given fields replaced."""
    return dataclasses.replace(self, **changes)
