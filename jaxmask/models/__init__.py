"""Model families behind one small protocol, chosen by name (a checkpoint's config.json "family").

A family is a module with ``init``, ``apply(params, tokens, return_states, intervention, initial_state)``,
``num_units(params, sites)``, ``readable(unit, num_layers, hidden_size)`` (a unit's name) and ``config_of``.
A new family is one module here and one entry in ``FAMILIES``.
"""

from __future__ import annotations

import types

from jaxmask.models import lstm

FAMILIES: dict[str, types.ModuleType] = {"lstm": lstm}
DEFAULT_FAMILY = "lstm"


def get(family: str = DEFAULT_FAMILY) -> types.ModuleType:
  """The module of a model family, e.g. ``get("lstm")``."""
  if family not in FAMILIES:
    raise ValueError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}.")
  return FAMILIES[family]


def family_of(model_config: dict) -> types.ModuleType:
  """The family module a checkpoint's config.json names (checkpoints without the key are LSTMs)."""
  return get(model_config.get("family", DEFAULT_FAMILY))
