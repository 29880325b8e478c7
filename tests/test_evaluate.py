"""Tests for jaxmask.evaluate: margins and accuracy against full forward passes, counts, errors of the command."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from absl import flags

from jaxmask import checkpoints, interventions
from jaxmask import data
from jaxmask import evaluate
from jaxmask.models import lstm

VOCAB = ["<eos>", "<unk>", ".", "the", "dog", "dogs", "runs", "run", "near", "cat", "cats", "he", "she", "nurse",
         "farmer", "said", "that"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TSV = ("prefix\ttarget\tfoil\tcounterfactual\tcondition\n"
       "The dog\truns\trun\tThe dogs\tsimple\n"
       "the dogs near the cat\trun\truns\tthe dog near the cat\tnounPP\n"
       "the dog near the zebra\truns\trun\tthe dogs near the zebra\tnounPP\n"  # zebra: prefix OOV -> <unk>
       "the cat\tsleeps\truns\tthe cats\tsimple\n")  # sleeps: target OOV -> skipped


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  params = lstm.init(jax.random.key(1), len(VOCAB), 8, 8, 2)
  directory = str(tmp_path_factory.mktemp("ckpt") / "lm")
  checkpoints.save(directory, params, VOCAB)
  return params, directory


def _reference_margin(params, words, target, foil, context=()):
  ids = list(context) + [VOCAB.index("<eos>")] + [VOCAB.index(w) if w in VOCAB else 1 for w in words]
  logits = np.asarray(lstm.apply(params, np.asarray([ids], np.int32)))[0, -1]
  return logits[VOCAB.index(target)] - logits[VOCAB.index(foil)]


def test_margins_match_full_forward_pass_with_and_without_context(model):
  params, _ = model
  pairs = [data.Pair(("the", "dog"), "runs", "run"), data.Pair(("the", "dogs", "near", "the", "cat"), "run", "runs")]
  items, _, _ = data.encode(pairs, VOCAB)
  np.testing.assert_allclose(evaluate.margins(params, items, batch_size=1),
                             [_reference_margin(params, p.prefix, p.target, p.foil) for p in pairs], atol=1e-5)
  context = [0, 3, 9, 6, 2]  # "<eos> the cat runs ." read before the item's own <eos>
  state = evaluate.context_state(params, context)
  np.testing.assert_allclose(evaluate.margins(params, items, state),
                             [_reference_margin(params, p.prefix, p.target, p.foil, context) for p in pairs],
                             atol=1e-5)


def test_accuracy_by_condition_and_pearson():
  overall, by = evaluate.accuracy_by_condition(np.array([True, False, True, True]), ["a", "a", "b", "b"])
  assert overall == 0.75 and by == {"a": 0.5, "b": 1.0}
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=50), rng.normal(size=50)
  assert evaluate.pearson(x, x + 0.5 * y) == pytest.approx(np.corrcoef(x, x + 0.5 * y)[0, 1])
  assert np.isnan(evaluate.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_gender_bias_signs_log_ratio_by_target():
  pairs = [data.Pair(("the", "nurse", "said", "that"), "she", "he"),
           data.Pair(("the", "farmer", "said", "that"), "he", "she"),
           data.Pair(("the", "dog"), "runs", "run")]
  result = evaluate.gender_bias(np.array([2.0, 3.0, 1.0]), pairs, {"nurse": 90.0, "farmer": 25.0})
  # log p(she)/p(he) is +2 for the nurse (she is the target) and -3 for the farmer.
  assert result == {"pearson_r": pytest.approx(1.0), "items": 2, "mean_log_ratio": pytest.approx(-0.5)}


def test_evaluate_pairs_counts_and_accuracy(model, tmp_path):
  params, _ = model
  path = tmp_path / "items.tsv"
  path.write_text(TSV)
  pairs = data.read_tsv(str(path))
  result = evaluate.evaluate_pairs(params, VOCAB, pairs)
  assert (result["items"], result["skipped_oov"], result["unk_tokens"]) == (3, 1, 2)  # zebra in x and x'
  correct = [_reference_margin(params, p.prefix, p.target, p.foil) > 0 for p in pairs[:3]]
  assert result["accuracy"] == pytest.approx(np.mean(correct))
  assert result["by_condition"] == {"nounPP": pytest.approx(np.mean(correct[1:])), "simple": float(correct[0])}


def test_parse_units_rejects_bad_ids():
  np.testing.assert_array_equal(evaluate.parse_units("17, 3,3", 20), [3, 17])
  for text in ("3,x", "20", "-1", ""):
    with pytest.raises(ValueError, match="--units must"):
      evaluate.parse_units(text, 20)


@pytest.mark.skipif(not hasattr(interventions, "margins"), reason="interventions.margins not written yet")
def test_flip_rate_of_all_units_under_counterfactual(model):
  params, _ = model
  pairs = [data.Pair(("the", "dog"), "runs", "run", ("the", "dogs"), "simple"),
           data.Pair(("the", "dogs", "near", "the", "cat"), "run", "runs", ("the", "dog", "near", "the", "cat"),
                     "nounPP")]
  units = np.arange(lstm.num_units(params, "h"))
  result = evaluate.evaluate_pairs(params, VOCAB, pairs, units, "counterfactual")
  # Replacing every h unit by the counterfactual run makes the model read x': its margin is x' 's margin.
  flipped = [_reference_margin(params, p.counterfactual, p.target, p.foil) < 0 for p in pairs]
  assert result["flip_rate"] == pytest.approx(np.mean(flipped))
  assert result["units"] == list(range(len(units))) and result["intervention"] == "counterfactual"


def _main(*args):
  """Runs the command's main in this process; returns its exit message (None on success)."""
  flag_values = flags.FlagValues()
  evaluate.define_flags(flag_values)
  flag_values(["evaluate", *args])
  try:
    evaluate.main(["evaluate"], flag_values)
  except SystemExit as e:
    return str(e.code)
  return None


def test_command_writes_json_with_the_counts(model, tmp_path):
  _, directory = model
  items = tmp_path / "items.tsv"
  items.write_text(TSV)
  out = tmp_path / "out" / "result.json"
  assert _main(f"--checkpoint={directory}", f"--items={items}", f"--output={out}") is None
  result = json.loads(out.read_text())
  assert {"accuracy", "by_condition", "items", "skipped_oov", "unk_tokens"} <= set(result)
  assert (result["items"], result["skipped_oov"], result["unk_tokens"]) == (3, 1, 2)


def test_user_errors_are_one_sentence(model, tmp_path):
  _, directory = model
  items = tmp_path / "items.tsv"
  items.write_text(TSV)
  bad = tmp_path / "bad.tsv"
  bad.write_text("prefix\ttarget\nthe dog\truns\n")
  os.makedirs(tmp_path / "novocab")
  for args, message in [
      ((f"--items={tmp_path / 'missing.tsv'}",), "missing.tsv: no such file"),
      ((f"--items={bad}",), "bad.tsv"),
      ((f"--items={items}", "--units=3,x"), "--units must be comma-separated integers"),
      ((f"--items={items}", "--units=999"), "--units must name unit ids in 0..15"),
      ((f"--items={items}", "--units=3", "--intervention=mean"), None),
      (("--items=builtin:nothing",), "is not a built-in set"),
  ]:
    error = _main(f"--checkpoint={directory}", *args)
    if message is None:
      assert error is None
    else:
      assert error.startswith("evaluate: ") and message in error and "\n" not in error, error
  error = _main(f"--checkpoint={tmp_path / 'novocab'}", f"--items={items}")
  assert "has no config.json" in error


@pytest.mark.slow
def test_command_line_error_has_no_traceback(tmp_path):
  done = subprocess.run([sys.executable, "-m", "jaxmask.evaluate", f"--checkpoint={tmp_path / 'none'}",
                         "--items=x.tsv"], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert done.stderr.strip().startswith("evaluate: checkpoint directory") and done.stderr.count("\n") == 1


@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_per_item_margins_in_input_order(model, tmp_path, family):
  from jaxmask.models import transformer  # pylint: disable=import-outside-toplevel
  params = model[0] if family == "lstm" else transformer.init(jax.random.key(1), len(VOCAB), 16, 8, 2, 2, 12)
  path = tmp_path / "pairs.tsv"
  path.write_text(TSV)
  pairs = data.read_tsv(str(path))
  result = evaluate.evaluate_pairs(params, VOCAB, pairs, per_item=True)
  assert [row["index"] for row in result["per_item"]] == [0, 1, 2]  # row 3's target is out of vocabulary
  apply = lstm.apply if family == "lstm" else transformer.apply
  items, _, _ = data.encode(pairs, VOCAB, prepend_eos=True)
  for b, row in enumerate(result["per_item"]):  # each row against a full forward pass of its own tokens
    logits = np.asarray(apply(params, items.prefix[b:b + 1, :int(items.length[b])]))[0, -1]
    assert row["margin"] == pytest.approx(logits[items.target[b]] - logits[items.foil[b]], abs=1e-4)
  assert "per_item" not in evaluate.evaluate_pairs(params, VOCAB, pairs)
  if family == "transformer":
    with pytest.raises(ValueError, match="running-text contexts .--context_sentences. need an LSTM"):
      evaluate.evaluate_pairs(params, VOCAB, pairs, contexts=[[0, 3, 4]])
