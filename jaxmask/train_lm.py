"""Trains a word-level LM (the default LSTM, or a GPT-2-style transformer) on the generated English corpus.

Sentence-aware batching: every training row starts with ``<eos>`` and holds whole sentences, each followed by
``<eos>``, and the state starts from zeros in every row. A sentence is thus seen both from the initial state
right after ``<eos>`` (how Gulordava et al.'s models are evaluated, and how jaxmask evaluates) and inside
running text. Interrupted runs resume from the orbax train state under ``WORKDIR/train_state`` and reach the
same parameters as an uninterrupted run; the finished model is a checkpoint directory at ``WORKDIR``::

    python -m jaxmask.train_lm --flagfile=configs/lm.cfg --workdir=workdir_lm
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from absl import app
from absl import flags
from absl import logging
from flax.training import train_state

from jaxmask import checkpoints, files, flagfiles, models, workdir_lock
from jaxmask.corpus import build_corpus
from jaxmask.models import lstm
from jaxmask.models import transformer


class TrainingError(ValueError):
  """A training run that cannot start or continue; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Everything that determines a trained LM. The defaults are the default LM (``configs/lm.cfg``)."""
  family: str = "lstm"  # models.FAMILIES: "lstm" or "transformer" (d_model = embed_size = hidden_size)
  embed_size: int = 128
  hidden_size: int = 256
  num_layers: int = 2
  tie_weights: bool = False  # decoder = embedding (needs embed_size == hidden_size)
  num_heads: int = 4  # transformer only: attention heads per block
  d_mlp: int = 512  # transformer only: MLP neurons per block
  max_positions: int = 64  # transformer only: learned positions (>= row_length)
  num_sentences: int = 500_000  # generated training sentences (grammar.corpus, split "train")
  valid_sentences: int = 1_000  # generated validation sentences (another seed)
  row_length: int = 48  # tokens per training row, whole sentences only
  batch_size: int = 32
  steps: int = 14_000
  optimizer: str = "sgd"  # "adam", or "sgd" (plain SGD as Gulordava et al. and PyTorch's word LM train)
  learning_rate: float = 20.0
  warmup_steps: int = 200
  final_lr_fraction: float = 0.05  # cosine decay from learning_rate down to this fraction of it
  clip_norm: float = 0.25
  seed: int = 0
  checkpoint_every: int = 1_000
  eval_every: int = 2_000
  dropout: float = 0.1  # on the embeddings, between layers and before the decoder; training only
  lexicon: str = "large"  # the generator's language (grammar.LANGUAGES): "small" or "large"
  forget_bias: float = 1.0  # added to every layer's initial forget-gate bias (Jozefowicz et al. 2015 use 1)


def config_from_dict(values: dict[str, Any]) -> LMConfig:
  """An LMConfig from a dict of (some of) its fields; unknown keys are an error naming them."""
  names = {f.name: f.type for f in dataclasses.fields(LMConfig)}
  unknown = sorted(set(values) - set(names))
  if unknown:
    raise TrainingError(f"unknown LM config field(s) {', '.join(unknown)}; known: {', '.join(names)}.")
  return LMConfig(**{k: _parse(k, v) for k, v in values.items()})


def _parse(name: str, value: Any) -> Any:
  """A field's value from its flag text; TrainingError naming the field if it is not of the field's type."""
  kind = type(getattr(LMConfig, name))
  if kind is bool:
    return str(value).lower() in ("1", "true")
  try:
    return kind(value)
  except (TypeError, ValueError):
    raise TrainingError(f"{name}={str(value)[:60]!r} is not a valid {kind.__name__}; fix the value.") from None


def read_flagfile(path: str) -> LMConfig:
  """The LMConfig set by an absl flagfile such as ``configs/lm.cfg`` (``--name=value`` lines, # comments).

  Flags that are not LM config fields (``--workdir``) are ignored, so the main job can read the same file.
  """
  names = {f.name for f in dataclasses.fields(LMConfig)}
  values = {}
  for number, line in enumerate(files.read_text(path, TrainingError).split("\n"), 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if not line.startswith("--") or "=" not in line:
      shown = line if len(line) <= 60 else line[:57] + "..."
      raise TrainingError(f"{path}, line {number}: expected --name=value, got {shown!r}.")
    name, value = line[2:].split("=", 1)
    if name in names:
      try:
        values[name] = _parse(name, value)
      except TrainingError as e:
        raise TrainingError(f"{path}, line {number}: {e}") from None
  return config_from_dict(values)


def init_params(config: LMConfig, vocab_size: int) -> dict:
  """The family's initial parameters; an LSTM's with ``config.forget_bias`` added to every forget-gate bias."""
  key = jax.random.key(config.seed)
  if config.family == "transformer":
    return transformer.init(key, vocab_size, config.max_positions, config.hidden_size, config.num_layers,
                            config.num_heads, config.d_mlp, tie_weights=False)  # `tie` ties; a shared leaf
                                                                                   # cannot be donated twice
  params = lstm.init(key, vocab_size, config.embed_size, config.hidden_size, config.num_layers)
  if config.forget_bias:
    h = config.hidden_size
    for layer in params["layers"]:
      layer["b_ih"] = layer["b_ih"].at[h:2 * h].add(config.forget_bias)  # gate order i, f, g, o
  return params


def tie(params: dict) -> dict:
  """The same parameters with the decoder's weights replaced by the embedding (tied weights)."""
  if models.of_params(params) is transformer:
    return {**params, "lm_head": params["wte"]}
  return {**params, "decoder": {"w": params["embedding"], "b": params["decoder"]["b"]}}


def apply_with_dropout(params: lstm.Params, tokens_BxT: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """Logits (B, T, V) like ``lstm.apply`` with (inverted) dropout on the embeddings, on every layer's
  output h and so before the decoder, as in Gulordava et al.'s training; a fresh mask per token."""
  keys = jax.random.split(key, len(params["layers"]) + 1)
  drop = lambda k, x: jnp.where(jax.random.bernoulli(k, 1.0 - rate, x.shape), x / (1.0 - rate), 0.0)
  x = drop(keys[0], params["embedding"][tokens_BxT])
  zeros = jnp.zeros((tokens_BxT.shape[0], params["layers"][0]["w_hh"].shape[1]), x.dtype)
  for layer, k in zip(params["layers"], keys[1:]):
    h, _ = lstm.run_layer(layer["w_hh"], lstm.input_projection(layer, x), zeros, zeros)
    x = drop(k, h)
  return lstm.decode(params, x)


def masked_nll(params: dict, rows_BxT1: jax.Array, eos: int, dropout: float = 0.0,
               key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(summed negative log-likelihood, number of scored tokens) of rows packed by ``pack_rows``.

  With ``dropout`` > 0 (training) the forward pass drops units with that rate, drawn from ``key``.
  """
  inputs = jnp.where(rows_BxT1[:, :-1] < 0, eos, rows_BxT1[:, :-1])
  targets = rows_BxT1[:, 1:]
  mask = (targets >= 0).astype(jnp.float32)
  logits = apply_with_dropout(params, inputs, dropout, key) if dropout else models.of_params(params).apply(params, inputs)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(targets, 0))
  return jnp.sum(nll * mask), jnp.sum(mask)


@functools.partial(jax.jit, static_argnames=("eos", "tied", "dropout"), donate_argnums=0)
def train_step(state: train_state.TrainState, rows_BxT1: jax.Array, eos: int, tied: bool = False,
               dropout: float = 0.0, key: jax.Array | None = None) -> tuple[train_state.TrainState, jax.Array]:
  """One Adam step on the mean next-token cross-entropy of a batch of packed rows; returns (state, loss).

  With ``tied`` the decoder reads the embedding; the state's own decoder weights then get no gradient.
  With ``dropout`` > 0 the masks are drawn from ``key``.
  """
  def loss_fn(params):
    total, count = masked_nll(tie(params) if tied else params, rows_BxT1, eos, dropout, key)
    return total / jnp.maximum(count, 1.0)
  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads=grads), loss


@functools.partial(jax.jit, static_argnames="eos")
def _nll_sum(params: dict, rows_BxT1: jax.Array, eos: int) -> tuple[jax.Array, jax.Array]:
  return masked_nll(params, rows_BxT1, eos)


def perplexity(params: dict, rows: np.ndarray, eos: int, batch_size: int) -> float:
  """exp of the mean next-token NLL over packed rows (batched; padding rows are not scored)."""
  pad = -len(rows) % batch_size
  rows = np.concatenate([rows, np.full((pad, rows.shape[1]), -1, np.int32)])
  total = count = 0.0
  for i in range(0, len(rows), batch_size):
    t, c = _nll_sum(params, jnp.asarray(rows[i:i + batch_size]), eos)
    total, count = total + float(t), count + float(c)
  return float(np.exp(total / max(count, 1.0)))


OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}  # LMConfig.optimizer -> optax transformation


@functools.lru_cache(maxsize=8)
def optimizer(config: LMConfig) -> optax.GradientTransformation:
  """Adam (or plain SGD) with linear warm-up then cosine decay, after clipping the global gradient norm.

  Cached per config: the transformation is a static part of the jitted train state, so the same object
  lets a resumed or repeated run in one process reuse the compiled step.
  """
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
      decay_steps=config.steps, end_value=config.learning_rate * config.final_lr_fraction)
  return optax.chain(optax.clip_by_global_norm(config.clip_norm), OPTIMIZERS[config.optimizer](schedule))


class _Batches:
  """The batch of a given step: a seeded permutation of the rows per epoch, so the data position is the step."""

  def __init__(self, rows: np.ndarray, batch_size: int, seed: int):
    if len(rows) < batch_size:
      raise TrainingError(f"the corpus packs into {len(rows)} rows, fewer than batch_size={batch_size}; "
                          f"raise num_sentences or lower batch_size.")
    self.rows, self.batch_size, self.seed = rows, batch_size, seed
    self.per_epoch = len(rows) // batch_size
    self._epoch, self._perm = -1, None

  def __call__(self, step: int) -> np.ndarray:
    epoch, i = divmod(step, self.per_epoch)
    if epoch != self._epoch:
      self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
    return self.rows[self._perm[i * self.batch_size:(i + 1) * self.batch_size]]


def _check_workdir(workdir: str, config: LMConfig, vocab: list[str]) -> None:
  """Records config and vocabulary in a new workdir; refuses one that was started with others."""
  state_dir = os.path.join(workdir, "train_state")
  config_path, vocab_path = os.path.join(state_dir, "lm_config.json"), os.path.join(state_dir, "vocab.txt")
  wanted = dataclasses.asdict(config)
  if os.path.exists(config_path):
    try:
      recorded = json.loads(files.read_text(config_path, TrainingError))
    except ValueError as e:
      raise TrainingError(f"{config_path} is corrupt ({type(e).__name__}); train into a new --workdir.") from None
    if not isinstance(recorded, dict):
      raise TrainingError(f"{config_path} is corrupt (not a JSON object); train into a new --workdir.")
    stored = {**dataclasses.asdict(LMConfig()), **recorded}  # fields added later take their defaults
    if stored != wanted:
      diff = ", ".join(f"{k}={stored.get(k)!r} there vs {v!r} now" for k, v in wanted.items() if stored.get(k) != v)
      raise TrainingError(f"workdir {workdir} holds a run with a different config ({diff}); use a new --workdir "
                          f"or the same settings to resume.")
    if os.path.exists(vocab_path) and checkpoints.read_vocab(vocab_path) != vocab:
      raise TrainingError(f"workdir {workdir} holds a run with another vocabulary ({vocab_path}); the generator "
                          f"changed since it started, so train into a new --workdir.")
    return
  files.write_text(vocab_path, "\n".join(vocab) + "\n")
  files.write_json(config_path, wanted)  # last: its presence says the workdir is initialised


def train(config: LMConfig | dict[str, Any], workdir: str, progress: bool = True,
          corpus: tuple[list[str], np.ndarray, np.ndarray] | None = None) -> dict:
  """Trains (or resumes training) an LM and writes the checkpoint directory ``workdir``; returns its params.

  Args:
    config: an LMConfig, or a dict of some of its fields (the rest take the default LM's values).
    workdir: the checkpoint directory to write (``checkpoints.load(workdir)`` reads it); the resumable
      train state lives in ``workdir/train_state``. A workdir started with another config or vocabulary
      is refused.
    progress: show a tqdm bar with loss, tokens/s and validation perplexity.
    corpus: (vocabulary, training rows, validation rows) as ``build_corpus`` returns; built from the
      generator when None.

  Raises:
    TrainingError: the workdir belongs to another config, the corpus is too small, or the loss became
      NaN/inf (the last good train-state checkpoint is kept).
  """
  if isinstance(config, dict):
    config = config_from_dict(config)
  if config.family not in models.FAMILIES:
    raise TrainingError(f"family must be one of {', '.join(models.FAMILIES)}, got {config.family!r}.")
  if (config.tie_weights or config.family == "transformer") and config.embed_size != config.hidden_size:
    raise TrainingError(f"tie_weights and the transformer family need embed_size == hidden_size, got "
                        f"{config.embed_size} and {config.hidden_size}.")
  if config.family == "transformer":
    if config.dropout:
      raise TrainingError("dropout is implemented for the LSTM family only; set dropout=0 for a transformer "
                          "(the generated corpus is large enough that the default transformer trains without it).")
    if config.row_length > config.max_positions or config.hidden_size % config.num_heads:
      raise TrainingError(f"a transformer needs row_length <= max_positions and hidden_size divisible by "
                          f"num_heads; got {config.row_length}, {config.max_positions}, {config.hidden_size}, "
                          f"{config.num_heads}.")
  if not 0.0 <= config.dropout < 1.0:
    raise TrainingError(f"dropout must be in [0, 1), got {config.dropout}.")
  if config.optimizer not in OPTIMIZERS:
    raise TrainingError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}.")
  if config.lexicon not in ("small", "large"):
    raise TrainingError(f"lexicon must be 'small' or 'large', got {config.lexicon!r}.")
  workdir = os.path.abspath(workdir)
  with workdir_lock.hold(workdir, TrainingError):
    return _train(config, workdir, progress, corpus)


def _train(config: LMConfig, workdir: str, progress: bool, corpus: tuple[list[str], np.ndarray, np.ndarray] | None
           ) -> dict:
  model = tie if config.tie_weights else (lambda p: p)
  started = time.time()
  vocab, train_rows, valid_rows = corpus if corpus is not None else build_corpus(config)
  _check_workdir(workdir, config, vocab)
  eos = vocab.index("<eos>")
  batches = _Batches(train_rows, config.batch_size, config.seed)
  corpus_seconds = time.time() - started

  params = init_params(config, len(vocab))
  tx = optimizer(config)
  state = train_state.TrainState.create(apply_fn=models.get(config.family).apply, params=params, tx=tx)
  manager = ocp.CheckpointManager(
      os.path.join(workdir, "train_state"),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))
  if manager.latest_step() == config.steps and os.path.exists(os.path.join(workdir, "config.json")):
    manager.close()
    return checkpoints.load(workdir)[0]  # already finished: keep its checkpoint and recorded metrics
  start_step, restored = checkpoints.restore_latest(manager, ocp.args.StandardRestore(_saved(state)),
                                                    "train_lm train-state")
  if start_step:
    state = state.replace(step=jnp.asarray(restored["step"]), params=restored["params"],
                          opt_state=restored["opt_state"])

  dropout_key = jax.random.key(config.seed + 1)
  valid_ppl = float("nan")
  tokens, timed_since = 0, None  # tokens/s leaves out the first step of a run, which compiles
  loop_started = time.time()
  bar = tqdm.tqdm(total=config.steps, initial=start_step, disable=not progress, unit="step",
                  desc="train_lm", dynamic_ncols=True)
  try:
    for step in range(start_step, config.steps):
      rows = batches(step)
      key = jax.random.fold_in(dropout_key, step) if config.dropout else None  # a function of the step: resumable
      state, loss = train_step(state, jnp.asarray(rows), eos, config.tie_weights, config.dropout, key)
      loss = float(loss)
      if not np.isfinite(loss):
        raise TrainingError(
            f"the training loss became {loss} at step {step + 1}; training stopped and the last good "
            f"train state (step {manager.latest_step() or 0}) is kept in {workdir}/train_state; lower "
            f"learning_rate or clip_norm and train into a new workdir.")
      if timed_since is None:
        timed_since = time.time()
      else:
        tokens += int((rows[:, 1:] >= 0).sum())
      done = step + 1
      if done % config.eval_every == 0 or done == config.steps:
        valid_ppl = perplexity(model(state.params), valid_rows, eos, config.batch_size)
      if done % config.checkpoint_every == 0 or done == config.steps:
        manager.save(done, args=ocp.args.StandardSave(_saved(state)))
        checkpoints.seal(manager, done)
      bar.update(1)
      if done % 10 == 0 or done == config.steps:
        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens / max(time.time() - timed_since, 1e-9):,.0f}",
                        val_ppl="-" if np.isnan(valid_ppl) else f"{valid_ppl:.2f}")
  finally:
    bar.close()
    manager.wait_until_finished()
    manager.close()

  if np.isnan(valid_ppl):
    valid_ppl = perplexity(model(state.params), valid_rows, eos, config.batch_size)
  metrics = {"valid_perplexity": valid_ppl, "corpus_seconds": round(corpus_seconds, 1),
             "train_seconds": round(time.time() - loop_started, 1), "total_seconds": round(time.time() - started, 1),
             "steps_this_run": config.steps - start_step, "train_rows": int(len(train_rows)),
             "corpus_sha256": hashlib.sha256(train_rows.tobytes()).hexdigest(),  # of the packed token ids
             "tokens_per_second": round(tokens / (time.time() - timed_since)) if tokens else None}
  params = model(state.params)
  checkpoints.save(workdir, params, vocab, {"train": dataclasses.asdict(config), "metrics": metrics})
  return params


def _saved(state: train_state.TrainState) -> dict[str, Any]:
  """The part of the train state that goes into an orbax checkpoint (the data position is the step)."""
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


def _define_flags() -> None:
  """Flags mirror LMConfig's fields; defined only when run as a program, so importing never adds flags."""
  for field in dataclasses.fields(LMConfig):
    define = {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool,
              str: flags.DEFINE_string}[type(field.default)]
    define(field.name, field.default, f"LMConfig.{field.name}")
  flags.DEFINE_string("workdir", "workdir_lm", "Checkpoint directory to write (and resume from).")
  flags.DEFINE_bool("progress", True, "Show a progress bar.")


def main(argv: list[str]) -> None:
  """Thin absl entry point: flags -> LMConfig -> train()."""
  if len(argv) > 1:
    sys.exit(f"train_lm: unexpected arguments {' '.join(argv[1:])}; flags are written --name=value.")
  FLAGS = flags.FLAGS
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; the progress bar says enough
  config = LMConfig(**{f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(LMConfig)})
  try:
    train(config, FLAGS.workdir, progress=FLAGS.progress)
  except (TrainingError, checkpoints.CheckpointError) as e:
    sys.exit(f"train_lm: {e}")
  except KeyboardInterrupt:
    sys.exit(f"train_lm: interrupted; rerun the same command to resume from {FLAGS.workdir}/train_state.")
  print(f"train_lm: wrote the checkpoint directory {os.path.abspath(FLAGS.workdir)}")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=flagfiles.parser("train_lm"))
