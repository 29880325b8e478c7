"""A jaxmask checkpoint directory: parameters (orbax), model config (config.json) and vocabulary (vocab.txt).

Layout of DIR::

    DIR/config.json   the family's sizes (``CONFIG_KEYS``; an LSTM's "vocab_size", "embed_size", "hidden_size",
                      "num_layers"), "family" (absent for LSTMs) and any extra metadata
    DIR/vocab.txt     one word (or token) per line, index = line number
    DIR/params/       orbax checkpoint of the family's parameter pytree

Every command takes such a directory as ``--checkpoint``; ``params, config, vocab = load(DIR)`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxmask import models
from jaxmask.models import lstm

MODEL_KEYS = lstm.CONFIG_KEYS


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be read; the message says which file and what to do."""


def save(directory: str, params: dict, vocab: list[str], extra_config: dict[str, Any] | None = None) -> None:
  """Writes DIR/params, DIR/config.json and DIR/vocab.txt (overwrites an existing checkpoint there)."""
  directory = os.path.abspath(directory)
  model = models.of_params(params)
  config = dict(model.config_of(params))
  if model is not lstm:
    config["family"] = next(name for name, family in models.FAMILIES.items() if family is model)
  if config["vocab_size"] != len(vocab):
    raise CheckpointError(f"the vocabulary has {len(vocab)} words but the embedding has {config['vocab_size']} rows.")
  config.update(extra_config or {})
  os.makedirs(directory, exist_ok=True)
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, "params"), params, force=True)
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)


def read_vocab(path: str) -> list[str]:
  """One word per line, index = line number (colorlessgreenRNNs' format).

  Surrounding whitespace is stripped (as colorlessgreenRNNs' whitespace split does); a blank line or a
  line holding two words is an error naming the line, since it would shift every later index.
  """
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().split("\n")
  except FileNotFoundError:
    raise CheckpointError(f"vocabulary file {path} does not exist; give the vocabulary the model was trained "
                          f"with (one word per line).") from None
  if lines and lines[-1].strip() == "":
    lines.pop()
  words = [line.strip() for line in lines]
  for i, w in enumerate(words):
    if not w or len(w.split()) != 1:
      raise CheckpointError(f"{path}, line {i + 1}: expected one word per line, got {lines[i]!r}; fix the line "
                            f"(every word's index is its line number).")
  if not words:
    raise CheckpointError(f"{path} is empty; a vocabulary file holds one word per line.")
  return words


def language_of(config: dict[str, Any]) -> str:
  """The generator language a checkpoint's model was trained on ("small" for checkpoints that do not say)."""
  return config.get("train", {}).get("lexicon", "small")


def load(directory: str) -> tuple[dict, dict[str, Any], list[str]]:
  """Reads (params, config, vocab) from a checkpoint directory written by ``save`` (or by :func:`pack`)."""
  if os.path.exists(os.path.join(directory, "params.npz")):
    return load_packed(directory)
  config_path = os.path.join(directory, "config.json")
  vocab_path = os.path.join(directory, "vocab.txt")
  params_path = os.path.abspath(os.path.join(directory, "params"))
  if not os.path.isdir(directory):
    raise CheckpointError(f"checkpoint directory {directory} does not exist; train one with "
                          f"`python -m jaxmask.train_lm --workdir={directory}` or convert one with jaxmask.convert.")
  for path, what in ((config_path, "config.json"), (vocab_path, "vocab.txt"), (params_path, "params/")):
    if not os.path.exists(path):
      raise CheckpointError(f"checkpoint directory {directory} has no {what}; it is not a complete jaxmask "
                            f"checkpoint (expected config.json, vocab.txt and params/).")
  try:
    with open(config_path, encoding="utf-8") as f:
      config = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_path}, line {e.lineno}: not valid JSON ({e.msg}).") from e
  try:
    model = models.family_of(config)
  except ValueError as e:
    raise CheckpointError(f"{config_path}: {e}") from None
  missing = [k for k in model.CONFIG_KEYS if k not in config]
  if missing:
    raise CheckpointError(f"{config_path} lacks {', '.join(missing)}; it must give {', '.join(model.CONFIG_KEYS)}.")
  vocab = read_vocab(vocab_path)
  if len(vocab) != config["vocab_size"]:
    raise CheckpointError(f"{vocab_path} has {len(vocab)} words but {config_path} says vocab_size="
                          f"{config['vocab_size']}; use the vocabulary the model was trained with.")
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *(config[k] for k in model.CONFIG_KEYS)))
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract)
  with ocp.StandardCheckpointer() as ckptr:
    try:
      metadata = ckptr.metadata(params_path)
      tree = getattr(metadata, "item_metadata", metadata)
      tree = getattr(tree, "tree", tree)
      stored = {jax.tree_util.keystr(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]}
    except Exception as e:  # orbax raises several types for an unreadable directory
      raise CheckpointError(f"{params_path} is not a readable orbax checkpoint ({type(e).__name__}); "
                            f"re-create the checkpoint.") from e
    for p, a in jax.tree_util.tree_flatten_with_path(abstract)[0]:
      key = jax.tree_util.keystr(p)
      if stored.get(key) != tuple(a.shape):
        raise CheckpointError(f"{params_path}: parameter {key} has shape {stored.get(key)} but {config_path} "
                              f"implies {tuple(a.shape)}; the checkpoint does not match its model config.")
    params = ckptr.restore(params_path, abstract)
  params = jax.tree.map(jnp.asarray, params)
  return params, config, vocab


# The shipped default LM: one float16 .npz of parameters, config.json and vocab.txt inside the package,
# each file's sha256 recorded in config.json ("files") and checked on load.

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_lm")
_RESTORE = ("reinstall jaxmask (pip install --force-reinstall .) or retrain and pack it: "
            "`python -m jaxmask.train_lm --flagfile=configs/lm.cfg --workdir=workdir_lm` then "
            "`python -c \"from jaxmask import checkpoints; checkpoints.pack('workdir_lm')\"`")


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def pack(checkpoint_dir: str, directory: str = DEFAULT_DIR, extra_config: dict[str, Any] | None = None) -> str:
  """Writes a checkpoint directory as a packed one: params.npz (float16), config.json (with the files'
  sha256 and ``extra_config``) and vocab.txt. Returns ``directory``."""
  params, config, vocab = load(checkpoint_dir)
  flat = {jax.tree_util.keystr(p): np.asarray(a, np.float16) for p, a in jax.tree_util.tree_flatten_with_path(params)[0]}
  os.makedirs(directory, exist_ok=True)
  np.savez_compressed(os.path.join(directory, "params.npz"), **flat)
  with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  config = {**config, **(extra_config or {}), "params_dtype": "float16"}
  config["files"] = {name: _sha256(os.path.join(directory, name)) for name in ("params.npz", "vocab.txt")}
  with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)
  return directory


def load_packed(directory: str) -> tuple[lstm.Params, dict[str, Any], list[str]]:
  """Reads (float32 params, config, vocab) from a directory written by :func:`pack`, checking every file's
  sha256; a missing or corrupt file is a CheckpointError of one sentence naming it and how to restore it."""
  config_path = os.path.join(directory, "config.json")
  try:
    with open(config_path, encoding="utf-8") as f:
      config = json.load(f)
    files = config["files"]
  except FileNotFoundError:
    raise CheckpointError(f"the packed LM file {config_path} is missing; {_RESTORE}.") from None
  except (json.JSONDecodeError, KeyError, TypeError):
    raise CheckpointError(f"the packed LM file {config_path} is corrupt; {_RESTORE}.") from None
  for name, digest in files.items():
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      raise CheckpointError(f"the packed LM file {path} is missing; {_RESTORE}.")
    if _sha256(path) != digest:
      raise CheckpointError(f"the packed LM file {path} is corrupt (its sha256 differs from config.json's); "
                            f"{_RESTORE}.")
  vocab = read_vocab(os.path.join(directory, "vocab.txt"))
  abstract = jax.eval_shape(lambda: lstm.init(jax.random.key(0), *(config[k] for k in MODEL_KEYS)))
  with np.load(os.path.join(directory, "params.npz")) as stored:
    leaves = [jnp.asarray(stored[jax.tree_util.keystr(p)], jnp.float32)
              for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]]
  return jax.tree.unflatten(jax.tree.structure(abstract), leaves), config, vocab


def load_default() -> tuple[lstm.Params, dict[str, Any], list[str]]:
  """The LM shipped in the package (``jaxmask/default_lm/``): (float32 params, config, vocab).

  ``config`` records the training settings ("train"), the measured figures ("figures"), the training
  corpus's sha256 ("corpus_sha256") and the files' sha256 ("files").
  """
  return load_packed(DEFAULT_DIR)
