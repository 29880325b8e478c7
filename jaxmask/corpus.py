"""The training text of an LM as packed rows of token ids: generated sentences -> ids -> whole-sentence rows.

Plain Python and numpy on the data side (it imports the generator, never the model or the optimiser).
"""

from __future__ import annotations

import numpy as np

from jaxmask import grammar


def tokenize(sentences: list[str], vocab: list[str]) -> list[list[int]]:
  """Word ids of space-separated sentences; words outside ``vocab`` become ``<unk>``."""
  index = {w: i for i, w in enumerate(vocab)}
  unk = index["<unk>"]
  return [[index.get(w, unk) for w in s.split()] for s in sentences]


def pack_rows(sentences: list[list[int]], row_length: int, eos: int) -> np.ndarray:
  """Packs whole sentences into rows ``<eos> s1 <eos> s2 <eos> ...`` of ``row_length + 1`` ids, padded with -1.

  Row r's inputs are ``rows[r, :-1]`` and its next-token targets ``rows[r, 1:]``; a sentence longer than
  ``row_length - 1`` words is dropped. Returns int32[R, row_length + 1].
  """
  rows, row = [], [eos]
  for s in sentences:
    if len(s) + 1 > row_length:
      continue
    if len(row) + len(s) + 1 > row_length + 1:
      rows.append(row + [-1] * (row_length + 1 - len(row)))
      row = [eos]
    row.extend(s)
    row.append(eos)
  if len(row) > 1:
    rows.append(row + [-1] * (row_length + 1 - len(row)))
  return np.asarray(rows, np.int32).reshape(-1, row_length + 1)


def build_corpus(config) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(vocabulary, training rows, validation rows) from the generator, deterministic in ``config.seed``.

  ``config`` is a ``train_lm.LMConfig`` (its lexicon, num_sentences, valid_sentences, row_length and seed).
  """
  vocab = grammar.vocabulary(config.lexicon)
  eos = vocab.index("<eos>")
  train_text = grammar.corpus(config.num_sentences, config.seed, split="train", language=config.lexicon)
  valid_text = grammar.corpus(config.valid_sentences, config.seed + 1_000_003, split="train", language=config.lexicon)
  return (vocab, pack_rows(tokenize(train_text, vocab), config.row_length, eos),
          pack_rows(tokenize(valid_text, vocab), config.row_length, eos))
