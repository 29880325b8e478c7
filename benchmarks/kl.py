"""The cost of the KL control term: sweep time with mu > 0 over the same sweep with mu = 0 (goal: <= 2).

Both programs are ``search.run_steps`` compiled ahead of time on the same model, items and lambdas; only
``mu`` differs. Two sizes: the shipped LM (``--checkpoint=default``: generated agreement items, 200 control
sentences, the main job's 16 lambdas) and Gulordava size (2 x 650, 50,000 words, random weights, items of
64 x 12 tokens, 50 random control sentences of 6-14 words, the Gulordava config's 6 lambdas). The term
decodes the full vocabulary exactly, in chunks of positions (``objectives.kl_control_decoded``), at
``control_positions`` real tokens drawn from a minibatch of ``control_batch_size`` control sentences per step
(the search's defaults; ``_ratio`` times any other pair).
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import jax.numpy as jnp
import numpy as np

from benchmarks import common
from jaxmask import interventions, search

MU = 0.01


def _default_setup(checkpoint: str | None) -> tuple[Any, interventions.Items, interventions.Control, str]:
  from jaxmask import checkpoints, data, experiment, grammar  # the data edge, only needed here
  params, config, vocab = checkpoints.load(checkpoint) if checkpoint and checkpoint != "default" else \
      checkpoints.load_default()
  language = checkpoints.language_of(config)
  pairs = grammar.agreement_items(40, 0, split="search", language=language)
  items, _, _ = data.encode(pairs, vocab)
  control = experiment.control_text(vocab, 200, 1, pairs, language)
  name = checkpoint if checkpoint and checkpoint != "default" else "shipped default LM"
  return params, items, control, f"{name} ({config['num_layers']}x{config['hidden_size']}, V={len(vocab)})"


def random_control(vocab_size: int, sentences: int, seed: int = 0) -> interventions.Control:
  """Random control rows of 6-14 words after <eos> (id 0), right-padded: the KL term's shapes at a given size."""
  rng = np.random.default_rng(seed)
  length = rng.integers(7, 16, size=sentences)
  tokens = rng.integers(1, vocab_size, size=(sentences, int(length.max())))
  tokens[:, 0] = 0
  tokens[np.arange(tokens.shape[1])[None, :] >= length[:, None]] = 0
  return interventions.Control(tokens=jnp.asarray(tokens, jnp.int32), length=jnp.asarray(length, jnp.int32))


def _ratio(params, items, control, lambdas, chunk, repeats, variants) -> dict[str, Any]:
  """mu = 0 and, for each (control_batch_size, control_positions) of ``variants``, mu > 0: seconds and peaks.

  The two programs run alternately, ``repeats`` pairs after a warm-up call each, and the overhead is the
  median of the pairs' ratios: other jobs on shared cores slow both sides of a pair alike.
  """
  base = search.SearchConfig(steps=chunk)
  plain = common.SearchProgram(params, items, lambdas, base, chunk)
  out = {"mu0_peak_bytes": plain.peak_bytes(), "with_kl": {}}
  state = plain.initial_state()
  plain.run(state)
  mu0_seconds = []
  for rows, positions in variants:
    config = dataclasses.replace(base, mu=MU, control_batch_size=rows, control_positions=positions)
    prog = common.SearchProgram(params, items, lambdas, config, chunk, control=control)
    prog.run(state)
    pairs = [(common.median_seconds(lambda: plain.run(state), 1), common.median_seconds(lambda: prog.run(state), 1))
             for _ in range(repeats)]
    mu0_seconds += [a for a, _ in pairs]
    out["with_kl"][f"{rows}/{positions}"] = {
        "seconds": statistics.median(b for _, b in pairs), "overhead": statistics.median(b / a for a, b in pairs),
        "overhead_per_pair": [b / a for a, b in pairs], "peak_bytes": prog.peak_bytes(),
        "compile_seconds": prog.compile_seconds}
  out["mu0_seconds"] = statistics.median(mu0_seconds)
  return out


def run(context: common.Context) -> dict[str, Any]:
  quick, checkpoint = context.quick, context.checkpoint or "default"
  defaults = search.SearchConfig()
  cb = f"{defaults.control_batch_size}/{defaults.control_positions}"
  rows, out = [], {"mu": MU, "control_batch_size/control_positions": cb}
  default_variant = (defaults.control_batch_size, defaults.control_positions)
  params, items, control, name = _default_setup(checkpoint)
  chunk = 3 if quick else 10
  default = _ratio(params, items, control, common.lambdas(16), chunk, 3 if quick else 5,
                   (default_variant,))
  out["default"] = {"model": name, "lambdas": 16, "steps_per_call": chunk, "control_sentences": 200, **default}
  size = common.GULORDAVA
  params, items = common.sized(size)
  chunk = 2 if quick else 4
  gulordava = _ratio(params, items, random_control(size["vocab_size"], 50), common.lambdas(6), chunk,
                     2 if quick else 4, (default_variant,))
  out["gulordava"] = {"model": "random 2x650, V=50,000", "lambdas": 6, "steps_per_call": chunk,
                      "control_sentences": 50, **gulordava}
  out["overhead_default"] = default["with_kl"][cb]["overhead"]
  out["overhead_gulordava"] = gulordava["with_kl"][cb]["overhead"]
  for key, part in (("default", out["default"]), ("gulordava", out["gulordava"])):
    rows.append([f"{key}: {part['model']}, Λ={part['lambdas']}", "mu = 0", 1e3 * part["mu0_seconds"] / part["steps_per_call"],
                 1.0, part["mu0_peak_bytes"] / 2 ** 20])
    for r, kl in part["with_kl"].items():
      sentences, positions = (f"all {part['control_sentences']}", "all") if r == "0/0" else r.split("/")
      label = f"mu = {MU}, {sentences} control sentences, {positions if positions != '0' else 'all'} positions a step"
      rows.append(["", label, 1e3 * kl["seconds"] / part["steps_per_call"], kl["overhead"], kl["peak_bytes"] / 2 ** 20])
  context.table("KL control term: sweep time with mu > 0 over mu = 0 (goal <= 2)",
                ["size", "setting", "ms/step (all lambdas)", "overhead", "XLA peak MiB"], rows)
  return out
