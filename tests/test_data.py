"""Tests for the minimal-pair TSV format, the published-set loaders and encoding to Items."""

import numpy as np
import pytest

from jaxmask import data

VOCAB = [data.EOS, data.UNK, ".", "the", "athlete", "athletes", "behind", "bike", "is", "are", "The"]


def _write(tmp_path, text, name="items.tsv"):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_tsv_round_trip(tmp_path):
  pairs = [data.Pair(("The", "athlete", "behind", "the", "bike"), "is", "are",
                     ("The", "athletes", "behind", "the", "bike"), "nounPP_SS"),
           data.Pair(("the", "athletes"), "are", "is", None, "simple_P")]
  path = str(tmp_path / "pairs.tsv")
  data.write_tsv(path, pairs)
  read = data.read_tsv(path)
  assert [(p.prefix, p.target, p.foil, p.counterfactual, p.condition) for p in read] == [
      (p.prefix, p.target, p.foil, p.counterfactual, p.condition) for p in pairs]
  assert read[1].source == "pairs.tsv:3"


def test_optional_columns_in_any_order(tmp_path):
  path = _write(tmp_path, "condition\tfoil\ttarget\tprefix\nsimple_S\tare\tis\tthe athlete\n")
  (pair,) = data.read_tsv(path)
  assert pair == data.Pair(("the", "athlete"), "is", "are", None, "simple_S", "items.tsv:2")


@pytest.mark.parametrize("text, message", [
    ("prefix\ttarget\tfoil\nthe athlete\tis\tare\nthe athletes\tare\n", r"items\.tsv, line 3: expected 3"),
    ("prefix\ttarget\nthe athlete\tis\n", r"items\.tsv, line 1: the header lacks the column\(s\) foil"),
    ("", r"items\.tsv, line 1: the file is empty"),
    ("prefix\ttarget\tfoil\n", r"items\.tsv, line 2: the file has a header but no pairs"),
    ("prefix\ttarget\tfoil\tcounterfactual\nthe athlete\tis\tare\tthe athletes behind\n",
     r"items\.tsv, line 2: the counterfactual has 3 words but the prefix has 2"),
    ("prefix\ttarget\tfoil\nthe athlete\tis not\tare\n", r"line 2: the target must be exactly one word"),
])
def test_bad_tsv_names_file_and_line(tmp_path, text, message):
  with pytest.raises(data.DataError, match=message) as error:
    data.read_tsv(_write(tmp_path, text))
  assert str(error.value).count(". ") == 0  # one sentence


def test_missing_file():
  with pytest.raises(data.DataError, match="no such file"):
    data.read_tsv("/nonexistent/items.tsv")


def test_normalize_exact_then_lower_case():
  index = {w: i for i, w in enumerate(VOCAB)}
  assert data.normalize("The", index) == VOCAB.index("The")  # exact match wins
  assert data.normalize("Athlete", index) == VOCAB.index("athlete")
  assert data.normalize("BIKE", index) == VOCAB.index("bike")
  assert data.normalize("bicycle", index) is None


def test_encode_case_unk_oov_and_padding():
  vocab = [w for w in VOCAB if w != "The"]
  pairs = [data.Pair(("The", "athlete", "behind", "the", "bike"), "is", "are",
                     ("The", "athletes", "behind", "the", "bike")),
           data.Pair(("the", "athlete"), "Is", "are"),
           data.Pair(("the", "athlete"), "runs", "run"),           # target out of vocabulary
           data.Pair(("the", "athlete", "near", "the", "car"), "is", "are")]  # two prefix words -> <unk>
  items, kept, stats = data.encode(pairs, vocab)
  assert kept == [0, 1, 3]
  assert stats == {"items": 3, "skipped_oov": 1, "unk_tokens": 2}
  ids = {w: i for i, w in enumerate(vocab)}
  eos, unk = ids[data.EOS], ids[data.UNK]
  assert items.prefix.shape == items.counterfactual.shape == (3, 6)
  np.testing.assert_array_equal(items.length, [6, 3, 6])
  np.testing.assert_array_equal(items.prefix[0], [eos] + [ids[w] for w in "the athlete behind the bike".split()])
  np.testing.assert_array_equal(items.prefix[0, :3], items.prefix[1, :3])  # "The" == "the"
  np.testing.assert_array_equal(items.prefix[1, 3:], [eos] * 3)  # right-padded with <eos>
  np.testing.assert_array_equal(items.counterfactual[0, 2], ids["athletes"])
  np.testing.assert_array_equal(items.counterfactual[1], items.prefix[1])  # no counterfactual: x' = x
  np.testing.assert_array_equal(items.prefix[2, [3, 5]], [unk, unk])
  np.testing.assert_array_equal(items.target, [ids["is"]] * 3)
  np.testing.assert_array_equal(items.foil, [ids["are"]] * 3)
  assert items.prefix.dtype == np.int32


def test_encode_without_eos_and_max_len():
  pairs = [data.Pair(("the", "athlete"), "is", "are", source="x.tsv:2")]
  items, _, _ = data.encode(pairs, VOCAB, prepend_eos=False, max_len=4)
  assert items.prefix.shape == (1, 4) and int(items.length[0]) == 2
  with pytest.raises(data.DataError, match=r"x\.tsv:2: 3 tokens exceed max_len=2"):
    data.encode(pairs, VOCAB, max_len=2)


def test_load_marvin_linzen():
  pairs = data.load_marvin_linzen(tasks=["simple_agrmt", "prep_anim"])
  assert len(pairs) == 140 + 16_800
  first = pairs[0]
  assert first.condition.startswith(("simple_agrmt/", "prep_anim/")) and first.counterfactual is None
  simple = [p for p in pairs if p.condition.startswith("simple_agrmt/")]
  assert len(simple) == 140 and all(len(p.prefix) == 2 and p.prefix[0] == "the" for p in simple)
  assert {(p.target, p.foil) for p in simple} >= {("laughs", "laugh"), ("laugh", "laughs")}


def test_load_blimp():
  pairs = data.load_blimp(data.vendored("blimp", "distractor_agreement_relational_noun.jsonl.gz"))
  assert len(pairs) == 1000
  assert pairs[0] == data.Pair(("A", "niece", "of", "most", "senators"), "hasn't", "haven't", None,
                               "distractor_agreement_relational_noun",
                               "distractor_agreement_relational_noun.jsonl.gz:1")
  with pytest.raises(data.DataError, match="line 1: no item has one_prefix_prefix"):
    data.load_blimp(data.vendored("blimp", "regular_plural_subject_verb_agreement_2.jsonl.gz"))


def test_outcome_classes_join_pairs_that_share_a_word():
  vocab = ["<eos>", "her", "his", "him", "is", "are", "dog"]
  pairs = [data.Pair(prefix=("x",), target="his", foil="her"), data.Pair(prefix=("x",), target="Him", foil="her"),
           data.Pair(prefix=("x",), target="are", foil="is"), data.Pair(prefix=("x",), target="cat", foil="dog")]
  # her/his/him form one class (id 1, the smallest), is/are another (id 4); the OOV pair merges nothing.
  np.testing.assert_array_equal(data.outcome_classes(pairs, vocab), [0, 1, 1, 1, 4, 4, 6])
