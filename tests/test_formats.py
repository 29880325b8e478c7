"""Tests for the item file formats: Lakretz et al. and colorlessgreen readers, derived counterfactuals, errors."""

import json
import os

import pytest
from absl import flags

from jaxmask import config as config_lib
from jaxmask import data, evaluate, experiment, formats

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
LAKRETZ, LAKRETZ_TSV = os.path.join(DATA, "lakretz_nounpp.txt"), os.path.join(DATA, "lakretz_nounpp.tsv")
COLORLESSGREEN = os.path.join(DATA, "colorlessgreen.tab")


def _write(tmp_path, text, name):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_lakretz_pairs_and_derived_counterfactuals():
  pairs = formats.read_items(LAKRETZ, "lakretz")
  assert [(p.prefix, p.target, p.foil, p.counterfactual, p.condition) for p in pairs] == [
      (p.prefix, p.target, p.foil, p.counterfactual, p.condition) for p in data.read_tsv(LAKRETZ_TSV)]
  assert pairs[1].source == "lakretz_nounpp.txt:3"  # the wrong line comes first in pair id1
  # "This athlete" flips with its determiner; "blicket" is no known noun, so that pair gets none.
  assert pairs[4].counterfactual == ("These", "athletes", "near", "the", "farmers")
  assert sum(p.counterfactual is not None for p in pairs) == 5


def test_lakretz_counterfactual_only_where_the_vocabulary_allows():
  vocab = [data.EOS, data.UNK, "the", "boy", "near", "car", "cars", "greets", "greet"]  # no "boys"
  nouns, _ = formats.agreement_words()
  assert formats.subject_flipped(("The", "boy", "near", "the", "car"), "singular", nouns, vocab) is None
  assert formats.subject_flipped(("The", "boy"), "singular", nouns, vocab + ["boys"]) == ("The", "boys")
  # An unknown subject is never replaced by a later noun (the attractor), nor a subject of the other number.
  assert formats.subject_flipped(("The", "blicket", "near", "the", "boy"), "singular", nouns) is None
  assert formats.subject_flipped(("The", "boys"), "singular", nouns) is None


def test_colorlessgreen_pairs():
  pairs = formats.read_items(COLORLESSGREEN, "colorlessgreen")
  assert [(p.prefix, p.target, p.foil, p.counterfactual, p.condition, p.source) for p in pairs] == [
      (("the", "boy", "near", "the", "car"), "greets", "greet", None, "original/NN IN NN VBZ", "colorlessgreen.tab:2"),
      (("the", "dogs", "behind", "the", "farmer"), "see", "sees", None, "generated/NN IN NN VBP",
       "colorlessgreen.tab:4")]


_CG_HEADER = ("pattern\tconstr_id\tsent_id\tcorrect_number\tform\tclass\ttype\tprefix\tn_attr\tpunct\tfreq\t"
              "len_context\tlen_prefix\tsent\n")
_CG_ROW = "NN VBZ\t0\t{id}\tsing\t{form}\t{cls}\toriginal\t{prefix}\t0\t0\t1\t2\t2\tthe boy greets .\n"


@pytest.mark.parametrize("fmt, text, message", [
    ("lakretz", "The boy greets\tsingular\tcorrect\n", r"x\.txt, line 1: expected sentence<TAB>condition"),
    ("lakretz", "The boy greets\tsingular\tcorrect\tid0\nThe boy greet\tsingular\twrong\tid0\n"
                "The boys greet\tplural\tcorrect\tid1\n", r"x\.txt, line 3: pair id1 has 1 line\(s\)"),
    ("lakretz", "The boy greets\tsingular\tcorrect\tid0\nThe boys greet\tsingular\twrong\tid0\n",
     r"x\.txt, line 1: the two sentences of pair id0 must differ only in their final word"),
    ("lakretz", "The boy greets\tsingular\tcorrect\tid0\nThe boy greet\tsingular\tcorrect\tid0\n",
     r"x\.txt, line 1: pair id0 has 2 line\(s\) \(correct, correct\)"),
    ("lakretz", "\n", r"x\.txt, line 1: the file is empty"),
    ("colorlessgreen", "pattern\tform\n", r"x\.txt, line 1: the header lacks the column\(s\) constr_id"),
    ("colorlessgreen", _CG_HEADER + _CG_ROW.format(id=0, form="greets", cls="correct", prefix="the boy"),
     r"x\.txt, line 2: this row has no second row"),
    ("colorlessgreen", _CG_HEADER + _CG_ROW.format(id=0, form="greets", cls="correct", prefix="the boy")
     + _CG_ROW.format(id=1, form="greet", cls="wrong", prefix="the boy"), r"x\.txt, line 2: this row and the next"),
    ("colorlessgreen", _CG_HEADER + "NN VBZ\t0\t0\n", r"x\.txt, line 2: expected 14 tab-separated fields"),
])
def test_bad_files_are_one_sentence_naming_file_and_line(tmp_path, fmt, text, message):
  with pytest.raises(data.DataError, match=message) as error:
    formats.read_items(_write(tmp_path, text, "x.txt"), fmt)
  assert str(error.value).count(". ") == 0 and str(error.value).endswith(".")


def test_unknown_format_and_missing_file():
  with pytest.raises(data.DataError, match="--format=conll is not known; use one of tsv, marvin_linzen"):
    formats.read_items(LAKRETZ, "conll")
  with pytest.raises(data.DataError, match="missing.txt: no such file"):
    formats.read_items("/nonexistent/missing.txt", "lakretz")


def test_main_job_reads_lakretz_and_counts_items_without_counterfactual():
  config = config_lib.Config(workdir="unused", train_items=LAKRETZ, format="lakretz")
  vocab = [data.EOS, data.UNK] + sorted({w.lower() for p in data.read_tsv(LAKRETZ_TSV)
                                         for w in p.prefix + (p.target, p.foil) + (p.counterfactual or ())})
  pairs = experiment._pairs(config.train_items, "--train_items", config, "search", 1, "small", vocab)
  items, kept, stats = experiment.encode_pairs(pairs, vocab, "--train_items", needs_counterfactual=True)
  assert (stats["items"], stats["without_counterfactual"]) == (5, 1) and items.prefix.shape == (5, 6)
  with pytest.raises(config_lib.ExperimentError, match="--format=xml is not known"):
    config_lib.Config(workdir="unused", format="xml").validate()


def _evaluate(*args):
  flag_values = flags.FlagValues()
  evaluate.define_flags(flag_values)
  flag_values(["evaluate", *args])
  evaluate.main(["evaluate"], flag_values)


def test_evaluate_on_lakretz_file_equals_the_same_items_as_tsv(tmp_path):
  """The done-when of issue 18: --format=lakretz gives the TSV's accuracies (shipped LM), flip rates too."""
  results = []
  for path, fmt in ((LAKRETZ, "lakretz"), (LAKRETZ_TSV, "tsv")):
    out = tmp_path / f"{fmt}.json"
    _evaluate(f"--items={path}", f"--format={fmt}", f"--output={out}", "--units=3,300,500", "--intervention=zero")
    results.append(json.loads(out.read_text()))
  lakretz, tsv = results
  assert lakretz == tsv
  assert lakretz["items"] == 6 and lakretz["with_counterfactual"] == 5
  assert set(lakretz["by_condition"]) == {"singular_singular", "singular_plural", "plural_singular", "plural_plural"}
