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
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxmask import files
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
  config["params_sha256"] = _tree_sha256(os.path.join(directory, "params"))  # checked by load
  files.write_text(os.path.join(directory, "vocab.txt"), "\n".join(vocab) + "\n")
  files.write_json(os.path.join(directory, "config.json"), config)


def read_vocab(path: str) -> list[str]:
  """One word per line, index = line number (colorlessgreenRNNs' format).

  Surrounding whitespace is stripped (as colorlessgreenRNNs' whitespace split does); a blank line or a
  line holding two words is an error naming the line, since it would shift every later index.
  """
  if not os.path.exists(path):
    raise CheckpointError(f"vocabulary file {path} does not exist; give the vocabulary the model was trained "
                          f"with (one word per line).")
  lines = files.read_text(path, CheckpointError).split("\n")
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
  """Reads (params, config, vocab) from a checkpoint directory written by ``save`` (or by :func:`pack`), or
  from a shipped model named ``builtin:NAME`` (``SHIPPED``: builtin:lstm, builtin:transformer)."""
  directory = resolve(directory)
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
  config = _read_config(config_path)
  model = models.family_of(config)
  vocab = read_vocab(vocab_path)
  if len(vocab) != config["vocab_size"]:
    raise CheckpointError(f"{vocab_path} has {len(vocab)} words but {config_path} says vocab_size="
                          f"{config['vocab_size']}; use the vocabulary the model was trained with.")
  if "params_sha256" in config and config["params_sha256"] != _tree_sha256(params_path):
    raise CheckpointError(f"{params_path} is corrupt (its files' sha256 differs from the params_sha256 recorded in "
                          f"{config_path}); re-create the checkpoint.")
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
    try:
      params = ckptr.restore(params_path, abstract)
    except Exception as e:  # a truncated or edited array file surfaces as several error types
      raise CheckpointError(f"{params_path} is corrupt ({type(e).__name__}); re-create the checkpoint.") from e
  params = jax.tree.map(jnp.asarray, params)
  _check_finite(params, params_path)
  return params, config, vocab


def _read_config(config_path: str) -> dict[str, Any]:
  """config.json as a dict with its family's CONFIG_KEYS positive integers; CheckpointError of one sentence otherwise."""
  try:
    config = json.loads(files.read_text(config_path, CheckpointError))
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{config_path}, line {e.lineno}: not valid JSON ({e.msg}).") from None
  except (ValueError, RecursionError) as e:
    raise CheckpointError(f"{config_path}: not readable JSON ({type(e).__name__}); re-create the checkpoint.") from None
  if not isinstance(config, dict):
    raise CheckpointError(f"{config_path} holds a JSON {type(config).__name__}, not an object; re-create the "
                          f"checkpoint.")
  try:
    keys = models.family_of(config).CONFIG_KEYS
  except ValueError as e:
    raise CheckpointError(f"{config_path}: {e}") from None
  missing = [k for k in keys if k not in config]
  if missing:
    raise CheckpointError(f"{config_path} lacks {', '.join(missing)}; it must give {', '.join(keys)}.")
  bad = [k for k in keys if isinstance(config[k], bool) or not isinstance(config[k], int) or config[k] < 1]
  if bad:
    raise CheckpointError(f"{config_path}: {', '.join(f'{k}={config[k]!r}' for k in bad)} must be positive "
                          f"integers; re-create the checkpoint.")
  return config


def _check_finite(params: lstm.Params, path: str) -> None:
  """CheckpointError naming the first parameter that holds NaN or inf."""
  for p, a in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not bool(jnp.isfinite(a).all()):
      raise CheckpointError(f"{path}: parameter {jax.tree_util.keystr(p)} holds NaN or inf; the model is "
                            f"unusable, re-create or re-train it.")


# The shipped default LM: one float16 .npz of parameters, config.json and vocab.txt inside the package,
# each file's sha256 recorded in config.json ("files") and checked on load.

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_lm")
# The models shipped in the package, by the name ``--checkpoint=builtin:NAME`` gives them; "lstm" is the default.
SHIPPED = {"lstm": DEFAULT_DIR,
           "transformer": os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_transformer")}
_RESTORE = ("reinstall jaxmask (pip install --force-reinstall .) or retrain and pack it: "
            "`python -m jaxmask.train_lm --flagfile=configs/lm.cfg --workdir=workdir_lm` then "
            "`python -c \"from jaxmask import checkpoints; checkpoints.pack('workdir_lm')\"`")


def resolve(checkpoint: str | os.PathLike) -> str:
  """The directory of a checkpoint argument: ``builtin:NAME`` is a model shipped in the package (``SHIPPED``)."""
  checkpoint = os.fspath(checkpoint)
  if not checkpoint.startswith("builtin:"):
    return checkpoint
  name = checkpoint[len("builtin:"):]
  if name not in SHIPPED:
    raise CheckpointError(f"--checkpoint={checkpoint} names no shipped model; use one of "
                          f"{', '.join('builtin:' + n for n in SHIPPED)}, or a checkpoint directory.")
  return SHIPPED[name]


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
  files.write_atomic(os.path.join(directory, "params.npz"), lambda f: np.savez_compressed(f, **flat), binary=True)
  files.write_text(os.path.join(directory, "vocab.txt"), "\n".join(vocab) + "\n")
  config = {k: v for k, v in config.items() if k != "params_sha256"}
  config = {**config, **(extra_config or {}), "params_dtype": "float16"}
  config["files"] = {name: _sha256(os.path.join(directory, name)) for name in ("params.npz", "vocab.txt")}
  files.write_json(os.path.join(directory, "config.json"), config)
  return directory


def load_packed(directory: str) -> tuple[lstm.Params, dict[str, Any], list[str]]:
  """Reads (float32 params, config, vocab) from a directory written by :func:`pack`, checking every file's
  sha256; a missing or corrupt file is a CheckpointError of one sentence naming it and how to restore it."""
  config_path = os.path.join(directory, "config.json")
  if not os.path.exists(config_path):
    raise CheckpointError(f"the packed LM file {config_path} is missing; {_RESTORE}.")
  try:
    config = _read_config(config_path)
    digests = dict(config["files"])
  except (CheckpointError, KeyError, TypeError, ValueError):
    raise CheckpointError(f"the packed LM file {config_path} is corrupt; {_RESTORE}.") from None
  for name, digest in digests.items():
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      raise CheckpointError(f"the packed LM file {path} is missing; {_RESTORE}.")
    if _sha256(path) != digest:
      raise CheckpointError(f"the packed LM file {path} is corrupt (its sha256 differs from config.json's); "
                            f"{_RESTORE}.")
  vocab = read_vocab(os.path.join(directory, "vocab.txt"))
  model = models.family_of(config)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), *(config[k] for k in model.CONFIG_KEYS)))
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


# Resumable states (the search's, train_lm's) are orbax CheckpointManager steps; each finished step gets its
# files' sha256 in DIR/STEP.sha256, so a truncated or edited step is found before it is trusted.

def _tree_sha256(directory: str) -> str:
  h = hashlib.sha256()
  for root, dirs, names in os.walk(directory):
    dirs.sort()
    for name in sorted(names):
      path = os.path.join(root, name)
      h.update(os.path.relpath(path, directory).encode() + b"\0" + _sha256(path).encode())
  return h.hexdigest()


def seal(manager: ocp.CheckpointManager, step: int) -> None:
  """Waits for ``step``'s save to finish and records its files' sha256 beside it (and drops stale records)."""
  manager.wait_until_finished()
  directory = str(manager.directory)
  files.write_text(os.path.join(directory, f"{step}.sha256"), _tree_sha256(os.path.join(directory, str(step))))
  kept = {f"{s}.sha256" for s in manager.all_steps()}
  for name in os.listdir(directory):
    if name.endswith(".sha256") and name not in kept:
      os.remove(os.path.join(directory, name))


def restore_latest(manager: ocp.CheckpointManager, args: Any, what: str) -> tuple[int, Any]:
  """(step, restored) of the newest step that matches its recorded sha256 and restores; (0, None) if none.

  A corrupt step (sha256 differs, or orbax cannot restore it) is deleted with one sentence on stderr naming
  it and the step the run goes on from, so a damaged file is never silently trusted.
  """
  directory = str(manager.directory)
  steps = sorted(manager.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    path, record = os.path.join(directory, str(step)), os.path.join(directory, f"{step}.sha256")
    try:
      if os.path.exists(record) and files.read_text(record, CheckpointError).strip() != _tree_sha256(path):
        raise CheckpointError("its files' sha256 differs from the one recorded when it was saved")
      return step, manager.restore(step, args=args)
    except Exception as e:  # orbax raises many types for a damaged step
      reason = str(e) if isinstance(e, CheckpointError) else type(e).__name__
      then = f"from the earlier checkpoint of step {steps[i + 1]}" if i + 1 < len(steps) else "from step 0"
      print(f"The {what} checkpoint {path} is corrupt ({reason}); it was deleted and the run restarts {then}.",
            file=sys.stderr, flush=True)
      manager.delete(step)
      if os.path.exists(record):
        os.remove(record)
  return 0, None
