"""The phenomena the main job studies, as one registry: built-in items, probe labels, trace groups, counterpart.

A new phenomenon is one ``Phenomenon`` entry in ``PHENOMENA``: its item generator (grammar/items.py), how its
search prefixes are labelled for the probe baseline, how the traces figure groups its items, and the
phenomenon whose flip rate measures a unit set's side effects.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxmask import data, grammar


@dataclasses.dataclass(frozen=True)
class Phenomenon:
  """One phenomenon.

  Attributes:
    items: (split, per_cell, seed, language) -> the generated minimal pairs ("search" or "heldout" split) in
      the generator language the model was trained on.
    probe_labels: pairs -> binary labels of the prefixes for the probe, or None when they have none.
    trace_items: pairs -> the indices of the items the traces figure averages over.
    trace_group: pair -> the name of its group in the traces figure.
    counterpart: the phenomenon whose flip rate is a side effect of this one's units.
  """
  items: Callable[[str, int, int, str], list[data.Pair]]
  probe_labels: Callable[[list[data.Pair]], np.ndarray | None]
  trace_items: Callable[[list[data.Pair]], list[int]]
  trace_group: Callable[[data.Pair], str]
  counterpart: str


def agreement_labels(pairs: list[data.Pair]) -> np.ndarray | None:
  """1 where the subject is plural (the condition's last cell starts with "P"), None without such cells."""
  cells = [p.condition.rsplit("_", 1)[-1][:1] if "_" in p.condition else "" for p in pairs]
  if not all(c in ("S", "P") for c in cells):
    return None
  return np.array([c == "P" for c in cells], np.int32)


def gender_labels(pairs: list[data.Pair]) -> np.ndarray:
  """1 where the target is "she"."""
  return np.array([p.target.lower() == "she" for p in pairs], np.int32)


PHENOMENA: dict[str, Phenomenon] = {
    "agreement": Phenomenon(
        items=lambda split, per_cell, seed, language: grammar.agreement_items(per_cell, seed, split=split,
                                                                               language=language),
        probe_labels=agreement_labels,
        # nounPP items (an attractor between subject and verb), singular vs plural subject.
        trace_items=lambda pairs: ([b for b, p in enumerate(pairs) if p.condition.startswith("nounPP_")]
                                   or list(range(len(pairs)))),
        trace_group=lambda p: "singular subject" if "_S" in p.condition else "plural subject",
        counterpart="gender"),
    "gender": Phenomenon(
        items=lambda split, per_cell, seed, language: grammar.gender_items(split=split),
        probe_labels=gender_labels,
        trace_items=lambda pairs: list(range(len(pairs))),
        trace_group=lambda p: f"{p.target} target",
        counterpart="agreement"),
}


def get(name: str) -> Phenomenon:
  """The ``PHENOMENA`` entry of a name."""
  if name not in PHENOMENA:
    raise ValueError(f"unknown phenomenon {name!r}; use one of {', '.join(PHENOMENA)}.")
  return PHENOMENA[name]
