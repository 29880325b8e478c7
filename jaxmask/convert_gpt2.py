"""Import a Hugging Face GPT-2 directory (config.json, weights, tokenizer) as a jaxmask transformer checkpoint.

    python -m jaxmask.convert --input=DIR --output=CKPT

Read offline: weights from ``model.safetensors`` (``safetensors``) or ``pytorch_model.bin`` (convert.py's
restricted unpickler, which runs nothing in the file); the tokenizer from ``tokenizer.json``, or from
``vocab.json`` + ``merges.txt`` (GPT-2's byte-level BPE), with ``tokenizers``. The checkpoint holds the
parameters, config.json (family "transformer"), vocab.txt (the tokens by id) and tokenizer.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxmask import checkpoints
from jaxmask.convert import ConvertError, load_torch_state
from jaxmask.models import transformer

ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # tanh-approximated GELU, as transformer.py computes
# buffers older transformers saved with the weights: the causal mask, not parameters
_BUFFERS = (".attn.bias", ".attn.masked_bias")


def check_config(hf_config: Mapping[str, Any], path: str) -> None:
  """Refuses a config.json whose model is not the decoder transformer.py computes, naming the field."""
  if hf_config.get("model_type", "gpt2") != "gpt2":
    raise ConvertError(f"{path} describes a {hf_config.get('model_type')!r} model; jaxmask imports GPT-2 models "
                       f"(model_type \"gpt2\") only.")
  checks = (("activation_function", hf_config.get("activation_function", "gelu_new") in ACTIVATIONS,
             f"one of {', '.join(ACTIVATIONS)}"),
            ("layer_norm_epsilon", hf_config.get("layer_norm_epsilon", 1e-5) == transformer.EPS, "1e-05"),
            ("scale_attn_weights", hf_config.get("scale_attn_weights", True) is True, "true"),
            ("scale_attn_by_inverse_layer_idx", not hf_config.get("scale_attn_by_inverse_layer_idx", False), "false"),
            ("add_cross_attention", not hf_config.get("add_cross_attention", False), "false"))
  for field, ok, expected in checks:
    if not ok:
      raise ConvertError(f"{path}: {field}={hf_config.get(field)!r} is not supported; jaxmask computes GPT-2 with "
                         f"{field}={expected}.")


def params_from_state_dict(state: Mapping[str, np.ndarray], num_heads: int) -> transformer.Params:
  """Maps a ``GPT2LMHeadModel`` (or ``GPT2Model``) state dict to the ``transformer`` pytree, one tensor per leaf.

  ``transformer.`` prefixes are dropped; HF's ``Conv1D`` weights are (in, out), as ours, and are only
  reshaped to expose the heads: c_attn (D, 3D) -> (D, 3, nH, dh), c_proj (D, D) -> (nH, dh, D). Without
  ``lm_head.weight`` the head is tied to ``wte``. Missing, extra or misshapen entries raise ConvertError.
  """
  state = {k.removeprefix("transformer."): v for k, v in state.items() if not k.endswith(_BUFFERS)}
  if np.ndim(state.get("wte.weight")) != 2:
    raise ConvertError(f"the weights lack a 2-D transformer.wte.weight; this is not a GPT-2 model (they hold "
                       f"{', '.join(list(state)[:3]) or 'nothing'}, ...).")
  vocab_size, d_model = np.shape(state["wte.weight"])
  if d_model % num_heads:
    raise ConvertError(f"n_embd {d_model} is not a multiple of n_head {num_heads}; check config.json.")
  dh = d_model // num_heads
  used = set()

  def take(key: str, shape: tuple[int, ...] | None, new_shape: tuple[int, ...] | None = None) -> jnp.ndarray:
    if key not in state:
      raise ConvertError(f"the weights lack transformer.{key}, which a GPT-2 model of this size has.")
    if shape is not None and np.shape(state[key]) != shape:
      raise ConvertError(f"transformer.{key} has shape {np.shape(state[key])} where {shape} was expected from "
                         f"wte and config.json; the weights are not a consistent GPT-2 model.")
    used.add(key)
    return jnp.asarray(np.reshape(state[key], new_shape or np.shape(state[key])), jnp.float32)

  norm = lambda name: {"scale": take(f"{name}.weight", (d_model,)), "bias": take(f"{name}.bias", (d_model,))}
  blocks = []
  while f"h.{len(blocks)}.ln_1.weight" in state:
    p = f"h.{len(blocks)}"
    d_mlp = int(np.shape(state.get(f"{p}.mlp.c_fc.weight", np.zeros((d_model, 0))))[-1])
    blocks.append({
        "ln_1": norm(f"{p}.ln_1"),
        "attn": {"w_qkv": take(f"{p}.attn.c_attn.weight", (d_model, 3 * d_model), (d_model, 3, num_heads, dh)),
                 "b_qkv": take(f"{p}.attn.c_attn.bias", (3 * d_model,), (3, num_heads, dh)),
                 "w_out": take(f"{p}.attn.c_proj.weight", (d_model, d_model), (num_heads, dh, d_model)),
                 "b_out": take(f"{p}.attn.c_proj.bias", (d_model,))},
        "ln_2": norm(f"{p}.ln_2"),
        "mlp": {"w_in": take(f"{p}.mlp.c_fc.weight", (d_model, d_mlp)), "b_in": take(f"{p}.mlp.c_fc.bias", (d_mlp,)),
                "w_out": take(f"{p}.mlp.c_proj.weight", (d_mlp, d_model)),
                "b_out": take(f"{p}.mlp.c_proj.bias", (d_model,))}})
  if not blocks:
    raise ConvertError("the weights have no transformer.h.0 block; this is not a GPT-2 model.")
  wte = take("wte.weight", None)
  head = take("lm_head.weight", (vocab_size, d_model)) if "lm_head.weight" in state else wte
  wpe = take("wpe.weight", None)
  if wpe.ndim != 2 or wpe.shape[1] != d_model:
    raise ConvertError(f"transformer.wpe.weight has shape {wpe.shape} where (positions, {d_model}) was expected; "
                       f"the weights are not a consistent GPT-2 model.")
  params = {"wte": wte, "wpe": wpe, "blocks": blocks, "ln_f": norm("ln_f"), "lm_head": head}
  extra = sorted(set(state) - used)
  if extra:
    raise ConvertError(f"the weights have entries a GPT-2 LM does not ({', '.join(extra[:3])}"
                       f"{', ...' if len(extra) > 3 else ''}); only GPT2LMHeadModel or GPT2Model weights are imported.")
  return params


def read_weights(directory: str) -> tuple[dict[str, np.ndarray], str]:
  """The state dict of DIR/model.safetensors, else DIR/pytorch_model.bin, as float32 numpy arrays, and its file."""
  path = os.path.join(directory, "model.safetensors")
  if os.path.isfile(path):
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    try:
      return {k: np.asarray(v, np.float32) for k, v in load_file(path).items()}, path
    except Exception as e:  # bfloat16 files and damaged headers surface as several types
      raise ConvertError(f"{path} could not be read with safetensors ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''}); re-save it as float32.") from e
  path = os.path.join(directory, "pytorch_model.bin")
  if os.path.isfile(path):
    return load_torch_state(path)[0], path
  if os.path.isfile(os.path.join(directory, "model.safetensors.index.json")):
    raise ConvertError(f"{directory} holds a sharded checkpoint (model.safetensors.index.json), which is not "
                       f"supported; re-save it in one file with save_pretrained(..., max_shard_size=\"100GB\").")
  raise ConvertError(f"{directory} has neither model.safetensors nor pytorch_model.bin; save the model there with "
                     f"save_pretrained.")


def read_tokenizer(directory: str):
  """A ``tokenizers.Tokenizer`` from DIR/tokenizer.json, or from DIR/vocab.json + merges.txt (byte-level BPE)."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  path = os.path.join(directory, "tokenizer.json")
  if os.path.isfile(path):
    return tokenizers.Tokenizer.from_file(path)
  vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
  for p in (vocab, merges):
    if not os.path.isfile(p):
      raise ConvertError(f"{directory} has no tokenizer.json and no {os.path.basename(p)}; save the tokenizer there "
                         f"with save_pretrained (tokenizer.json, or vocab.json and merges.txt).")
  tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(vocab, merges))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tokenizers.decoders.ByteLevel()
  return tok


def vocab_of(tokenizer, vocab_size: int) -> list[str]:
  """The tokens by id, padded to the model's rows with "<unused:i>" (GPT-2 models may have more rows)."""
  by_id = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
  if max(by_id, default=-1) >= vocab_size:
    raise ConvertError(f"the tokenizer has token ids up to {max(by_id)} but the model has {vocab_size} rows; "
                       f"use the tokenizer the model was trained with.")
  vocab = [by_id.get(i, f"<unused:{i}>") for i in range(vocab_size)]
  bad = [t for t in vocab if not t or len(t.split()) != 1]
  if bad:
    raise ConvertError(f"the tokenizer has a token with whitespace ({bad[0]!r}), which a jaxmask vocabulary cannot "
                       f"hold; use a byte-level or word-level tokenizer.")
  return vocab


def convert(input_dir: str, output_dir: str) -> dict[str, Any]:
  """Writes the jaxmask checkpoint of a Hugging Face GPT-2 directory and returns a summary of what it holds."""
  config_path = os.path.join(input_dir, "config.json")
  if not os.path.isfile(config_path):
    raise ConvertError(f"{config_path} does not exist; give the directory save_pretrained wrote.")
  with open(config_path, encoding="utf-8") as f:
    hf_config = json.load(f)
  check_config(hf_config, config_path)
  state, weights_path = read_weights(input_dir)
  params = params_from_state_dict(state, int(hf_config.get("n_head", 12)))
  tokenizer = read_tokenizer(input_dir)
  vocab = vocab_of(tokenizer, transformer.config_of(params)["vocab_size"])
  metadata = {"family": "transformer",
              "tied_embeddings": bool(np.array_equal(params["lm_head"], params["wte"])),
              "converted_from": os.path.abspath(weights_path), "source_format": "huggingface gpt2",
              "tokenizer": "tokenizer.json"}
  checkpoints.save(output_dir, params, vocab, extra_config=metadata)
  tokenizer.save(os.path.join(output_dir, "tokenizer.json"))
  return {**transformer.config_of(params), **metadata, "output": os.path.abspath(output_dir)}
