"""Import a PyTorch LSTM language model (colorlessgreenRNNs / word_language_model ``RNNModel``) as a jaxmask checkpoint.

    python -m jaxmask.convert --torch_checkpoint=FILE.pt --vocab=vocab.txt --output=DIR
    python -m jaxmask.convert --input=HF_DIR --output=DIR     # a Hugging Face GPT-2 directory (convert_gpt2.py)

FILE.pt may be a state dict or a whole pickled model; nothing in it is executed (see ``load_torch_state``).
torch is an optional dependency (``pip install -e ".[torch]"``), imported only when a file is read.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax.numpy as jnp
import numpy as np

from jaxmask import checkpoints
from jaxmask.models import lstm

# rows of rnn.weight_hh_l0 per hidden unit -> the recurrent cell that has that many gates
_CELL_OF_GATES = {4: "LSTM", 3: "GRU", 1: "simple (tanh or ReLU) RNN"}


class ConvertError(ValueError):
  """A file that cannot be converted; the message is one sentence saying why."""


def params_from_state_dict(state: Mapping[str, np.ndarray]) -> lstm.Params:
  """Maps the state dict of an ``RNNModel`` LSTM LM (numpy arrays) to the ``lstm`` parameter pytree.

  The layouts agree one to one (PyTorch's gate order i, f, g, o is also ``lstm.cell``'s)::

      encoder.weight (V, E)                          -> embedding
      rnn.{weight_ih, weight_hh, bias_ih, bias_hh}_lk -> layers[k].{w_ih, w_hh, b_ih, b_hh}
      decoder.weight (V, H), decoder.bias (V,)       -> decoder.{w, b}

  A ``module.`` prefix (``nn.DataParallel``) is dropped. Tied embeddings: when ``decoder.weight`` is
  absent the embedding is used in its place. Raises ConvertError for anything else: a GRU or simple RNN,
  a bidirectional or projected LSTM, missing entries, extra entries, or shapes that disagree.
  """
  state = {k.removeprefix("module."): v for k, v in state.items()}
  if any(np.ndim(state.get(k)) != 2 for k in ("encoder.weight", "rnn.weight_hh_l0")):
    found = ", ".join(list(state)[:4]) or "nothing"
    raise ConvertError(f"this is not a recurrent LM in the RNNModel layout: it lacks a 2-D encoder.weight "
                       f"or rnn.weight_hh_l0 (it holds {found}{', ...' if len(state) > 4 else ''}).")
  rows, hidden = np.shape(state["rnn.weight_hh_l0"])
  if rows != 4 * hidden:
    cell = _CELL_OF_GATES.get(rows // hidden if rows % hidden == 0 else 0, "non-LSTM")
    raise ConvertError(f"this is a {cell} model (rnn.weight_hh_l0 has shape {(rows, hidden)}, an LSTM's is "
                       f"(4H, H)); jaxmask converts LSTM language models only.")
  used = set()

  def take(key: str, shape: tuple[int, ...]) -> jnp.ndarray:
    if key not in state:
      raise ConvertError(f"the state dict lacks {key}, which an RNNModel LSTM LM of this size has.")
    if np.shape(state[key]) != shape:
      raise ConvertError(f"{key} has shape {np.shape(state[key])} where {shape} was expected from encoder.weight "
                         f"and rnn.weight_hh_l0; the file is not a consistent RNNModel LSTM LM.")
    used.add(key)
    return jnp.asarray(state[key], jnp.float32)

  vocab_size, embed_size = np.shape(state["encoder.weight"])
  embedding = take("encoder.weight", (vocab_size, embed_size))
  layers = []
  while f"rnn.weight_hh_l{len(layers)}" in state:
    k, in_size = len(layers), hidden if layers else embed_size
    layers.append({"w_ih": take(f"rnn.weight_ih_l{k}", (4 * hidden, in_size)),
                   "w_hh": take(f"rnn.weight_hh_l{k}", (4 * hidden, hidden)),
                   "b_ih": take(f"rnn.bias_ih_l{k}", (4 * hidden,)),
                   "b_hh": take(f"rnn.bias_hh_l{k}", (4 * hidden,))})
  if "decoder.weight" in state:
    decoder_w = take("decoder.weight", (vocab_size, hidden))
  elif embed_size == hidden:
    decoder_w = embedding
  else:
    raise ConvertError(f"the state dict lacks decoder.weight and cannot tie it to encoder.weight, whose width "
                       f"{embed_size} differs from the hidden size {hidden}.")
  decoder_b = take("decoder.bias", (vocab_size,))
  extra = sorted(set(state) - used)
  if extra:
    raise ConvertError(f"the state dict has entries an RNNModel LSTM LM does not ({', '.join(extra[:3])}"
                       f"{', ...' if len(extra) > 3 else ''}): bidirectional or projected LSTMs and extra modules "
                       f"are not supported.")
  return {"embedding": embedding, "layers": layers, "decoder": {"w": decoder_w, "b": decoder_b}}


class _RefusedCall(Exception):
  """The file calls a function outside torch while it is unpickled: the way a malicious pickle runs code."""


class _Inert:
  """A stand-in for a class named in the file: it holds the state the pickle gives it and runs no code.

  Pickled objects (an ``nn.Module`` included) arrive by NEWOBJ, which reaches only ``__new__``, then BUILD,
  which hands their ``__dict__`` to ``__setstate__``. Calling the name instead (REDUCE) reaches
  ``__init__``: a call of a name inside torch (old torch pickled ``_get_thnn_function_backend()`` into
  every module) is left as an empty record, never run; a call of any other name is refused.
  """
  qualified_name = ""
  dump_patches = False  # read by torch's legacy loader when a class's saved source differs from ours

  def __new__(cls, *args, **kwargs):
    del args, kwargs
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    del args, kwargs
    if not self.qualified_name.startswith("torch."):
      raise _RefusedCall(self.qualified_name)

  def __setstate__(self, state: Any) -> None:
    self.state = state


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only the names torch's weights-only loader allows; every other name becomes an ``_Inert`` class.

  Nothing outside that allowlist (tensor rebuilders, storages, dtypes, OrderedDict, ...) is imported, so
  loading cannot run the file's code.
  """

  def find_class(self, module: str, name: str) -> Any:
    from torch._weights_only_unpickler import _get_allowed_globals  # pylint: disable=import-outside-toplevel
    # protocol-2 pickles spell Python 3 names the Python 2 way (__builtin__.set); map them back as pickle does
    if (module, name) in _compat_pickle.NAME_MAPPING:
      module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
      module = _compat_pickle.IMPORT_MAPPING[module]
    qualified = f"{module}.{name}"
    allowed = _get_allowed_globals()
    if qualified in allowed:
      return allowed[qualified]
    return type(name, (_Inert,), {"qualified_name": qualified})


# torch.load's pickle_module: it reads small headers with .load and the model with .Unpickler
_RESTRICTED_PICKLE = types.SimpleNamespace(
    __name__="jaxmask.convert._restricted_pickle", Unpickler=_RestrictedUnpickler,
    load=lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load())


def _module_parameters(module: _Inert, prefix: str = "") -> dict[str, Any]:
  """What ``state_dict()`` would give for an inert ``nn.Module`` record: its ``_parameters`` and its children's."""
  state = getattr(module, "state", None)
  state = state if isinstance(state, dict) else {}
  params = {prefix + k: v for k, v in dict(state.get("_parameters") or {}).items() if v is not None}
  for name, child in dict(state.get("_modules") or {}).items():
    if isinstance(child, _Inert):
      params.update(_module_parameters(child, f"{prefix}{name}."))
  return params


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ConvertError("reading a PyTorch checkpoint needs torch: pip install -e '.[torch]' "
                       "(torch==2.13.0, the CPU build).") from e
  return torch


def load_torch_state(path: str) -> tuple[dict[str, np.ndarray], str]:
  """Reads the parameters of a ``torch.save`` file as float32 numpy arrays, executing nothing in the file.

  A state dict loads with ``torch.load(weights_only=True)``. A whole pickled model names its classes
  (``model.RNNModel``, ``torch.nn.modules.rnn.LSTM``, ...), which that refuses, so it is read again with
  ``_RestrictedUnpickler``: tensors are rebuilt by torch's allowlisted functions, each other class is an
  inert record of its pickled state, and the parameters are collected from the records as
  ``state_dict()`` would. Returns (state dict, "state dict" or "whole model").
  """
  torch = _import_torch()
  if not os.path.isfile(path):
    raise ConvertError(f"{path} does not exist.")
  kind = "state dict"
  try:
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
      kind = "whole model"
      with warnings.catch_warnings():  # torch's legacy loader compares saved class sources with the inert stand-ins'
        warnings.simplefilter("ignore")
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RESTRICTED_PICKLE)
  except _RefusedCall as e:
    raise ConvertError(f"{path} calls {e} while it is loaded, which a saved model never needs; it was refused "
                       f"and nothing in it was run.") from e
  except Exception as e:  # a damaged file surfaces as RuntimeError, EOFError, UnpicklingError, ... from torch
    reason = (str(e).strip().splitlines() or [""])[0][:160]
    raise ConvertError(f"{path} could not be read as a torch.save file; it may be truncated or not a PyTorch "
                       f"checkpoint ({type(e).__name__}: {reason}).") from e
  if isinstance(obj, _Inert):
    obj = _module_parameters(obj)
  elif not isinstance(obj, Mapping):
    raise ConvertError(f"{path} holds a {type(obj).__name__}, not a language model or its state dict.")
  arrays = {}
  for key, value in obj.items():
    if not isinstance(key, str) or not isinstance(value, torch.Tensor):
      raise ConvertError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; expected an RNNModel "
                         f"or its state dict.")
    arrays[key] = value.detach().to(torch.float32).numpy()
  return arrays, kind


def convert(torch_checkpoint: str, vocab_path: str, output_dir: str) -> dict[str, Any]:
  """Writes the jaxmask checkpoint directory of a PyTorch LSTM LM and returns a summary of what it holds."""
  if not os.path.isfile(vocab_path):
    raise ConvertError(f"vocabulary file {vocab_path} does not exist.")
  vocab = checkpoints.read_vocab(vocab_path)
  state, kind = load_torch_state(torch_checkpoint)
  params = params_from_state_dict(state)
  config = lstm.config_of(params)
  if config["vocab_size"] != len(vocab):
    raise ConvertError(f"{vocab_path} has {len(vocab)} words but the model's embedding has {config['vocab_size']} "
                       f"rows; use the vocabulary file the model was trained with.")
  missing = [w for w in ("<unk>", "<eos>") if w not in vocab]
  if missing:
    logging.warning("%s has no %s; colorlessgreenRNNs vocabularies have both.", vocab_path, " or ".join(missing))
  metadata = {"tied_embeddings": bool(np.array_equal(params["decoder"]["w"], params["embedding"])),
              "converted_from": os.path.abspath(torch_checkpoint), "source_format": kind}
  checkpoints.save(output_dir, params, vocab, extra_config=metadata)
  return {**config, **metadata, "output": os.path.abspath(output_dir)}


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defined only when run as a program, so importing never adds flags."""
  flags.DEFINE_string("torch_checkpoint", None, "A PyTorch LSTM LM saved by torch.save: a state dict or the whole "
                      "model.", flag_values=flag_values)
  flags.DEFINE_string("vocab", None, "The LSTM's vocabulary: one word per line, index = line number.",
                      flag_values=flag_values)
  flags.DEFINE_string("input", None, "A Hugging Face GPT-2 directory (config.json, model.safetensors or "
                      "pytorch_model.bin, tokenizer.json or vocab.json + merges.txt), instead of --torch_checkpoint.",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None, "The jaxmask checkpoint directory to write.", flag_values=flag_values,
                      required=True)


def main(argv: list[str]) -> None:
  """Thin absl entry point: convert(), then one line saying what was written, or one sentence saying why not."""
  FLAGS = flags.FLAGS
  if len(argv) > 1:
    sys.exit(f"convert: unexpected arguments {' '.join(argv[1:])}; flags are written --name=value.")
  if bool(FLAGS.input) == bool(FLAGS.torch_checkpoint) or (FLAGS.torch_checkpoint and not FLAGS.vocab):
    sys.exit("convert: give --input=HF_DIR (a GPT-2 directory), or --torch_checkpoint=FILE.pt with --vocab=FILE.")
  try:
    if FLAGS.input:
      from jaxmask import convert_gpt2  # pylint: disable=import-outside-toplevel
      s = convert_gpt2.convert(FLAGS.input, FLAGS.output)
      print(f"convert: wrote {s['output']}: {s['num_layers']}-layer GPT-2 transformer, d_model {s['d_model']}, "
            f"{s['num_heads']} heads, MLP {s['d_mlp']}, vocabulary {s['vocab_size']}, "
            f"{'tied' if s['tied_embeddings'] else 'untied'} embeddings.")
      return
    s = convert(FLAGS.torch_checkpoint, FLAGS.vocab, FLAGS.output)
  except (ConvertError, checkpoints.CheckpointError) as e:
    sys.exit(f"convert: {e}")
  print(f"convert: wrote {s['output']}: {s['num_layers']}-layer LSTM, hidden {s['hidden_size']}, embedding "
        f"{s['embed_size']}, vocabulary {s['vocab_size']}, {'tied' if s['tied_embeddings'] else 'untied'} "
        f"embeddings (from a {s['source_format']}).")


if __name__ == "__main__":
  define_flags()
  app.run(main)
