"""A Gulordava-size model and items for timing the main job end to end: a random-weight PyTorch checkpoint.

    python -m benchmarks.gulordava_size --output=gul_size [--seed=0] [--vocab_size=50000]
    python -m benchmarks.gulordava_size --output=gul_size --part=baselines   # after the first command
    python -m benchmarks.gulordava_size --output=gul_size --part=memory

Writes, under ``--output``:

* ``torch/model.pt``: the state dict of a 2 x 650 LSTM language model with a 50,000-word vocabulary in the
  colorlessgreenRNNs ``RNNModel`` layout (``encoder.weight``, ``rnn.weight_ih_l0``, ..., ``decoder.weight``,
  ``decoder.bias``), with seeded random weights (PyTorch's own initialisation of ``nn.LSTM``, and
  word_language_model's uniform(-0.1, 0.1) for the encoder and decoder), and ``torch/vocab.txt``: ``<eos>``,
  ``<unk>``, the large lexicon's words (so every agreement item and control sentence is in the vocabulary),
  then wordfreq's most frequent English words up to the size;
* ``gulordava/``: that checkpoint converted by ``python -m jaxmask.convert`` (run as a program, as a user would);
* ``search.txt`` and ``heldout.txt``: the built-in agreement items (search and held-out splits) written as
  Lakretz et al. (2019) task files, only those whose counterfactual ``--format=lakretz`` derives back exactly
  (the controller is the sentence's first noun).

Random weights get almost no item right, so time the main job on these with ``--only_known=false``
(docs/gulordava.md gives the command and the measured figures).

``--part=baselines`` times the unit-scoring baselines of ``--baselines=all`` on those files without running them
whole (at this size they take hours on 2 cores): one compiled call of each program is timed after its compile and
scaled by the number of such calls the method makes (``baseline_costs``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Sequence


from jaxmask import data, formats, grammar

VOCAB_SIZE, HIDDEN, LAYERS = 50_000, 650, 2


def vocabulary(size: int = VOCAB_SIZE) -> list[str]:
  """``<eos>``, ``<unk>``, the large lexicon's words, then wordfreq's top English words: ``size`` distinct words."""
  import wordfreq  # pylint: disable=import-outside-toplevel
  words = list(dict.fromkeys([data.EOS, data.UNK] + grammar.vocabulary(language="large")))
  seen = set(words)
  for w in wordfreq.top_n_list("en", 4 * size):
    if len(words) >= size:
      break
    if w.isascii() and w.isalpha() and w == w.lower() and w not in seen:
      words.append(w)
      seen.add(w)
  if len(words) < size:
    raise ValueError(f"wordfreq gave only {len(words)} distinct words; ask for a vocabulary of at most that.")
  return words


def state_dict(vocab_size: int = VOCAB_SIZE, hidden: int = HIDDEN, layers: int = LAYERS, seed: int = 0) -> dict:
  """A random ``RNNModel`` LSTM LM state dict (torch tensors), seeded: embedding size = hidden size, untied."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  rnn = torch.nn.LSTM(hidden, hidden, layers)
  state = {"encoder.weight": torch.empty(vocab_size, hidden).uniform_(-0.1, 0.1)}
  state.update({f"rnn.{k}": v.detach().clone() for k, v in rnn.state_dict().items()})
  state["decoder.weight"] = torch.empty(vocab_size, hidden).uniform_(-0.1, 0.1)
  state["decoder.bias"] = torch.zeros(vocab_size)
  return state


def lakretz_lines(pairs: Sequence[data.Pair]) -> list[str]:
  """The pairs whose counterfactual ``formats.read_lakretz`` derives back, as Lakretz task-file lines (two each)."""
  nouns, _ = formats.agreement_words()
  lines = []
  for i, p in enumerate(pairs):
    number = "singular" if p.condition.split("_")[-1][0] == "S" else "plural"
    if p.counterfactual is None or formats.subject_flipped(p.prefix, number, nouns) != tuple(p.counterfactual):
      continue
    words = " ".join(p.prefix)
    sentence = words[:1].upper() + words[1:]
    lines += [f"{sentence} {p.target}\t{p.condition}\tcorrect\tid{i}", f"{sentence} {p.foil}\t{p.condition}\twrong\tid{i}"]
  return lines


def write(output: str, vocab_size: int = VOCAB_SIZE, seed: int = 0, per_cell: int = 40) -> dict[str, str]:
  """Writes the checkpoint, its conversion and the two item files under ``output``; returns their paths."""
  import torch  # pylint: disable=import-outside-toplevel
  paths = {"torch": os.path.join(output, "torch", "model.pt"), "vocab": os.path.join(output, "torch", "vocab.txt"),
           "checkpoint": os.path.join(output, "gulordava"), "search": os.path.join(output, "search.txt"),
           "heldout": os.path.join(output, "heldout.txt")}
  os.makedirs(os.path.dirname(paths["torch"]), exist_ok=True)
  with open(paths["vocab"], "w", encoding="utf-8") as f:
    f.write("\n".join(vocabulary(vocab_size)) + "\n")
  torch.save(state_dict(vocab_size, seed=seed), paths["torch"])
  subprocess.run([sys.executable, "-m", "jaxmask.convert", f"--torch_checkpoint={paths['torch']}",
                  f"--vocab={paths['vocab']}", f"--output={paths['checkpoint']}"], check=True)
  for split, seed_of_split in (("search", 0), ("heldout", 1)):
    lines = lakretz_lines(grammar.agreement_items(per_cell, seed_of_split, split=split))
    with open(paths[split], "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")
    print(f"gulordava_size: wrote {len(lines) // 2} {split} items to {paths[split]}")
  return paths


def _seconds(fn) -> float:
  """Wall time of ``fn()`` (blocked) after one untimed call that compiles it."""
  import jax  # pylint: disable=import-outside-toplevel
  jax.block_until_ready(fn())
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def baseline_costs(output: str, rows: int = 64, ks: int = 11, sets: int = 330) -> dict[str, float]:
  """Seconds each unit-scoring baseline of the main job would take on ``output``'s checkpoint and items, scaled.

  single-unit effects: ``rows`` of its N + 1 gate vectors (over every search item, grouped by length) timed and
  scaled to N + 1; greedy patching: that pass once per unit added (max k = 32); Integrated Gradients: one
  gradient chunk x 33 path points; attribution patching and gradient x activation: one gradient each; the
  comparison's held-out margins: ``sets`` gate vectors (every method's sets at ``ks`` sizes, 20 random draws each).
  """
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxmask import attribution, checkpoints, experiment, interventions, objectives  # pylint: disable=import-outside-toplevel
  params, _, vocab = checkpoints.load(os.path.join(output, "gulordava"))
  items, _, _ = experiment.encode_pairs(formats.read_items(os.path.join(output, "search.txt"), "lakretz", vocab),
                                       vocab, "search", True)
  heldout, _, _ = experiment.encode_pairs(formats.read_items(os.path.join(output, "heldout.txt"), "lakretz", vocab),
                                         vocab, "heldout", True)
  n = int(params["layers"][0]["w_hh"].shape[1]) * len(params["layers"])
  eye = jnp.eye(n + 1, n, k=-1)[:rows]
  all_unit = _seconds(lambda: interventions.margins(params, items, eye, by_length=True)) * (n + 1) / rows
  start, end = interventions.span(items)
  chunk = interventions.rows_per_chunk(params, items.prefix.shape[0], end - start, backward=True)
  grad = _seconds(lambda: attribution.chunk_gradients(
      params, items, jnp.zeros((chunk, n)), "counterfactual", None, "h", objectives.flip_loss))
  held = _seconds(lambda: interventions.margins(params, heldout, eye)) * sets / rows
  return {"single_unit": all_unit, "greedy": 32 * all_unit, "integrated_gradients": grad * 33 / chunk,
          "attribution_patching": grad, "gradient_x_activation": grad, "heldout_margins": held,
          "gradient_chunk": chunk, "all_unit_pass": all_unit}


def _peak_gib(jitted, *args, **kwargs) -> float:
  """XLA's peak for one compiled program (arguments + outputs + temporaries - aliased), GiB; nothing is run."""
  m = jitted.lower(*args, **kwargs).compile().memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes) / 2 ** 30


def baseline_peaks(output: str, sets: int = 80) -> dict[str, float]:
  """XLA's peak (GiB) of the largest programs of the baselines step on ``output``'s checkpoint and items, compiled
  with the chunks the library picks: the all-unit margins pass, one gradient chunk (Integrated Gradients, attribution
  patching), the probe, and the control KL of ``sets`` sets (the side effects)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jaxmask import attribution, checkpoints, experiment, interventions, objectives, phenomena  # pylint: disable=import-outside-toplevel
  params, _, vocab = checkpoints.load(os.path.join(output, "gulordava"))
  pairs = formats.read_items(os.path.join(output, "search.txt"), "lakretz", vocab)
  items, kept, _ = experiment.encode_pairs(pairs, vocab, "search", True)
  n = int(params["layers"][0]["w_hh"].shape[1]) * len(params["layers"])
  start, end = interventions.span(items)
  chunk = interventions.rows_per_chunk(params, items.prefix.shape[0], end - start)
  out = {"all_unit_margins": _peak_gib(interventions.span_margins, params, items, jnp.eye(n + 1, n, k=-1),
                                       "counterfactual", None, "h", chunk=chunk, start=start, end=end)}
  chunk = interventions.rows_per_chunk(params, items.prefix.shape[0], end - start, backward=True)
  out["gradient_chunk"] = _peak_gib(attribution.chunk_gradients, params, items,
                                    jnp.zeros((chunk, n)), "counterfactual", None, "h", loss_fn=objectives.flip_loss)
  labels = jnp.asarray(phenomena.get("agreement").probe_labels(kept))
  out["probe"] = _peak_gib(attribution.fit_probe, params, items, labels)
  control = experiment.control_text(vocab, 50, 1, kept)
  rows, steps = control.tokens.shape
  out["control_effects"] = _peak_gib(interventions.control_effects_chunk, params, control,
                                     jnp.zeros((sets, n)), None, sites="h",
                                     chunk=max(1, min(32, 2 ** 25 // (rows * steps * len(vocab)))))
  return out


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  _OUTPUT = flags.DEFINE_string("output", None, "Directory for the checkpoint, its conversion and the items.",
                                required=True)
  _VOCAB_SIZE = flags.DEFINE_integer("vocab_size", VOCAB_SIZE, "Vocabulary size.")
  _SEED = flags.DEFINE_integer("seed", 0, "Seed of the random weights.")
  _PART = flags.DEFINE_enum("part", "write", ["write", "baselines", "memory"],
                                "Write the files, time the baselines on them, or compile the baselines' largest programs "
                                "and print XLA's peaks.")

  def main(argv):
    del argv
    if _PART.value in ("baselines", "memory"):
      print(json.dumps((baseline_costs if _PART.value == "baselines" else baseline_peaks)(_OUTPUT.value), indent=1))
    else:
      write(_OUTPUT.value, _VOCAB_SIZE.value, _SEED.value)

  app.run(main)
