r"""Minimal pairs and text for a model with a subword tokenizer (an imported GPT-2), following GPT-2's convention.

A prefix is its words joined by single spaces and tokenized once; a word that follows a space is tokenized
with that space (" runs"), so a target or foil is the tokens of " " + word. The counterfactual prefix
must tokenize to as many tokens as the prefix (it is aligned token for token); pairs whose prefixes do
not are skipped and counted. Every row starts with ``<|endoftext|>`` when the tokenizer has it (GPT-2's
document boundary, as ``<eos>`` for the LSTMs). Checkpoints with a word-level tokenizer (and every LSTM)
use data.py's word lookup instead.

A target or foil may be several tokens: the margin is then the difference of the two words' summed
log-probabilities, :math:`\sum_k \log p(y_k \mid x, y_{<k}) - \sum_k \log p(y'_k \mid x, y'_{<k})` (the usual
BLiMP-style score), under intervention too: ``Items.target_rest`` / ``foil_rest`` hold each word's tokens after
its first, and the engine runs x followed by each word's tokens, replacing the gated units at every step of
both runs (``interventions.margin``; with the counterfactual replacement, r comes from x' followed by the same
tokens). The search's flip objective, the flip rates of sets, the known-item filter and the baselines all read
that margin; ``encode`` counts the items with such a word as ``multi_token_items``. When every word is one token
the fields are None and the margin is logit(y) - logit(y'), as before. The merged control KL
(:func:`control`) merges only one-token words: a several-token word has no single vocabulary entry to merge.
:func:`summed_margins` scores any pairs, aligned or not, without intervention.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmask import data
from jaxmask.items import Control, Items

BOS = "<|endoftext|>"


def tokenizer_of(directory: str, config: dict[str, Any]):
  """The checkpoint's subword ``tokenizers.Tokenizer`` (DIR/tokenizer.json), or None for word-level vocabularies."""
  if not config.get("tokenizer"):
    return None
  path = os.path.join(directory, config["tokenizer"])
  if not os.path.isfile(path):
    raise data.DataError(f"{path} does not exist; re-create the checkpoint with python -m jaxmask.convert --input.")
  with open(path, encoding="utf-8") as f:
    if json.load(f).get("model", {}).get("type") == "WordLevel":
      return None
  import tokenizers  # pylint: disable=import-outside-toplevel
  return tokenizers.Tokenizer.from_file(path)


def _ids(tokenizer, text: str) -> list[int]:
  return tokenizer.encode(text, add_special_tokens=False).ids


def word_ids(tokenizer, word: str) -> list[int]:
  """The tokens of a word that follows a space: those of " " + word."""
  return _ids(tokenizer, " " + word)


def prefix_ids(tokenizer, words) -> list[int]:
  """``<|endoftext|>`` (when the tokenizer has it), then the tokens of the words joined by single spaces."""
  bos = tokenizer.token_to_id(BOS)
  return ([] if bos is None else [bos]) + _ids(tokenizer, " ".join(words))


def encode(pairs: list[data.Pair], tokenizer, max_len: int | None = None) -> tuple[Items, list[int], dict]:
  """Turns pairs into Items with a subword tokenizer; the contract of ``data.encode``.

  Returns:
    (items, kept, stats): ``kept[b]`` is the index in ``pairs`` of row b; ``stats`` is ``{"items",
    "skipped_oov": 0 (a byte-level tokenizer has no unknown words), "multi_token_items" (kept items whose target
    or foil is several tokens, scored by summed log-probabilities), "skipped_misaligned", "unk_tokens": 0}``.
    ``items.target_rest`` / ``foil_rest`` are None unless some kept item has a several-token word.
  """
  rows, kept, misaligned = [], [], 0
  for i, p in enumerate(pairs):
    target, foil = word_ids(tokenizer, p.target), word_ids(tokenizer, p.foil)
    if not target or not foil:
      raise data.DataError(f"{p.source or f'pair {i}'}: an empty target or foil.")
    x = prefix_ids(tokenizer, p.prefix)
    x_cf = x if p.counterfactual is None else prefix_ids(tokenizer, p.counterfactual)
    if len(x_cf) != len(x):
      misaligned += 1
      continue
    rows.append((x, x_cf, target, foil))
    kept.append(i)
  width = max((len(r[0]) for r in rows), default=1) if max_len is None else max_len
  pad = rows[0][0][0] if rows else 0
  prefix = np.full((len(rows), width), pad, np.int32)
  counterfactual = np.full((len(rows), width), pad, np.int32)
  for b, (x, x_cf, _, _) in enumerate(rows):
    if len(x) > width:
      raise data.DataError(f"{pairs[kept[b]].source or f'pair {kept[b]}'}: {len(x)} tokens exceed max_len={width}; "
                           f"raise max_len or shorten the prefix.")
    prefix[b, :len(x)], counterfactual[b, :len(x)] = x, x_cf
  rest = max((len(w) - 1 for r in rows for w in r[2:]), default=0)
  rests = {}
  if rest:
    for name, column in (("target_rest", 2), ("foil_rest", 3)):
      tokens = np.full((len(rows), rest), -1, np.int32)
      for b, r in enumerate(rows):
        tokens[b, :len(r[column]) - 1] = r[column][1:]
      rests[name] = jnp.asarray(tokens)
  items = Items(prefix=jnp.asarray(prefix), counterfactual=jnp.asarray(counterfactual),
                length=jnp.asarray([len(r[0]) for r in rows], jnp.int32),
                target=jnp.asarray([r[2][0] for r in rows], jnp.int32),
                foil=jnp.asarray([r[3][0] for r in rows], jnp.int32), **rests)
  multi = sum(len(r[2]) > 1 or len(r[3]) > 1 for r in rows)
  return items, kept, {"items": len(rows), "skipped_oov": 0, "multi_token_items": multi,
                       "skipped_misaligned": misaligned, "unk_tokens": 0}


def control(tokenizer, sentences: list[str], pairs: list[data.Pair], vocab_size: int) -> Control:
  """Control text rows (``prefix_ids`` of each sentence) and the merged-KL classes of the pairs' single-token words
  (a several-token word is not merged: no vocabulary entry stands for it)."""
  rows = [prefix_ids(tokenizer, s.split()) for s in sentences]
  width = max(map(len, rows))
  tokens = np.zeros((len(rows), width), np.int32)
  for b, r in enumerate(rows):
    tokens[b, :len(r)] = r
  classes = None
  if pairs:
    words = sorted({w for p in pairs for w in (p.target, p.foil)})
    ids = {w: word_ids(tokenizer, w) for w in words}
    vocab = [f"<{i}>" for i in range(vocab_size)]
    for w, t in ids.items():
      if len(t) == 1:
        vocab[t[0]] = w
    classes = jnp.asarray(data.outcome_classes(list(pairs), vocab))
  return Control(tokens=jnp.asarray(tokens), length=jnp.asarray([len(r) for r in rows], jnp.int32), classes_V=classes)


@jax.jit
def _log_probs(params: dict, tokens_BxT: jax.Array) -> jax.Array:
  from jaxmask import models  # pylint: disable=import-outside-toplevel
  return jax.nn.log_softmax(models.of_params(params).apply(params, tokens_BxT), axis=-1)


def summed_margins(params: dict, tokenizer, pairs: list[data.Pair]) -> np.ndarray:
  r"""Each pair's :math:`\sum_i \log p(y_i \mid x, y_{<i}) - \sum_j \log p(y'_j \mid x, y'_{<j})` over the
  tokens of " " + target and " " + foil (without intervention): float32[len(pairs)]."""
  rows, spans = [], []
  for p in pairs:
    x = prefix_ids(tokenizer, p.prefix)
    for word in (p.target, p.foil):
      y = word_ids(tokenizer, word)
      rows.append(x + y)
      spans.append((len(x), len(y)))
  width = max(map(len, rows))
  tokens = np.zeros((len(rows), width), np.int32)
  for b, r in enumerate(rows):
    tokens[b, :len(r)] = r
  log_p = np.asarray(_log_probs(params, jnp.asarray(tokens)))
  scores = np.asarray([sum(log_p[b, start - 1 + k, rows[b][start + k]] for k in range(n))
                       for b, (start, n) in enumerate(spans)], np.float32)
  return scores[0::2] - scores[1::2]
