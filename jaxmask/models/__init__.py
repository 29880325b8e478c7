"""Model families behind one small protocol, chosen by name (a checkpoint's config.json "family").

A family is a module with ``init``, ``apply(params, tokens, return_states, intervention, initial_state)``,
``num_units(params, sites)``, ``readable(unit, num_layers, ...)`` (a unit's name), ``config_of`` and
``CONFIG_KEYS`` (``init``'s size arguments, as config.json records them). For the intervention engine
(interventions.py, search.py) it also has ``SITES``, ``RESUMABLE`` (whether a run can start from a carried
state), ``embed_inputs(params, tokens)`` (the gate-independent input), ``run(params, inputs, intervention,
initial_state)`` -> (top hidden (B, T, D), states), ``unembedding``, ``decode``, ``state_shapes``,
``site_states(sites)``, ``intervention_of(gates, r, sites)``, ``activation_floats`` (memory per step), and
for the reports ``unit_values(states, sites)`` (B, T, N) and ``unit_name(params, unit, sites)``.
A new family is one module here and one entry in ``FAMILIES``.
"""

from __future__ import annotations

import types

from jaxmask.models import lstm
from jaxmask.models import transformer

FAMILIES: dict[str, types.ModuleType] = {"lstm": lstm, "transformer": transformer}
DEFAULT_FAMILY = "lstm"
SITES = tuple(s for family in FAMILIES.values() for s in family.SITES)


def get(family: str = DEFAULT_FAMILY) -> types.ModuleType:
  """The module of a model family, e.g. ``get("lstm")``."""
  if family not in FAMILIES:
    raise ValueError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}.")
  return FAMILIES[family]


def family_of(model_config: dict) -> types.ModuleType:
  """The family module a checkpoint's config.json names (checkpoints without the key are LSTMs)."""
  return get(model_config.get("family", DEFAULT_FAMILY))


def of_params(params: dict) -> types.ModuleType:
  """The family module of a parameter pytree, read from its layout (a transformer's has "wte")."""
  return transformer if "wte" in params else lstm


def num_units(params: dict, sites: str) -> int:
  """N, the gateable units of any family's parameters at ``sites``."""
  return of_params(params).num_units(params, sites)
