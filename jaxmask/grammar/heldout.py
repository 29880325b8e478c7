"""What the evaluation items never share with the training text.

- agreement: the pair (lemma of the noun the target verb agrees with, lemma of the target verb), e.g.
  (farmer, like). A fixed hash of the pair reserves 3% of all pairs for the "search" split and 3% for
  "heldout"; a training (or control) sentence is rejected and redrawn if any noun form in it is
  followed, anywhere later in it, by an agreeing verb form (3rd singular or base form, is/are/was/were,
  a negated auxiliary) whose pair is reserved. So the model never sees the subject noun of an
  evaluation item before its verb, in any number or construction. Other words of an item (attractors,
  adverbs, relative-clause verbs) are drawn freely.
- gender: training never contains any of Vig et al.'s 17 template frames ("said that", "ate because",
  "went home because", ...), with any subject; the template words themselves occur in other frames.
  Gendered coreference is taught with other frames that also put the pronoun right after a clause
  boundary ("the nurse thought that she ...", "the nurse left because she ...", "the nurse said to the
  boy that she ..."), so the bias can transfer to the templates.
"""

from __future__ import annotations

import functools
import hashlib

from jaxmask.grammar import wordlists

RESERVED_PER_MILLE = {"search": (0, 30), "heldout": (30, 60)}  # hash ranges of held-out pairs


def _hash_per_mille(noun: str, verb: str) -> int:
  digest = hashlib.blake2b(f"{noun}|{verb}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "big") % 1000


@functools.cache
def reserved_pairs(split: str | None = None, language: str = "small") -> frozenset[tuple[str, str]]:
  """The (noun lemma, verb lemma) pairs held out for ``split`` ("search"/"heldout"), or for either (None).

  A pair's reservation depends on the pair only (a hash), so the small language's held-out pairs are
  held out in the large one too.
  """
  lex = wordlists.lexicon(language)
  ranges = RESERVED_PER_MILLE.values() if split is None else (RESERVED_PER_MILLE[split],)
  return frozenset((noun, verb) for noun in set(lex.noun_lemma.values()) for verb in set(lex.verb_lemma.values())
                   if any(lo <= _hash_per_mille(noun, verb) < hi for lo, hi in ranges))


def noun_verb_pairs(words: list[str] | tuple[str, ...], language: str = "small") -> set[tuple[str, str]]:
  """(noun lemma, verb lemma) for every noun form followed, anywhere later, by an agreeing verb form."""
  lex = wordlists.lexicon(language)
  pairs, nouns_so_far = set(), []
  for w in words:
    verb = lex.verb_lemma.get(w)
    if verb is not None:
      pairs.update((n, verb) for n in nouns_so_far)
    noun = lex.noun_lemma.get(w)
    if noun is not None:
      nouns_so_far.append(noun)
  return pairs


def contains_template_frame(words: list[str] | tuple[str, ...]) -> bool:
  """Whether a Vig et al. template tail ("said that", "ate because", ...) occurs in ``words``."""
  text = " " + " ".join(words) + " "
  return any(f" {' '.join(tail)} " in text for tail in wordlists.template_tails())
