"""Tests for jaxmask.train_lm: packing, configs, the tiny end-to-end run, resume, NaN and workdir guards."""

import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxmask import checkpoints
from jaxmask.corpus import build_corpus, pack_rows, tokenize
from jaxmask import train_lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = ["<unk>", "<eos>", "."] + [f"w{i}" for i in range(30)]
EOS = 1


def _synthetic_corpus(seed=0):
  rng = np.random.default_rng(seed)
  sentences = [" ".join(f"w{j}" for j in rng.integers(0, 30, rng.integers(2, 8))) + " ." for _ in range(800)]
  rows = pack_rows(tokenize(sentences, VOCAB), 20, EOS)
  return VOCAB, rows[:-16], rows[-16:]


SMALL = dict(embed_size=8, hidden_size=8, num_layers=2, batch_size=8, row_length=20, steps=30, warmup_steps=3,
             checkpoint_every=10, eval_every=10, learning_rate=0.01)


def test_pack_rows_whole_sentences_from_eos():
  sentences = [[5, 6, 2], [7, 2], [8, 9, 10, 11, 12, 13, 2], [4, 2]]
  rows = pack_rows(sentences, row_length=7, eos=EOS)
  # The 7-word sentence does not fit a row of 7 (it needs 8 with its <eos>) and is dropped.
  np.testing.assert_array_equal(rows, [[1, 5, 6, 2, 1, 7, 2, 1], [1, 4, 2, 1, -1, -1, -1, -1]])


def test_tokenize_maps_unknown_words_to_unk():
  assert tokenize(["w1 zebra ."], VOCAB) == [[4, 0, 2]]


def test_lm_cfg_is_the_default_config():
  assert train_lm.read_flagfile(os.path.join(ROOT, "configs", "lm.cfg")) == train_lm.LMConfig()


def test_flagfile_errors_name_file_and_line(tmp_path):
  path = tmp_path / "bad.cfg"
  path.write_text("# comment\n--steps=3\nsteps 4\n")
  with pytest.raises(train_lm.TrainingError, match=r"bad.cfg, line 3"):
    train_lm.read_flagfile(str(path))


@pytest.mark.slow
def test_tiny_config_trains_end_to_end_and_loss_falls(tmp_path):
  config = train_lm.read_flagfile(os.path.join(ROOT, "configs", "lm_tiny.cfg"))
  corpus = build_corpus(config)
  vocab, _, valid_rows = corpus
  initial = train_lm.lstm.init(jax.random.key(config.seed), len(vocab), config.embed_size, config.hidden_size,
                               config.num_layers)
  eos = vocab.index("<eos>")
  ppl_before = train_lm.perplexity(initial, valid_rows, eos, config.batch_size)
  params = train_lm.train(config, str(tmp_path / "lm"), progress=False, corpus=corpus)
  ppl_after = train_lm.perplexity(params, valid_rows, eos, config.batch_size)
  assert ppl_after < 0.25 * ppl_before
  loaded, model_config, loaded_vocab = checkpoints.load(str(tmp_path / "lm"))
  assert loaded_vocab == vocab
  assert model_config["hidden_size"] == config.hidden_size and model_config["train"]["steps"] == config.steps
  assert model_config["metrics"]["valid_perplexity"] == pytest.approx(ppl_after, rel=1e-4)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _interrupt_at_step_16(config, workdir, corpus, monkeypatch):
  """Starts training into ``workdir`` and interrupts it at step 16, between the checkpoints of steps 10 and 20."""
  real_step, calls = train_lm.train_step, []

  def killed_at_step_16(*args, **kwargs):
    calls.append(1)
    if len(calls) == 16:
      raise KeyboardInterrupt
    return real_step(*args, **kwargs)

  monkeypatch.setattr(train_lm, "train_step", killed_at_step_16)
  with pytest.raises(KeyboardInterrupt):
    train_lm.train(config, workdir, progress=False, corpus=corpus)
  monkeypatch.setattr(train_lm, "train_step", real_step)


def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
  corpus = _synthetic_corpus()
  uninterrupted = train_lm.train(SMALL, str(tmp_path / "a"), progress=False, corpus=corpus)

  _interrupt_at_step_16(SMALL, str(tmp_path / "b"), corpus, monkeypatch)
  assert not os.path.exists(tmp_path / "b" / "config.json")  # no final model yet
  resumed = train_lm.train(SMALL, str(tmp_path / "b"), progress=False, corpus=corpus)
  _, config, _ = checkpoints.load(str(tmp_path / "b"))
  assert config["metrics"]["steps_this_run"] == 20  # resumed from step 10, not from scratch
  for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  again = train_lm.train(SMALL, str(tmp_path / "b"), progress=False, corpus=corpus)  # finished: loads, no retraining
  assert checkpoints.load(str(tmp_path / "b"))[1]["metrics"] == config["metrics"]
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_nan_loss_stops_with_one_sentence_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  real_step, calls = train_lm.train_step, []

  def nan_at_step_14(*args, **kwargs):
    calls.append(1)
    state, loss = real_step(*args, **kwargs)
    return state, loss * np.nan if len(calls) == 14 else loss

  monkeypatch.setattr(train_lm, "train_step", nan_at_step_14)
  with pytest.raises(train_lm.TrainingError, match=r"loss became nan at step 14.*last good train state \(step 10\)"):
    train_lm.train(SMALL, str(tmp_path / "w"), progress=False, corpus=_synthetic_corpus())
  with ocp.CheckpointManager(str(tmp_path / "w" / "train_state")) as manager:
    assert manager.latest_step() == 10
    restored = manager.restore(10)
  assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(restored["params"]))


def test_workdir_with_another_config_is_refused(tmp_path):
  corpus = _synthetic_corpus()
  train_lm.train(dict(SMALL, steps=10), str(tmp_path / "w"), progress=False, corpus=corpus)
  with pytest.raises(train_lm.TrainingError, match=r"different config \(steps=10 there vs 12 now\)"):
    train_lm.train(dict(SMALL, steps=12), str(tmp_path / "w"), progress=False, corpus=corpus)
  with open(tmp_path / "w" / "train_state" / "lm_config.json") as f:
    assert json.load(f)["steps"] == 10
  renamed = (VOCAB[:-1] + ["w999"],) + corpus[1:]  # the generator's lexicon changed since the run started
  with pytest.raises(train_lm.TrainingError, match=r"another vocabulary"):
    train_lm.train(dict(SMALL, steps=10), str(tmp_path / "w"), progress=False, corpus=renamed)


def test_unknown_config_field_is_named():
  with pytest.raises(train_lm.TrainingError, match="hidden"):
    train_lm.config_from_dict({"hidden": 3})


def test_dropout_only_in_training_and_forget_bias():
  vocab, rows, _ = _synthetic_corpus()
  config = train_lm.config_from_dict(dict(SMALL, dropout=0.3, forget_bias=1.0))
  params = train_lm.init_params(config, len(vocab))
  plain = train_lm.lstm.init(jax.random.key(config.seed), len(vocab), 8, 8, 2)
  for layer, ref in zip(params["layers"], plain["layers"]):  # only the forget gates' biases moved, by +1
    np.testing.assert_allclose(np.asarray(layer["b_ih"] - ref["b_ih"]), np.repeat([0.0, 1.0, 0.0, 0.0], 8), atol=1e-6)
  batch = jax.numpy.asarray(rows[:8])
  key = jax.random.key(0)
  evaluation = train_lm.masked_nll(params, batch, EOS)  # no dropout: what perplexity() and evaluation use
  assert train_lm.masked_nll(params, batch, EOS, 0.0, key)[0] == evaluation[0]
  dropped = [float(train_lm.masked_nll(params, batch, EOS, 0.3, jax.random.key(k))[0]) for k in range(3)]
  assert len(set(dropped)) == 3 and all(d != float(evaluation[0]) for d in dropped)
  tokens = jax.numpy.asarray(np.maximum(rows[:2, :-1], 0))
  np.testing.assert_allclose(train_lm.apply_with_dropout(params, tokens, 1e-9, key),
                             train_lm.lstm.apply(params, tokens), atol=1e-5)  # same network without dropout


def test_dropout_run_resumes_identically_and_bad_options_are_refused(tmp_path):
  corpus = _synthetic_corpus()
  config = dict(SMALL, dropout=0.2, steps=20)
  a = train_lm.train(config, str(tmp_path / "a"), progress=False, corpus=corpus)
  train_lm.train(dict(config, steps=10), str(tmp_path / "b0"), progress=False, corpus=corpus)
  b = train_lm.train(config, str(tmp_path / "b"), progress=False, corpus=corpus)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):  # masks are a function of (seed, step)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(train_lm.TrainingError, match="dropout"):
    train_lm.train(dict(SMALL, dropout=1.0), str(tmp_path / "c"), progress=False, corpus=corpus)
  with pytest.raises(train_lm.TrainingError, match="lexicon"):
    train_lm.train(dict(SMALL, lexicon="huge"), str(tmp_path / "d"), progress=False, corpus=corpus)


TINY_TRANSFORMER = dict(SMALL, family="transformer", embed_size=16, hidden_size=16, num_heads=2, d_mlp=24,
                        max_positions=24, tie_weights=True, optimizer="adam", dropout=0.0)


def test_transformer_trains_resumes_and_loads_as_a_transformer(tmp_path, monkeypatch):
  vocab, _, valid_rows = corpus = _synthetic_corpus()
  config = train_lm.config_from_dict(TINY_TRANSFORMER)
  initial = train_lm.tie(train_lm.init_params(config, len(vocab)))
  ppl_before = train_lm.perplexity(initial, valid_rows, EOS, 8)
  uninterrupted = train_lm.train(config, str(tmp_path / "a"), progress=False, corpus=corpus)
  assert train_lm.perplexity(uninterrupted, valid_rows, EOS, 8) < 0.7 * ppl_before  # uniform random words: the floor is near 25
  np.testing.assert_array_equal(np.asarray(uninterrupted["lm_head"]), np.asarray(uninterrupted["wte"]))  # tied

  _interrupt_at_step_16(config, str(tmp_path / "b"), corpus, monkeypatch)
  resumed = train_lm.train(config, str(tmp_path / "b"), progress=False, corpus=corpus)
  for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  loaded, model_config, _ = checkpoints.load(str(tmp_path / "b"))
  assert model_config["family"] == "transformer" and model_config["d_mlp"] == 24 and model_config["num_heads"] == 2
  packed = checkpoints.load(checkpoints.pack(str(tmp_path / "b"), str(tmp_path / "packed")))[0]
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(packed)):  # float16 packing of a transformer
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-3)


@pytest.mark.parametrize("change, message", [
    (dict(dropout=0.1), "dropout is implemented for the LSTM family only"),
    (dict(embed_size=8), "need embed_size == hidden_size"),
    (dict(max_positions=10), "row_length <= max_positions"),
    (dict(family="gru"), "family must be one of lstm, transformer"),
])
def test_transformer_options_are_checked(tmp_path, change, message):
  with pytest.raises(train_lm.TrainingError, match=message):
    train_lm.train(dict(TINY_TRANSFORMER, **change), str(tmp_path / "w"), progress=False, corpus=_synthetic_corpus())
