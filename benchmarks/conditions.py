"""How many units one agreement condition needs: each condition searched on its own items, both ways.

    python -m benchmarks.conditions --checkpoint=default --conditions=simple_P,simple_S,nounPP_SP
        [--ks=2,4,6,8,10,12,16,20] [--output=conditions.json]

The main job selects the smallest set that flips every condition's held-out items (``--select_by=
every_condition``). Whether such a set can be small is a property of the model, not only of the search: if
number is spread over many units at one construction, every joint set must contain many units. This script
bounds it from the searches' side: for each condition alone, a Hard Concrete target-size sweep (the main
job's settings) and greedy activation patching, both searching that condition's own known search items
(up to 160), each give their best set of k units, judged on that condition's held-out items (up to 160).
A set chosen for one condition is the best case for it; a joint set serving all 64 conditions can only do
worse there. Neither search is exhaustive (C(512, 10) sets), so the figures are what the two best searches
of the comparison reach, not a proof.
"""

from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import numpy as np

from benchmarks import common
from jaxmask import baselines, checkpoints, data, exhaustive, grammar, interventions, search

_CHECKPOINT = flags.DEFINE_string("checkpoint", "default", "LM checkpoint directory, or 'default' (shipped LM).")
_CONDITIONS = flags.DEFINE_list("conditions", ["simple_P", "simple_S"], "Agreement conditions (cells) to search.")
_KS = flags.DEFINE_list("ks", ["2", "4", "6", "8", "10", "12", "16", "20"], "Set sizes k.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the JSON of every figure.")
MAX_ITEMS = 160


def known_items(params, vocab: list[str], language: str, condition: str, split: str, seed: int
                ) -> interventions.Items:
  """Up to MAX_ITEMS generated items of one condition that the clean model gets right both ways."""
  pairs = [p for p in grammar.agreement_items(200, seed, split=split, language=language) if p.condition == condition]
  if not pairs:
    raise app.UsageError(f"--conditions: {condition!r} is not a built-in agreement condition.")
  items, _, _ = data.encode(pairs, vocab)
  m_x, m_cf = interventions.clean_margins(params, items)
  return items.take(np.flatnonzero((m_x > 0) & (m_cf < 0))[:MAX_ITEMS])


def condition_row(params, vocab: list[str], language: str, condition: str, ks: list[int]) -> dict:
  """Both searches' held-out flip rate at each k, on one condition's items alone."""
  train, heldout = (known_items(params, vocab, language, condition, split, seed)
                    for split, seed in (("search", 0), ("heldout", 1)))
  rate = lambda sets: (exhaustive.flip_counts(params, heldout, sets) / heldout.prefix.shape[0]).round(4).tolist()
  start = time.perf_counter()
  result = search.sweep(params, train, ks, 0, targets=True, steps=300, batch_size=64)  # the main job's settings
  hard_concrete = baselines.sweep_at_k(params, train, result, ks)
  hc_seconds = time.perf_counter() - start
  start = time.perf_counter()
  greedy = [list(group[0]) for group in baselines.METHODS["greedy"].sets(baselines.Context(params, train), ks)]
  return {"condition": condition, "search_items": int(train.prefix.shape[0]),
          "heldout_items": int(heldout.prefix.shape[0]), "ks": ks,
          "hard_concrete": rate(hard_concrete), "greedy": rate(greedy),
          "hard_concrete_units": hard_concrete, "greedy_units": greedy,
          "seconds": {"hard_concrete": hc_seconds, "greedy": time.perf_counter() - start}}


def main(argv: list[str]) -> None:
  del argv
  try:
    ks = [int(k) for k in _KS.value]
  except ValueError:
    raise app.UsageError(f"--ks={','.join(_KS.value)}: expected a comma-separated list of integers.") from None
  checkpoint = _CHECKPOINT.value
  params, config, vocab = checkpoints.load_default() if checkpoint == "default" else checkpoints.load(checkpoint)
  language = checkpoints.language_of(config)
  rows = [condition_row(params, vocab, language, c, ks) for c in _CONDITIONS.value]
  smallest = lambda rates: next((k for k, r in zip(ks, rates) if r >= 0.95), None)
  print(common.table(f"Held-out flip rate of one condition's best k-set, searched on that condition alone "
                     f"({checkpoint})", ["condition", "method"] + [f"k={k}" for k in ks] + ["smallest k >= 0.95"],
                     [[r["condition"], m] + r[m] + [smallest(r[m]) or f"> {ks[-1]}"]
                      for r in rows for m in ("hard_concrete", "greedy")]))
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w", encoding="utf-8") as f:
      json.dump({"command": "python -m benchmarks.conditions " + " ".join(f"--{n}={v}" for n, v in
                 (("checkpoint", checkpoint), ("conditions", ",".join(_CONDITIONS.value)), ("ks", ",".join(_KS.value)))),
                 "machine": common.machine(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
