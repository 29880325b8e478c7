"""The generator's words: the lexicon files of ``jaxmask/lexicon/``, the closed-class words, the vocabulary,
and the gender statistics of the antecedents (Winogender's BLS figures, Vig et al.'s templates)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json

from jaxmask import data

S, P = 0, 1  # number: index into a (singular, plural) pair
LANGUAGES = ("small", "large")

DET_SG = ("a", "this", "every")
DET_PL = ("these", "some", "many")
DET_ANY = ("my", "your", "our", "their")
PRONOUNS = {"f": ("she", "her", "her", "herself"), "m": ("he", "his", "him", "himself")}  # nom, poss, acc, refl
NEGATED = {"do": ("doesn't", "don't"), "be": ("isn't", "aren't"), "have": ("hasn't", "haven't"),
           "be_past": ("wasn't", "weren't")}
PRONOUN_SUBJECTS = (("he", S), ("she", S), ("it", S), ("they", P))
TIME = (("every", "day"), ("every", "week"), ("at", "night"), ("today",), ("again",),
        ("in", "the", "morning"), ("tonight",))
INF_VERBS = ("like", "love", "hate", "want", "need")
GERUND_VERBS = ("enjoy", "like", "love", "hate")
GERUNDS = ("playing", "reading", "watching", "visiting", "cooking", "studying")
PASSIVE = ("fire", "promote", "hire", "praise", "blame", "invite", "ignore", "help")
MODALS = ("can", "will", "would", "should", "might", "must", "could")
_FUNCTION_WORDS = ("the", "an", "that", "who", "and", "because", "to", "is", "are", "was", "were",
                   "home", "up", "late")
_LARGE_FUNCTION_WORDS = MODALS + ("not", "please", "never", "also")
_FREQUENCY_FLOOR = 1.0  # per million: the least weight of a word in Zipfian sampling


@dataclasses.dataclass(frozen=True)
class Verb:
  third: str
  base: str
  past: str
  frames: tuple[str, ...]  # subset of ("intrans", "trans", "comp")


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """The word lists of ``jaxmask/lexicon/``; nouns are (singular, plural) pairs."""
  nouns: dict[str, tuple[tuple[str, str], ...]]  # class (person, animal, object, place) -> pairs
  occupations: tuple[tuple[str, str], ...]
  gendered: tuple[tuple[str, str, str], ...]  # (singular, plural, "m" | "f")
  verbs: tuple[Verb, ...]
  adjectives: tuple[str, ...]
  adverbs: tuple[str, ...]
  degree_adverbs: tuple[str, ...]
  prepositions: tuple[tuple[str, ...], ...]
  names: tuple[tuple[str, str], ...]  # (name, "m" | "f")
  mass_nouns: tuple[str, ...]
  numbers: tuple[str, ...]
  frequency: dict[str, float] | None = None  # lemma -> per million (large language: Zipfian sampling)

  @functools.cached_property
  def animate(self) -> tuple[tuple[str, str], ...]:
    """Nouns that head agreement subjects in evaluation items: people, animals, occupations, gendered."""
    return (self.nouns["person"] + self.nouns["animal"] + self.occupations
            + tuple((sg, pl) for sg, pl, _ in self.gendered))

  @functools.cached_property
  def all_nouns(self) -> tuple[tuple[str, str], ...]:
    return self.animate + self.inanimate

  @functools.cached_property
  def inanimate(self) -> tuple[tuple[str, str], ...]:
    """Objects, places and (large language) the frequent common nouns: inanimate controllers and attractors."""
    return self.nouns["object"] + self.nouns["place"] + self.nouns.get("thing", ())

  @functools.cached_property
  def noun_lemma(self) -> dict[str, str]:
    """Every singular and plural noun form -> its singular."""
    return {form: sg for sg, pl in self.all_nouns for form in (sg, pl)}

  @functools.cached_property
  def verb_lemma(self) -> dict[str, str]:
    """Every agreeing verb form (3rd singular, base; is/are/was/were; negated auxiliaries) -> its lemma."""
    lemma = {form: v.base for v in self.verbs for form in (v.third, v.base)}
    lemma.update(dict.fromkeys(("is", "are", "was", "were"), "be"))
    lemma.update({form: key.removesuffix("_past") for key, forms in NEGATED.items() for form in forms})
    return lemma

  @functools.cached_property
  def by_frame(self) -> dict[str, tuple[Verb, ...]]:
    """Frame ("intrans", "trans", "comp") -> the verbs that take it."""
    return {f: tuple(v for v in self.verbs if f in v.frames) for f in ("intrans", "trans", "comp")}

  @functools.cached_property
  def regular_trans(self) -> tuple[Verb, ...]:
    """Transitive verbs whose past form is also their participle ("visited")."""
    return tuple(v for v in self.by_frame["trans"] if v.past.endswith("ed"))

  @functools.cached_property
  def by_base(self) -> dict[str, Verb]:
    return {v.base: v for v in self.verbs}


def _lines(*name: str) -> list[list[str]]:
  text = importlib.resources.files("jaxmask").joinpath("lexicon", *name).read_text(encoding="utf-8")
  return [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]


def check_language(language: str) -> None:
  """Raises ValueError unless ``language`` is one of ``LANGUAGES``."""
  if language not in LANGUAGES:
    raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")


@functools.cache
def lexicon(language: str = "small") -> Lexicon:
  """Reads the lexicon files of ``language`` ("small": the hand-curated lists; "large": those plus
  ``lexicon/large/``) once."""
  check_language(language)
  nouns: dict[str, list] = {}
  for sg, pl, cls in _lines("nouns.tsv"):
    nouns.setdefault(cls, []).append((sg, pl))
  verbs = [Verb(t, b, p, tuple(f.split(","))) for t, b, p, f in _lines("verbs.tsv")]
  adjectives = [w for w, in _lines("adjectives.txt")]
  adverbs = [w for w, in _lines("adverbs.txt")]
  names = [(n, g) for n, g in _lines("names.tsv")]
  frequency = None
  if language == "large":
    nouns["thing"] = [(sg, pl) for sg, pl in _lines("large", "nouns.tsv")]
    verbs += [Verb(t, b, p, tuple(f.split(","))) for t, b, p, f in _lines("large", "verbs.tsv")]
    adjectives += [w for w, in _lines("large", "adjectives.txt")]
    adverbs += [w for w, in _lines("large", "adverbs.txt")]
    names += [(n, g) for n, g in _lines("large", "names.tsv")]
    frequency = {w: max(float(f), _FREQUENCY_FLOOR) for w, f in _lines("large", "frequencies.tsv")}
  return Lexicon(
      nouns={k: tuple(v) for k, v in nouns.items()},
      occupations=tuple((sg, pl) for sg, pl in _lines("occupations.tsv")),
      gendered=tuple((sg, pl, g) for sg, pl, g in _lines("gendered_nouns.tsv")),
      verbs=tuple(verbs),
      adjectives=tuple(adjectives),
      adverbs=tuple(adverbs),
      degree_adverbs=tuple(w for w, in _lines("degree_adverbs.txt")),
      prepositions=tuple(tuple(w.split()) for w, in _lines("prepositions.txt")),
      names=tuple(names),
      mass_nouns=tuple(w for w, in _lines("mass_nouns.txt")),
      numbers=tuple(w for w, in _lines("numbers.txt")),
      frequency=frequency,
  )


def vocabulary(language: str = "small") -> list[str]:
  """Every word the generator can emit in ``language``, plus "<eos>", "<unk>" and "."; an LM's vocabulary.

  Order: "<eos>", "<unk>", ".", then the words sorted.
  """
  lex = lexicon(language)
  words = set(_FUNCTION_WORDS + DET_SG + DET_PL + DET_ANY + GERUNDS)
  if language == "large":
    words.update(_LARGE_FUNCTION_WORDS)
  words.update(w for t in TIME for w in t)
  words.update(w for forms in PRONOUNS.values() for w in forms)
  words.update(w for w, _ in PRONOUN_SUBJECTS)
  words.update(w for forms in NEGATED.values() for w in forms)
  words.update(w for pair in lex.all_nouns for w in pair)
  words.update(w for v in lex.verbs for w in (v.third, v.base, v.past))
  words.update(lex.adjectives + lex.adverbs + lex.degree_adverbs + lex.mass_nouns + lex.numbers)
  words.update(w for prep in lex.prepositions for w in prep)
  words.update(n for n, _ in lex.names)
  return [data.EOS, data.UNK, "."] + sorted(words)


@functools.cache
def winogender_bls() -> dict[str, float]:
  """Winogender's occupations (in its file order) -> their US Bureau of Labor Statistics % female."""
  with open(data.vendored("winogender", "occupations-stats.tsv"), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]
  return {row[0]: float(row[2]) for row in rows}


def occupation_pct_female() -> dict[str, float]:
  """% female for every gendered antecedent the generator uses.

  Winogender occupations: the US Bureau of Labor Statistics figure (:func:`winogender_bls`). Vig et al.'s
  professions that Winogender lacks: a least-squares line from Vig's stereotype score (in [-1, 1],
  negative = female) to the BLS figure, fitted on the professions in both lists, clipped to [2, 98].
  Gendered nouns (man, woman, ...): 0 or 100.
  """
  return dict(_pct_female())


@functools.cache
def _pct_female() -> dict[str, float]:
  bls = winogender_bls()
  with open(data.vendored("vig2020", "professions.json"), encoding="utf-8") as f:
    stereotype = {name: score for name, _, score in json.load(f)}
  both = [w for w in bls if w in stereotype]
  xs, ys = [stereotype[w] for w in both], [bls[w] for w in both]
  mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
  slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
  pct = {}
  for sg, _ in lexicon().occupations:
    pct[sg] = bls[sg] if sg in bls else min(98.0, max(2.0, my + slope * (stereotype[sg] - mx)))
  pct.update({sg: 100.0 if g == "f" else 0.0 for sg, _, g in lexicon().gendered})
  return pct


def pct_female_of(pair: data.Pair) -> float | None:
  """% female of a gender item's antecedent: the word where prefix and counterfactual differ."""
  if pair.counterfactual is None:
    return None
  for word, other in zip(pair.prefix, pair.counterfactual):
    if word != other:
      return _pct_female().get(word.lower())
  return None


@functools.cache
def vig_templates() -> tuple[str, ...]:
  """Vig et al.'s 17 templates, e.g. "The {} said that"."""
  with open(data.vendored("vig2020", "templates.txt"), encoding="utf-8") as f:
    return tuple(line.strip() for line in f if line.strip())


@functools.cache
def template_tails() -> tuple[tuple[str, ...], ...]:
  """Vig et al.'s templates without "The {}": ("said", "that"), ("went", "home", "because"), ..."""
  return tuple(tuple(template.split()[2:]) for template in vig_templates())
