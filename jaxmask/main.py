"""Find the units that cause a behaviour: the main job (a thin absl app around ``experiment.run``).

    python -m jaxmask.main --flagfile=configs/agreement.cfg
    python -m jaxmask.main --flagfile=configs/gender.cfg

Every flag is a field of ``config.Config``, with the same name, default and help.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging

from jaxmask import config as config_lib
from jaxmask import experiment
from jaxmask import flagfiles

_LISTS = {"lambdas": float, "baseline_ks": int}  # tuple fields: comma-separated flags, cast per element


def define_flags() -> None:
  """One flag per ``Config`` field: enum where the field lists choices, list for tuples; --workdir is required."""
  for field in dataclasses.fields(config_lib.Config):
    help_text, choices = field.metadata["help"], field.metadata["choices"]
    if field.name == "workdir":
      flags.DEFINE_string(field.name, None, help_text)
    elif field.name in _LISTS:
      flags.DEFINE_list(field.name, [str(x) for x in field.default], help_text)
    elif choices:
      flags.DEFINE_enum(field.name, field.default, list(choices), help_text)
    else:
      define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_boolean,
                str: flags.DEFINE_string}[type(field.default)]
      define(field.name, field.default, help_text)
  flags.mark_flag_as_required("workdir")


define_flags()
# Several processes (jax.distributed): the lambdas (and seeds) are sharded over every process's devices; process 0
# writes the results. Unset, one process (or JAX_COORDINATOR_ADDRESS / a cluster JAX detects, when set).
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for a run over several processes.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run (0 writes the results).")
FLAGS = flags.FLAGS


def _numbers(name: str, cast):
  try:
    values = tuple(cast(x) for x in FLAGS[name].value)
  except ValueError:
    values = ()
  if not values or not all(math.isfinite(v) for v in values):
    raise experiment.ExperimentError(f"--{name}={','.join(FLAGS[name].value)[:80]}: expected a comma-separated "
                                     f"list of finite numbers.")
  return values


def config_from_flags() -> experiment.Config:
  """The experiment.Config that the parsed flags describe."""
  names = [f.name for f in dataclasses.fields(config_lib.Config) if f.name not in _LISTS]
  return experiment.Config(**{n: FLAGS[n].value for n in names},
                           **{n: _numbers(n, cast) for n, cast in _LISTS.items()})


def main(argv: list[str]) -> None:
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint at INFO
  if len(argv) > 1:
    sys.exit(f"Unexpected arguments {' '.join(argv[1:])}; every setting is a --flag (see --help).")
  try:
    if FLAGS.coordinator_address or FLAGS.num_processes or os.environ.get("JAX_COORDINATOR_ADDRESS"):
      jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
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
  app.run(main, flags_parser=flagfiles.parser("main"))
