"""jaxmask.convert --input: random Hugging Face GPT-2 models saved with save_pretrained, imported, rerun to 1e-4."""

import json
import os

from absl import flags
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from jaxmask import checkpoints  # pylint: disable=g-import-not-at-top
from jaxmask import convert
from jaxmask import convert_gpt2
from jaxmask.models import transformer

TOL = 1e-4
WORDS = ["<unk>", "<eos>", "the", "dog", "dogs", "runs", "run", "near", "cat", "cats", "is", "are"]
TEXT = ["the dog near the cats runs", "the dogs near the cat run", "the cat is near", "the cats are near the dog"]
CASES = [  # (layers, heads, d_model, d_mlp or None (4 D), positions, tied, weights file, tokenizer)
    (1, 2, 8, None, 16, True, "safetensors", "word"),
    (2, 4, 16, 24, 20, False, "safetensors", "bpe"),
    (3, 3, 12, None, 12, True, "bin", "bpe_files"),
]
_apply = jax.jit(transformer.apply)


def _tokenizer(kind, directory):
  """Saves a word-level tokenizer.json, a byte-level BPE tokenizer.json, or BPE vocab.json + merges.txt."""
  if kind == "word":
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(os.path.join(directory, "tokenizer.json"))
    return tok
  tok = tokenizers.ByteLevelBPETokenizer()
  tok.train_from_iterator(TEXT * 10, vocab_size=300, min_frequency=1, show_progress=False)
  if kind == "bpe":
    tok.save(os.path.join(directory, "tokenizer.json"))
  else:
    tok.save_model(directory)
  return tok


def _hf_model(tmp_path, layers, heads, d_model, d_mlp, positions, tied, weights, kind):
  directory = tmp_path / "hf"
  directory.mkdir()
  tok = _tokenizer(kind, str(directory))
  vocab_size = tok.get_vocab_size() + 3  # GPT-2 checkpoints may have more rows than tokens
  torch.manual_seed(layers)
  config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=positions, n_embd=d_model, n_layer=layers,
                                   n_head=heads, n_inner=d_mlp, tie_word_embeddings=tied, bos_token_id=0,
                                   eos_token_id=0, initializer_range=0.2)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():  # nonzero biases and LayerNorm parameters, so that a dropped one would show
    for name, p in model.named_parameters():
      if name.endswith("bias") or ".ln_" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.save_pretrained(str(directory))
  if weights == "bin":  # the older format (transformers 5 writes safetensors only): a torch.save'd state dict
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    os.remove(directory / "model.safetensors")
  return model, tok, str(directory)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}L{c[1]}H{c[2]}D-{c[6]}-{c[7]}" for c in CASES])
def test_logits_match_transformers(tmp_path, case):
  model, tok, directory = _hf_model(tmp_path, *case)
  summary = convert_gpt2.convert(directory, str(tmp_path / "ckpt"))
  params, config, vocab = checkpoints.load(str(tmp_path / "ckpt"))
  assert config["family"] == "transformer" and summary["tied_embeddings"] == case[5]
  assert config["num_layers"] == case[0] and config["num_heads"] == case[1] and config["d_model"] == case[2]
  assert vocab[:tok.get_vocab_size()] == [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
  tokens = np.random.default_rng(0).integers(0, config["vocab_size"], (3, case[4]))
  with torch.no_grad():
    expected = model(torch.as_tensor(tokens)).logits.numpy()
  got = np.asarray(_apply(params, tokens))
  err = float(np.abs(got - expected).max())
  print(f"parity {case[:4]}: max |logit diff| = {err:.2e}")
  assert err < TOL
  ids = tok.encode(" ".join(TEXT[0].split())).ids  # the saved tokenizer encodes as the source one
  assert convert_gpt2.read_tokenizer(str(tmp_path / "ckpt")).encode(TEXT[0]).ids == ids


def test_missing_files_are_named(tmp_path):
  model, _, directory = _hf_model(tmp_path, 1, 2, 8, None, 8, True, "safetensors", "bpe_files")
  del model
  os.remove(os.path.join(directory, "merges.txt"))
  with pytest.raises(convert.ConvertError, match="no tokenizer.json and no merges.txt"):
    convert_gpt2.convert(directory, str(tmp_path / "out"))
  os.remove(os.path.join(directory, "model.safetensors"))
  with pytest.raises(convert.ConvertError, match="neither model.safetensors nor pytorch_model.bin"):
    convert_gpt2.convert(directory, str(tmp_path / "out"))
  with pytest.raises(convert.ConvertError, match="config.json does not exist"):
    convert_gpt2.convert(str(tmp_path), str(tmp_path / "out"))


def test_unsupported_config_is_refused(tmp_path):
  _, _, directory = _hf_model(tmp_path, 1, 2, 8, None, 8, True, "safetensors", "word")
  path = os.path.join(directory, "config.json")
  with open(path) as f:
    config = json.load(f)
  with open(path, "w") as f:
    json.dump({**config, "activation_function": "relu"}, f)
  with pytest.raises(convert.ConvertError, match="activation_function='relu' is not supported"):
    convert_gpt2.convert(directory, str(tmp_path / "out"))


def test_command_line(tmp_path, monkeypatch, capsys):
  _, _, directory = _hf_model(tmp_path, 1, 2, 8, None, 8, False, "safetensors", "word")
  flag_values = flags.FlagValues()
  convert.define_flags(flag_values)
  flag_values([f"convert", f"--input={directory}", f"--output={tmp_path / 'ckpt'}"])
  monkeypatch.setattr(flags, "FLAGS", flag_values)
  convert.main(["convert"])
  assert "1-layer GPT-2 transformer, d_model 8, 2 heads" in capsys.readouterr().out
  with open(tmp_path / "ckpt" / "config.json") as f:
    assert json.load(f)["family"] == "transformer"
