"""A seeded English generator: the default LM's vocabulary, its training text and its evaluation items.

The lexicon is plain data in ``jaxmask/lexicon/`` (nouns with plurals, occupations, gendered nouns,
verbs with their 3rd-singular, base and past forms, adjectives, adverbs, prepositions, names).
Everything is deterministic given a seed (Python's ``random.Random`` seeded with a string).

Training text (:func:`corpus`) mixes, in fixed proportions (``_TRAIN_WEIGHTS``), simple clauses,
subjects followed by adverbs, coordinated adverbs, prepositional phrases with one or two attractor
nouns or a name, subject, object and nested (depth 2: a subject relative inside an object relative)
relative clauses, sentential complements, verb-phrase coordination, names and pronouns as subjects,
past-tense clauses, negated auxiliaries, and gendered coreference: an occupation (or gendered noun,
or name) as antecedent of he/she/his/her/him/himself/herself, the pronoun's gender drawn with
probability :func:`occupation_pct_female` / 100. Simple clauses are the most frequent construction,
but attractor constructions are more frequent than in natural text (about a third of sentences), so
that an LSTM trained for minutes learns agreement across them; gendered coreference makes up about 30%
of the sentences, without which the default LM learns no gender in its budget (docs/lm.md). Every
noun's number is drawn independently, so attractors match and mismatch the subject equally often. Sentences average about
9 words plus the final ".". Determiners are "the" 70% of the time; the others ("a", "these", "many",
"two", "my", ...) also carry number, evaluation items use "the" only so that the noun alone does.

Two languages share this code. "small" (the default LM's, above) uses only the hand-curated lists and
draws every word uniformly. "large" adds the lists of ``jaxmask/lexicon/large/`` (the most frequent
English nouns, verbs, adjectives and -ly adverbs from wordfreq, inflected by lemminflect, written once by
``jaxmask/build_lexicon.py``; more first names), about 6,000 word types in all, draws every open-class
word with its wordfreq frequency (Zipfian; floor 1 per million so that rare curated nouns still occur;
occupations in gendered coreference stay uniform), and adds the constructions the small language lacks
(:data:`EXTRA_CONDITIONS`: object relatives and sentential complements without "that", verb-phrase
coordination short and long, inanimate subjects with and without attractors) plus filler sentences
with no agreement signal (modals, past tense, imperatives).

Held-out combinations (what the evaluation sets never share with training):
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

import dataclasses
import functools
import hashlib
import importlib.resources
import json
import random

from jaxmask import data

S, P = 0, 1  # number: index into a (singular, plural) pair
_LETTER = "SP"

_DET_SG = ("a", "this", "every")
_DET_PL = ("these", "some", "many")
_DET_ANY = ("my", "your", "our", "their")
_PRONOUN = {"f": ("she", "her", "her", "herself"), "m": ("he", "his", "him", "himself")}  # nom, poss, acc, refl
_NEGATED = {"do": ("doesn't", "don't"), "be": ("isn't", "aren't"), "have": ("hasn't", "haven't"),
            "be_past": ("wasn't", "weren't")}
_PRONOUN_SUBJECTS = (("he", S), ("she", S), ("it", S), ("they", P))
_TIME = (("every", "day"), ("every", "week"), ("at", "night"), ("today",), ("again",),
         ("in", "the", "morning"), ("tonight",))
_INF_VERBS = ("like", "love", "hate", "want", "need")
_GERUND_VERBS = ("enjoy", "like", "love", "hate")
_GERUNDS = ("playing", "reading", "watching", "visiting", "cooking", "studying")
_PASSIVE = ("fire", "promote", "hire", "praise", "blame", "invite", "ignore", "help")
_FUNCTION_WORDS = ("the", "an", "that", "who", "and", "because", "to", "is", "are", "was", "were",
                   "home", "up", "late")
_MODALS = ("can", "will", "would", "should", "might", "must", "could")
_LARGE_FUNCTION_WORDS = _MODALS + ("not", "please", "never", "also")
LANGUAGES = ("small", "large")

_TRAIN_WEIGHTS = {  # construction -> relative frequency in the training text
    "simple": 20, "adv": 5, "2adv": 3, "coadv": 3, "namePP": 3, "nounPP": 12, "nounPPAdv": 3,
    "twoAttractors": 5, "subjRC": 6, "objRC": 7, "nestedRC": 4, "sentComp": 8,
    "pronoun_or_name": 5, "past": 6, "gender": 40,
}
# The large language: the same kinds plus the extra constructions and fillers; number-free text (fillers,
# past tense) is about a fifth of it, gendered coreference about a quarter.
_TRAIN_WEIGHTS_LARGE = {
    **_TRAIN_WEIGHTS, "gender": 150, "objRCnoThat": 6, "sentCompNoThat": 6, "vpCoord": 4, "longVPCoord": 4,
    "inanimate": 6, "inanimPP": 8, "inanimObjRC": 6, "filler": 30,
}
_INANIMATE_SUBJECT_PROB = 0.3  # large language: share of other agreement clauses with an inanimate subject
# Large language: share of gendered antecedents followed by an emphatic reflexive ("the nurse herself");
# the only frame where the noun's gender predicts the very next word, which a 2-layer LSTM needs to start
# encoding gender at all (docs/lm.md).
_EMPHATIC_PROB = 0.5
_FREQUENCY_FLOOR = 1.0  # per million: the least weight of a word in Zipfian sampling
_VP_COORD_PROB = 0.12  # an agreement clause gets a second, coordinated verb phrase
_RESERVED_PER_MILLE = {"search": (0, 30), "heldout": (30, 60)}  # hash ranges of held-out pairs

# Evaluation conditions: name -> the roles whose numbers make the cell suffix (controller first).
CONDITIONS = {
    "simple": 1, "adv": 1, "2adv": 1, "coadv": 1, "namePP": 1, "nounPP": 2, "nounPPAdv": 2,
    "twoAttractors": 3, "subjRC": 2, "objRC": 2, "nestedRC": 2, "sentComp": 2,
}
# The large language's further conditions (the rest of Marvin & Linzen's constructions). vpCoord,
# longVPCoord: the verb after "and" agrees with the subject, whose first verb phrase (one intransitive verb;
# a transitive verb, object and adverbial) already agrees; inanim*: an inanimate controller.
EXTRA_CONDITIONS = {
    "objRCnoThat": 2, "sentCompNoThat": 2, "vpCoord": 1, "longVPCoord": 1, "inanimate": 1, "inanimPP": 2,
    "inanimObjRC": 2,
}
# The conditions of Lakretz et al. (2019); the others (twoAttractors, subjRC, objRC, nestedRC, sentComp) are harder.
LAKRETZ_CONDITIONS = ("simple", "adv", "2adv", "coadv", "namePP", "nounPP", "nounPPAdv")


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
    lemma.update({form: key.removesuffix("_past") for key, forms in _NEGATED.items() for form in forms})
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


def _check_language(language: str) -> None:
  if language not in LANGUAGES:
    raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")


@functools.cache
def lexicon(language: str = "small") -> Lexicon:
  """Reads the lexicon files of ``language`` ("small": the hand-curated lists; "large": those plus
  ``lexicon/large/``) once."""
  _check_language(language)
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


def conditions_of(language: str = "small") -> dict[str, int]:
  """The agreement conditions of ``language`` (name -> number of roles): CONDITIONS, plus EXTRA_CONDITIONS
  for "large"."""
  _check_language(language)
  return {**CONDITIONS, **EXTRA_CONDITIONS} if language == "large" else dict(CONDITIONS)


def occupation_pct_female() -> dict[str, float]:
  """% female for every gendered antecedent the generator uses.

  Winogender occupations: the US Bureau of Labor Statistics figure (``bls_pct_female``). Vig et al.'s
  professions that Winogender lacks: a least-squares line from Vig's stereotype score (in [-1, 1],
  negative = female) to the BLS figure, fitted on the professions in both lists, clipped to [2, 98].
  Gendered nouns (man, woman, ...): 0 or 100.
  """
  return dict(_pct_female())


@functools.cache
def _pct_female() -> dict[str, float]:
  with open(data.vendored("winogender", "occupations-stats.tsv"), encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f][1:]
  bls = {row[0]: float(row[2]) for row in rows}
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
def _template_tails() -> tuple[tuple[str, ...], ...]:
  """Vig et al.'s templates without "The {}": ("said", "that"), ("went", "home", "because"), ..."""
  with open(data.vendored("vig2020", "templates.txt"), encoding="utf-8") as f:
    return tuple(tuple(line.split()[2:]) for line in f if line.strip())


def vig_templates() -> tuple[str, ...]:
  """Vig et al.'s 17 templates, e.g. "The {} said that"."""
  with open(data.vendored("vig2020", "templates.txt"), encoding="utf-8") as f:
    return tuple(line.strip() for line in f if line.strip())


def vocabulary(language: str = "small") -> list[str]:
  """Every word the generator can emit in ``language``, plus "<eos>", "<unk>" and "."; an LM's vocabulary.

  Order: "<eos>", "<unk>", ".", then the words sorted.
  """
  lex = lexicon(language)
  words = set(_FUNCTION_WORDS + _DET_SG + _DET_PL + _DET_ANY + _GERUNDS)
  if language == "large":
    words.update(_LARGE_FUNCTION_WORDS)
  words.update(w for t in _TIME for w in t)
  words.update(w for forms in _PRONOUN.values() for w in forms)
  words.update(w for w, _ in _PRONOUN_SUBJECTS)
  words.update(w for forms in _NEGATED.values() for w in forms)
  words.update(w for pair in lex.all_nouns for w in pair)
  words.update(w for v in lex.verbs for w in (v.third, v.base, v.past))
  words.update(lex.adjectives + lex.adverbs + lex.degree_adverbs + lex.mass_nouns + lex.numbers)
  words.update(w for prep in lex.prepositions for w in prep)
  words.update(n for n, _ in lex.names)
  return [data.EOS, data.UNK, "."] + sorted(words)


def _hash_per_mille(noun: str, verb: str) -> int:
  digest = hashlib.blake2b(f"{noun}|{verb}".encode(), digest_size=8).digest()
  return int.from_bytes(digest, "big") % 1000


@functools.cache
def reserved_pairs(split: str | None = None, language: str = "small") -> frozenset[tuple[str, str]]:
  """The (noun lemma, verb lemma) pairs held out for ``split`` ("search"/"heldout"), or for either (None).

  A pair's reservation depends on the pair only (a hash), so the small language's held-out pairs are
  held out in the large one too.
  """
  lex = lexicon(language)
  ranges = _RESERVED_PER_MILLE.values() if split is None else (_RESERVED_PER_MILLE[split],)
  return frozenset((noun, verb) for noun in set(lex.noun_lemma.values()) for verb in set(lex.verb_lemma.values())
                   if any(lo <= _hash_per_mille(noun, verb) < hi for lo, hi in ranges))


def noun_verb_pairs(words: list[str] | tuple[str, ...], language: str = "small") -> set[tuple[str, str]]:
  """(noun lemma, verb lemma) for every noun form followed, anywhere later, by an agreeing verb form."""
  lex = lexicon(language)
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
  return any(f" {' '.join(tail)} " in text for tail in _template_tails())


def _agree(verb: Verb, number: int) -> str:
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


class _Generator:
  """Builds phrases from one random stream; every method returns a list of words."""

  def __init__(self, rng: random.Random, language: str = "small"):
    self.rng = rng
    self.language = language
    self.lex = lexicon(language)
    self.pct = _pct_female()
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

  def number(self) -> int:
    return self.rng.randrange(2)

  def det(self, number: int, next_word: str) -> list[str]:
    r = self.rng.random()
    if r < 0.7:
      return ["the"]
    if r < 0.8:
      return [self.choice(_DET_ANY)]
    if number == P and r < 0.83:
      return [self.choice(self.lex.numbers)]
    word = self.choice(_DET_SG if number == S else _DET_PL)
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
    """A verb phrase agreeing with ``number``, optionally followed by a time adverbial."""
    agree = lambda verb: _agree(verb, number)
    r = self.rng.random()
    if r < 0.35:
      words = [agree(self.verb("trans"))] + self.np(self.number())
    elif r < 0.55:
      words = [agree(self.verb("intrans"))]
      if self.rng.random() < 0.5:
        words += self.pp(self.number())
    elif r < 0.75:
      words = ["is" if number == S else "are"]
      c = self.rng.random()
      if c < 0.6:
        words.append(self.choice(self.lex.adjectives))
      elif c < 0.95:
        words += self.pp(self.number())
      else:
        words += [self.choice(self.lex.numbers), "years", "old"]
    elif r < 0.82:
      words = ["has" if number == S else "have"] + self.np(self.number())
    elif r < 0.85:
      words = ["was" if number == S else "were", self.choice(self.lex.adjectives)]
    elif r < 0.88:
      words = self.negated_vp(number)
    elif r < 0.95:
      verb = self.lex.by_base[self.choice(_INF_VERBS)]
      words = [agree(verb), "to", self.verb("trans").base] + self.np(self.number())
    else:
      verb = self.lex.by_base[self.choice(_GERUND_VERBS)]
      obj = [self.choice(self.lex.mass_nouns)] if self.rng.random() < 0.5 else self.np(self.number())
      words = [agree(verb), self.choice(_GERUNDS)] + obj
    if self.rng.random() < 0.1:
      words += list(self.choice(_TIME))
    return words

  def negated_vp(self, number: int) -> list[str]:
    kind = self.choice(tuple(_NEGATED))
    aux = _NEGATED[kind][number]
    if kind == "do":
      return [aux, self.verb("trans").base] + self.np(self.number())
    if kind == "have":
      verb = self.choice(self.lex.regular_trans)
      return [aux, verb.past] + self.np(self.number())
    return [aux, self.choice(self.lex.adjectives)]

  def prefix(self, condition: str, numbers: tuple[int, ...], subject: tuple[str, str] | None = None,
             the: bool = False) -> tuple[list[str], dict[int, str]]:
    """The words before the verb that agrees with the controller, and the counterfactual's changes.

    ``numbers[0]`` is the controller's number, the others the attractors' in linear order (for
    sentComp: the main-clause subject). ``subject`` fixes the controller noun (sg, pl) pair; then the
    second value maps positions to the words of the counterfactual with the controller's number
    flipped (the controller noun, and in subjRC the relative clause's verb, which agrees with it).
    """
    if subject is None:
      subj = self.np(numbers[0], self.lex.inanimate if condition.startswith("inanim") else self.lex.animate, the)
    else:
      noun = subject[numbers[0]]
      subj = ["the", noun] if the else self.det(numbers[0], noun) + [noun]
    flips = {len(subj) - 1: subject[1 - numbers[0]]} if subject else {}
    adv = lambda: [self.choice(self.lex.adverbs)]
    if condition == "simple":
      rest = []
    elif condition == "adv":
      rest = adv()
    elif condition == "2adv":
      rest = [self.choice(self.lex.degree_adverbs)] + adv()
    elif condition == "coadv":
      rest = adv() + ["and"] + adv()
    elif condition == "namePP":
      rest = list(self.choice(self.lex.prepositions)) + [self.choice(self.lex.names)[0]]
    elif condition == "nounPP":
      rest = self.pp(numbers[1], the)
    elif condition == "nounPPAdv":
      rest = self.pp(numbers[1], the) + adv()
    elif condition == "twoAttractors":
      rest = self.pp(numbers[1], the) + self.pp(numbers[2], the)
    elif condition == "subjRC":
      verb = self.verb("trans")
      rest = [self.choice(("that", "who")), _agree(verb, numbers[0])]
      flips[len(subj) + 1] = _agree(verb, 1 - numbers[0])
      rest += self.np(numbers[1], self.lex.animate, the)
    elif condition == "objRC":
      rest = ["that"] + self.np(numbers[1], self.lex.animate, the)
      rest.append(_agree(self.verb("trans"), numbers[1]))
    elif condition == "nestedRC":
      rest = ["that"] + self.np(numbers[1], self.lex.animate, the) + ["who"]
      rest.append(_agree(self.verb("trans"), numbers[1]))
      rest += self.np(self.number(), self.lex.animate, the)
      rest.append(_agree(self.verb("trans"), numbers[1]))
    elif condition in ("sentComp", "sentCompNoThat"):
      main = self.np(numbers[1], self.lex.animate, the)
      main += [_agree(self.verb("comp"), numbers[1])] + (["that"] if condition == "sentComp" else [])
      return main + subj, {len(main) + i: w for i, w in flips.items()}
    elif condition in ("objRCnoThat", "inanimObjRC"):
      rest = ([] if condition == "objRCnoThat" else ["that"]) + self.np(numbers[1], self.lex.animate, the)
      rest.append(_agree(self.verb("trans"), numbers[1]))
    elif condition in ("vpCoord", "longVPCoord"):
      verb = self.verb("intrans" if condition == "vpCoord" else "trans")
      flips[len(subj)] = _agree(verb, 1 - numbers[0])
      rest = [_agree(verb, numbers[0])]
      if condition == "longVPCoord":
        rest += self.np(self.number(), the=the) + self.pp(self.number(), the) + list(self.choice(_TIME))
      rest.append("and")
    elif condition == "inanimate":
      rest = []
    elif condition == "inanimPP":
      rest = self.pp(numbers[1], the)
    else:
      raise ValueError(f"unknown condition {condition!r}; choose one of {sorted(CONDITIONS)}")
    return subj + rest, flips

  def agreement_sentence(self, condition: str) -> list[str]:
    numbers = tuple(self.number() for _ in range(conditions_of(self.language)[condition]))
    subject = None
    if self.language == "large" and not condition.startswith("inanim") and condition not in (
        "sentComp", "sentCompNoThat") and self.rng.random() < _INANIMATE_SUBJECT_PROB:
      subject = self.choice(self.lex.inanimate)
    words, _ = self.prefix(condition, numbers, subject)
    words += self.vp(numbers[0])
    if self.rng.random() < _VP_COORD_PROB:
      words += ["and"] + self.vp(numbers[0])
    return words

  def pronoun_or_name_sentence(self) -> list[str]:
    if self.rng.random() < 0.5:
      return [self.choice(self.lex.names)[0]] + self.vp(S)
    pronoun, number = self.choice(_PRONOUN_SUBJECTS)
    return [pronoun] + self.vp(number)

  def past_sentence(self) -> list[str]:
    """A past-tense clause; it is where most past forms (and the template verbs) are learned."""
    number = self.number()
    subject = self.np(number) if self.rng.random() < 0.7 else [self.choice(self.lex.names)[0]]
    if len(subject) == 1:
      number = S
    r = self.rng.random()
    if r < 0.4:
      return subject + [self.verb("trans").past] + self.np(self.number())
    if r < 0.7:
      verb = self.verb("intrans")
      if verb.base == "go":
        return subject + ["went", "home"]
      if verb.base == "stay":
        return subject + ["stayed", "up", "late"]
      return subject + [verb.past] + (self.pp(self.number()) if self.rng.random() < 0.5 else [])
    if r < 0.85:
      verb = self.lex.by_base[self.choice(_PASSIVE)]
      return subject + ["was" if number == S else "were", verb.past]
    return subject + ["was" if number == S else "were", self.choice(self.lex.adjectives)]

  def filler_sentence(self) -> list[str]:
    """A sentence with no agreement signal: a modal, a past-tense verb or an imperative before the object."""
    subject = self.np(self.number()) if self.rng.random() < 0.7 else [self.choice(self.lex.names)[0]]
    r = self.rng.random()
    if r < 0.4:
      words = subject + [self.uniform(_MODALS)] + (["not"] if self.rng.random() < 0.1 else [])
      words += [self.verb("trans").base] + self.np(self.number())
    elif r < 0.8:
      words = subject + (["never"] if self.rng.random() < 0.1 else []) + [self.verb("trans").past]
      words += self.np(self.number())
    else:
      words = (["please"] if self.rng.random() < 0.3 else []) + [self.verb("trans").base] + self.np(self.number())
    if self.rng.random() < 0.3:
      words += self.pp(self.number())
    return words

  def gender_sentence(self) -> list[str]:
    """Gendered coreference: an antecedent, then he/she/his/her/him referring to it."""
    r = self.rng.random()
    if r < 0.7:
      sg = self.uniform(self.lex.occupations)[S]
      gender = "f" if self.rng.random() * 100 < self.pct[sg] else "m"
      antecedent = self.det(S, sg) + [sg]
    elif r < 0.85:
      sg, _, gender = self.choice(self.lex.gendered)
      antecedent = self.det(S, sg) + [sg]
    else:
      name, gender = self.choice(self.lex.names)
      antecedent = [name]
    nom, poss, acc, refl = _PRONOUN[gender]
    if self.language == "large" and self.rng.random() < _EMPHATIC_PROB:
      antecedent = antecedent + [refl]  # "the nurse herself ...": gender is used right after the noun
    f = self.rng.random()
    if f < 0.2:
      frame = [self.verb("intrans").past, "because", nom]
    elif f < 0.4:
      frame = [self.verb("comp").past, "that", nom]
    elif f < 0.5:
      frame = [self.verb("comp").third, "that", nom]
    elif f < 0.6:
      frame = [self.verb("trans").past] + self.np(self.number()) + ["because", nom]
    elif f < 0.7:
      frame = ["was", self.choice(self.lex.adjectives), "because", nom]
    elif f < 0.8:
      frame = [self.choice(("said", "whispered", "yelled")), "to"] + self.np(self.number()) + ["that", nom]
    elif f < 0.85:
      return antecedent + [self.verb("trans").past, poss, self.choice(self.lex.all_nouns)[self.number()]]
    elif f < 0.92:
      return antecedent + [self.verb("trans").past, refl]
    else:
      return antecedent + ["asked"] + self.np(self.number(), self.lex.animate) + ["to", "help", acc]
    c = self.rng.random()
    if c < 0.3:
      cont = ["was", self.choice(self.lex.adjectives)]
    elif c < 0.5:
      cont = ["is", self.choice(self.lex.adjectives)]
    elif c < 0.8:
      cont = [self.verb("trans").past] + self.np(self.number())
    else:
      cont = [self.verb("trans").third] + self.np(self.number())
    return antecedent + frame + cont

  def sentence(self) -> list[str]:
    kind = self.sentence_kind()
    if kind == "pronoun_or_name":
      return self.pronoun_or_name_sentence()
    if kind == "past":
      return self.past_sentence()
    if kind == "gender":
      return self.gender_sentence()
    if kind == "filler":
      return self.filler_sentence()
    return self.agreement_sentence(kind)

  def sentence_kind(self) -> str:
    weights = _TRAIN_WEIGHTS_LARGE if self.language == "large" else _TRAIN_WEIGHTS
    return self.rng.choices(tuple(weights), tuple(weights.values()))[0]


def corpus(num_sentences: int, seed: int, split: str = "train", language: str = "small") -> list[str]:
  """Training ("train") or held-out control ("control") text: lower-case sentences ending in " .".

  Both splits come from the same distribution with different random streams. Sentences that contain
  a reserved (noun, verb) pair or a Vig template frame are rejected and redrawn (see the module
  docstring), so evaluation items stay unseen.
  """
  if split not in ("train", "control"):
    raise ValueError(f"split must be 'train' or 'control', got {split!r}")
  _check_language(language)
  gen = _Generator(random.Random(f"corpus:{split}:{seed}"), language)
  reserved = reserved_pairs(language=language)
  sentences = []
  while len(sentences) < num_sentences:
    words = gen.sentence()
    if contains_template_frame(words) or not reserved.isdisjoint(noun_verb_pairs(words, language)):
      continue
    sentences.append(" ".join(words) + " .")
  return sentences


def _cells(condition: str) -> list[tuple[int, ...]]:
  k = {**CONDITIONS, **EXTRA_CONDITIONS}[condition]
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
  if split not in _RESERVED_PER_MILLE:
    raise ValueError(f"split must be 'search' or 'heldout', got {split!r}")
  lex = lexicon()
  verbs = [(v.base, (v.third, v.base)) for v in lex.verbs] + [("be", ("is", "are"))]
  reserved = reserved_pairs(split)
  pools = {kind: [(noun, forms) for noun in nouns for lemma, forms in verbs if (noun[S], lemma) in reserved]
           for kind, nouns in (("animate", lex.animate), ("inanimate", lex.inanimate))}
  gen = _Generator(random.Random(f"agreement:{split}:{seed}"))
  pairs = []
  for condition in conditions or tuple(conditions_of(language)):
    pool = pools["inanimate" if condition.startswith("inanim") else "animate"]
    for cell in _cells(condition):
      name = f"{condition}_{''.join(_LETTER[n] for n in cell)}"
      seen = set()
      for _ in range(50 * n_per_cell):
        if len(seen) == n_per_cell:
          break
        noun, forms = gen.choice(pool)
        words, flips = gen.prefix(condition, cell, noun, the=True)
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
  with open(data.vendored("winogender", "occupations-stats.tsv"), encoding="utf-8") as f:
    occupations = [line.split("\t")[0] for line in f][1:]
  pct = _pct_female()
  ranked = sorted(occupations, key=lambda w: (pct[w], w))
  chosen = ranked[split == "heldout"::2]
  pairs = []
  for template in vig_templates():
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
  vocab = set(vocabulary())
  def fraction(words) -> float:
    words = set(words)
    return sum(w.lower() in vocab for w in words) / len(words)
  ml = data.load_marvin_linzen()
  with open(data.vendored("winogender", "occupations-stats.tsv"), encoding="utf-8") as f:
    occupations = [line.split("\t")[0] for line in f][1:]
  result = {"marvin_linzen_types": fraction(w for p in ml for w in p.prefix + (p.target, p.foil)),
            "winogender_occupations": fraction(occupations)}
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


if __name__ == "__main__":
  for name, value in coverage().items():
    print(f"{name:60s} {value:6.1%}")
