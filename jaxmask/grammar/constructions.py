"""The constructions of the training text and of the agreement items, as tables of small builders.

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
noun's number is drawn independently, so attractors match and mismatch the subject equally often.
Sentences average about 9 words plus the final ".".

The large language adds the constructions the small language lacks (:data:`EXTRA_CONDITIONS`: object
relatives and sentential complements without "that", verb-phrase coordination short and long, inanimate
subjects with and without attractors) plus filler sentences with no agreement signal (modals, past
tense, imperatives).

Every builder's docstring gives an example; in an agreement prefix, the controller noun (and in subjRC,
vpCoord and longVPCoord its verb) is a (word, counterfactual word) pair.
"""

from __future__ import annotations

import functools
import random
from typing import Callable, Union

from jaxmask.grammar import heldout
from jaxmask.grammar import wordlists
from jaxmask.grammar.wordlists import S
from jaxmask.grammar.phrases import Generator, agree

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
_VP_COORD_PROB = 0.12  # an agreement clause gets a second, coordinated verb phrase

Word = Union[str, tuple[str, str]]  # a word, or (word, counterfactual word)


def conditions_of(language: str = "small") -> dict[str, int]:
  """The agreement conditions of ``language`` (name -> number of roles): CONDITIONS, plus EXTRA_CONDITIONS
  for "large"."""
  wordlists.check_language(language)
  return {**CONDITIONS, **EXTRA_CONDITIONS} if language == "large" else dict(CONDITIONS)


# Agreement prefixes: (generator, subject words, numbers, the) -> the words before the agreeing verb.
def _bare(g: Generator, subj: list[Word], n: tuple[int, ...], the: bool) -> list[Word]:
  """simple, inanimate: "the farmer | smiles", "the book | is old"."""
  return subj


def _adverb(g, subj, n, the):
  """adv: "the farmer often | smiles"."""
  return subj + [g.choice(g.lex.adverbs)]


def _two_adverbs(g, subj, n, the):
  """2adv: "the farmer very often | smiles"."""
  return subj + [g.choice(g.lex.degree_adverbs), g.choice(g.lex.adverbs)]


def _coordinated_adverbs(g, subj, n, the):
  """coadv: "the farmer openly and deliberately | smiles"."""
  return subj + [g.choice(g.lex.adverbs), "and", g.choice(g.lex.adverbs)]


def _name_pp(g, subj, n, the):
  """namePP: "the farmer near John | smiles"."""
  return subj + list(g.choice(g.lex.prepositions)) + [g.choice(g.lex.names)[0]]


def _noun_pp(g, subj, n, the):
  """nounPP, inanimPP: "the farmer near the doctors | smiles"."""
  return subj + g.pp(n[1], the)


def _noun_pp_adverb(g, subj, n, the):
  """nounPPAdv: "the farmer near the doctors often | smiles"."""
  return subj + g.pp(n[1], the) + [g.choice(g.lex.adverbs)]


def _two_attractors(g, subj, n, the):
  """twoAttractors: "the farmer near the doctors behind the cars | smiles"."""
  return subj + g.pp(n[1], the) + g.pp(n[2], the)


def _subject_relative(g, subj, n, the):
  """subjRC: "the farmer that likes the doctors | smiles" (the relative verb flips with the subject)."""
  verb = g.verb("trans")
  return subj + [g.choice(("that", "who")), (agree(verb, n[0]), agree(verb, 1 - n[0]))] + g.np(
      n[1], g.lex.animate, the)


def _object_relative(g, subj, n, the):
  """objRC, inanimObjRC: "the farmer that the doctors like | smiles"."""
  return subj + ["that"] + g.np(n[1], g.lex.animate, the) + [agree(g.verb("trans"), n[1])]


def _object_relative_no_that(g, subj, n, the):
  """objRCnoThat: "the farmer the doctors like | smiles"."""
  return subj + g.np(n[1], g.lex.animate, the) + [agree(g.verb("trans"), n[1])]


def _nested_relative(g, subj, n, the):
  """nestedRC: "the farmer that the doctors who like the cook admire | smiles"."""
  return (subj + ["that"] + g.np(n[1], g.lex.animate, the) + ["who", agree(g.verb("trans"), n[1])]
          + g.np(g.number(), g.lex.animate, the) + [agree(g.verb("trans"), n[1])])


def _sentential_complement(g, subj, n, the, that=True):
  """sentComp: "the doctors think that the farmer | smiles" (the second number is the main subject's)."""
  main = g.np(n[1], g.lex.animate, the) + [agree(g.verb("comp"), n[1])]
  return main + (["that"] if that else []) + subj


def _vp_coordination(g, subj, n, the):
  """vpCoord: "the farmer smiles and | laughs" (the first verb flips with the subject)."""
  verb = g.verb("intrans")
  return subj + [(agree(verb, n[0]), agree(verb, 1 - n[0])), "and"]


def _long_vp_coordination(g, subj, n, the):
  """longVPCoord: "the farmer likes the cook near the house every day and | smiles"."""
  verb = g.verb("trans")
  return (subj + [(agree(verb, n[0]), agree(verb, 1 - n[0]))] + g.np(g.number(), the=the)
          + g.pp(g.number(), the) + list(g.choice(wordlists.TIME)) + ["and"])


_PREFIXES: dict[str, Callable[..., list[Word]]] = {
    "simple": _bare, "adv": _adverb, "2adv": _two_adverbs, "coadv": _coordinated_adverbs, "namePP": _name_pp,
    "nounPP": _noun_pp, "nounPPAdv": _noun_pp_adverb, "twoAttractors": _two_attractors,
    "subjRC": _subject_relative, "objRC": _object_relative, "nestedRC": _nested_relative,
    "sentComp": _sentential_complement,
    "objRCnoThat": _object_relative_no_that,
    "sentCompNoThat": functools.partial(_sentential_complement, that=False),
    "vpCoord": _vp_coordination, "longVPCoord": _long_vp_coordination, "inanimate": _bare,
    "inanimPP": _noun_pp, "inanimObjRC": _object_relative,
}


def prefix(g: Generator, condition: str, numbers: tuple[int, ...], subject: tuple[str, str] | None = None,
           the: bool = False) -> tuple[list[str], dict[int, str]]:
  """The words before the verb that agrees with the controller, and the counterfactual's changes.

  ``numbers[0]`` is the controller's number, the others the attractors' in linear order (for
  sentComp: the main-clause subject). ``subject`` fixes the controller noun (sg, pl) pair; then the
  second value maps positions to the words of the counterfactual with the controller's number
  flipped (the controller noun, and in subjRC the relative clause's verb, which agrees with it).
  """
  if condition not in _PREFIXES:
    raise ValueError(f"unknown condition {condition!r}; choose one of {sorted(CONDITIONS)}")
  subj: list[Word]
  if subject is None:
    subj = g.np(numbers[0], g.lex.inanimate if condition.startswith("inanim") else g.lex.animate, the)
  else:
    noun = (subject[numbers[0]], subject[1 - numbers[0]])
    subj = ["the", noun] if the else g.det(numbers[0], noun[0]) + [noun]
  parts = _PREFIXES[condition](g, subj, numbers, the)
  words = [w if isinstance(w, str) else w[0] for w in parts]
  return words, {i: w[1] for i, w in enumerate(parts) if not isinstance(w, str)}


# Sentences: generator -> words.
def _agreement(g: Generator, condition: str) -> list[str]:
  """An agreement clause: a prefix of ``condition``, then its verb phrase(s): "the farmer near the doctors
  likes the cook"."""
  numbers = tuple(g.number() for _ in range(conditions_of(g.language)[condition]))
  subject = None
  if g.language == "large" and not condition.startswith("inanim") and condition not in (
      "sentComp", "sentCompNoThat") and g.rng.random() < _INANIMATE_SUBJECT_PROB:
    subject = g.choice(g.lex.inanimate)
  words, _ = prefix(g, condition, numbers, subject)
  words += g.vp(numbers[0])
  if g.rng.random() < _VP_COORD_PROB:
    words += ["and"] + g.vp(numbers[0])
  return words


def _pronoun_or_name(g: Generator) -> list[str]:
  """A name or pronoun as subject: "Mary likes the dog", "they sleep"."""
  if g.rng.random() < 0.5:
    return [g.choice(g.lex.names)[0]] + g.vp(S)
  pronoun, number = g.choice(wordlists.PRONOUN_SUBJECTS)
  return [pronoun] + g.vp(number)


def _past_intransitive(g: Generator, subject: list[str], number: int) -> list[str]:
  verb = g.verb("intrans")
  if verb.base == "go":
    return subject + ["went", "home"]
  if verb.base == "stay":
    return subject + ["stayed", "up", "late"]
  return subject + [verb.past] + (g.pp(g.number()) if g.rng.random() < 0.5 else [])


_PAST_CLAUSES = (  # (cumulative probability, builder (generator, subject, number) -> words)
    (0.4, lambda g, subject, number: subject + [g.verb("trans").past] + g.np(g.number())),
    (0.7, _past_intransitive),
    (0.85, lambda g, subject, number: subject + ["was" if number == S else "were",
                                                  g.lex.by_base[g.choice(wordlists.PASSIVE)].past]),
    (1.0, lambda g, subject, number: subject + ["was" if number == S else "were", g.choice(g.lex.adjectives)]),
)


def _past(g: Generator) -> list[str]:
  """A past-tense clause ("the farmer visited the cook", "John went home", "the dogs were praised"); it is
  where most past forms (and the template verbs) are learned."""
  number = g.number()
  subject = g.np(number) if g.rng.random() < 0.7 else [g.choice(g.lex.names)[0]]
  if len(subject) == 1:
    number = S
  return g.pick(_PAST_CLAUSES)(g, subject, number)


_FILLER_CLAUSES = (  # (cumulative probability, builder (generator, subject) -> words)
    (0.4, lambda g, subject: subject + [g.uniform(wordlists.MODALS)] + (["not"] if g.rng.random() < 0.1 else [])
     + [g.verb("trans").base] + g.np(g.number())),
    (0.8, lambda g, subject: subject + (["never"] if g.rng.random() < 0.1 else []) + [g.verb("trans").past]
     + g.np(g.number())),
    (1.0, lambda g, subject: (["please"] if g.rng.random() < 0.3 else []) + [g.verb("trans").base]
     + g.np(g.number())),
)


def _filler(g: Generator) -> list[str]:
  """No agreement signal: a modal, a past-tense verb or an imperative before the object ("the farmer can
  visit the cook", "please visit the cook near the house")."""
  subject = g.np(g.number()) if g.rng.random() < 0.7 else [g.choice(g.lex.names)[0]]  # number after the draw
  words = g.pick(_FILLER_CLAUSES)(g, subject)
  if g.rng.random() < 0.3:
    words += g.pp(g.number())
  return words


def _occupation(g: Generator) -> tuple[list[str], str]:
  sg = g.uniform(g.lex.occupations)[S]
  gender = "f" if g.rng.random() * 100 < g.pct[sg] else "m"
  return g.det(S, sg) + [sg], gender


def _gendered_noun(g: Generator) -> tuple[list[str], str]:
  sg, _, gender = g.choice(g.lex.gendered)
  return g.det(S, sg) + [sg], gender


def _name(g: Generator) -> tuple[list[str], str]:
  name, gender = g.choice(g.lex.names)
  return [name], gender


_ANTECEDENTS = ((0.7, _occupation), (0.85, _gendered_noun), (1.0, _name))  # -> (words, "m" | "f")
# (cumulative probability, (builder (generator, (nom, poss, acc, refl)) -> words, whether a clause follows)).
_GENDER_FRAMES = (
    (0.2, (lambda g, p: [g.verb("intrans").past, "because", p[0]], True)),
    (0.4, (lambda g, p: [g.verb("comp").past, "that", p[0]], True)),
    (0.5, (lambda g, p: [g.verb("comp").third, "that", p[0]], True)),
    (0.6, (lambda g, p: [g.verb("trans").past] + g.np(g.number()) + ["because", p[0]], True)),
    (0.7, (lambda g, p: ["was", g.choice(g.lex.adjectives), "because", p[0]], True)),
    (0.8, (lambda g, p: [g.choice(("said", "whispered", "yelled")), "to"] + g.np(g.number()) + ["that", p[0]],
           True)),
    (0.85, (lambda g, p: [g.verb("trans").past, p[1], g.choice(g.lex.all_nouns)[g.number()]], False)),
    (0.92, (lambda g, p: [g.verb("trans").past, p[3]], False)),
    (1.0, (lambda g, p: ["asked"] + g.np(g.number(), g.lex.animate) + ["to", "help", p[2]], False)),
)
_CONTINUATIONS = (  # (cumulative probability, builder): the clause after a frame's pronoun
    (0.3, lambda g: ["was", g.choice(g.lex.adjectives)]),
    (0.5, lambda g: ["is", g.choice(g.lex.adjectives)]),
    (0.8, lambda g: [g.verb("trans").past] + g.np(g.number())),
    (1.0, lambda g: [g.verb("trans").third] + g.np(g.number())),
)


def _gender(g: Generator) -> list[str]:
  """Gendered coreference: an antecedent, then he/she/his/her/him referring to it ("the nurse thought that
  she was tired", "the nurse herself left because she ...", "John praised himself")."""
  antecedent, gender = g.pick(_ANTECEDENTS)(g)
  pronouns = wordlists.PRONOUNS[gender]
  if g.language == "large" and g.rng.random() < _EMPHATIC_PROB:
    antecedent = antecedent + [pronouns[3]]  # "the nurse herself ...": gender is used right after the noun
  build, continues = g.pick(_GENDER_FRAMES)
  words = antecedent + build(g, pronouns)
  return words + g.pick(_CONTINUATIONS)(g) if continues else words


_SENTENCES: dict[str, Callable[[Generator], list[str]]] = {
    **{c: functools.partial(_agreement, condition=c) for c in {**CONDITIONS, **EXTRA_CONDITIONS}},
    "pronoun_or_name": _pronoun_or_name, "past": _past, "filler": _filler, "gender": _gender,
}


def sentence(g: Generator, kind: str | None = None) -> list[str]:
  """A sentence of construction ``kind`` (a ``_SENTENCES`` key), drawn from the training weights when None."""
  if kind is None:
    weights = _TRAIN_WEIGHTS_LARGE if g.language == "large" else _TRAIN_WEIGHTS
    kind = g.rng.choices(tuple(weights), tuple(weights.values()))[0]
  return _SENTENCES[kind](g)


def corpus(num_sentences: int, seed: int, split: str = "train", language: str = "small") -> list[str]:
  """Training ("train") or held-out control ("control") text: lower-case sentences ending in " .".

  Both splits come from the same distribution with different random streams. Sentences that contain
  a reserved (noun, verb) pair or a Vig template frame are rejected and redrawn (see
  :mod:`jaxmask.grammar.heldout`), so evaluation items stay unseen.
  """
  if split not in ("train", "control"):
    raise ValueError(f"split must be 'train' or 'control', got {split!r}")
  wordlists.check_language(language)
  g = Generator(random.Random(f"corpus:{split}:{seed}"), language)
  reserved = heldout.reserved_pairs(language=language)
  sentences = []
  while len(sentences) < num_sentences:
    words = sentence(g)
    if heldout.contains_template_frame(words) or not reserved.isdisjoint(heldout.noun_verb_pairs(words, language)):
      continue
    sentences.append(" ".join(words) + " .")
  return sentences
