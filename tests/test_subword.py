"""Subword tokenization of minimal pairs (GPT-2's convention), summed word scores, and evaluate with a tokenizer."""

import json

import jax
import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")

from jaxmask import data, evaluate, experiment, interventions, subword  # pylint: disable=g-import-not-at-top
from jaxmask.models import transformer

TEXT = ["the dog near the cats runs", "the dogs near the cat run", "the cat is near", "the cats are near the dog"]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
  tok = tokenizers.ByteLevelBPETokenizer()
  tok.train_from_iterator(TEXT * 10, vocab_size=290, min_frequency=1, show_progress=False,
                          special_tokens=[subword.BOS])
  directory = tmp_path_factory.mktemp("bpe")
  tok.save(str(directory / "tokenizer.json"))
  params = transformer.init(jax.random.key(0), tok.get_vocab_size(), 24, 16, 2, 2, 20)
  params = jax.tree.map(lambda a: 10.0 * a, params)
  return subword.tokenizer_of(str(directory), {"tokenizer": "tokenizer.json"}), params


PAIRS = [data.Pair(("the", "dog"), "runs", "run", ("the", "dogs"), "simple"),
         data.Pair(("the", "dogs", "near", "the", "cat"), "run", "runs", ("the", "dog", "near", "the", "cat"), "pp"),
         data.Pair(("the", "cat"), "zebras", "dogs", ("the", "cats"), "simple"),  # " zebras": several tokens
         data.Pair(("the", "dog"), "runs", "run", ("the", "dogs", "near"), "simple")]  # misaligned counterfactual


def test_encode_follows_gpt2_convention_and_counts_skips(bpe):
  tok, _ = bpe
  assert len(subword.word_ids(tok, "runs")) == 1 and len(subword.word_ids(tok, "zebras")) > 1
  items, kept, stats = subword.encode(PAIRS, tok)
  assert kept == [0, 1] and stats["skipped_multi_token"] == 1 and stats["skipped_misaligned"] == 1
  bos = tok.token_to_id(subword.BOS)
  expected = [bos] + tok.encode("the dog", add_special_tokens=False).ids
  assert np.asarray(items.prefix[0, :int(items.length[0])]).tolist() == expected
  assert int(items.target[0]) == tok.encode(" runs", add_special_tokens=False).ids[0] != tok.token_to_id("runs")
  cf = subword.prefix_ids(tok, PAIRS[1].counterfactual)  # aligned token for token with its prefix
  assert np.asarray(items.counterfactual[1, :int(items.length[1])]).tolist() == cf


def test_summed_margins_are_log_probabilities_of_every_token(bpe):
  tok, params = bpe
  m = subword.summed_margins(params, tok, PAIRS[:3])
  items, _, _ = subword.encode(PAIRS[:2], tok)
  np.testing.assert_allclose(m[:2], np.asarray(interventions.margins(params, items))[0], atol=1e-4)
  x = subword.prefix_ids(tok, PAIRS[2].prefix)
  scores = []
  for word in ("zebras", "dogs"):
    y = subword.word_ids(tok, word)
    log_p = np.asarray(jax.nn.log_softmax(transformer.apply(params, np.asarray([x + y]))))[0]
    scores.append(sum(log_p[len(x) - 1 + k, y[k]] for k in range(len(y))))
  assert m[2] == pytest.approx(scores[0] - scores[1], abs=1e-4)


def test_evaluate_and_main_job_pieces_with_a_tokenizer(bpe, tmp_path):
  tok, params = bpe
  vocab = [f"t{i}" for i in range(tok.get_vocab_size())]
  result = evaluate.evaluate_pairs(params, vocab, PAIRS, units=np.asarray([0, 3]), per_item=True, tokenizer=tok)
  assert result["items"] == 4 and [r["index"] for r in result["per_item"]] == [0, 1, 2, 3]
  assert result["flip_stats"]["items"] == 2 and result["flip_stats"]["skipped_multi_token"] == 1
  items, kept_pairs, stats = experiment.encode_pairs(PAIRS, vocab, "--eval_items", True, tok)
  assert len(kept_pairs) == 2 and stats["skipped_misaligned"] == 1
  control = experiment.control_text(vocab, 4, 0, PAIRS, tokenizer=tok)
  assert int(control.tokens[0, 0]) == tok.token_to_id(subword.BOS)
  classes = np.asarray(control.classes_V)
  runs, run = subword.word_ids(tok, "runs")[0], subword.word_ids(tok, "run")[0]
  assert classes[runs] == classes[run] and (classes == np.arange(len(classes))).sum() == len(classes) - 1
  word_level = tmp_path / "word.json"
  word_level.write_text(json.dumps({"model": {"type": "WordLevel"}}))
  assert subword.tokenizer_of(str(tmp_path), {"tokenizer": "word.json"}) is None
  assert subword.tokenizer_of(str(tmp_path), {}) is None
