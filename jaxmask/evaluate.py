"""Accuracy of an LM on minimal pairs, and the flip rate of a unit set under an intervention (absl app).

    python -m jaxmask.evaluate --checkpoint=workdir_lm --items=pairs.tsv --output=out.json \\
        [--units=3,17 --intervention=counterfactual|zero|mean] [--per_item]

An item is correct when the model scores its target above its foil after its prefix (read from the initial
state after ``<eos>`` unless a context state is given). The functions here are what the main job calls; the
absl main only reads files and writes the JSON.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from absl import logging

from jaxmask import checkpoints, files, flagfiles, interventions, models, report, subword
from jaxmask.models import lstm

INTERVENTIONS = ("counterfactual", "zero", "mean")


@jax.jit
def _margins_chunk(params: dict, items: interventions.Items,
                   initial_state: tuple[jax.Array, jax.Array] | None) -> jax.Array:
  inputs = interventions.model_inputs(params, items)
  return interventions.margin(params, items, inputs, None, None, initial_state=initial_state)


def margins(params: lstm.Params, items: interventions.Items,
            initial_state: tuple[jax.Array, jax.Array] | None = None, batch_size: int = 512) -> np.ndarray:
  r"""logit(target) - logit(foil) after each prefix, without intervention: float32[B] (with several-token
  words, the difference of their summed log-probabilities, ``interventions.margin``).

  .. math:: m_b = \ell_{t_b}(x_b) - \ell_{f_b}(x_b) = \log p(t_b \mid x_b) - \log p(f_b \mid x_b)

  Args:
    params: LM parameters.
    items: encoded minimal pairs (right-padded prefixes, read at ``length - 1``).
    initial_state: (h, c), each (L, H), the state every prefix starts from (e.g. after some running text,
      see ``context_state``); zeros when None. LSTMs only: a transformer reads every prefix from its start.
    batch_size: items per forward pass (bounds memory; the last chunk is padded so one compile serves all).
  """
  count = int(items.prefix.shape[0])
  if count == 0:
    return np.zeros((0,), np.float32)
  batch_size = min(batch_size, count)
  start = None
  if models.of_params(params).RESUMABLE:
    num_layers, hidden = len(params["layers"]), params["layers"][0]["w_hh"].shape[1]
    if initial_state is None:
      initial_state = (jnp.zeros((num_layers, hidden)), jnp.zeros((num_layers, hidden)))
    start = tuple(jnp.broadcast_to(s[:, None, :], (num_layers, batch_size, hidden)) for s in initial_state)
  elif initial_state is not None:
    raise ValueError("a transformer reads every prefix from its start; running-text contexts "
                     "(--context_sentences) need an LSTM.")
  pad = -count % batch_size
  padded = jax.tree.map(lambda a: np.concatenate([np.asarray(a), np.repeat(np.asarray(a)[:1], pad, axis=0)]), items)
  out = [np.asarray(_margins_chunk(params, padded.take(slice(i, i + batch_size)), start))
         for i in range(0, count + pad, batch_size)]
  return np.concatenate(out)[:count]


def context_state(params: lstm.Params, context_ids: Sequence[int]) -> tuple[jax.Array, jax.Array]:
  """(h, c), each (L, H): the state after reading ``context_ids`` from the initial state (running text; LSTMs)."""
  if not models.of_params(params).RESUMABLE:
    raise ValueError("a transformer reads every prefix from its start; running-text contexts "
                     "(--context_sentences) need an LSTM.")
  _, states = lstm.apply(params, jnp.asarray([list(context_ids)], jnp.int32), return_states=True)
  return states["h"][:, 0, -1], states["c"][:, 0, -1]


def accuracy_by_condition(correct_B: np.ndarray, conditions: Sequence[str]) -> tuple[float, dict[str, float]]:
  """(overall accuracy, {condition: accuracy}) of boolean per-item outcomes; NaN overall when there are none."""
  correct_B = np.asarray(correct_B, bool)
  conditions = np.asarray(list(conditions), dtype=object)
  overall = float(correct_B.mean()) if correct_B.size else float("nan")
  return overall, {c: float(correct_B[conditions == c].mean()) for c in sorted(set(conditions.tolist()))}


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
  r"""Pearson's correlation :math:`r = \frac{\sum (x-\bar x)(y-\bar y)}{\sqrt{\sum (x-\bar x)^2 \sum (y-\bar y)^2}}`.

  NaN when there are fewer than two points or either variable is constant.
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.size < 2:
    return float("nan")
  dx, dy = x - x.mean(), y - y.mean()
  denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
  return float(np.sum(dx * dy) / denominator) if denominator > 0 else float("nan")


def gender_bias(margins_B: np.ndarray, pairs: Sequence[Any], pct_female: dict[str, float]) -> dict[str, Any] | None:
  """Pearson r between log p(she)/p(he) and % female, over items with he/she as target/foil.

  An item's occupation is the first prefix word (lower-cased) that is a key of ``pct_female``; items without
  one are left out. Returns None when no item has he/she as target and foil, else
  ``{"pearson_r", "items", "mean_log_ratio"}``.
  """
  ratios, pcts = [], []
  for m, pair in zip(margins_B, pairs):
    if {pair.target.lower(), pair.foil.lower()} != {"he", "she"}:
      continue
    occupation = next((w.lower() for w in pair.prefix if w.lower() in pct_female), None)
    if occupation is None:
      continue
    ratios.append(float(m) if pair.target.lower() == "she" else -float(m))
    pcts.append(pct_female[occupation])
  if not ratios:
    return None
  return {"pearson_r": pearson(ratios, pcts), "items": len(ratios), "mean_log_ratio": float(np.mean(ratios))}


def parse_units(text: str, num_units: int) -> np.ndarray:
  """Flat 0-based unit ids from "3,17,..." checked against ``num_units``; ValueError with a clear sentence."""
  try:
    units = [int(u) for u in text.replace(" ", "").split(",") if u]
  except ValueError as e:
    raise ValueError(f"--units must be comma-separated integers such as 3,17,120, got {text!r}.") from e
  bad = [u for u in units if not 0 <= u < num_units]
  if not units or bad:
    raise ValueError(f"--units must name unit ids in 0..{num_units - 1} (the model's h units), got {text!r}.")
  return np.asarray(sorted(set(units)), np.int32)


def flip_rates(params: lstm.Params, items: interventions.Items, units: np.ndarray, intervention: str,
               conditions: Sequence[str]) -> tuple[float, dict[str, float]]:
  """Fraction of items (overall, per condition) whose margin is negative with ``units`` intervened on.

  ``intervention`` replaces the units' h states at every step by the counterfactual run's ("counterfactual"),
  by zeros ("zero"), or by their mean over the items' own prefixes ("mean").
  """
  if intervention not in INTERVENTIONS:
    raise ValueError(f"--intervention must be one of {', '.join(INTERVENTIONS)}, got {intervention!r}.")
  gates_1xN = interventions.units_to_gates([units.tolist()], models.num_units(params, "h"))
  margins_1xB = interventions.margins(params, items, gates_1xN, replacement=intervention, sites="h")
  return accuracy_by_condition(np.asarray(margins_1xB)[0] < 0, conditions)


def evaluate_pairs(params: lstm.Params, vocab: list[str], pairs: Sequence[Any], units: np.ndarray | None = None,
                   intervention: str = "counterfactual", pct_female: dict[str, float] | None = None,
                   contexts: Sequence[Sequence[int]] | None = None, per_item: bool = False,
                   tokenizer=None) -> dict[str, Any]:
  """The evaluate command's JSON for ``pairs`` (``data.Pair``): accuracy and, with ``units``, flip rates.

  Args:
    params, vocab: the model and its words.
    pairs: the minimal pairs; those whose target or foil is out of vocabulary are skipped and counted.
    units: flat h unit ids to intervene on (adds the flip rates), or None.
    intervention: "counterfactual", "zero" or "mean" (see ``flip_rates``).
    pct_female: occupation -> % female; adds ``"gender"`` (see ``gender_bias``) when items are he/she pairs.
    contexts: token ids of running text to read before every item (one accuracy over all context x item
      combinations); None reads each item from the initial state. Gender and flip rates always use the
      initial state.
    per_item: add every scored item's margin, in input order.
    tokenizer: a subword tokenizer (``subword.tokenizer_of``): every pair is scored by the summed
      log-probabilities of its words' tokens, and flip rates use the pairs whose prefixes align, scored the same
      way under intervention (``subword.encode``; adds its counts as ``flip_stats``).

  Returns:
    ``{"accuracy", "by_condition", "items", "skipped_oov", "unk_tokens", "with_counterfactual"}`` (items with an
    x', e.g. derived from a Lakretz file); plus ``"by_task"`` and
    ``"skipped_oov_by_task"`` when conditions are ``task/cell`` (Marvin & Linzen); ``"gender"``; and
    ``"flip_rate"``, ``"flip_rate_by_condition"``, ``"units"``, ``"intervention"`` with ``units``; and with
    ``per_item``, ``"per_item"``: ``[{"index": row of the input, "margin": log p(y|x) - log p(y'|x)}, ...]``
    for every scored item (out-of-vocabulary ones are skipped), in input order, from the initial state.
  """
  from jaxmask import data
  pairs = list(pairs)
  if tokenizer is not None:
    if contexts:
      raise ValueError("running-text contexts (--context_sentences) are read word by word; they need a word-level "
                       "vocabulary.")
    kept, stats = list(range(len(pairs))), {"skipped_oov": 0, "unk_tokens": 0}
    m = subword.summed_margins(params, tokenizer, pairs) if pairs else np.zeros((0,), np.float32)
  else:
    items, kept, stats = data.encode(pairs, vocab, prepend_eos=True)
    m = margins(params, items)
  kept_pairs = [pairs[i] for i in kept]
  conditions = [p.condition or "all" for p in kept_pairs]
  if contexts:
    states = [context_state(params, ids) for ids in contexts]
    correct = np.concatenate([margins(params, items, state) > 0 for state in states])
    accuracy, by_condition = accuracy_by_condition(correct, conditions * len(states))
  else:
    accuracy, by_condition = accuracy_by_condition(m > 0, conditions)
  result: dict[str, Any] = {"accuracy": accuracy, "by_condition": by_condition, "items": len(kept_pairs),
                            "skipped_oov": int(stats["skipped_oov"]), "unk_tokens": int(stats["unk_tokens"]),
                            "with_counterfactual": sum(p.counterfactual is not None for p in kept_pairs)}
  if any("/" in c for c in conditions):
    tasks = [c.split("/")[0] for c in conditions]
    result["by_task"] = accuracy_by_condition(correct if contexts else m > 0,
                                              tasks * (len(contexts) if contexts else 1))[1]
    kept_set = set(kept)
    skipped = [(p.condition or "all").split("/")[0] for i, p in enumerate(pairs) if i not in kept_set]
    result["skipped_oov_by_task"] = {t: skipped.count(t) for t in sorted(set(tasks) | set(skipped))}
  if per_item:
    result["per_item"] = [{"index": int(i), "margin": float(margin)} for i, margin in zip(kept, m)]
  if pct_female is not None:
    gender = gender_bias(m, kept_pairs, pct_female)
    if gender is not None:
      result["gender"] = gender
  if units is not None and len(kept_pairs):
    if intervention == "counterfactual" and any(p.counterfactual is None for p in kept_pairs):
      raise ValueError("--intervention=counterfactual needs a counterfactual prefix for every item; add a "
                       "counterfactual column or use --intervention=zero or mean.")
    if tokenizer is not None:
      items, flip_kept, flip_stats = subword.encode(kept_pairs, tokenizer)
      conditions = [conditions[i] for i in flip_kept]
      result["flip_stats"] = flip_stats
    rate, rate_by_condition = flip_rates(params, items, units, intervention, conditions)
    result.update(flip_rate=rate, flip_rate_by_condition=rate_by_condition, units=[int(u) for u in units],
                  intervention=intervention)
  return result


def running_text(vocab: list[str], num_contexts: int, sentences_per_context: int, seed: int = 0,
                 language: str = "small") -> list[list[int]]:
  """Token ids of held-out generated text ("control" split of the generator's ``language``): ``<eos> s1 <eos>
  s2 ...``, ready to precede an item.

  Each context ends with its last sentence's final word; the item's own ``<eos>`` follows, as in training rows.
  """
  from jaxmask import grammar
  index = {w: i for i, w in enumerate(vocab)}
  eos, unk = index["<eos>"], index.get("<unk>", 0)
  text = grammar.corpus(num_contexts * sentences_per_context, seed, split="control", language=language)
  contexts = []
  for k in range(num_contexts):
    ids = []
    for sentence in text[k * sentences_per_context:(k + 1) * sentences_per_context]:
      ids += [eos] + [index.get(w, unk) for w in sentence.split()]
    contexts.append(ids)
  return contexts


def load_items(spec: str, fmt: str, n_per_cell: int = 200, seed: int = 0, language: str = "small",
               vocab: Sequence[str] | None = None) -> list[Any]:
  """Pairs from a file in a ``formats.FORMATS`` format ``fmt`` (``vocab`` limits derived counterfactuals) or a
  built-in set (``builtin:agreement``, ``builtin:agreement_search``, ``builtin:gender``, ``builtin:marvin_linzen``).
  The agreement sets hold every condition of the generator's ``language`` (the one the model was trained on)."""
  from jaxmask import data
  from jaxmask import formats
  from jaxmask import grammar
  builtins = {
      "builtin:agreement": lambda: grammar.agreement_items(n_per_cell, seed, split="heldout", language=language),
      "builtin:agreement_search": lambda: grammar.agreement_items(n_per_cell, seed, split="search",
                                                                  language=language),
      "builtin:gender": lambda: grammar.gender_items("heldout"),
      "builtin:marvin_linzen": lambda: data.load_marvin_linzen(),
  }
  if spec.startswith("builtin:"):
    if spec not in builtins:
      raise data.DataError(f"--items={spec} is not a built-in set; use one of {', '.join(builtins)} or a file.")
    return list(builtins[spec]())
  return formats.read_items(spec, fmt, vocab)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The command's flags (defined only when run as a program or by a test, so importing adds none)."""
  fv = {"flag_values": flag_values}
  flags.DEFINE_string("checkpoint", "", "Checkpoint directory (train_lm's --workdir or convert's output); "
                      "empty = the LM shipped in the package.",
                      **fv)
  flags.DEFINE_string("items", None, "Minimal pairs: a file, or builtin:agreement|agreement_search|gender|"
                      "marvin_linzen.", **fv)
  from jaxmask import formats
  flags.DEFINE_enum("format", "tsv", list(formats.FORMATS), "Format of the --items file (formats.FORMATS).", **fv)
  flags.DEFINE_string("output", None, "Where to write the JSON (printed when absent).", **fv)
  flags.DEFINE_string("units", None, "Comma-separated flat 0-based h unit ids to intervene on.", **fv)
  flags.DEFINE_enum("intervention", "counterfactual", list(INTERVENTIONS), "Replacement of the units' states.",
                    **fv)
  flags.DEFINE_integer("n_per_cell", 200, "Items per cell of builtin:agreement.", **fv)
  flags.DEFINE_integer("seed", 0, "Seed of the built-in generated sets and of the running-text contexts.", **fv)
  flags.DEFINE_bool("per_item", False, "Also write every scored item's margin log p(y|x) - log p(y'|x), in input "
                    "order (\"per_item\").", **fv)
  flags.DEFINE_integer("context_sentences", 0, "Read every item after this many sentences of held-out generated "
                       "text (5 different contexts) instead of from the initial state; 0 = initial state.", **fv)


def main(argv: list[str], FLAGS: flags.FlagValues = flags.FLAGS) -> None:  # pylint: disable=invalid-name
  """Thin absl entry point: read checkpoint and items, evaluate_pairs(), write the JSON."""
  from jaxmask import data
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  try:
    if len(argv) > 1:
      raise ValueError(f"unexpected arguments {' '.join(argv[1:])}; flags are written --name=value.")
    if not FLAGS.items:
      raise ValueError("--items is required: a minimal-pair TSV file or builtin:agreement / builtin:gender.")
    params, config, vocab = checkpoints.load(FLAGS.checkpoint) if FLAGS.checkpoint else checkpoints.load_default()
    tokenizer = subword.tokenizer_of(FLAGS.checkpoint, config) if FLAGS.checkpoint else None
    language = checkpoints.language_of(config)
    pairs = load_items(FLAGS.items, FLAGS.format, FLAGS.n_per_cell, FLAGS.seed, language, vocab)
    units = parse_units(FLAGS.units, models.num_units(params, "h")) if FLAGS.units is not None else None
    pct_female = None
    if any({p.target.lower(), p.foil.lower()} == {"he", "she"} for p in pairs):
      from jaxmask import grammar
      pct_female = grammar.occupation_pct_female()
    contexts = None
    if FLAGS.context_sentences > 0:
      contexts = running_text(vocab, 5, FLAGS.context_sentences, FLAGS.seed, language)
    result = evaluate_pairs(params, vocab, pairs, units, FLAGS.intervention, pct_female, contexts, FLAGS.per_item,
                            tokenizer)
    text = json.dumps(report.finite(result), indent=2)
    if FLAGS.output:
      files.write_text(FLAGS.output, text + "\n")
  except (checkpoints.CheckpointError, data.DataError, ValueError, OSError) as e:
    sys.exit(f"evaluate: {e}")
  print(text if not FLAGS.output else f"evaluate: accuracy {result['accuracy']:.4f} on {result['items']} items "
        f"({result['skipped_oov']} skipped as out of vocabulary, {result['with_counterfactual']} with a "
        f"counterfactual); wrote {FLAGS.output}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=flagfiles.parser("evaluate"))
