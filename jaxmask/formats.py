"""Item file formats: one ``FORMATS`` entry per format that every command reading items takes as ``--format``.

jaxmask's TSV and the published sets: Marvin & Linzen (2018), BLiMP, Lakretz et al. (2019)'s number-agreement
task files (with the counterfactual x' derived from the lexicon where the words allow) and Gulordava et al.
(2018)'s colorlessgreen agreement sets. A new format is one reader and one entry.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

from jaxmask import data, files
from jaxmask.grammar import wordlists

_DETERMINERS = {"this": "these", "these": "this", "that": "those", "those": "that"}  # number-marked, flipped too


@functools.cache
def agreement_words() -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
  """({noun form: (its other-number form, "singular" | "plural")}, {agreeing verb form: its number}) of the
  large lexicon (a superset of the small one), the words a counterfactual can be derived from."""
  lex = wordlists.lexicon("large")
  nouns = {sg: (pl, "singular") for sg, pl in lex.all_nouns}
  nouns.update({pl: (sg, "plural") for sg, pl in lex.all_nouns})
  verbs = {v.third: "singular" for v in lex.verbs} | {v.base: "plural" for v in lex.verbs}
  verbs.update({w: "singular" for w in ("is", "was")} | {w: "plural" for w in ("are", "were")})
  for singular, plural in wordlists.NEGATED.values():
    verbs.update({singular: "singular", plural: "plural"})
  return nouns, verbs


def subject_flipped(prefix: Sequence[str], number: str, nouns: dict[str, tuple[str, str]],
                    vocab: Sequence[str] | None = None) -> tuple[str, ...] | None:
  """``prefix`` with its subject's number flipped, or None where the words do not allow it.

  The subject is the sentence's first or second word (after a determiner), a noun form of ``number`` in
  ``nouns`` (:func:`agreement_words`' first map); it becomes its other form, and a number-marked determiner
  before it ("this", "those") flips too. None when neither word is such a noun (an unknown subject is never
  mistaken for a later noun, the attractor) or, with ``vocab``, when a new word is out of the vocabulary.
  """
  index = {w: i for i, w in enumerate(vocab)} if vocab is not None else None
  words = list(prefix)
  i = next((k for k, w in enumerate(words[:2]) if w.lower() in nouns), None)
  if i is None or nouns[words[i].lower()][1] != number:
    return None
  changed = [(i, nouns[words[i].lower()][0])]
  if i == 1 and words[0].lower() in _DETERMINERS:
    changed.append((0, _DETERMINERS[words[0].lower()]))
  for j, new in changed:
    words[j] = new.capitalize() if words[j][:1].isupper() else new
    if index is not None and data.normalize(words[j], index) is None:
      return None
  return tuple(words)


def read_lakretz(path: str, vocab: Sequence[str] | None = None) -> list[data.Pair]:
  """Lakretz et al. (2019)'s number-agreement files as Pairs, with the counterfactual derived where possible.

  One sentence per line, ``sentence<TAB>condition<TAB>correct|wrong<TAB>id``: the two lines of a pair share
  their id and differ only in the final word, the verb. The prefix is the words before it, the target the
  correct line's verb, the foil the wrong line's; the condition (``singular``, ``singular_plural``: the
  subject's number, then the attractor's) is kept. The counterfactual (the subject's number flipped) is not
  in the file: its number comes from the correct verb (the lexicon's verb forms, else the condition's first
  part), the flip from :func:`subject_flipped` with the lexicon's noun forms, limited to ``vocab`` if given.
  Pairs without one keep ``counterfactual=None``; evaluate and the main job report how many have one.
  """
  nouns, verbs = agreement_words()
  lines = []
  for n, line in enumerate(files.read_text(path, data.DataError).split("\n"), start=1):
    if not line.strip():
      continue
    cells = [c.strip() for c in line.rstrip("\r\n").split("\t")]
    if len(cells) != 4 or cells[2] not in ("correct", "wrong") or len(cells[0].split()) < 2:
      raise data.DataError(f"{path}, line {n}: expected sentence<TAB>condition<TAB>correct|wrong<TAB>id with "
                           f"a sentence of two or more words, found {line.strip()[:60]!r}; fix the line.")
    lines.append((n, cells))
  if not lines:
    raise data.DataError(f"{path}, line 1: the file is empty; pass a Lakretz number-agreement task file (two lines a pair).")
  groups: list[list[tuple[int, list[str]]]] = []
  for n, cells in lines:
    if groups and groups[-1][0][1][3] == cells[3]:
      groups[-1].append((n, cells))
    else:
      groups.append([(n, cells)])
  pairs = []
  for group in groups:
    (n, first), where = group[0], f"{path}, line {group[0][0]}"
    if len(group) != 2 or {c[2] for _, c in group} != {"correct", "wrong"}:
      raise data.DataError(f"{where}: pair {first[3]} has {len(group)} line(s) "
                           f"({', '.join(c[2] for _, c in group)}); a pair is two consecutive lines with the same "
                           "id, one correct and one wrong.")
    by_label = {c[2]: c[0].split() for _, c in group}
    good, bad = by_label["correct"], by_label["wrong"]
    if len(good) != len(bad) or good[:-1] != bad[:-1] or good[-1] == bad[-1]:
      raise data.DataError(f"{where}: the two sentences of pair {first[3]} must differ only in their final word "
                           "(the verb); fix the pair.")
    number = verbs.get(good[-1].lower()) or first[1].split("_")[0]
    pairs.append(data.Pair(tuple(good[:-1]), good[-1], bad[-1], subject_flipped(good[:-1], number, nouns, vocab),
                           first[1], f"{os.path.basename(path)}:{n}"))
  return pairs


_COLORLESSGREEN = ("pattern", "constr_id", "sent_id", "form", "class", "type", "prefix")


def read_colorlessgreen(path: str) -> list[data.Pair]:
  """Gulordava et al. (2018)'s agreement sets (colorlessgreenRNNs' ``generated.tab``) as Pairs.

  A tab-separated file with a header (``pattern constr_id sent_id correct_number form class type prefix
  n_attr punct freq len_context len_prefix sent``) and two consecutive rows per item, ``class`` correct and
  wrong, with the same ``pattern``, ``constr_id``, ``sent_id`` and ``prefix`` (the words before the verb):
  the target is the correct row's ``form``, the foil the wrong row's. ``condition`` is ``type/pattern``
  (``type``: original or generated nonce sentence). No counterfactual.
  """
  rows = [(n, row) for n, row in data.tsv_rows(path) if any(cell.strip() for cell in row)]
  header = [cell.strip() for cell in rows[0][1]] if rows else []
  missing = [c for c in _COLORLESSGREEN if c not in header]
  if missing:
    raise data.DataError(f"{path}, line 1: the header lacks the column(s) {', '.join(missing)}; pass a "
                         "colorlessgreen agreement file (pattern constr_id sent_id correct_number form class ...).")
  column = {name: header.index(name) for name in _COLORLESSGREEN}
  items = []
  for n, row in rows[1:]:
    cells = {name: row[i].strip() for name, i in column.items()} if len(row) == len(header) else {}
    if not cells or cells["class"] not in ("correct", "wrong") or len(cells["form"].split()) != 1 \
        or not cells["prefix"].split():
      raise data.DataError(f"{path}, line {n}: expected {len(header)} tab-separated fields with class correct or "
                           f"wrong, a one-word form and a non-empty prefix, found {len(row)} field(s); fix the row.")
    items.append((n, cells))
  if len(items) % 2:
    raise data.DataError(f"{path}, line {items[-1][0]}: this row has no second row for its item (odd number of "
                         "rows); every item is a correct and a wrong row.")
  pairs = []
  for (n, a), (_, b) in zip(items[::2], items[1::2]):
    same = all(a[k] == b[k] for k in ("pattern", "constr_id", "sent_id", "prefix"))
    if not same or {a["class"], b["class"]} != {"correct", "wrong"}:
      raise data.DataError(f"{path}, line {n}: this row and the next must be one item (same pattern, constr_id, "
                           "sent_id and prefix), one correct and one wrong; fix the pairing.")
    good, bad = (a, b) if a["class"] == "correct" else (b, a)
    pairs.append(data.Pair(tuple(a["prefix"].split()), good["form"], bad["form"], None,
                           f"{a['type']}/{a['pattern']}", f"{os.path.basename(path)}:{n}"))
  return pairs


@dataclasses.dataclass(frozen=True)
class Format:
  """An item file format: ``read(path, vocab or None) -> pairs`` (``vocab`` limits derived counterfactuals)."""
  read: Callable[[str, Sequence[str] | None], list[data.Pair]]
  description: str


FORMATS: dict[str, Format] = {
    "tsv": Format(lambda path, vocab: data.read_tsv(path), "jaxmask's minimal-pair TSV (module docstring)"),
    "marvin_linzen": Format(lambda path, vocab: data.load_marvin_linzen(path), "Marvin & Linzen (2018) TSV"),
    "blimp": Format(lambda path, vocab: data.load_blimp(path), "one BLiMP paradigm, JSON lines"),
    "lakretz": Format(read_lakretz, "Lakretz et al. (2019) task file; counterfactuals derived"),
    "colorlessgreen": Format(lambda path, vocab: read_colorlessgreen(path), "Gulordava et al. (2018) agreement set"),
}


def read_items(path: str, fmt: str = "tsv", vocab: Sequence[str] | None = None) -> list[data.Pair]:
  """The pairs of an item file in a ``FORMATS`` format; DataError (one sentence) for a bad flag, file or line."""
  if fmt not in FORMATS:
    raise data.DataError(f"--format={fmt} is not known; use one of {', '.join(FORMATS)}.")
  if not os.path.isfile(path):
    raise data.DataError(f"{path}: no such file; pass the path of a --format={fmt} item file.")
  return FORMATS[fmt].read(path, vocab)

