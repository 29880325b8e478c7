"""Tests for jaxmask.checkpoints: save/load round trip and the errors of an incomplete or mismatched directory."""

import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxmask import checkpoints
from jaxmask.models import lstm

VOCAB = ["<unk>", "<eos>", ".", "the", "dog", "dogs", "runs", "run"]


@pytest.fixture
def saved(tmp_path):
  params = lstm.init(jax.random.key(3), len(VOCAB), 6, 5, 2)
  directory = str(tmp_path / "ckpt")
  checkpoints.save(directory, params, VOCAB, {"note": "test", "metrics": {"valid_perplexity": 12.5}})
  return directory, params


def test_round_trip_keeps_params_config_and_vocab(saved):
  directory, params = saved
  loaded, config, vocab = checkpoints.load(directory)
  assert vocab == VOCAB
  assert len(config.pop("params_sha256")) == 64  # load checks it against params/
  assert config == {"vocab_size": 8, "embed_size": 6, "hidden_size": 5, "num_layers": 2, "note": "test",
                    "metrics": {"valid_perplexity": 12.5}}
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_missing_vocabulary_is_one_sentence(saved):
  directory, _ = saved
  os.remove(os.path.join(directory, "vocab.txt"))
  with pytest.raises(checkpoints.CheckpointError, match=r"has no vocab.txt"):
    checkpoints.load(directory)


def test_config_that_does_not_match_the_params(saved):
  directory, _ = saved
  path = os.path.join(directory, "config.json")
  with open(path) as f:
    config = json.load(f)
  config["hidden_size"] = 7
  with open(path, "w") as f:
    json.dump(config, f)
  with pytest.raises(checkpoints.CheckpointError, match=r"does not match its model config"):
    checkpoints.load(directory)


def test_vocabulary_of_another_size(saved):
  directory, _ = saved
  with open(os.path.join(directory, "vocab.txt"), "w") as f:
    f.write("\n".join(VOCAB[:-1]) + "\n")
  with pytest.raises(checkpoints.CheckpointError, match=r"has 7 words but .* vocab_size=8"):
    checkpoints.load(directory)


def test_missing_directory_and_bad_json(saved, tmp_path):
  with pytest.raises(checkpoints.CheckpointError, match=r"does not exist"):
    checkpoints.load(str(tmp_path / "nowhere"))
  directory, _ = saved
  with open(os.path.join(directory, "config.json"), "w") as f:
    f.write("{\n  \"vocab_size\": 8,\n")
  with pytest.raises(checkpoints.CheckpointError, match=r"config.json, line 3: not valid JSON"):
    checkpoints.load(directory)


def test_save_refuses_a_vocabulary_of_the_wrong_size(tmp_path):
  params = lstm.init(jax.random.key(0), 4, 3, 3, 1)
  with pytest.raises(checkpoints.CheckpointError, match=r"vocabulary has 3 words but the embedding has 4 rows"):
    checkpoints.save(str(tmp_path / "x"), params, ["a", "b", "c"])


def test_packed_float16_matches_float32_logits(saved, tmp_path):
  directory, params = saved
  packed = checkpoints.pack(directory, str(tmp_path / "packed"), {"figures": {"agreement": 1.0}})
  loaded, config, vocab = checkpoints.load_packed(packed)
  via_load = checkpoints.load(packed)[0]  # every --checkpoint flag takes a packed directory too
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(via_load)))
  assert vocab == VOCAB and config["figures"] == {"agreement": 1.0} and config["params_dtype"] == "float16"
  assert all(a.dtype == np.float32 for a in jax.tree.leaves(loaded))
  tokens = np.array([[1, 3, 4, 6, 2, 3, 5, 7]])
  full, half = lstm.apply(params, tokens), lstm.apply(loaded, tokens)
  assert float(np.max(np.abs(full - half))) < 1e-3 * float(np.max(np.abs(full))) + 1e-3


def test_packed_missing_or_corrupt_file_is_one_sentence(saved, tmp_path):
  directory, _ = saved
  packed = checkpoints.pack(directory, str(tmp_path / "packed"))
  npz = os.path.join(packed, "params.npz")
  with open(npz, "rb") as f:
    data = f.read()
  with open(npz, "wb") as f:
    f.write(data[: len(data) // 2])  # truncated
  with pytest.raises(checkpoints.CheckpointError, match=r"params.npz is corrupt .*reinstall jaxmask.*train_lm"):
    checkpoints.load_packed(packed)
  os.remove(npz)
  with pytest.raises(checkpoints.CheckpointError, match=r"params.npz is missing; reinstall"):
    checkpoints.load_packed(packed)
  with pytest.raises(checkpoints.CheckpointError, match=r"config.json is missing"):
    checkpoints.load_packed(str(tmp_path / "nowhere"))


def _manager(directory):
  return ocp.CheckpointManager(str(directory), options=ocp.CheckpointManagerOptions(
      max_to_keep=2, enable_async_checkpointing=False))


def _largest_file(directory):
  paths = [os.path.join(r, n) for r, _, names in os.walk(directory) for n in names]
  return max(paths, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "edit"])
def test_corrupt_resumable_state_is_named_deleted_and_the_run_goes_back(tmp_path, capsys, damage):
  tree = {"w": np.arange(4096, dtype=np.float32)}
  with _manager(tmp_path / "state") as manager:
    for step in (10, 20):
      manager.save(step, args=ocp.args.StandardSave({"w": tree["w"] + step}))
      checkpoints.seal(manager, step)
  assert sorted(os.listdir(tmp_path / "state")) == ["10", "10.sha256", "20", "20.sha256"]
  path = _largest_file(tmp_path / "state" / "20")
  raw = open(path, "rb").read()
  open(path, "wb").write(raw[:len(raw) // 2] if damage == "truncate" else raw[:-8] + b"\x01" * 8)
  args = ocp.args.StandardRestore(tree)
  with _manager(tmp_path / "state") as manager:
    step, restored = checkpoints.restore_latest(manager, args, "test")
  assert step == 10 and np.array_equal(restored["w"], tree["w"] + 10)
  assert capsys.readouterr().err == (f"The test checkpoint {tmp_path}/state/20 is corrupt (its files' sha256 differs "
                                     f"from the one recorded when it was saved); it was deleted and the run restarts "
                                     f"from the earlier checkpoint of step 10.\n")
  path = _largest_file(tmp_path / "state" / "10")
  open(path, "wb").write(b"")
  with _manager(tmp_path / "state") as manager:
    assert checkpoints.restore_latest(manager, args, "test") == (0, None)
    assert manager.all_steps() == []
  assert capsys.readouterr().err.endswith("it was deleted and the run restarts from step 0.\n")


@pytest.mark.parametrize("damage", ["truncate", "edit"])
def test_corrupt_params_and_nan_params_are_one_sentence(saved, tmp_path, damage):
  directory = tmp_path / "copy"
  shutil.copytree(saved[0], directory)
  path = _largest_file(directory / "params")
  raw = open(path, "rb").read()
  open(path, "wb").write(raw[:10] if damage == "truncate" else raw[:-4] + b"\x7f\x7f\x7f\x7f")
  with pytest.raises(checkpoints.CheckpointError, match=r"params is corrupt \(its files' sha256 differs from the "
                                                        r"params_sha256 recorded in .*config.json\); re-create"):
    checkpoints.load(str(directory))
  params = jax.tree.map(lambda a: a.at[0].set(np.nan) if a.ndim == 1 else a, saved[1])
  checkpoints.save(str(tmp_path / "nan"), params, VOCAB)
  with pytest.raises(checkpoints.CheckpointError, match=r"params: parameter .* holds NaN or inf; the model is "):
    checkpoints.load(str(tmp_path / "nan"))


def test_shipped_transformer_loads_by_name_and_unknown_names_are_refused():
  params, config, vocab = checkpoints.load("builtin:transformer")
  assert config["family"] == "transformer" and len(vocab) == config["vocab_size"] == params["wte"].shape[0]
  assert config["figures"]["agreement_min_cell"] >= 0.95 and config["figures"]["gender_pearson_r"] >= 0.6
  assert checkpoints.load("builtin:lstm")[1]["hidden_size"] == 256
  with pytest.raises(checkpoints.CheckpointError, match="builtin:gpt9 names no shipped model; use one of builtin:lstm"):
    checkpoints.load("builtin:gpt9")
