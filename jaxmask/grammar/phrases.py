"""Phrases from one random stream: determiners, noun, prepositional and verb phrases, each a list of words.

Determiners are "the" 70% of the time; the others ("a", "these", "many", "two", "my", ...) also carry
number. In the small language every word is drawn uniformly; in the large one every open-class word list
is drawn by its words' wordfreq frequencies (Zipfian).
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from jaxmask.grammar import wordlists
from jaxmask.grammar.wordlists import P, S, Verb


def agree(verb: Verb, number: int) -> str:
  """The verb form that agrees with a subject of ``number``: 3rd singular or base form."""
  return verb.third if number == S else verb.base


def _cumulative_frequencies(seq, frequency: dict[str, float]) -> list[float] | None:
  """Cumulative word frequencies of a word list (words, (sg, pl) or (name, gender) tuples, verbs); None
  when some entry has no frequency (then the list is drawn uniformly)."""
  total, cum = 0.0, []
  for entry in seq:
    word = entry.base if isinstance(entry, Verb) else entry if isinstance(entry, str) else entry[0]
    if word not in frequency:
      return None
    total += frequency[word]
    cum.append(total)
  return cum


class Generator:
  """Builds phrases from one random stream; every phrase method returns a list of words."""

  def __init__(self, rng: random.Random, language: str = "small"):
    self.rng = rng
    self.language = language
    self.lex = wordlists.lexicon(language)
    self.pct = wordlists.occupation_pct_female()
    self._cum_weights: dict[int, list[float] | None] = {}

  def uniform(self, seq):
    return seq[self.rng.randrange(len(seq))]

  def choice(self, seq):
    """A uniform draw in the small language; in the large one, a word list is drawn by word frequency."""
    if self.lex.frequency is None:
      return self.uniform(seq)
    key = id(seq)
    if key not in self._cum_weights:
      self._cum_weights[key] = _cumulative_frequencies(seq, self.lex.frequency)
    cum = self._cum_weights[key]
    return self.uniform(seq) if cum is None else self.rng.choices(seq, cum_weights=cum)[0]

  def pick(self, table: Sequence[tuple[float, Callable]]) -> Callable:
    """One uniform draw r, then the first entry of a (cumulative probability, value) table with r below it."""
    r = self.rng.random()
    return next(value for bound, value in table if r < bound)

  def number(self) -> int:
    return self.rng.randrange(2)

  def det(self, number: int, next_word: str) -> list[str]:
    r = self.rng.random()
    if r < 0.7:
      return ["the"]
    if r < 0.8:
      return [self.choice(wordlists.DET_ANY)]
    if number == P and r < 0.83:
      return [self.choice(self.lex.numbers)]
    word = self.choice(wordlists.DET_SG if number == S else wordlists.DET_PL)
    return ["an" if word == "a" and next_word[0] in "aeiou" else word]

  def np(self, number: int, nouns=None, the: bool = False) -> list[str]:
    """A noun phrase; ``the=True`` gives the bare "the N" used in evaluation items."""
    noun = self.choice(nouns or self.lex.all_nouns)[number]
    if the:
      return ["the", noun]
    words = [self.choice(self.lex.adjectives), noun] if self.rng.random() < 0.15 else [noun]
    return self.det(number, words[0]) + words

  def pp(self, number: int, the: bool = False) -> list[str]:
    return list(self.choice(self.lex.prepositions)) + self.np(number, the=the)

  def verb(self, frame: str) -> Verb:
    return self.choice(self.lex.by_frame[frame])

  def vp(self, number: int) -> list[str]:
    """A verb phrase agreeing with ``number`` (one of ``_VERB_PHRASES``), optionally with a time adverbial."""
    words = self.pick(_VERB_PHRASES)(self, number)
    if self.rng.random() < 0.1:
      words += list(self.choice(wordlists.TIME))
    return words


def _transitive(g: Generator, number: int) -> list[str]:
  """likes the dogs"""
  return [agree(g.verb("trans"), number)] + g.np(g.number())


def _intransitive(g: Generator, number: int) -> list[str]:
  """sleeps (near the house)"""
  words = [agree(g.verb("intrans"), number)]
  if g.rng.random() < 0.5:
    words += g.pp(g.number())
  return words


def _copula(g: Generator, number: int) -> list[str]:
  """is happy / is near the house / is five years old"""
  words = ["is" if number == S else "are"]
  c = g.rng.random()
  if c < 0.6:
    words.append(g.choice(g.lex.adjectives))
  elif c < 0.95:
    words += g.pp(g.number())
  else:
    words += [g.choice(g.lex.numbers), "years", "old"]
  return words


def _possessive(g: Generator, number: int) -> list[str]:
  """has a dog"""
  return ["has" if number == S else "have"] + g.np(g.number())


def _past_copula(g: Generator, number: int) -> list[str]:
  """was happy"""
  return ["was" if number == S else "were", g.choice(g.lex.adjectives)]


def _negated(g: Generator, number: int) -> list[str]:
  """doesn't like the dog / hasn't visited the farm / isn't happy / wasn't happy"""
  kind = g.choice(tuple(wordlists.NEGATED))
  aux = wordlists.NEGATED[kind][number]
  if kind == "do":
    return [aux, g.verb("trans").base] + g.np(g.number())
  if kind == "have":
    verb = g.choice(g.lex.regular_trans)
    return [aux, verb.past] + g.np(g.number())
  return [aux, g.choice(g.lex.adjectives)]


def _infinitive(g: Generator, number: int) -> list[str]:
  """wants to visit the farm"""
  verb = g.lex.by_base[g.choice(wordlists.INF_VERBS)]
  return [agree(verb, number), "to", g.verb("trans").base] + g.np(g.number())


def _gerund(g: Generator, number: int) -> list[str]:
  """enjoys cooking rice / enjoys reading the books"""
  verb = g.lex.by_base[g.choice(wordlists.GERUND_VERBS)]
  obj = [g.choice(g.lex.mass_nouns)] if g.rng.random() < 0.5 else g.np(g.number())
  return [agree(verb, number), g.choice(wordlists.GERUNDS)] + obj


# (cumulative probability, builder): the verb phrases of Generator.vp.
_VERB_PHRASES = ((0.35, _transitive), (0.55, _intransitive), (0.75, _copula), (0.82, _possessive),
                 (0.85, _past_copula), (0.88, _negated), (0.95, _infinitive), (1.0, _gerund))
