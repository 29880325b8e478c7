"""The main job as one library call: model -> items -> sweep -> held-out evaluation -> baselines -> report.

``run(config)`` is what ``python -m jaxmask.main`` calls; every step reads or writes ``config.workdir`` so an
interrupted run resumes from the last search checkpoint and gives the same result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmask import checkpoints, data, formats, grammar, interventions, models, phenomena, report, subword, workdir_lock
from jaxmask.compare import compare_methods, evaluate_sets, seed_stability
from jaxmask import config as config_lib
from jaxmask.config import Config, ExperimentError
from jaxmask.models import lstm
from jaxmask.sweeps import diverged_runs, flip_rates, run_sweep, select


def load_model(config: Config) -> tuple[lstm.Params, dict, list[str], str]:
  """(params, model config, vocab, checkpoint dir): ``--checkpoint``, or the LM shipped in the package."""
  try:
    if not config.checkpoint:
      return (*checkpoints.load_default(), checkpoints.DEFAULT_DIR)
    return (*checkpoints.load(config.checkpoint), checkpoints.resolve(config.checkpoint))
  except checkpoints.CheckpointError as e:
    raise ExperimentError(f"--checkpoint: {e}" if config.checkpoint else str(e)) from e


def builtin_pairs(phenomenon: str, split: str, per_cell: int, seed: int, language: str = "small"
                  ) -> list[data.Pair]:
  """The generated minimal pairs of a phenomenon: "search" items for the sweep, "heldout" for evaluation."""
  return phenomena.get(phenomenon).items(split, per_cell, seed, language)


def _pairs(path: str, flag: str, config: Config, split: str, per_cell: int, language: str, vocab: list[str]
           ) -> list[data.Pair]:
  if not path:
    return builtin_pairs(config.phenomenon, split, per_cell, config.seed, language)
  try:
    return formats.read_items(path, config.format, vocab)
  except data.DataError as e:
    raise ExperimentError(f"{flag}: {e}" if "no such file" in str(e) else str(e)) from e


def encode_pairs(pairs: list[data.Pair], vocab: list[str], what: str, needs_counterfactual: bool, tokenizer=None
                 ) -> tuple[interventions.Items, list[data.Pair], dict]:
  """Encodes pairs, keeping those whose target and foil are in the vocabulary (with a subword ``tokenizer``:
  any number of tokens each, and prefixes that align, subword.py); errors name the flag.

  With ``needs_counterfactual`` the pairs without a counterfactual x' are left out and counted
  (``without_counterfactual``: e.g. Lakretz items whose subject the lexicon cannot flip); none with one is an error.
  """
  with_cf = [p for p in pairs if p.counterfactual is not None] if needs_counterfactual else list(pairs)
  if not with_cf:
    raise ExperimentError(f"{pairs[0].source if pairs else what}: no counterfactual prefix; add a counterfactual "
                          f"column or use --replacement=zero|mean.")
  try:
    items, kept, stats = subword.encode(with_cf, tokenizer) if tokenizer else data.encode(with_cf, vocab)
  except data.DataError as e:
    raise ExperimentError(str(e)) from e
  if stats["items"] == 0:
    raise ExperimentError(f"{what}: none of the {len(pairs)} items has its target and foil in the model's "
                          f"vocabulary; check the words (or the --checkpoint).")
  return items, [with_cf[i] for i in kept], {**stats, "without_counterfactual": len(pairs) - len(with_cf)}


def known(params: lstm.Params, items: interventions.Items, pairs: list[data.Pair]
          ) -> tuple[interventions.Items, list[data.Pair], dict[str, int]]:
  """The items the clean model gets right both ways: target over foil after x, foil over target after x'.

  A flip is only meaningful where the model computes the behaviour in the first place: on the other items
  the "intervention" would get credit for the model's own errors. Returns the kept items and counts.
  """
  m_x, m_cf = interventions.clean_margins(params, items)
  keep = np.flatnonzero((m_x > 0) & (m_cf < 0))
  stats = {"encoded": len(pairs), "known": int(len(keep)), "wrong_on_prefix": int((m_x <= 0).sum()),
           "wrong_on_counterfactual": int((m_cf >= 0).sum())}
  return items.take(keep), [pairs[i] for i in keep], stats


def control_text(vocab: list[str], sentences: int, seed: int, pairs: list[data.Pair] = (), language: str = "small",
                 tokenizer=None) -> interventions.Control:
  """Held-out generated sentences (not in training) as rows from the initial state: <eos> sentence.

  ``pairs`` (the phenomenon's items) set the word classes of the merged control KL (``data.outcome_classes``).
  """
  if tokenizer is not None:
    return subword.control(tokenizer, grammar.corpus(sentences, seed, split="control", language=language),
                           list(pairs), len(vocab))
  index = {w: i for i, w in enumerate(vocab)}
  unk = index.get(data.UNK, index[data.EOS])
  rows = [[index[data.EOS]] + [data.normalize(w, index) or unk for w in s.split()]
          for s in grammar.corpus(sentences, seed, split="control", language=language)]
  width = max(map(len, rows))
  tokens = np.full((len(rows), width), index[data.EOS], np.int32)
  for b, r in enumerate(rows):
    tokens[b, :len(r)] = r
  return interventions.Control(tokens=jnp.asarray(tokens), length=jnp.asarray([len(r) for r in rows], jnp.int32),
                               classes_V=jnp.asarray(data.outcome_classes(list(pairs), vocab)) if pairs else None)



def memory_estimate(params: lstm.Params, config: Config, search_items: interventions.Items,
                    control: interventions.Control, heldout_items: interventions.Items | None = None
                    ) -> dict[str, tuple[int, str]]:
  """Bytes the run's largest steps hold at once, from the shapes, each with the flag that lowers it.

  The sweep holds the parameters, every search item's embedded input and replacement states, and per
  vmapped run a minibatch's activations for the backward pass (twice the family's ``activation_floats``: 16 H
  floats per item, step and layer for an LSTM, as ``interventions.rows_per_chunk`` counts them); with ``--mu``
  also the clean control log-probabilities and inputs, the control rows' activations and one chunk of their
  logits (``interventions.kl_chunk``). The evaluation holds one chunk of intervened runs on the held-out items
  (``interventions.rows_per_chunk``) and, for the control KL of one set, about six full distributions per control
  token (``interventions.control_effects``). With ``--baselines=all``, the baselines step's
  (:func:`baselines_estimate`). The sweep's figure is within 15% of XLA's own for the compiled
  sweep step (``tests/test_main.py``).
  """
  f = 4  # float32
  model = models.of_params(params)
  vocab = int(model.unembedding(params)[0].shape[0])
  items, steps = search_items.prefix.shape
  runs_per_item = 1 if search_items.target_rest is None else 2  # several-token words: two runs of T + K steps
  steps += interventions.rest_width(search_items)
  rows, tokens = control.tokens.shape
  width = jax.eval_shape(model.embed_inputs, params, search_items.prefix[:1, :1]).shape[-1]  # input floats a step
  shapes = model.state_shapes(params)
  replaced = sum(int(np.prod(shapes[k])) for k in model.site_states(config.sites))  # r floats a step
  search_config = config_lib.search_config_of(config, config.method)
  runs = len(config.lambdas) * (search_config.num_samples if config.method == "reinforce" else 1)
  weights = sum(a.size for a in jax.tree.leaves(params)) * f
  base = weights + runs_per_item * items * steps * (width + replaced) * f
  per_run = runs_per_item * min(config.batch_size, items) * steps * 2 * model.activation_floats(params, steps) * f
  sweep = base + runs * per_run
  if config.mu > 0:
    per_step = rows if search_config.control_batch_size == 0 else min(search_config.control_batch_size, rows)
    sweep += rows * tokens * (vocab + width) * f
    sweep += runs * per_step * tokens * 2 * model.activation_floats(params, tokens) * f
    decoded = search_config.control_positions or per_step * tokens
    sweep += runs * min(interventions.kl_chunk(vocab, runs), decoded) * vocab * 4 * f
  heldout = (heldout_items or search_items).prefix.shape
  chunk = interventions.rows_per_chunk(params, heldout[0], heldout[1])  # intervened runs at once
  evaluation = weights + chunk * heldout[0] * heldout[1] * model.activation_floats(params, heldout[1]) * f
  evaluation += 6 * rows * tokens * vocab * f
  out = {"sweep": (sweep, "--batch_size (or fewer --lambdas)"), "evaluation": (evaluation, "--control_sentences")}
  if config.baselines == "all":
    out["baselines"] = (baselines_estimate(params, config, search_items, base, per_run),
                        "--batch_size (or fewer --baseline_ks)")
  return out


def baselines_estimate(params: lstm.Params, config: Config, search_items: interventions.Items, base: int,
                       per_run: int) -> int:
  """Bytes the baselines step holds at once: the larger of its target-size sweeps and its gradient passes.

  ``base`` and ``per_run`` are the sweep's (weights and items; one run's minibatch activations with a backward
  pass). The Hard Concrete target sweep runs one such run per k; the REINFORCE one ``num_samples`` forward-only runs
  per k, each under a quarter of that (XLA's own figure at small sizes). Integrated Gradients and attribution
  patching hold one chunk (``interventions.rows_per_chunk``) of backward passes over every search item, about three
  times the forward activations in XLA (2.9 GiB at Gulordava size, 1,360 items of 14 tokens).
  """
  items, steps = search_items.prefix.shape
  ks = len(set(config.baseline_ks)) + 1  # and the selected set's size
  samples = config_lib.search_config_of(config, "reinforce").num_samples
  sweeps = base + max(ks, ks * samples // 4) * per_run
  weights = sum(a.size for a in jax.tree.leaves(params)) * 4
  chunk = interventions.rows_per_chunk(params, items, steps, backward=True)
  gradients = weights + chunk * items * steps * models.of_params(params).activation_floats(params, steps) * 3 * 4
  return max(sweeps, gradients)


def check_memory(estimate: dict[str, tuple[int, str]]) -> str:
  """The line that states the estimated peak; ExperimentError when it exceeds this machine's memory."""
  part, (peak, flag) = max(estimate.items(), key=lambda item: item[1][0])
  total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if peak > total:
    raise ExperimentError(f"the {part} needs an estimated {peak / 2 ** 30:.1f} GiB but this machine has "
                          f"{total / 2 ** 30:.1f} GiB; lower it with {flag}.")
  return f"Estimated peak memory {peak / 2 ** 30:.1f} GiB ({part}; lower it with {flag})."


def trace_data(params: lstm.Params, pairs: list[data.Pair], items: interventions.Items, units: list[int],
               phenomenon: str, max_units: int = 16, sites: str = "hc") -> dict[str, Any]:
  """Mean activation of the selected units at each position, for the two groups of items.

  Agreement: nounPP items (of the most common length), singular vs plural subject. Gender: she- vs
  he-target prompts. Returns {"positions", "words" (of one example), "groups": {name: (U, T) list},
  "units": [...]}.
  """
  chosen = phenomena.get(phenomenon).trace_items(pairs)
  group_of = phenomena.get(phenomenon).trace_group
  lengths = np.asarray(items.length)[chosen]
  common = int(np.bincount(lengths).argmax())
  chosen = [b for b in chosen if int(items.length[b]) == common]
  units = list(units)[:max_units]
  model = models.of_params(params)
  _, states = model.apply(params, items.prefix[np.asarray(chosen)][:, :common], return_states=True)
  values_BxTxN = model.unit_values(states, sites)  # flat-id order ("hc": every LSTM unit)
  acts = np.swapaxes(np.asarray(values_BxTxN[:, :, np.asarray(units, int)]), 1, 2) if units else \
      np.zeros((len(chosen), 0, common))
  groups = {}
  for name in sorted({group_of(pairs[b]) for b in chosen}):
    rows = [i for i, b in enumerate(chosen) if group_of(pairs[b]) == name]
    groups[name] = acts[rows].mean(axis=0).tolist()
  example = pairs[chosen[0]]
  return {"positions": common, "words": [data.EOS] + list(example.prefix) + [f"({example.target}/{example.foil})"],
          "groups": groups, "units": [model.unit_name(params, u, sites) for u in units]}



def run(config: Config) -> dict[str, Any]:
  """The whole main job; writes results.json, pareto.png, traces.png and summary.md to ``config.workdir``.

  The workdir is locked for the run (``workdir_lock``): a second run on it while this one lives is refused.
  Under jax.distributed the processes of one run share the workdir: process 0 holds the lock for them all.
  """
  config.validate()
  lock = workdir_lock.hold(config.workdir, ExperimentError) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock:
    return _run(config)


def _run(config: Config) -> dict[str, Any]:
  timing = {}
  start = time.perf_counter()
  params, model_config, vocab, checkpoint_dir = load_model(config)
  language = checkpoints.language_of(model_config)
  num_layers, hidden = model_config["num_layers"], model_config["hidden_size"]
  model = models.family_of(model_config)
  n = model.num_units(params, config.sites)
  try:
    tokenizer = subword.tokenizer_of(checkpoint_dir, model_config)
  except data.DataError as e:
    raise ExperimentError(f"--checkpoint: {e}") from e
  needs_cf = config.replacement == "counterfactual"
  other_name = phenomena.get(config.phenomenon).counterpart
  search_items, search_pairs, search_stats = encode_pairs(
      _pairs(config.train_items, "--train_items", config, "search", config.train_per_cell, language, vocab),
      vocab, "--train_items", needs_cf, tokenizer)
  heldout_items, heldout_pairs, heldout_stats = encode_pairs(
      _pairs(config.eval_items, "--eval_items", config, "heldout", config.eval_per_cell, language, vocab),
      vocab, "--eval_items", needs_cf, tokenizer)
  other_items, other_pairs, _ = encode_pairs(builtin_pairs(other_name, "heldout", config.eval_per_cell, config.seed,
             language),
                                             vocab, f"built-in {other_name} items", needs_cf, tokenizer)
  # The control text's merged KL groups the words of this phenomenon's choices (every item's y and y').
  control = control_text(vocab, config.control_sentences, config.seed + 1, search_pairs + heldout_pairs, language,
                         tokenizer)
  print(check_memory(memory_estimate(params, config, search_items, control, heldout_items)), flush=True)
  clean = np.asarray(interventions.margins(params, heldout_items))[0]
  clean_by_condition = {k: 1 - v for k, v in flip_rates(clean[None], heldout_pairs)[1][0].items()}
  search_known = heldout_known = {}
  if config.only_known:
    search_items, search_pairs, search_known = known(params, search_items, search_pairs)
    heldout_items, heldout_pairs, heldout_known = known(params, heldout_items, heldout_pairs)
    other_items, other_pairs, _ = known(params, other_items, other_pairs)
  for what, count, flag in (("search", len(search_pairs), "--train_items"),
                            ("held-out", len(heldout_pairs), "--eval_items")):
    if count == 0:
      raise ExperimentError(f"{flag}: the model gets none of the {what} items right on both the prefix and the "
                            f"counterfactual, so there is nothing to flip; check the items or the model.")
  clean_effects = interventions.control_effects(params, control, np.zeros((1, n), np.float32), sites=config.sites)
  clean_perplexity = float(clean_effects["perplexity"][0])
  timing["setup_seconds"] = time.perf_counter() - start

  result = run_sweep(params, search_items, config, config.method, control)
  diverged, result = diverged_runs(result), result.finite()  # a diverged lambda's row is left out
  timing[f"sweep_{config.method}_seconds"] = result.seconds
  t0 = time.perf_counter()
  rows = evaluate_sets(params, result.units, config, search_items, (heldout_items, heldout_pairs),
                       (other_items, other_pairs), control)
  sweep_rows = [{"method": config.method, "lambda": float(lam), "units": units,
                 "expected_l0": float(l0), **row, "seconds": result.seconds}
                for lam, units, l0, row in zip(result.lambdas, result.units, result.expected_l0, rows)]
  timing["evaluation_seconds"] = time.perf_counter() - t0
  chosen, reached = select(sweep_rows, config.target_flip, config.select_by == "every_condition")
  sel = sweep_rows[chosen]
  selected = {"method": config.method, "lambda": sel["lambda"], "units": sel["units"],
              "units_readable": [model.unit_name(params, u, config.sites) for u in sel["units"]],
              "units_lakretz": [u + 1 for u in sel["units"]],
              "size": len(sel["units"]), "fraction_of_units": len(sel["units"]) / n,
              "reached_target": reached, "heldout_flip_rate": sel["heldout_flip_rate"],
              "heldout_flip_rate_by_condition": sel["heldout_flip_rate_by_condition"],
              "control_kl": sel["control_kl"], "control_kl_merged": sel["control_kl_merged"],
              "control_perplexity": sel["control_perplexity"],
              "other_phenomenon": other_name,
              "other_phenomenon_flip_rate": sel["other_phenomenon_flip_rate"]}

  out: dict[str, Any] = {
      "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()},
      "model": {"checkpoint": checkpoint_dir, "family": model_config.get("family", "lstm"), "layers": num_layers,
                "hidden": hidden, "num_units": n,
                "vocab_size": model_config["vocab_size"]},
      "items": {"search": {**search_stats, **search_known}, "heldout": {**heldout_stats, **heldout_known},
                "heldout_clean_accuracy": float((clean > 0).mean()),
                "heldout_clean_accuracy_by_condition": clean_by_condition,
                "control_clean_perplexity": clean_perplexity},
      "sweep": sweep_rows, "diverged": diverged, "selected": selected, "timing": timing}

  if config.baselines == "all":
    out["baselines"], out["overlap"] = compare_methods(params, config, search_items, search_pairs, heldout_items,
                                                       sel["units"], (other_items, other_pairs), control, timing)
    t0 = time.perf_counter()
    out["seeds"] = seed_stability(params, search_items, config, sel, (heldout_items, heldout_pairs), control)
    timing["seeds_seconds"] = time.perf_counter() - t0
  timing["total_seconds"] = time.perf_counter() - start
  traces = trace_data(params, heldout_pairs, heldout_items, sel["units"], config.phenomenon, sites=config.sites)
  if jax.process_index() == 0:  # under jax.distributed every process holds the same results
    report.write(config.workdir, out, traces)
  return out
