"""jaxmask.convert: random PyTorch RNNModel LSTM LMs saved both ways, converted, and rerun in JAX to 1e-5."""

import os
import sys

from absl import flags
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from jaxmask import checkpoints  # pylint: disable=g-import-not-at-top
from jaxmask import convert
from jaxmask.models import lstm

TOL = 1e-5
_apply = jax.jit(lstm.apply, static_argnames="return_states")
CASES = [  # (layers, vocab, embed, hidden, tied, legacy serialization format)
    (1, 13, 8, 8, False, False),
    (2, 17, 6, 10, False, True),
    (2, 11, 12, 12, True, False),
    (1, 9, 5, 5, True, True),
]


class RNNModel(nn.Module):
  """word_language_model's / colorlessgreenRNNs' RNNModel with an LSTM; forward returns raw logits (T, B, V)."""

  def __init__(self, vocab_size, embed_size, hidden_size, num_layers, tie_weights=False):
    super().__init__()
    self.drop = nn.Dropout(0.2)
    self.encoder = nn.Embedding(vocab_size, embed_size)
    self.rnn = nn.LSTM(embed_size, hidden_size, num_layers, dropout=0.2 if num_layers > 1 else 0.0)
    self.decoder = nn.Linear(hidden_size, vocab_size)
    if tie_weights:
      self.decoder.weight = self.encoder.weight
    self.rnn_type, self.nhid, self.nlayers = "LSTM", hidden_size, num_layers

  def forward(self, input_TxB, hidden=None):
    output, hidden = self.rnn(self.drop(self.encoder(input_TxB)), hidden)
    return self.decoder(self.drop(output)), hidden


def _model(layers, vocab, embed, hidden, tied):
  torch.manual_seed(0)
  model = RNNModel(vocab, embed, hidden, layers, tied).eval()
  with torch.no_grad():  # nonzero decoder bias, so that a dropped bias would show
    model.decoder.bias.uniform_(-0.5, 0.5)
  return model


def _save(obj, path, legacy=False):
  torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
  return str(path)


def _vocab(path, size):
  words = ["<unk>", "<eos>"] + [f"w{i}" for i in range(size - 2)]
  path.write_text("\n".join(words) + "\n")
  return str(path)


def _torch_reference(model, tokens_BxT):
  """Logits (B, T, V) and every layer's h, c (L, B, T, H) from the zero state.

  nn.LSTM returns states across time for the top layer only, so each layer is rerun one step at a time by
  an nn.LSTMCell holding that layer's weights; its top layer and final states are checked against nn.LSTM.
  """
  with torch.no_grad():
    tokens_TxB = torch.as_tensor(np.asarray(tokens_BxT).T, dtype=torch.long)
    logits_TxBxV, (h_n, c_n) = model(tokens_TxB)
    x_TxBxI = model.encoder(tokens_TxB)
    hs, cs = [], []
    for l in range(model.nlayers):
      cell = nn.LSTMCell(x_TxBxI.shape[-1], model.nhid)
      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, name).copy_(getattr(model.rnn, f"{name}_l{l}"))
      h = c = torch.zeros(tokens_TxB.shape[1], model.nhid)
      steps = []
      for x_BxI in x_TxBxI:
        h, c = cell(x_BxI, (h, c))
        steps.append((h, c))
      x_TxBxI = torch.stack([s[0] for s in steps])
      hs.append(x_TxBxI)
      cs.append(torch.stack([s[1] for s in steps]))
      np.testing.assert_allclose(hs[-1][-1], h_n[l], atol=TOL)
      np.testing.assert_allclose(cs[-1][-1], c_n[l], atol=TOL)
    np.testing.assert_allclose(model.decoder(x_TxBxI), logits_TxBxV, atol=TOL)
  to_btx = lambda a: a.transpose(0, 1).numpy()
  return to_btx(logits_TxBxV), np.stack([to_btx(h) for h in hs]), np.stack([to_btx(c) for c in cs])


@pytest.mark.parametrize("whole_model", [False, True], ids=["state_dict", "whole_model"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "L{}_V{}_E{}_H{}_{}_{}".format(
    c[0], c[1], c[2], c[3], "tied" if c[4] else "untied", "legacy" if c[5] else "zip"))
def test_converted_model_matches_torch(tmp_path, case, whole_model):
  layers, vocab, embed, hidden, tied, legacy = case
  model = _model(layers, vocab, embed, hidden, tied)
  state = model.state_dict()
  if tied:  # the whole model holds decoder.weight (the embedding itself); test the state dict without it
    state.pop("decoder.weight")
  path = _save(model if whole_model else state, tmp_path / "model.pt", legacy)

  summary = convert.convert(path, _vocab(tmp_path / "vocab.txt", vocab), str(tmp_path / "ckpt"))
  params, config, words = checkpoints.load(str(tmp_path / "ckpt"))

  assert summary["source_format"] == ("whole model" if whole_model else "state dict")
  assert summary["tied_embeddings"] == config["tied_embeddings"] == tied
  assert (config["num_layers"], config["vocab_size"], config["embed_size"], config["hidden_size"]) == (
      layers, vocab, embed, hidden)
  assert words[:2] == ["<unk>", "<eos>"] and len(words) == vocab
  tokens_BxT = np.random.default_rng(1).integers(0, vocab, size=(3, 7))
  want_logits, want_h, want_c = _torch_reference(model, tokens_BxT)
  logits, states = _apply(params, tokens_BxT, return_states=True)
  np.testing.assert_allclose(logits, want_logits, atol=TOL)
  np.testing.assert_allclose(states["h"], want_h, atol=TOL)
  np.testing.assert_allclose(states["c"], want_c, atol=TOL)


def test_data_parallel_prefix_is_dropped():
  state = {k: v.numpy() for k, v in _model(2, 7, 4, 4, False).state_dict().items()}
  plain = convert.params_from_state_dict(state)
  prefixed = convert.params_from_state_dict({f"module.{k}": v for k, v in state.items()})
  assert jax.tree.structure(plain) == jax.tree.structure(prefixed) and len(prefixed["layers"]) == 2
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(prefixed)):
    np.testing.assert_array_equal(a, b)


class _RunsCode:
  """Unpickling this calls ``call``: the classic malicious pickle."""

  def __init__(self, *call):
    self.call = call

  def __reduce__(self):
    return self.call


@pytest.mark.parametrize("container", ["state_dict", "whole_model"])
@pytest.mark.parametrize("payload", ["os.system", "exec"])
def test_pickle_that_runs_code_is_refused(tmp_path, container, payload):
  marker = tmp_path / "pwned"
  call = {"os.system": (os.system, (f"touch {marker}",)),
          "exec": (exec, (f"open({str(marker)!r}, 'w').close()",))}[payload]
  if container == "whole_model":
    obj = _model(1, 5, 3, 3, False)
    obj.extra = _RunsCode(*call)
  else:
    obj = {"encoder.weight": torch.zeros(5, 3), "extra": _RunsCode(*call)}
  path = _save(obj, tmp_path / "evil.pt")

  with pytest.raises(convert.ConvertError, match="refused and nothing in it was run"):
    convert.convert(path, _vocab(tmp_path / "vocab.txt", 5), str(tmp_path / "ckpt"))
  assert not marker.exists()
  assert not (tmp_path / "ckpt").exists()
  if payload == "os.system" and container == "state_dict":  # the payload is live: plain unpickling runs it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_calls_inside_torch_are_recorded_not_run(tmp_path):
  """Old torch pickled a call (``_get_thnn_function_backend()``) into every module: it loads, inert."""
  marker = tmp_path / "written_by_load.pt"
  model = _model(1, 5, 3, 3, False)
  model.backend = _RunsCode(torch.save, ({}, str(marker)))
  summary = convert.convert(_save(model, tmp_path / "model.pt"), _vocab(tmp_path / "vocab.txt", 5),
                            str(tmp_path / "ckpt"))
  assert summary["source_format"] == "whole model"
  assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_file(tmp_path, legacy):
  path = _save(_model(1, 6, 4, 4, False), tmp_path / "model.pt", legacy)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])
  with pytest.raises(convert.ConvertError, match=r"could not be read as a torch\.save file; it may be truncated"):
    convert.convert(path, _vocab(tmp_path / "vocab.txt", 6), str(tmp_path / "ckpt"))


def test_vocabulary_of_wrong_size(tmp_path):
  path = _save(_model(1, 13, 4, 4, False).state_dict(), tmp_path / "model.pt")
  with pytest.raises(convert.ConvertError, match=r"vocab\.txt has 12 words but the model's embedding has 13 rows"):
    convert.convert(path, _vocab(tmp_path / "vocab.txt", 12), str(tmp_path / "ckpt"))


def test_gru_and_non_lm_files_are_named(tmp_path):
  gru = {"encoder.weight": torch.zeros(5, 4), **{f"rnn.{k}": v for k, v in nn.GRU(4, 6).state_dict().items()},
         "decoder.weight": torch.zeros(5, 6), "decoder.bias": torch.zeros(5)}
  with pytest.raises(convert.ConvertError, match=r"this is a GRU model .* jaxmask converts LSTM language models only"):
    convert.convert(_save(gru, tmp_path / "gru.pt"), _vocab(tmp_path / "vocab.txt", 5), str(tmp_path / "ckpt"))
  with pytest.raises(convert.ConvertError, match=r"not a recurrent LM in the RNNModel layout.*\(it holds fc\.weight\)"):
    convert.convert(_save({"fc.weight": torch.zeros(5, 4)}, tmp_path / "fc.pt"), str(tmp_path / "vocab.txt"),
                    str(tmp_path / "ckpt"))
  bidirectional = {f"rnn.{k}": v for k, v in nn.LSTM(4, 6, bidirectional=True).state_dict().items()}
  bidirectional.update({"encoder.weight": torch.zeros(5, 4), "decoder.weight": torch.zeros(5, 6),
                        "decoder.bias": torch.zeros(5)})
  with pytest.raises(convert.ConvertError, match=r"entries an RNNModel LSTM LM does not \(rnn\.bias_hh_l0_reverse"):
    convert.convert(_save(bidirectional, tmp_path / "bi.pt"), str(tmp_path / "vocab.txt"), str(tmp_path / "ckpt"))


def test_missing_torch_is_one_sentence(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(convert.ConvertError, match=r"needs torch: pip install -e '\.\[torch\]'"):
    convert.load_torch_state(str(tmp_path / "model.pt"))


def _run_main(monkeypatch, *argv):
  flag_values = flags.FlagValues()
  convert.define_flags(flag_values)
  flag_values(["convert", *argv])
  monkeypatch.setattr(flags, "FLAGS", flag_values)
  convert.main(["convert"])


def test_main_prints_a_summary_or_exits_with_one_sentence(tmp_path, monkeypatch, capsys):
  path = _save(_model(1, 13, 4, 4, False).state_dict(), tmp_path / "model.pt")
  _run_main(monkeypatch, f"--torch_checkpoint={path}", f"--vocab={_vocab(tmp_path / 'vocab.txt', 13)}",
            f"--output={tmp_path / 'ckpt'}")
  assert "1-layer LSTM, hidden 4, embedding 4, vocabulary 13, untied embeddings (from a state dict)" in (
      capsys.readouterr().out)
  with pytest.raises(SystemExit) as exit_info:  # sys.exit(str): printed to stderr, status 1, no traceback
    _run_main(monkeypatch, f"--torch_checkpoint={path}", f"--vocab={_vocab(tmp_path / 'small.txt', 12)}",
              f"--output={tmp_path / 'ckpt2'}")
  message = exit_info.value.code
  assert isinstance(message, str) and message.startswith("convert: ") and "\n" not in message
  assert "small.txt has 12 words but the model's embedding has 13 rows" in message
