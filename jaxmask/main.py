"""Find the units that cause a behaviour: the main job (a thin absl app around ``experiment.run``).

    python -m jaxmask.main --flagfile=configs/agreement.cfg
    python -m jaxmask.main --flagfile=configs/gender.cfg
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

from jaxmask import experiment

_D = experiment.Config
flags.DEFINE_string("workdir", None, "Output directory (results.json, plots, summary.md, search checkpoints).")
flags.DEFINE_enum("phenomenon", _D.phenomenon, list(experiment.PHENOMENA), "Built-in items and probe labels.")
flags.DEFINE_string("checkpoint", _D.checkpoint, "jaxmask checkpoint directory; empty = the default LM (cached).")
flags.DEFINE_string("lm_config", _D.lm_config, "Flagfile of the default LM, used when it must be trained.")
flags.DEFINE_string("train_items", _D.train_items, "Minimal-pair TSV for the search; empty = built-in items.")
flags.DEFINE_string("eval_items", _D.eval_items, "Minimal-pair TSV held out for evaluation; empty = built-in.")
flags.DEFINE_integer("train_per_cell", _D.train_per_cell, "Built-in search items per condition cell.")
flags.DEFINE_integer("eval_per_cell", _D.eval_per_cell, "Built-in held-out items per condition cell.")
flags.DEFINE_list("lambdas", [str(x) for x in _D.lambdas], "Sparsity coefficients, one search each (vmapped).")
flags.DEFINE_enum("method", _D.method, ["hard_concrete", "reinforce"], "Gradient estimator of the search.")
flags.DEFINE_integer("steps", _D.steps, "Optimisation steps.")
flags.DEFINE_float("learning_rate", _D.learning_rate, "Adam learning rate of the gate logits.")
flags.DEFINE_integer("batch_size", _D.batch_size, "Items per step.")
flags.DEFINE_enum("sites", _D.sites, ["h", "hc"], "States that can be intervened: h of every layer, or h and c.")
flags.DEFINE_enum("replacement", _D.replacement, ["counterfactual", "zero", "mean", "learned"], "Replacement r.")
flags.DEFINE_float("mu", _D.mu, "Weight of the KL control term on held-out text (0 = off).")
flags.DEFINE_integer("seed", _D.seed, "Random seed.")
flags.DEFINE_float("init_logit", _D.init_logit, "Initial gate logit (3: gates start open; 0: the plain method).")
flags.DEFINE_enum("schedule", _D.schedule, ["fixed", "ramp"], "Sparsity pressure: fixed, or ramped in linearly.")
flags.DEFINE_float("ramp_fraction", _D.ramp_fraction, "Share of the steps over which the ramp rises.")
flags.DEFINE_float("hard_fraction", _D.hard_fraction, "Share of the last steps run on straight-through hard gates "
                   "(Hard Concrete; 0 = the plain relaxed method).")
flags.DEFINE_float("multiplier_lr", _D.multiplier_lr, "Ascent rate of the target-size sweep's Lagrange multiplier.")
flags.DEFINE_float("specificity_mu", _D.specificity_mu, "With --baselines=all and > 0: one more Hard Concrete "
                   "target-size sweep whose objective adds mu * merged control KL (hard_concrete_kl).")
flags.DEFINE_integer("search_seeds", _D.search_seeds, "Seeds of each search estimator in the method comparison.")
flags.DEFINE_float("target_flip", _D.target_flip, "Held-out flip rate the selected (smallest) set must reach.")
flags.DEFINE_boolean("only_known", _D.only_known, "Measure flips only on items the clean model gets right on both "
                     "the prefix and the counterfactual (recommended; off only for untrained models).")
flags.DEFINE_enum("select_by", _D.select_by, ["every_condition", "overall"],
                  "Whether every condition's held-out flip rate, or the overall one, must reach --target_flip.")
flags.DEFINE_enum("baselines", _D.baselines, ["all", "none"], "Also compare every method of baselines.METHODS at equal k.")
flags.DEFINE_list("baseline_ks", [str(k) for k in _D.baseline_ks], "Set sizes k at which methods are compared.")
flags.DEFINE_integer("random_draws", _D.random_draws, "Random sets per k.")
flags.DEFINE_integer("control_sentences", _D.control_sentences, "Held-out sentences for the control KL.")
flags.DEFINE_integer("chunk_steps", _D.chunk_steps, "Steps between search checkpoints.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def _numbers(name: str, cast):
  try:
    return tuple(cast(x) for x in FLAGS[name].value)
  except ValueError:
    raise experiment.ExperimentError(f"--{name}={','.join(FLAGS[name].value)}: expected a comma-separated list "
                                     f"of numbers.") from None


def config_from_flags() -> experiment.Config:
  """The experiment.Config that the parsed flags describe."""
  names = [f for f in experiment.Config.__dataclass_fields__ if f not in ("lambdas", "baseline_ks")]
  return experiment.Config(**{n: FLAGS[n].value for n in names}, lambdas=_numbers("lambdas", float),
                           baseline_ks=_numbers("baseline_ks", int))


def main(argv: list[str]) -> None:
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
  if len(argv) > 1:
    sys.exit(f"Unexpected arguments {' '.join(argv[1:])}; every setting is a --flag (see --help).")
  try:
    config = config_from_flags()
    results = experiment.run(config)
  except (experiment.ExperimentError, FileNotFoundError) as e:
    sys.exit(f"Error: {e}")
  sel = results["selected"]
  known = results["items"]["heldout"].get("known")
  if known is not None and known < 50:
    print(f"Warning: the model gets only {known} held-out items right both ways; it barely computes this "
          f"behaviour (see summary.md).")
  print(f"Selected {sel['size']} units ({', '.join(sel['units_readable'])}): held-out flip rate "
        f"{sel['heldout_flip_rate']:.3f}, control KL {sel['control_kl']:.4f} nats/token "
        f"({sel['control_kl_merged']:.4f} with the phenomenon's word pairs merged). "
        f"See {config.workdir}/summary.md")


if __name__ == "__main__":
  app.run(main)
