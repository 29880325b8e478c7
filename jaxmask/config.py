"""The main job's settings: one dataclass (whose fields are ``jaxmask.main``'s flags), validated once.

The search settings of a run are derived from it (:func:`search_config_of`), and a search checkpoint is
tied to them by :func:`fingerprint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import jax
import numpy as np

from jaxmask import endgame, formats, interventions, models, phenomena, search


class ExperimentError(ValueError):
  """A user error in the main job's settings or inputs; the message is one sentence saying what to do."""


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:  # pylint: disable=redefined-builtin
  """A Config field with its flag's help text (and, for an enum flag, its choices)."""
  return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of one run of the main job; each field is a flag of ``jaxmask.main`` with the same name."""
  workdir: str = dataclasses.field(metadata={
      "help": "Output directory (results.json, plots, summary.md, search checkpoints).", "choices": None})
  phenomenon: str = setting("agreement", "Built-in items and probe labels.", tuple(phenomena.PHENOMENA))
  checkpoint: str = setting("", "jaxmask checkpoint directory; empty = the LM shipped in the package.")
  train_items: str = setting("", "Minimal-pair file (--format) for the search; empty = built-in items.")
  eval_items: str = setting("", "Minimal-pair file (--format) held out for evaluation; empty = built-in.")
  format: str = setting("tsv", "Format of --train_items and --eval_items (formats.FORMATS).", tuple(formats.FORMATS))
  train_per_cell: int = setting(40, "Built-in search items per condition cell.")
  eval_per_cell: int = setting(40, "Built-in held-out items per condition cell.")
  # From nearly every unit kept to the empty set, so that the sweep also yields its best 1- and 2-unit sets.
  lambdas: tuple[float, ...] = setting(tuple(np.geomspace(1e-3, 10.0, 16).round(6).tolist()),
                                       "Sparsity coefficients, one search each (vmapped).")
  method: str = setting("hard_concrete", "Gradient estimator of the search.", search.METHODS)
  steps: int = setting(300, "Optimisation steps.")
  learning_rate: float = setting(0.1, "Adam learning rate of the gate logits.")
  batch_size: int = setting(64, "Items per step.")
  sites: str = setting("h", "Units that can be intervened: LSTM h of every layer, or h and c (hc); transformer "
                             "MLP neurons (mlp, also h), attention heads (heads), or both (mlp,heads).", models.SITES)
  replacement: str = setting("counterfactual", "Replacement r.", tuple(interventions.REPLACEMENTS))
  mu: float = setting(0.0, "Weight of the KL control term on held-out text (0 = off).")
  control_batch_size: int = setting(8, "Control sentences per search step for the KL term (a minibatch; 0 = all "
                                       "--control_sentences every step).")
  control_positions: int = setting(32, "Of their real tokens, how many (drawn at random) decode the KL term's full "
                                      "distributions each step (0 = all).")
  seed: int = setting(0, "Random seed.")
  # The end-game (jaxmask/endgame.py, README "Reaching a discrete set").
  init_logit: float = setting(3.0, "Initial gate logit (3: gates start open; 0: the plain method).")
  schedule: str = setting("ramp", "Sparsity pressure: fixed, or ramped in linearly.", endgame.SCHEDULES)
  ramp_fraction: float = setting(0.1, "Share of the steps over which the ramp rises.")
  hard_fraction: float = setting(0.9, "Share of the last steps run on straight-through hard gates "
                                      "(Hard Concrete; 0 = the plain relaxed method).")
  multiplier_lr: float = setting(0.01, "Ascent rate of the target-size sweep's Lagrange multiplier.")
  target_flip: float = setting(0.95, "Held-out flip rate the selected (smallest) set must reach.")
  only_known: bool = setting(True, "Measure flips only on items the clean model gets right on both the prefix "
                                   "and the counterfactual (recommended; off only for untrained models).")
  select_by: str = setting("every_condition", "Whether every condition's held-out flip rate, or the overall one, "
                                              "must reach --target_flip.", ("every_condition", "overall"))
  baselines: str = setting("all", "Also compare every method of baselines.METHODS at equal k.", ("all", "none"))
  baseline_ks: tuple[int, ...] = setting((1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
                                         "Set sizes k at which methods are compared.")
  search_seeds: int = setting(3, "Seeds of each search estimator in the method comparison.")
  specificity_mu: float = setting(0.0, "With --baselines=all and > 0: one more Hard Concrete target-size sweep "
                                       "whose objective adds mu * merged control KL (hard_concrete_kl).")
  random_draws: int = setting(20, "Random sets per k.")
  control_sentences: int = setting(200, "Held-out sentences for the control KL.")
  chunk_steps: int = setting(50, "Steps between search checkpoints.")

  def validate(self) -> None:
    """Raises ExperimentError (one sentence naming the flag) for any setting the run cannot use."""
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if isinstance(value, float) and not math.isfinite(value):
        raise ExperimentError(f"--{field.name}={value} must be a finite number.")
    if self.phenomenon not in phenomena.PHENOMENA:
      raise ExperimentError(f"--phenomenon={self.phenomenon} is not known; use {' or '.join(phenomena.PHENOMENA)}.")
    if self.method not in search.METHODS:
      raise ExperimentError(f"--method={self.method} is not known; use {' or '.join(search.METHODS)}.")
    if self.format not in formats.FORMATS:
      raise ExperimentError(f"--format={self.format} is not known; use one of {', '.join(formats.FORMATS)}.")
    if self.select_by not in ("every_condition", "overall"):
      raise ExperimentError(f"--select_by={self.select_by} is not known; use every_condition or overall.")
    if self.baselines not in ("all", "none"):
      raise ExperimentError(f"--baselines={self.baselines} is not known; use all or none.")
    if not self.lambdas or min(self.lambdas) < 0:
      raise ExperimentError("--lambdas must be a non-empty list of non-negative numbers.")
    try:
      search_config_of(self, self.method).validate()
    except ValueError as e:
      raise ExperimentError(str(e)) from e


def search_config_of(config: Config, method: str, targets: bool = False) -> search.SearchConfig:
  """The search settings of ``config`` for ``method`` (target sizes instead of lambdas when ``targets``)."""
  fields = {f.name for f in dataclasses.fields(search.SearchConfig)}
  settings = {k: v for k, v in dataclasses.asdict(config).items() if k in fields}
  return search.SearchConfig(**{**settings, "method": method, "targets": targets})


def fingerprint(search_config: search.SearchConfig, seed: int, items: interventions.Items, values: np.ndarray) -> str:
  """A hash of a search's settings, seed, items and swept values: a checkpoint resumes only the same search."""
  h = hashlib.sha256(json.dumps([dataclasses.asdict(search_config), seed, values.tolist()], sort_keys=True).encode())
  for a in jax.tree.leaves(items):
    h.update(np.asarray(a).tobytes())
  return h.hexdigest()[:16]
