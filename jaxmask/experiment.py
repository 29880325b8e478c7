"""The main job as one library call: model -> items -> sweep -> held-out evaluation -> baselines -> report.

``run(config)`` is what ``python -m jaxmask.main`` calls; every step reads or writes ``config.workdir`` so an
interrupted run resumes from the last search checkpoint and gives the same result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from absl import logging

from jaxmask import baselines, checkpoints, data, grammar, lstm, report, search, train_lm

PHENOMENA = ("agreement", "gender")


class ExperimentError(ValueError):
  """A user error in the main job's settings or inputs; the message is one sentence saying what to do."""


@dataclasses.dataclass(frozen=True)
class Config:
  """Settings of one run of the main job (the flags of ``jaxmask.main``)."""
  workdir: str
  phenomenon: str = "agreement"
  checkpoint: str = ""                 # "" = the default LM, trained with configs/lm.cfg and cached
  lm_config: str = "configs/lm.cfg"    # settings used to train the default LM when it is absent
  train_items: str = ""                # "" = built-in generated items ("search" split)
  eval_items: str = ""                 # "" = built-in generated items ("heldout" split)
  train_per_cell: int = 40
  eval_per_cell: int = 40
  # From nearly every unit kept to the empty set, so that the sweep also yields its best 1- and 2-unit sets.
  lambdas: tuple[float, ...] = tuple(np.geomspace(1e-3, 10.0, 16).round(6).tolist())
  method: str = "hard_concrete"
  steps: int = 300
  learning_rate: float = 0.1
  batch_size: int = 64
  sites: str = "h"
  replacement: str = "counterfactual"
  mu: float = 0.0
  seed: int = 0
  # The end-game (jaxmask/endgame.py, README "Reaching a discrete set").
  init_logit: float = 3.0
  schedule: str = "ramp"
  ramp_fraction: float = 0.1
  hard_fraction: float = 0.9
  multiplier_lr: float = 0.01
  target_flip: float = 0.95
  only_known: bool = True             # measure flips only on items the clean model gets right both ways
  select_by: str = "every_condition"  # or "overall": which held-out flip rate must reach target_flip
  baselines: str = "all"               # "all" or "none"
  baseline_ks: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # the curves' set sizes
  search_seeds: int = 3                # seeds of each search estimator's target-size sweep in the comparison
  specificity_mu: float = 0.0          # > 0: also a Hard Concrete target-size sweep with mu * merged control KL
  random_draws: int = 20
  control_sentences: int = 200
  chunk_steps: int = 50


def default_checkpoint_dir(lm_config: train_lm.LMConfig) -> str:
  """Where the default LM is cached: $JAXMASK_CACHE/default_lm-KEY (root default ~/.cache/jaxmask).

  KEY hashes the LM config, the vocabulary and the generator's first training sentences, so a changed
  config or generator trains and caches a new model instead of silently reusing a stale one.
  """
  root = os.environ.get("JAXMASK_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxmask"))
  h = hashlib.sha256(json.dumps(dataclasses.asdict(lm_config), sort_keys=True).encode())
  h.update("\n".join(grammar.vocabulary() + grammar.corpus(20, lm_config.seed)).encode())
  return os.path.join(root, f"default_lm-{h.hexdigest()[:10]}")


def load_model(config: Config) -> tuple[lstm.Params, dict, list[str], str, float]:
  """(params, model config, vocab, checkpoint dir, seconds spent training); trains the default LM if needed."""
  path, seconds = config.checkpoint, 0.0
  if not path:
    if os.path.exists(config.lm_config):
      lm_config = train_lm.read_flagfile(config.lm_config)
    elif config.lm_config == Config.lm_config:  # run outside the repository: the same values, built in
      lm_config = train_lm.LMConfig()
    else:
      raise ExperimentError(f"--lm_config={config.lm_config} does not exist; give the default LM's flagfile "
                            f"(configs/lm.cfg).")
    path = default_checkpoint_dir(lm_config)
    if not os.path.exists(os.path.join(path, "config.json")):
      logging.info("No cached default LM at %s: training it (%s).", path, lm_config)
      print(f"Training the default LM into {path} (once; later runs reuse it).", flush=True)
      start = time.perf_counter()
      train_lm.train(lm_config, path)
      seconds = time.perf_counter() - start
  try:
    params, model_config, vocab = checkpoints.load(path)
  except checkpoints.CheckpointError as e:
    raise ExperimentError(f"--checkpoint: {e}") from e
  return params, model_config, vocab, path, seconds


def builtin_pairs(phenomenon: str, split: str, per_cell: int, seed: int) -> list[data.Pair]:
  """The generated minimal pairs of a phenomenon: "search" items for the sweep, "heldout" for evaluation."""
  if phenomenon == "agreement":
    return grammar.agreement_items(per_cell, seed, split=split)
  return grammar.gender_items(split=split)


def _pairs(path: str, flag: str, phenomenon: str, split: str, per_cell: int, seed: int) -> list[data.Pair]:
  if not path:
    return builtin_pairs(phenomenon, split, per_cell, seed)
  if not os.path.exists(path):
    raise ExperimentError(f"{flag}={path}: no such file; give a minimal-pair TSV (columns prefix, target, foil, "
                          f"counterfactual[, condition]).")
  try:
    pairs = data.read_tsv(path)
  except data.DataError as e:
    raise ExperimentError(str(e)) from e
  return pairs


def encode_pairs(pairs: list[data.Pair], vocab: list[str], what: str, needs_counterfactual: bool
                 ) -> tuple[search.Items, list[data.Pair], dict]:
  """Encodes pairs, keeping those whose target and foil are in the vocabulary; errors name the flag."""
  if needs_counterfactual:
    missing = [p for p in pairs if p.counterfactual is None]
    if missing:
      raise ExperimentError(f"{missing[0].source or what}: no counterfactual prefix; add a counterfactual column or "
                            f"use --replacement=zero|mean.")
  try:
    items, kept, stats = data.encode(pairs, vocab)
  except data.DataError as e:
    raise ExperimentError(str(e)) from e
  if stats["items"] == 0:
    raise ExperimentError(f"{what}: none of the {len(pairs)} items has its target and foil in the model's "
                          f"vocabulary; check the words (or the --checkpoint).")
  return items, [pairs[i] for i in kept], stats


def known(params: lstm.Params, items: search.Items, pairs: list[data.Pair]
          ) -> tuple[search.Items, list[data.Pair], dict[str, int]]:
  """The items the clean model gets right both ways: target over foil after x, foil over target after x'.

  A flip is only meaningful where the model computes the behaviour in the first place: on the other items
  the "intervention" would get credit for the model's own errors. Returns the kept items and counts.
  """
  m_x = np.asarray(search.margins(params, items))[0]
  swapped = items.replace(prefix=items.counterfactual)
  m_cf = np.asarray(search.margins(params, swapped))[0]
  keep = np.flatnonzero((m_x > 0) & (m_cf < 0))
  stats = {"encoded": len(pairs), "known": int(len(keep)), "wrong_on_prefix": int((m_x <= 0).sum()),
           "wrong_on_counterfactual": int((m_cf >= 0).sum())}
  return items.take(keep), [pairs[i] for i in keep], stats


def control_text(vocab: list[str], sentences: int, seed: int, pairs: list[data.Pair] = ()) -> search.Control:
  """Held-out generated sentences (not in training) as rows from the initial state: <eos> sentence.

  ``pairs`` (the phenomenon's items) set the word classes of the merged control KL (``data.outcome_classes``).
  """
  index = {w: i for i, w in enumerate(vocab)}
  unk = index.get(data.UNK, index[data.EOS])
  rows = [[index[data.EOS]] + [data.normalize(w, index) or unk for w in s.split()]
          for s in grammar.corpus(sentences, seed, split="control")]
  width = max(map(len, rows))
  tokens = np.full((len(rows), width), index[data.EOS], np.int32)
  for b, r in enumerate(rows):
    tokens[b, :len(r)] = r
  return search.Control(tokens=jnp.asarray(tokens), length=jnp.asarray([len(r) for r in rows], jnp.int32),
                        classes_V=jnp.asarray(data.outcome_classes(list(pairs), vocab)) if pairs else None)


def flip_rates(margins_SxB: np.ndarray, pairs: list[data.Pair]) -> tuple[list[float], list[dict[str, float]]]:
  """Per set: the fraction of items whose intervened margin is negative, overall and by condition."""
  flipped = np.asarray(margins_SxB) < 0
  conditions = sorted({p.condition for p in pairs})
  cond = np.array([p.condition for p in pairs])
  by = [{c: float(row[cond == c].mean()) for c in conditions} for row in flipped]
  return flipped.mean(axis=1).tolist(), by


# ----------------------------------------------------------------------------------------------------------
# The search, checkpointed with orbax so a killed run resumes.


def search_config_of(config: Config, method: str, targets: bool = False) -> search.SearchConfig:
  """The search settings of ``config`` for ``method`` (target sizes instead of lambdas when ``targets``)."""
  fields = {f.name for f in dataclasses.fields(search.SearchConfig)}
  settings = {k: v for k, v in dataclasses.asdict(config).items() if k in fields}
  return search.SearchConfig(**{**settings, "method": method, "targets": targets})


def _fingerprint(search_config: search.SearchConfig, seed: int, items: search.Items, values: np.ndarray) -> str:
  h = hashlib.sha256(json.dumps([dataclasses.asdict(search_config), seed, values.tolist()], sort_keys=True).encode())
  for a in jax.tree.leaves(items):
    h.update(np.asarray(a).tobytes())
  return h.hexdigest()[:16]


def run_sweep(params: lstm.Params, items: search.Items, config: Config, method: str, control: search.Control | None,
              name: str = "", targets: tuple[int, ...] = ()) -> search.SweepResult:
  """The sweep of ``method`` over ``config.lambdas`` (or over target sizes ``targets``), checkpointed.

  A progress bar, and an orbax checkpoint per chunk in ``config.workdir/(name or search_{method})``; a
  directory holding a search with other settings is refused.
  """
  search_config = search_config_of(config, method, bool(targets))
  values = np.asarray(targets or config.lambdas, np.float32)
  directory = os.path.abspath(os.path.join(config.workdir, name or f"search_{method}"))
  fingerprint = _fingerprint(search_config, config.seed, items, values)
  os.makedirs(directory, exist_ok=True)
  marker = os.path.join(directory, "fingerprint.txt")
  if os.path.exists(marker) and open(marker).read().strip() != fingerprint:
    raise ExperimentError(f"--workdir={config.workdir} holds a {method} search with other settings or items "
                          f"({directory}); use a new --workdir or delete that directory to start over.")
  with open(marker, "w") as f:
    f.write(fingerprint)
  num = len(values)
  traces = {"loss": np.full((config.steps, num), np.nan, np.float32)}
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=1))
  state = None
  if manager.latest_step() is not None:
    padded = int(np.ceil(num / jax.device_count()) * jax.device_count())
    init = jax.eval_shape(lambda: search.init_state(params, jnp.zeros(padded), search_config,  # shapes only
                                                    search.prepare(params, items, search_config, control)))
    restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore({"state": init, **traces}))
    state = restored["state"]
    traces = {k: np.asarray(restored[k]) for k in traces}
    print(f"Resuming the {method} search from step {int(state.step)} ({directory}).", flush=True)
  start = 0 if state is None else int(state.step)
  bar = tqdm.tqdm(total=config.steps, initial=start, desc=f"{name or method} x{num} {'sizes' if targets else 'lambdas'}", unit="step",
                  dynamic_ncols=True)
  position = [start]

  def save(s: search.SweepState, losses: np.ndarray) -> None:
    done = int(s.step)
    traces["loss"][position[0]:done] = losses
    position[0] = done
    bar.update(len(losses))
    bar.set_postfix(loss=f"{float(np.nanmean(losses[-1])):.3f}")
    manager.save(done, args=ocp.args.StandardSave({"state": s, **traces}))

  result = search.sweep(params, items, values, config.seed, config=search_config,
                        control=control if config.mu > 0 else None, chunk_steps=config.chunk_steps, state=state,
                        callback=save)
  manager.wait_until_finished()
  bar.close()
  if not np.isfinite(result.logits).all():
    raise ExperimentError(f"the {method} search diverged (NaN gate logits); lower --learning_rate "
                          f"(now {config.learning_rate}).")
  result.loss_trace = traces["loss"]
  return result


# ----------------------------------------------------------------------------------------------------------
# Evaluation of unit sets, selection, baselines and the traces figure's data.


def probe_labels(pairs: list[data.Pair], phenomenon: str) -> np.ndarray | None:
  """Binary labels of the search prefixes for the probe: subject plural (agreement) or she-target (gender)."""
  if phenomenon == "gender":
    return np.array([p.target.lower() == "she" for p in pairs], np.int32)
  cells = [p.condition.rsplit("_", 1)[-1][:1] if "_" in p.condition else "" for p in pairs]
  if not all(c in ("S", "P") for c in cells):
    return None
  return np.array([c == "P" for c in cells], np.int32)


def select(sweep_rows: list[dict], target_flip: float, every_condition: bool = True) -> tuple[int, bool]:
  """(index of the smallest set whose held-out flip rate reaches target_flip, whether one did).

  With ``every_condition`` the flip rate of every condition must reach it (a set that flips 95% of the
  items overall can still leave a whole construction unflipped); otherwise the overall rate. Ties in size
  go to the higher flip rate; when no set reaches the target, the non-empty set with the highest rate.
  """
  def rate(row):
    return min(row["heldout_flip_rate_by_condition"].values()) if every_condition else row["heldout_flip_rate"]

  reaching = [i for i, r in enumerate(sweep_rows) if rate(r) >= target_flip and r["units"]]
  if reaching:
    return min(reaching, key=lambda i: (len(sweep_rows[i]["units"]), -rate(sweep_rows[i]))), True
  return max(range(len(sweep_rows)), key=lambda i: (bool(sweep_rows[i]["units"]), rate(sweep_rows[i]),
                                                     -len(sweep_rows[i]["units"]))), False


def trace_data(params: lstm.Params, pairs: list[data.Pair], items: search.Items, units: list[int],
               phenomenon: str, max_units: int = 16) -> dict[str, Any]:
  """Mean activation of the selected units at each position, for the two groups of items.

  Agreement: nounPP items (of the most common length), singular vs plural subject. Gender: she- vs
  he-target prompts. Returns {"positions", "words" (of one example), "groups": {name: (U, T) list},
  "units": [...]}.
  """
  if phenomenon == "agreement":
    chosen = [b for b, p in enumerate(pairs) if p.condition.startswith("nounPP_")] or list(range(len(pairs)))
    group_of = lambda p: "singular subject" if "_S" in p.condition else "plural subject"
  else:
    chosen = list(range(len(pairs)))
    group_of = lambda p: f"{p.target} target"
  lengths = np.asarray(items.length)[chosen]
  common = int(np.bincount(lengths).argmax())
  chosen = [b for b in chosen if int(items.length[b]) == common]
  units = list(units)[:max_units]
  _, states = lstm.apply(params, items.prefix[np.asarray(chosen)][:, :common], return_states=True)
  flat = jnp.concatenate([states["h"], states["c"]], axis=0)  # (2L, B, T, H) in flat-id order
  num_layers, hidden = states["h"].shape[0], states["h"].shape[-1]
  acts = np.stack([np.asarray(flat[u // hidden, :, :, u % hidden]) for u in units], axis=1) if units else \
      np.zeros((len(chosen), 0, common))
  groups = {}
  for name in sorted({group_of(pairs[b]) for b in chosen}):
    rows = [i for i, b in enumerate(chosen) if group_of(pairs[b]) == name]
    groups[name] = acts[rows].mean(axis=0).tolist()
  example = pairs[chosen[0]]
  return {"positions": common, "words": [data.EOS] + list(example.prefix) + [f"({example.target}/{example.foil})"],
          "groups": groups, "units": [search.readable(u, num_layers, hidden) for u in units]}


def side_effects(params: lstm.Params, unit_sets: list[list[int]], config: Config,
                 other: tuple[search.Items, list[data.Pair]], control: search.Control) -> list[dict[str, Any]]:
  """Per set, what it does besides flipping the phenomenon: control KL (plain, merged), perplexity, the other
  phenomenon's flip rate (None when the model gets none of its items right)."""
  gates_SxN = search.units_to_gates(unit_sets, lstm.num_units(params, config.sites))
  other_flip = [None] * len(unit_sets)
  if other[1]:
    other_flip, _ = flip_rates(np.asarray(search.margins(params, other[0], gates_SxN, replacement=config.replacement,
                                                         sites=config.sites)), other[1])
  effects = {k: np.asarray(v) for k, v in search.control_effects(params, control, gates_SxN, sites=config.sites).items()}
  return [{"control_kl": float(effects["kl"][s]), "control_kl_merged": float(effects["kl_merged"][s]),
           "control_perplexity": float(effects["perplexity"][s]), "other_phenomenon_flip_rate": other_flip[s]}
          for s in range(len(unit_sets))]


def evaluate_sets(params: lstm.Params, unit_sets: list[list[int]], config: Config, search_items: search.Items,
                  heldout: tuple[search.Items, list[data.Pair]], other: tuple[search.Items, list[data.Pair]],
                  control: search.Control) -> list[dict[str, Any]]:
  """Per set: train and held-out flip rates (by condition), and its :func:`side_effects`."""
  gates_SxN = search.units_to_gates(unit_sets, lstm.num_units(params, config.sites))
  scope = dict(replacement=config.replacement, sites=config.sites)
  train_flip = np.asarray((search.margins(params, search_items, gates_SxN, **scope) < 0).mean(axis=1))
  heldout_flip, by_condition = flip_rates(np.asarray(search.margins(params, heldout[0], gates_SxN, **scope)),
                                          heldout[1])
  return [{"train_flip_rate": float(train_flip[s]), "heldout_flip_rate": heldout_flip[s],
           "heldout_flip_rate_by_condition": by_condition[s], **effects}
          for s, effects in enumerate(side_effects(params, unit_sets, config, other, control))]


def seed_stability(params: lstm.Params, search_items: search.Items, config: Config, selected_row: dict,
                   heldout: tuple[search.Items, list[data.Pair]], control: search.Control | None,
                   extra_seeds: int = 2) -> dict[str, Any]:
  """The same search and selection rule with ``extra_seeds`` more optimisation seeds (same items).

  Returns ``{"seeds", "units" (the selected set per seed), "heldout_flip_rate", "jaccard"}``, where
  ``jaccard`` is the pairwise overlap matrix of the selected sets; the first seed is ``config.seed``,
  whose selected row is passed in. Only the held-out flip rates that the selection reads are computed
  for the extra seeds' sets.
  """
  seeds, sets, rates = [config.seed], [selected_row["units"]], [selected_row["heldout_flip_rate"]]
  for seed in range(config.seed + 1, config.seed + 1 + extra_seeds):
    result = run_sweep(params, search_items, dataclasses.replace(config, seed=seed), config.method, control,
                       name=f"search_{config.method}_seed{seed}")
    gates_SxN = search.units_to_gates(result.units, lstm.num_units(params, config.sites))
    flips, by_condition = flip_rates(np.asarray(search.margins(
        params, heldout[0], gates_SxN, replacement=config.replacement, sites=config.sites)), heldout[1])
    rows = [{"units": u, "heldout_flip_rate": f, "heldout_flip_rate_by_condition": c}  # what select reads
            for u, f, c in zip(result.units, flips, by_condition)]
    chosen, _ = select(rows, config.target_flip, config.select_by == "every_condition")
    seeds.append(seed)
    sets.append(result.units[chosen])
    rates.append(flips[chosen])
  return {"seeds": seeds, "units": sets, "heldout_flip_rate": rates,
          "jaccard": baselines.overlap_matrix(sets).tolist()}


def compare_methods(params: lstm.Params, config: Config, search_items: search.Items, search_pairs: list[data.Pair],
                    heldout_items: search.Items, selected: list[int], other: tuple[search.Items, list[data.Pair]],
                    control: search.Control, timing: dict[str, float]
                    ) -> tuple[dict[str, list[dict]], dict[str, Any]]:
  """Every method of ``baselines.METHODS`` at each k of ``config.baseline_ks`` (and the selected set's size).

  Both search estimators answer "the best set of k units" directly, with a target-size sweep vmapped over
  the ks, for ``config.search_seeds`` seeds each; with ``config.specificity_mu`` > 0, one more Hard
  Concrete target-size sweep adds mu * (merged control KL) to its objective ("hard_concrete_kl"): only a
  joint search can trade flip rate against side effects. The other methods choose from the same search
  items. All sets are judged on the held-out items (``baselines.compare``), and every method's set at
  every k (the first seed's) also on :func:`side_effects`. Returns (comparison, Jaccard overlap of the
  methods' sets at the selected set's size).
  """
  ks = tuple(sorted(set(config.baseline_ks) | ({len(selected)} if selected else set())))
  ks = tuple(k for k in ks if k <= lstm.num_units(params, config.sites))
  search_sets = {}
  for method in ("hard_concrete", "reinforce"):
    t0 = time.perf_counter()
    search_sets[method] = [
        run_sweep(params, search_items, dataclasses.replace(config, seed=seed), method, control,
                  name=f"target_{method}_seed{seed}", targets=ks).units
        for seed in range(config.seed, config.seed + config.search_seeds)]
    timing[f"target_sweeps_{method}_seconds"] = time.perf_counter() - t0
  if config.specificity_mu > 0:
    t0 = time.perf_counter()
    search_sets["hard_concrete_kl"] = [run_sweep(params, search_items, dataclasses.replace(config, mu=config.specificity_mu),
                                                 "hard_concrete", control, name=f"target_hard_concrete_kl_seed{config.seed}",
                                                 targets=ks).units]
    timing["target_sweep_hard_concrete_kl_seconds"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  labels = probe_labels(search_pairs, config.phenomenon)
  comparison = baselines.compare(
      params, search_items, heldout_items, ks, labels=None if labels is None else jnp.asarray(labels),
      key=jax.random.key(config.seed), replacement=config.replacement, sites=config.sites,
      draws=config.random_draws, search_sets=search_sets)
  rows = [row for method, rows in comparison.items() if method != "random" for row in rows]
  for row, effects in zip(rows, side_effects(params, [row["units"] for row in rows], config, other, control)):
    row.update(effects)
  timing["baselines_seconds"] = time.perf_counter() - t0
  tops = {m: next((r["units"] for r in rows if r["k"] == len(selected)), [])
          for m, rows in comparison.items() if m != "random"}
  return comparison, {"methods": list(tops), "jaccard": baselines.overlap_matrix(list(tops.values())).tolist()}


def run(config: Config) -> dict[str, Any]:
  """The whole main job; writes results.json, pareto.png, traces.png and summary.md to ``config.workdir``."""
  if config.phenomenon not in PHENOMENA:
    raise ExperimentError(f"--phenomenon={config.phenomenon} is not known; use agreement or gender.")
  if config.method not in search.METHODS:
    raise ExperimentError(f"--method={config.method} is not known; use {' or '.join(search.METHODS)}.")
  if config.select_by not in ("every_condition", "overall"):
    raise ExperimentError(f"--select_by={config.select_by} is not known; use every_condition or overall.")
  if config.baselines not in ("all", "none"):
    raise ExperimentError(f"--baselines={config.baselines} is not known; use all or none.")
  if not config.lambdas or min(config.lambdas) < 0:
    raise ExperimentError("--lambdas must be a non-empty list of non-negative numbers.")
  os.makedirs(config.workdir, exist_ok=True)
  timing = {}
  start = time.perf_counter()
  params, model_config, vocab, checkpoint_dir, timing["train_lm_seconds"] = load_model(config)
  num_layers, hidden = model_config["num_layers"], model_config["hidden_size"]
  n = lstm.num_units(params, config.sites)
  needs_cf = config.replacement == "counterfactual"
  other_name = "gender" if config.phenomenon == "agreement" else "agreement"
  search_items, search_pairs, search_stats = encode_pairs(
      _pairs(config.train_items, "--train_items", config.phenomenon, "search", config.train_per_cell, config.seed),
      vocab, "--train_items", needs_cf)
  heldout_items, heldout_pairs, heldout_stats = encode_pairs(
      _pairs(config.eval_items, "--eval_items", config.phenomenon, "heldout", config.eval_per_cell, config.seed),
      vocab, "--eval_items", needs_cf)
  other_items, other_pairs, _ = encode_pairs(builtin_pairs(other_name, "heldout", config.eval_per_cell, config.seed),
                                             vocab, f"built-in {other_name} items", needs_cf)
  # The control text's merged KL groups the words of this phenomenon's choices (every item's y and y').
  control = control_text(vocab, config.control_sentences, config.seed + 1, search_pairs + heldout_pairs)
  clean = np.asarray(search.margins(params, heldout_items))[0]
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
  clean_perplexity = float(search.control_effects(params, control, np.zeros((1, n), np.float32))["perplexity"][0])
  timing["setup_seconds"] = time.perf_counter() - start - timing["train_lm_seconds"]

  result = run_sweep(params, search_items, config, config.method, control)
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
              "units_readable": [search.readable(u, num_layers, hidden) for u in sel["units"]],
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
      "model": {"checkpoint": checkpoint_dir, "layers": num_layers, "hidden": hidden, "num_units": n,
                "vocab_size": model_config["vocab_size"]},
      "items": {"search": {**search_stats, **search_known}, "heldout": {**heldout_stats, **heldout_known},
                "heldout_clean_accuracy": float((clean > 0).mean()),
                "heldout_clean_accuracy_by_condition": clean_by_condition,
                "control_clean_perplexity": clean_perplexity},
      "sweep": sweep_rows, "selected": selected, "timing": timing}

  if config.baselines == "all":
    out["baselines"], out["overlap"] = compare_methods(params, config, search_items, search_pairs, heldout_items,
                                                       sel["units"], (other_items, other_pairs), control, timing)
    t0 = time.perf_counter()
    out["seeds"] = seed_stability(params, search_items, config, sel, (heldout_items, heldout_pairs), control)
    timing["seeds_seconds"] = time.perf_counter() - t0
  timing["total_seconds"] = time.perf_counter() - start
  traces = trace_data(params, heldout_pairs, heldout_items, sel["units"], config.phenomenon)
  report.write(config.workdir, out, traces)
  return out
