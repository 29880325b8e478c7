"""The built-in evaluation items (agreement minimal pairs, Vig et al.'s gender templates) and how much of
the vendored evaluation sets the vocabulary covers."""

from __future__ import annotations

import importlib.resources
import random

from jaxmask import data
from jaxmask.grammar import constructions, heldout
from jaxmask.grammar import wordlists
from jaxmask.grammar.wordlists import S
from jaxmask.grammar.phrases import Generator

_LETTER = "SP"


def _cells(condition: str) -> list[tuple[int, ...]]:
  k = {**constructions.CONDITIONS, **constructions.EXTRA_CONDITIONS}[condition]
  return [tuple((c >> (k - 1 - i)) & 1 for i in range(k)) for c in range(2 ** k)]


def agreement_items(n_per_cell: int, seed: int, split: str = "heldout",
                    conditions: tuple[str, ...] | None = None, language: str = "small") -> list[data.Pair]:
  """Subject-verb agreement minimal pairs for every condition and cell, ``n_per_cell`` each.

  Condition names are ``{condition}_{cell}``; the cell gives the numbers (S/P) of the controller (the
  noun the target verb agrees with) first, then of the attractors in linear order (for sentComp, the
  main-clause subject), e.g. ``nounPP_SP`` = singular subject, plural attractor. The counterfactual
  flips only the controller noun. Every item's (controller noun, target verb) pair is reserved for
  ``split``, so "search" and "heldout" items share no such pair and training never contains one.
  All noun phrases are "the N" so that only the noun carries number. ``conditions`` defaults to every
  condition of ``language`` (:func:`conditions_of`). Items use the hand-curated words only, so the small language's
  conditions give the same items in both languages and every item is in both vocabularies.
  """
  if split not in heldout.RESERVED_PER_MILLE:
    raise ValueError(f"split must be 'search' or 'heldout', got {split!r}")
  lex = wordlists.lexicon()
  verbs = [(v.base, (v.third, v.base)) for v in lex.verbs] + [("be", ("is", "are"))]
  reserved = heldout.reserved_pairs(split)
  pools = {kind: [(noun, forms) for noun in nouns for lemma, forms in verbs if (noun[S], lemma) in reserved]
           for kind, nouns in (("animate", lex.animate), ("inanimate", lex.inanimate))}
  g = Generator(random.Random(f"agreement:{split}:{seed}"))
  pairs = []
  for condition in conditions or tuple(constructions.conditions_of(language)):
    pool = pools["inanimate" if condition.startswith("inanim") else "animate"]
    for cell in _cells(condition):
      name = f"{condition}_{''.join(_LETTER[n] for n in cell)}"
      seen = set()
      for _ in range(50 * n_per_cell):
        if len(seen) == n_per_cell:
          break
        noun, forms = g.choice(pool)
        words, flips = constructions.prefix(g, condition, cell, noun, the=True)
        target, foil = forms[cell[0]], forms[1 - cell[0]]
        if (tuple(words), target) in seen:
          continue
        seen.add((tuple(words), target))
        flipped = [flips.get(i, w) for i, w in enumerate(words)]
        pairs.append(data.Pair(tuple(words), target, foil, tuple(flipped), name, f"grammar:{split}"))
  return pairs


def gender_items(split: str = "heldout") -> list[data.Pair]:
  """Vig et al.'s 17 templates x Winogender occupations, with a man/woman counterfactual.

  Occupations are sorted by BLS % female and alternately assigned to "search" and "heldout" (30
  each), so both splits span the range. The target is the pronoun the occupation's statistics favour
  (she if % female >= 50), the foil the other one, and the counterfactual replaces the occupation with
  the noun of the foil's gender ("man" for a she-target). Condition: ``gender``; the antecedent's %
  female is :func:`pct_female_of`.
  """
  if split not in ("search", "heldout"):
    raise ValueError(f"split must be 'search' or 'heldout', got {split!r}")
  pct = wordlists.occupation_pct_female()
  ranked = sorted(wordlists.winogender_bls(), key=lambda w: (pct[w], w))
  chosen = ranked[split == "heldout"::2]
  pairs = []
  for template in wordlists.vig_templates():
    for occupation in chosen:
      she = pct[occupation] >= 50
      prefix = tuple(template.format(occupation).split())
      other = "man" if she else "woman"
      counterfactual = tuple(other if w == occupation else w for w in prefix)
      target, foil = ("she", "he") if she else ("he", "she")
      pairs.append(data.Pair(prefix, target, foil, counterfactual, "gender", f"grammar:{split}"))
  return pairs


def coverage() -> dict[str, float]:
  """How much of the vendored evaluation sets the vocabulary covers (fractions in [0, 1]).

  ``marvin_linzen_types``: word types of the Marvin & Linzen agreement pairs; ``winogender_occupations``;
  for each one-prefix BLiMP paradigm, ``blimp/<UID>_types`` (word types, case-folded),
  ``blimp/<UID>_scored`` (pairs whose target and foil are in the vocabulary, i.e. not skipped by
  :func:`data.encode`) and ``blimp/<UID>_no_unk`` (pairs with every word in the vocabulary).
  """
  vocab = set(wordlists.vocabulary())
  def fraction(words) -> float:
    words = set(words)
    return sum(w.lower() in vocab for w in words) / len(words)
  ml = data.load_marvin_linzen()
  result = {"marvin_linzen_types": fraction(w for p in ml for w in p.prefix + (p.target, p.foil)),
            "winogender_occupations": fraction(wordlists.winogender_bls())}
  for path in sorted(importlib.resources.files("jaxmask").joinpath("data", "blimp").iterdir()):
    if not path.name.endswith(".jsonl.gz"):
      continue
    try:
      pairs = data.load_blimp(str(path))
    except data.DataError:  # a two-prefix paradigm: not expressible as (prefix, target, foil)
      continue
    words = [p.prefix + (p.target, p.foil) for p in pairs]
    result[f"blimp/{pairs[0].condition}_types"] = fraction(w for ws in words for w in ws)
    result[f"blimp/{pairs[0].condition}_scored"] = sum(
        p.target.lower() in vocab and p.foil.lower() in vocab for p in pairs) / len(pairs)
    result[f"blimp/{pairs[0].condition}_no_unk"] = sum(
        all(w.lower() in vocab for w in ws) for ws in words) / len(words)
  return result
