"""Minimal pairs: the TSV format, loaders for published sets, the tokenizer rule and encoding to Items.

A minimal pair is (x, y, y') and optionally an aligned counterfactual x': the model should score the
target y above the foil y' after the prefix x. Users bring their own pairs as a UTF-8 TSV with a header
row naming the columns ``prefix``, ``target``, ``foil`` and optionally ``counterfactual`` and
``condition``; words are separated by single spaces. Published formats are read directly (``formats.py``:
every command that reads items takes ``--format``). Published evaluation sets ship with the package under
``jaxmask/data/`` (see ``jaxmask/data/ATTRIBUTION.md``).

Tokenizer (the one rule, in :func:`normalize`): a word maps to its exact vocabulary entry if there is
one, else to the entry for its lower-cased form, else it is out of vocabulary. So "The athlete" and
"the athlete" both work with a lower-case vocabulary, and a cased vocabulary keeps its distinctions.
A final period is a word of its own (" ."), never part of the last word.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import io
import json
import os

import jax.numpy as jnp
import numpy as np

from jaxmask import files
from jaxmask.items import Items

EOS = "<eos>"
UNK = "<unk>"

_COLUMNS = ("prefix", "target", "foil", "counterfactual", "condition")
_REQUIRED = ("prefix", "target", "foil")


class DataError(ValueError):
  """Bad input data; the message is one sentence naming the file and line and what to do."""


@dataclasses.dataclass(frozen=True)
class Pair:
  """One minimal pair.

  Attributes:
    prefix: the words of x.
    target: y, the word that should follow x.
    foil: y', the competing word (the one that fits the counterfactual x').
    counterfactual: x', aligned with x (same number of words), or None.
    condition: a label for per-condition results, e.g. "nounPP_SP".
    source: provenance for messages, e.g. "items.tsv:12".
  """
  prefix: tuple[str, ...]
  target: str
  foil: str
  counterfactual: tuple[str, ...] | None = None
  condition: str = ""
  source: str = ""


def vendored(*parts: str) -> str:
  """The path of a file shipped under ``jaxmask/data/``, e.g. ``vendored("blimp", "x.jsonl.gz")``."""
  return str(importlib.resources.files("jaxmask").joinpath("data", *parts))


def tsv_rows(path: str) -> list[tuple[int, list[str]]]:
  """(line number, cells) of every row of a tab-separated UTF-8 file (gzipped if .gz); DataError naming the
  file and line if it is not one."""
  reader = csv.reader(io.StringIO(files.read_text(path, DataError), newline=""), delimiter="\t",
                      quoting=csv.QUOTE_NONE)
  rows = []
  try:
    for row in reader:
      rows.append((reader.line_num, row))
  except csv.Error as e:
    raise DataError(f"{path}, line {reader.line_num}: not readable as tab-separated text ({e}); fix the "
                    f"line.") from None
  return rows


def read_tsv(path: str) -> list[Pair]:
  """Reads a minimal-pair TSV (optionally gzipped); raises DataError naming the file and line on bad input."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such file; pass the path of a minimal-pair TSV.")
  numbered = tsv_rows(path)
  rows = [row for _, row in numbered]
  if not rows or not any(cell.strip() for cell in rows[0]):
    raise DataError(f"{path}, line 1: the file is empty; it needs a header row with the columns "
                    "prefix, target, foil [, counterfactual] [, condition].")
  header = [cell.strip() for cell in rows[0]]
  missing = [c for c in _REQUIRED if c not in header]
  if missing:
    raise DataError(f"{path}, line 1: the header lacks the column(s) {', '.join(missing)}; it must name "
                    f"prefix, target, foil (tab-separated), and has {header}.")
  column = {name: header.index(name) for name in _COLUMNS if name in header}
  pairs = []
  for n, row in numbered[1:]:
    if not any(cell.strip() for cell in row):
      continue
    where = f"{path}, line {n}"
    if len(row) != len(header):
      raise DataError(f"{where}: expected {len(header)} tab-separated fields as in the header, found "
                      f"{len(row)}; fix the row's tabs.")
    cells = {name: row[i].strip() for name, i in column.items()}
    prefix = tuple(cells["prefix"].split())
    if not prefix:
      raise DataError(f"{where}: the prefix is empty; give at least one word.")
    for name in ("target", "foil"):
      if len(cells[name].split()) != 1:
        raise DataError(f"{where}: the {name} must be exactly one word, got {cells[name]!r}.")
    counterfactual = tuple(cells.get("counterfactual", "").split()) or None
    if counterfactual is not None and len(counterfactual) != len(prefix):
      raise DataError(f"{where}: the counterfactual has {len(counterfactual)} words but the prefix has "
                      f"{len(prefix)}; they must be aligned word for word.")
    pairs.append(Pair(prefix, cells["target"], cells["foil"], counterfactual,
                      cells.get("condition", ""), f"{os.path.basename(path)}:{n}"))
  if not pairs:
    raise DataError(f"{path}, line 2: the file has a header but no pairs; add one pair per line.")
  return pairs


def write_tsv(path: str, pairs: list[Pair]) -> None:
  """Writes pairs in the minimal-pair TSV format (the counterfactual column only if some pair has one)."""
  with_cf = any(p.counterfactual is not None for p in pairs)
  columns = ["prefix", "target", "foil"] + (["counterfactual"] if with_cf else []) + ["condition"]
  lines = ["\t".join(columns)]
  for p in pairs:
    cells = [" ".join(p.prefix), p.target, p.foil]
    if with_cf:
      cells.append(" ".join(p.counterfactual or ()))
    lines.append("\t".join(cells + [p.condition]))
  files.write_text(path, "\n".join(lines) + "\n")


def load_marvin_linzen(path: str | None = None, tasks: list[str] | None = None) -> list[Pair]:
  """Marvin & Linzen (2018) agreement pairs as Pairs, from their TSV (default: the vendored one).

  Each row's grammatical and ungrammatical sentences differ in one word; the prefix is the words
  before it, the target the grammatical word and the foil the ungrammatical one. ``condition`` is
  ``task/cell``, e.g. ``prep_anim/sing_MS_MV_plur_ES``. No counterfactual (the published pairs flip
  the verb, not the subject).

  Args:
    path: a TSV with columns task, condition, grammatical, ungrammatical (gzipped or not).
    tasks: keep only these tasks (e.g. ["simple_agrmt", "prep_anim"]); None keeps all.
  """
  path = path or vendored("marvin_linzen2018", "marvin_linzen2018_agreement.tsv.gz")
  name = os.path.basename(path)
  pairs = []
  rows = tsv_rows(path)
  if not rows or rows[0][1][:4] != ["task", "condition", "grammatical", "ungrammatical"]:
    raise DataError(f"{path}, line 1: expected the header task, condition, grammatical, ungrammatical; "
                    "pass a Marvin & Linzen TSV.")
  for n, row in rows[1:]:
    if len(row) < 4:
      raise DataError(f"{path}, line {n}: expected at least 4 tab-separated fields, found {len(row)}.")
    if tasks is not None and row[0] not in tasks:
      continue
    good, bad = row[2].split(), row[3].split()
    i = next((k for k, (g, b) in enumerate(zip(good, bad)) if g != b), len(good))
    if len(good) != len(bad) or i == len(good) or good[i + 1:] != bad[i + 1:]:
      raise DataError(f"{path}, line {n}: the two sentences must differ in exactly one word.")
    pairs.append(Pair(tuple(good[:i]), good[i], bad[i], None, f"{row[0]}/{row[1]}", f"{name}:{n}"))
  return pairs


def load_blimp(path: str) -> list[Pair]:
  """BLiMP pairs as Pairs, from one paradigm's JSON-lines file (gzipped or not); condition = the UID.

  Uses the one-prefix fields (``one_prefix_prefix``, ``one_prefix_word_good``, ``one_prefix_word_bad``).
  Paradigms scored only by the two-prefix method (the two sentences differ before the critical word,
  e.g. ``regular_plural_subject_verb_agreement_2``) have no such fields: they are not minimal pairs
  in this format, and a file without any one-prefix item raises DataError.
  """
  pairs = []
  for n, line in enumerate(files.read_text(path, DataError).split("\n"), start=1):
    if not line.strip():
      continue
    try:
      item = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}, line {n}: not valid JSON ({e.msg}); pass a BLiMP .jsonl file.") from None
    except (ValueError, RecursionError) as e:  # an integer of thousands of digits, nesting too deep
      raise DataError(f"{path}, line {n}: not readable JSON ({type(e).__name__}); pass a BLiMP .jsonl file.") from None
    if not isinstance(item, dict):
      raise DataError(f"{path}, line {n}: expected a JSON object per line, got a {type(item).__name__}; pass a "
                      f"BLiMP .jsonl file.")
    if "one_prefix_prefix" not in item:
      continue
    fields = [item.get(k) for k in ("one_prefix_prefix", "one_prefix_word_good", "one_prefix_word_bad")]
    if not all(isinstance(v, str) for v in fields):
      raise DataError(f"{path}, line {n}: one_prefix_prefix, one_prefix_word_good and one_prefix_word_bad must "
                      f"be strings; fix the item.")
    pairs.append(Pair(tuple(fields[0].split()), fields[1], fields[2], None, str(item.get("UID", "")),
                      f"{os.path.basename(path)}:{n}"))
  if not pairs:
    raise DataError(f"{path}, line 1: no item has one_prefix_prefix (two-prefix-only paradigm or empty "
                    "file); pass a one-prefix BLiMP paradigm.")
  return pairs


def normalize(word: str, vocab_index: dict[str, int]) -> int | None:
  """The tokenizer rule: the exact entry, else the lower-cased word's entry, else None (out of vocabulary)."""
  index = vocab_index.get(word)
  return index if index is not None else vocab_index.get(word.lower())


def encode(pairs: list[Pair], vocab: list[str], prepend_eos: bool = True,
           max_len: int | None = None) -> tuple[Items, list[int], dict]:
  """Turns pairs into Items for a vocabulary.

  Pairs whose target or foil is out of vocabulary are skipped; other out-of-vocabulary words map to
  ``<unk>``. With ``prepend_eos`` every row starts with ``<eos>``, so a sentence is read from the model's
  initial state as if it followed a sentence boundary (length = 1 + len(prefix)). Rows are
  right-padded with the ``<eos>`` id. Without a counterfactual, the counterfactual row is the prefix.

  Args:
    pairs: the minimal pairs.
    vocab: the model's words, index = token id; must contain ``<eos>`` (and ``<unk>`` if any prefix
      word is out of vocabulary).
    prepend_eos: put ``<eos>`` before each prefix.
    max_len: the padded width T; None uses the longest row. A longer row raises DataError.

  Returns:
    (items, kept, stats): ``kept[b]`` is the index in ``pairs`` of row b; ``stats`` is
    ``{"items": rows, "skipped_oov": pairs skipped, "unk_tokens": prefix and counterfactual words
    mapped to <unk>}``.
  """
  index = {w: i for i, w in enumerate(vocab)}
  if EOS not in index:
    raise DataError(f"the vocabulary has no {EOS} token; use the vocabulary the model was trained with.")
  eos, unk = index[EOS], index.get(UNK)
  rows, kept, skipped, unk_tokens = [], [], 0, 0
  for i, p in enumerate(pairs):
    target, foil = normalize(p.target, index), normalize(p.foil, index)
    if target is None or foil is None:
      skipped += 1
      continue
    encoded = []
    for words in (p.prefix,) if p.counterfactual is None else (p.prefix, p.counterfactual):
      ids = [normalize(w, index) for w in words]
      if None in ids and unk is None:
        raise DataError(f"{p.source or f'pair {i}'}: a prefix word is out of vocabulary and the "
                        f"vocabulary has no {UNK}; add {UNK} to the vocabulary.")
      unk_tokens += ids.count(None)
      encoded.append(([eos] if prepend_eos else []) + [unk if t is None else t for t in ids])
    rows.append((encoded[0], encoded[-1], target, foil))
    kept.append(i)
  width = max((len(r[0]) for r in rows), default=1) if max_len is None else max_len
  prefix = np.full((len(rows), width), eos, np.int32)
  counterfactual = np.full((len(rows), width), eos, np.int32)
  for b, (x, x_cf, _, _) in enumerate(rows):
    if len(x) > width:
      raise DataError(f"{pairs[kept[b]].source or f'pair {kept[b]}'}: {len(x)} tokens exceed "
                      f"max_len={width}; raise max_len or shorten the prefix.")
    prefix[b, :len(x)] = x
    counterfactual[b, :len(x_cf)] = x_cf
  items = Items(
      prefix=jnp.asarray(prefix), counterfactual=jnp.asarray(counterfactual),
      length=jnp.asarray([len(r[0]) for r in rows], jnp.int32),
      target=jnp.asarray([r[2] for r in rows], jnp.int32),
      foil=jnp.asarray([r[3] for r in rows], jnp.int32))
  return items, kept, {"items": len(rows), "skipped_oov": skipped, "unk_tokens": unk_tokens}


def outcome_classes(pairs: list[Pair], vocab: list[str]) -> np.ndarray:
  """int32[V]: each word's class for the merged control KL, the target and foil of every pair in one class.

  Classes are the connected groups of the graph whose edges are the (target, foil) pairs, so a word in
  several pairs ("her" in her/his and her/him) joins them all; a class's id is its smallest token id,
  and a word in no pair is a class of its own. Out-of-vocabulary targets and foils are ignored.
  """
  index = {w: i for i, w in enumerate(vocab)}
  parent = list(range(len(vocab)))

  def root(i: int) -> int:
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  for p in pairs:
    a, b = normalize(p.target, index), normalize(p.foil, index)
    if a is not None and b is not None:
      ra, rb = root(a), root(b)
      parent[max(ra, rb)] = min(ra, rb)
  return np.asarray([root(i) for i in range(len(vocab))], np.int32)
