"""A Gulordava-size model and items for timing the main job end to end: a random-weight PyTorch checkpoint.

    python -m benchmarks.gulordava_size --output=/work/runs/gul [--seed=0] [--vocab_size=50000]

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
"""

from __future__ import annotations

import os
import subprocess
import sys
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
  nouns, _ = formats._agreement_words()  # pylint: disable=protected-access
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


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  _OUTPUT = flags.DEFINE_string("output", None, "Directory for the checkpoint, its conversion and the items.",
                                required=True)
  _VOCAB_SIZE = flags.DEFINE_integer("vocab_size", VOCAB_SIZE, "Vocabulary size.")
  _SEED = flags.DEFINE_integer("seed", 0, "Seed of the random weights.")

  def main(argv):
    del argv
    write(_OUTPUT.value, _VOCAB_SIZE.value, _SEED.value)

  app.run(main)
