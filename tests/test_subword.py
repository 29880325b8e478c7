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
  assert kept == [0, 1, 2] and stats["multi_token_items"] == 1 and stats["skipped_misaligned"] == 1
  zebras = subword.word_ids(tok, "zebras")
  assert np.asarray(items.target_rest[2, :len(zebras) - 1]).tolist() == zebras[1:] and int(items.target[2]) == zebras[0]
  assert (np.asarray(items.target_rest[:2]) == -1).all() and (np.asarray(items.foil_rest) == -1).all()
  assert subword.encode(PAIRS[:2], tok)[0].target_rest is None  # one-token words: the single-token engine
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
  assert result["flip_stats"]["items"] == 3 and result["flip_stats"]["multi_token_items"] == 1
  items, kept_pairs, stats = experiment.encode_pairs(PAIRS, vocab, "--eval_items", True, tok)
  assert len(kept_pairs) == 3 and stats["skipped_misaligned"] == 1
  control = experiment.control_text(vocab, 4, 0, PAIRS, tokenizer=tok)
  assert int(control.tokens[0, 0]) == tok.token_to_id(subword.BOS)
  classes = np.asarray(control.classes_V)
  runs, run = subword.word_ids(tok, "runs")[0], subword.word_ids(tok, "run")[0]
  assert classes[runs] == classes[run] and (classes == np.arange(len(classes))).sum() == len(classes) - 1
  word_level = tmp_path / "word.json"
  word_level.write_text(json.dumps({"model": {"type": "WordLevel"}}))
  assert subword.tokenizer_of(str(tmp_path), {"tokenizer": "word.json"}) is None
  assert subword.tokenizer_of(str(tmp_path), {}) is None


# Several-token words under intervention: the summed log-probability margin.

MULTI = [data.Pair(("the", "dog", "near", "the", "cat"), "zebras", "dogs", ("the", "dogs", "near", "the", "cat"), "pp"),
         data.Pair(("the", "cat", "near", "the", "dog"), "runs", "zebras", ("the", "cats", "near", "the", "dog"), "pp"),
         data.Pair(("the", "dog"), "runs", "run", ("the", "dogs"), "simple")]


def _summed_after(params, tok, pair, prefix):
  return subword.summed_margins(params, tok, [data.Pair(tuple(prefix), pair.target, pair.foil)])[0]


def test_unintervened_summed_margin_matches_summed_margins_and_hf(bpe):
  tok, params = bpe
  items, kept, stats = subword.encode(MULTI, tok)
  assert kept == [0, 1, 2] and stats["multi_token_items"] == 2 and items.target_rest is not None
  m = np.asarray(interventions.margins(params, items))[0]
  np.testing.assert_allclose(m, subword.summed_margins(params, tok, MULTI), atol=1e-5)
  np.testing.assert_allclose(np.asarray(evaluate.margins(params, items)), m, atol=1e-5)
  m_x, m_cf = interventions.clean_margins(params, items)  # the known filter: summed scores after x and after x'
  np.testing.assert_allclose(m_cf, [_summed_after(params, tok, p, p.counterfactual) for p in MULTI], atol=1e-5)
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  cfg = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=24, n_embd=16, n_layer=2, n_head=2,
                                n_inner=20, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                attn_pdrop=0.0, layer_norm_epsilon=1e-5)
  from jaxmask import convert_gpt2  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = transformers.GPT2LMHeadModel(cfg).eval()
  params = convert_gpt2.params_from_state_dict({k: v.numpy() for k, v in model.state_dict().items()}, 2)
  m = np.asarray(interventions.margins(params, items))[0]
  scores = []
  for p in MULTI:
    x = subword.prefix_ids(tok, p.prefix)
    s = []
    for word in (p.target, p.foil):
      y = subword.word_ids(tok, word)
      with torch.no_grad():
        log_p = torch.log_softmax(model(torch.tensor([x + y])).logits, -1)[0].numpy()
      s.append(sum(log_p[len(x) - 1 + k, y[k]] for k in range(len(y))))
    scores.append(s[0] - s[1])
  np.testing.assert_allclose(m, scores, atol=1e-4)


@pytest.mark.parametrize("replacement", ["counterfactual", "zero"])
def test_full_interchange_of_several_token_words(bpe, replacement):
  tok, params = bpe
  items, _, _ = subword.encode(MULTI, tok)
  n = interventions.models.num_units(params, "mlp,heads")
  m = np.asarray(interventions.margins(params, items, np.ones((1, n), np.float32), replacement, sites="mlp,heads"))[0]
  if replacement == "counterfactual":  # every unit at every step from x' (+ the word): the model's score after x'
    # exactly where x and x' end on the same token (items 0 and 1, several-token words): the residual stream
    # keeps each position's own token embedding, which the units do not replace
    expected = [_summed_after(params, tok, p, p.counterfactual) for p in MULTI[:2]]
    np.testing.assert_allclose(m[:2], expected, atol=1e-4)
    assert abs(m[0] - _summed_after(params, tok, MULTI[0], MULTI[0].prefix)) > 1.0  # and the intervention matters
  # single-token items inside a several-token batch score as alone, by the single-token engine
  single = subword.encode(MULTI[2:], tok)[0]
  assert single.target_rest is None
  m_single = np.asarray(interventions.margins(params, single, np.ones((1, n), np.float32), replacement,
                                              sites="mlp,heads"))[0]
  np.testing.assert_allclose(m[2:], m_single, atol=1e-4)


def test_search_runs_on_a_mix_of_one_and_several_token_words(bpe):
  from jaxmask import search  # pylint: disable=import-outside-toplevel
  tok, params = bpe
  items, _, _ = subword.encode(MULTI * 2, tok)
  result = search.sweep(params, items, [0.01, 0.1], seed=0, steps=4, batch_size=4, sites="mlp,heads")
  assert np.isfinite(result.loss_trace).all() and result.loss_trace.shape == (4, 2)
  gates = interventions.units_to_gates(result.units, interventions.models.num_units(params, "mlp,heads"))
  m = np.asarray(interventions.margins(params, items, gates, sites="mlp,heads"))
  assert m.shape == (2, 6) and np.isfinite(m).all()
  from jaxmask import attribution  # pylint: disable=import-outside-toplevel
  scores = attribution.attribution_patching(params, items, sites="mlp,heads")
  assert np.isfinite(np.asarray(scores)).all()
