"""Tests for the generator: lexicon, vocabulary coverage, determinism, held-out combinations."""

import collections
import functools
import random
import re

import numpy as np
import pytest

from jaxmask import data
from jaxmask import grammar


@functools.cache
def _train(n: int = 20_000) -> tuple[str, ...]:
  return tuple(grammar.corpus(n, seed=0))


def _controller(pair: data.Pair) -> str:
  """The first word where prefix and counterfactual differ: the noun the target agrees with."""
  return next(w for w, c in zip(pair.prefix, pair.counterfactual) if w != c)


def test_lexicon_sizes_and_irregular_plurals():
  lex = grammar.lexicon()
  assert len(lex.all_nouns) >= 400
  assert len(lex.verbs) >= 100
  irregular = [(sg, pl) for sg, pl in lex.all_nouns if pl not in (sg + "s", sg + "es", sg[:-1] + "ies")]
  assert len(irregular) >= 25 and ("child", "children") in irregular and ("mouse", "mice") in irregular
  assert {"trans", "intrans", "comp"} <= {f for v in lex.verbs for f in v.frames}
  assert any(len(p) > 1 for p in lex.prepositions)
  assert len(lex.names) >= 60 and len(lex.adjectives) >= 80 and len(lex.adverbs) >= 30
  # A word is never both a noun form and an agreeing verb form, and no noun has sg == pl.
  assert not set(lex.noun_lemma) & set(lex.verb_lemma)
  assert all(sg != pl for sg, pl in lex.all_nouns)


def test_vocabulary_covers_published_sets():
  vocab = grammar.vocabulary()
  assert vocab[:3] == [data.EOS, data.UNK, "."] and len(set(vocab)) == len(vocab)
  assert 1500 <= len(vocab) <= 3000
  cov = grammar.coverage()
  print({k: round(v, 3) for k, v in cov.items()})
  assert cov["marvin_linzen_types"] >= 0.95
  assert cov["winogender_occupations"] == 1.0
  assert cov["blimp/distractor_agreement_relational_noun_scored"] > 0.5
  template_words = {w.lower() for t in grammar.vig_templates() for w in t.replace("{}", "").split()}
  assert template_words <= set(vocab) and {"man", "woman", "he", "she"} <= set(vocab)


def test_corpus_is_deterministic_in_vocabulary_and_short():
  train = grammar.corpus(300, seed=0)
  assert train == list(_train()[:300])
  assert train != grammar.corpus(300, seed=1)
  assert grammar.corpus(300, seed=0, split="control") != train
  vocab = set(grammar.vocabulary())
  words = [w for s in _train() for w in s.split()]
  assert set(words) <= vocab
  assert all(s.endswith(" .") and s == s.lower() for s in _train())
  assert 8 <= len(words) / len(_train()) <= 13
  assert len(set(words)) > 0.9 * len(vocab)  # almost every word is trained


def test_corpus_has_agreement_with_attractors_in_both_numbers():
  lex = grammar.lexicon()
  counts = collections.Counter()
  for s in _train():
    w = s.split()
    for i in range(len(w) - 3):
      if w[i + 1] in ("near", "behind", "with") and w[i + 2] == "the" and w[i] in lex.noun_lemma:
        counts[(w[i] == lex.noun_lemma[w[i]], w[i + 3] == lex.noun_lemma.get(w[i + 3]))] += 1
  assert len(counts) == 4 and min(counts.values()) > 0.15 * sum(counts.values())


def test_agreement_items_cells_counterfactuals_and_agreement():
  items = grammar.agreement_items(200, seed=0, split="heldout")
  by_cell = collections.Counter(p.condition for p in items)
  lakretz = {c.split("_")[0] for c in by_cell} & set(grammar.LAKRETZ_CONDITIONS)
  assert lakretz == {"simple", "adv", "2adv", "coadv", "namePP", "nounPP", "nounPPAdv"}
  assert {"nounPP_SS", "nounPP_SP", "nounPP_PS", "nounPP_PP", "twoAttractors_SPP", "objRC_SP",
          "nestedRC_PS", "sentComp_SP", "simple_S", "coadv_P"} <= set(by_cell)
  assert len(by_cell) == 42 and set(by_cell.values()) == {200}
  lex = grammar.lexicon()
  verbs = {v.third: v for v in lex.verbs} | {v.base: v for v in lex.verbs}
  vocab = set(grammar.vocabulary())
  for p in items:
    assert set(p.prefix + p.counterfactual + (p.target, p.foil)) <= vocab
    assert len(p.counterfactual) == len(p.prefix)
    noun = _controller(p)
    plural = noun != lex.noun_lemma[noun]
    assert p.condition.split("_")[1][0] == "SP"[plural]
    if p.target in ("is", "are"):
      assert p.target == ("are" if plural else "is") and p.foil == ("is" if plural else "are")
    else:
      form = verbs[p.target].base if plural else verbs[p.target].third
      assert p.target == form and {p.target, p.foil} == {verbs[p.target].base, verbs[p.target].third}
  sentcomp = next(p for p in items if p.condition == "sentComp_SP")
  assert sentcomp.prefix[-2:] == ("the", _controller(sentcomp))  # the embedded subject agrees
  assert items == grammar.agreement_items(200, seed=0, split="heldout")


def test_no_evaluation_combination_occurs_in_training():
  lex = grammar.lexicon()
  seen = set()  # (noun lemma, verb lemma) with the noun anywhere before the verb, recomputed here
  for s in _train():
    nouns = []
    for w in s.split():
      if w in lex.verb_lemma:
        seen.update((n, lex.verb_lemma[w]) for n in nouns)
      if w in lex.noun_lemma:
        nouns.append(lex.noun_lemma[w])
  assert len(seen) > 20_000  # a sample of training; corpus() rejects these pairs in every sentence
  combos = {}
  for split in ("search", "heldout"):
    items = grammar.agreement_items(20, seed=3, split=split)
    combos[split] = {(lex.noun_lemma[_controller(p)], lex.verb_lemma[p.target]) for p in items}
    assert len(combos[split]) > 500
    assert not combos[split] & seen
  assert not combos["search"] & combos["heldout"]
  # Gender: no Vig template frame, with any subject, ever occurs in training.
  text = "\n".join(_train())
  for template in grammar.vig_templates():
    tail = template.lower().replace("the {} ", "")
    assert not re.search(rf"(^| ){tail}( |$)", text, re.M), tail
  assert all(" ".join(p.prefix).lower() not in text for p in grammar.gender_items("heldout"))


def test_training_pronouns_follow_occupation_statistics():
  pct = grammar.occupation_pct_female()
  occupations = {sg for sg, _ in grammar.lexicon().occupations}
  she, total = collections.Counter(), collections.Counter()
  for s in _train():
    words = s.split()
    head = next((w for w in words if w in occupations), None)
    pronoun = next((w for w in words if w in ("he", "she", "his", "her", "him", "himself", "herself")), None)
    if head and pronoun and words.index(head) < words.index(pronoun):
      total[head] += 1
      she[head] += pronoun in ("she", "her", "herself")
  heldout = {p.prefix[1] for p in grammar.gender_items("heldout")}
  assert all(total[w] >= 3 for w in heldout)  # each evaluated occupation is seen with pronouns
  names = sorted(total)
  r = np.corrcoef([she[w] / total[w] for w in names], [pct[w] for w in names])[0, 1]
  assert r > 0.8


def test_gender_items_and_pct_female():
  pct = grammar.occupation_pct_female()
  assert pct["nurse"] == 89.58 and pct["plumber"] == 0.7 and pct["man"] == 0 and pct["woman"] == 100
  assert all(2 <= pct[w] <= 98 for w in ("astronaut", "nanny", "poet"))
  assert pct["nanny"] > 60 > 30 > pct["astronaut"]  # mapped from Vig's stereotype scores
  search, heldout = grammar.gender_items("search"), grammar.gender_items("heldout")
  assert len(search) == len(heldout) == 17 * 30
  assert not {p.prefix[1] for p in search} & {p.prefix[1] for p in heldout}
  for p in heldout:
    female = grammar.pct_female_of(p)
    assert female == pct[p.prefix[1]]
    assert (p.target, p.foil) == (("she", "he") if female >= 50 else ("he", "she"))
    assert p.counterfactual[1] == ("man" if p.target == "she" else "woman")
    assert p.counterfactual[0] == "The" and p.counterfactual[2:] == p.prefix[2:]


def test_splits_are_validated():
  with pytest.raises(ValueError, match="split"):
    grammar.corpus(1, 0, split="search")
  with pytest.raises(ValueError, match="split"):
    grammar.agreement_items(1, 0, split="train")


# The large language (grammar.lexicon("large"), LMConfig.lexicon="large").


@functools.cache
def _large(n: int = 6_000) -> tuple[str, ...]:
  return tuple(grammar.corpus(n, seed=0, language="large"))


def test_small_language_is_unchanged():
  """The default LM's text: its cache key hashes the first sentences, so they must not move."""
  import hashlib
  text = "\n".join(grammar.corpus(3000, seed=0))
  assert hashlib.sha256(text.encode()).hexdigest()[:16] == "733a347733c3b22e"
  assert len(grammar.vocabulary()) == 2074 and grammar.conditions_of() == grammar.CONDITIONS


def test_large_lexicon_sizes_frequencies_and_disjoint_forms():
  small, large = grammar.lexicon(), grammar.lexicon("large")
  vocab = grammar.vocabulary("large")
  assert len(vocab) >= 5000 and set(grammar.vocabulary()) <= set(vocab) and len(set(vocab)) == len(vocab)
  assert len(large.all_nouns) >= len(small.all_nouns) + 900 and len(large.verbs) >= len(small.verbs) + 250
  assert len(large.adjectives) >= 400 and len(large.adverbs) >= 120 and len(large.names) >= 250
  assert not set(large.noun_lemma) & set(large.verb_lemma)
  assert all(sg != pl for sg, pl in large.all_nouns)
  assert ("company", "companies") in large.nouns["thing"] and large.by_base["take"].past == "took"
  lemmas = [sg for sg, _ in large.all_nouns] + [v.base for v in large.verbs] + list(large.adjectives)
  assert all(large.frequency[w] >= 1.0 for w in lemmas)  # every open-class lemma has a weight (floor 1)
  assert large.frequency["world"] > 100 * large.frequency["coffin"]
  with pytest.raises(ValueError, match="language"):
    grammar.lexicon("huge")


def test_large_corpus_is_zipfian_has_fillers_and_stays_in_vocabulary():
  large = grammar.lexicon("large")
  words = [w for s in _large() for w in s.split()]
  assert set(words) <= set(grammar.vocabulary("large"))
  counts = collections.Counter(large.noun_lemma[w] for w in words if w in large.noun_lemma)
  things = [sg for sg, _ in large.nouns["thing"]]
  # Word counts follow the lexicon's frequencies: rank correlation over the new nouns.
  rank = lambda xs: np.argsort(np.argsort(xs))
  rho = np.corrcoef(rank([counts[w] for w in things]), rank([large.frequency[w] for w in things]))[0, 1]
  assert rho > 0.5, rho
  top = sorted(things, key=large.frequency.get)[-10:]
  assert sum(counts[w] for w in top) > 5 * sum(counts[w] for w in things[-10:])
  # Fillers carry no number on any verb; with past-tense and gender sentences they make a good share of
  # the text whose verbs show no number (no 3rd singular, is/are, was/were, has).
  marked = {v.third for v in large.verbs} | {"is", "are", "was", "were", "has"}  # "have" may follow a modal
  marked |= {w for w in large.verb_lemma if "'" in w}
  gen = grammar.phrases.Generator(random.Random(0), "large")
  assert not any(marked & set(grammar.constructions.sentence(gen, "filler")) for _ in range(500))
  free = sum(not marked & set(s.split()) for s in _large()) / len(_large())
  assert 0.25 < free < 0.6, free
  assert any(" will " in s or " could " in s for s in _large())
  # No reserved (noun, verb) pair in any order of appearance: evaluation items stay unseen.
  assert all(grammar.reserved_pairs().isdisjoint(grammar.noun_verb_pairs(s.split(), "large")) for s in _large())


def test_large_conditions_give_grammatical_items():
  items = grammar.agreement_items(20, seed=0, split="heldout", language="large")
  by_cell = collections.Counter(p.condition for p in items)
  extra = {c for c in by_cell if c.split("_")[0] in grammar.EXTRA_CONDITIONS}
  assert len(extra) == sum(2 ** k for k in grammar.EXTRA_CONDITIONS.values()) and set(by_cell.values()) == {20}
  small_items = grammar.agreement_items(20, seed=0, split="heldout")
  assert [p for p in items if p.condition.split("_")[0] in grammar.CONDITIONS] == small_items
  lex = grammar.lexicon()
  verbs = {v.third: v for v in lex.verbs} | {v.base: v for v in lex.verbs}
  inanimate = {w for pair in lex.inanimate for w in pair}
  for p in items:
    if p.condition.split("_")[0] not in grammar.EXTRA_CONDITIONS:
      continue
    condition, cell = p.condition.split("_")
    noun = _controller(p)
    plural = noun != lex.noun_lemma[noun]
    assert cell[0] == "SP"[plural] and len(p.counterfactual) == len(p.prefix)
    if p.target in ("is", "are"):
      assert p.target == ("are" if plural else "is")
    else:
      assert p.target == (verbs[p.target].base if plural else verbs[p.target].third)
    assert (noun in inanimate) == condition.startswith("inanim")
    if condition in ("objRCnoThat", "sentCompNoThat"):
      assert "that" not in p.prefix
    if condition in ("vpCoord", "longVPCoord"):
      assert p.prefix[-1] == "and"
      first = p.prefix[2]  # the subject's first verb agrees too, and flips with it
      assert first == (verbs[first].base if plural else verbs[first].third) and p.counterfactual[2] != first
    if condition == "sentCompNoThat":
      assert p.prefix[-2:] == ("the", noun)
