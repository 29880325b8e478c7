r"""The masked-intervention search: one pure optax optimisation of gate logits, jitted once, vmapped over lambdas.

For a sparsity coefficient :math:`\lambda` the search minimises (METHOD.md)

.. math::
   L(\theta; \lambda) = \mathrm{mean}_{items}\, E_{z \sim q_\theta}[\ell(m(z))] + \lambda E[L_0(z)]
                        + \mu\, \mathrm{KL}_{control}

where :math:`m(z)` is logit(y) - logit(y') of the model (an LSTM or a transformer) whose units are replaced,
:math:`\tilde s = (1 - z) s + z r`, at every step, and :math:`\ell` the flip (or neutralise) loss.
``method="hard_concrete"`` uses reparameterised Hard Concrete gates; ``method="reinforce"`` Bernoulli
gates with the score-function estimator, with the same objective, data, optimiser and read-out. How the
run reaches a discrete set (gates open at the start, a ramp, a final phase on hard gates, a target size k
instead of lambda) is endgame.py's.

Everything that does not depend on the gates is computed once and shared by every lambda and step: the
model's embedded input (an LSTM's layer-0 input projection), the replacement (counterfactual) states and,
for the control term, the clean model's distribution. The lambda axis is sharded over the devices of every
process (several under ``jax.distributed``; a mesh of one on one device).
The items, replacement kinds and margins are interventions.py's; this module is the optimisation only.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxmask import endgame, gates, interventions, models, multihost, objectives
from jaxmask.items import Control, Items

Params = dict

METHODS = ("hard_concrete", "reinforce")


@flax.struct.dataclass
class Shared:
  """Gate-independent arrays computed once per sweep and shared by every lambda and step."""
  inputs: jax.Array       # interventions.model_inputs: the family's embed_inputs of the prefixes (an LSTM's
                          # layer-0 input projection), of both continued rows with several-token words
  r: dict                 # replacement states of the sites' state kinds, e.g. {"h": broadcastable to (L, B, T, H)}
  control_inputs: jax.Array | None = None
  control_log_p: jax.Array | None = None
  control_mask: jax.Array | None = None
  control_r: dict | None = None
  control_classes: jax.Array | None = None


# The sweep. ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Static settings of one sweep (everything but the lambdas, the data and the seed)."""
  method: str = "hard_concrete"
  steps: int = 1000
  learning_rate: float = 0.1
  batch_size: int = 64
  sites: str = "h"
  replacement: str = "counterfactual"
  objective: str = "flip"
  mu: float = 0.0
  control_batch_size: int = 8     # control rows per step for the KL term (a minibatch, as for the items; 0 = all)
  control_positions: int = 32     # of their real positions, how many (drawn at random) decode the KL; 0 = all
  num_samples: int = 8            # REINFORCE: samples per step
  baseline: str = "moving_average"  # REINFORCE: "moving_average" (decay 0.99) or "leave_one_out"
  baseline_decay: float = 0.99
  # The end-game (endgame.py): how the relaxed search reaches the discrete set it reports. The defaults are
  # the measured choice (README "Reaching a discrete set"); init_logit=0, schedule="fixed", hard_fraction=0
  # is the plain method of METHOD.md, kept as the control.
  init_logit: float = 3.0         # initial log_alpha (Hard Concrete) or phi (REINFORCE): gates start open
  schedule: str = "ramp"          # "fixed" lambda, or "ramp": lambda (or the target size) ramped in
  ramp_fraction: float = 0.1      # the ramp's share of the steps
  hard_fraction: float = 0.9      # the last share of the steps on straight-through hard gates (Hard Concrete
                                  # only; REINFORCE's samples are already discrete, so it ignores this)
  targets: bool = False           # the swept values are target set sizes k (Lagrangian), not lambdas
  multiplier_lr: float = 0.01     # with targets: the Lagrange multiplier's ascent rate per unit of excess L0

  def validate(self) -> None:
    if self.method not in METHODS:
      raise ValueError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}.")
    if self.replacement not in interventions.REPLACEMENTS:
      raise ValueError(f"unknown replacement {self.replacement!r}; use one of {', '.join(interventions.REPLACEMENTS)}.")
    if self.sites not in models.SITES:
      raise ValueError(f"sites must be one of {', '.join(models.SITES)}, got {self.sites!r}.")
    if self.objective not in objectives.LOSSES:
      raise ValueError(f"unknown objective {self.objective!r}; use one of {', '.join(objectives.LOSSES)}.")
    if self.method == "reinforce" and self.baseline == "leave_one_out" and self.num_samples < 2:
      raise ValueError("the leave-one-out baseline needs num_samples >= 2.")
    if self.steps < 1 or self.batch_size < 1:
      raise ValueError("steps and batch_size must be positive.")
    if self.control_batch_size < 0 or self.control_positions < 0:
      raise ValueError(f"control_batch_size and control_positions must be >= 0 (0 = all), not "
                       f"{self.control_batch_size}, {self.control_positions}.")
    if self.schedule not in endgame.SCHEDULES:
      raise ValueError(f"unknown schedule {self.schedule!r}; use one of {', '.join(endgame.SCHEDULES)}.")
    if not (0.0 <= self.ramp_fraction <= 1.0 and 0.0 <= self.hard_fraction < 1.0):
      raise ValueError(f"ramp_fraction must lie in [0, 1] and hard_fraction in [0, 1), got {self.ramp_fraction} "
                       f"and {self.hard_fraction}.")


@flax.struct.dataclass
class SweepState:
  """The optimisation state of every lambda (leading axis = lambdas), and the number of steps taken."""
  logits: jax.Array          # (Λ, N): log_alpha (Hard Concrete) or phi (REINFORCE)
  replacement: jax.Array     # (Λ, L, H) learned replacement for h (unused unless replacement="learned")
  opt_state: optax.OptState
  baseline: jax.Array        # (Λ,) REINFORCE moving-average baseline
  multiplier: jax.Array      # (Λ,) Lagrange multiplier of the target-size constraint (unused without targets)
  step: jax.Array            # () int32
  diverged_at: jax.Array     # (Λ,) int32: the step whose update was not finite, the run frozen since; -1: none


@dataclasses.dataclass
class SweepResult:
  """What a sweep found, one entry per lambda.

  Attributes:
    lambdas: the sparsity coefficients; with ``targets``, each run's final Lagrange multiplier (the price
      of one more unit that the constraint settled on).
    logits: final gate logits (Λ, N): log_alpha, or phi for REINFORCE.
    units: per lambda, the sorted flat unit ids read out as selected (deterministic gate > 0.5, i.e.
      logit > 0; for REINFORCE, P(z = 1) > 0.5, also logit > 0); with ``targets``, the k largest logits.
    expected_l0: per lambda, the expected number of open gates at the end.
    loss_trace: (steps, Λ) training objective per step (stochastic estimate).
    task_loss_trace: (steps, Λ) its flip (or neutralise) part.
    diverged_at: per run, the step at which its update held NaN or inf (loss, gate logits or optimiser
      state), or -1; such a run keeps its last finite state (its logits, units and E[L0] are those before
      that step) and its traces are NaN from that step on.
    seconds: wall time of the optimisation, compilation included.
    state: the final SweepState (to resume or continue).
  """
  lambdas: np.ndarray
  logits: np.ndarray
  units: list[list[int]]
  expected_l0: np.ndarray
  loss_trace: np.ndarray
  task_loss_trace: np.ndarray
  seconds: float
  state: SweepState
  replacement: np.ndarray | None = None
  targets: np.ndarray | None = None
  diverged_at: np.ndarray | None = None

  def finite(self) -> SweepResult:
    """The same result with only the runs that stayed finite (``state`` is left whole)."""
    keep = np.flatnonzero(self.diverged_at < 0)
    rows = lambda a: None if a is None else a[keep]
    return dataclasses.replace(
        self, lambdas=self.lambdas[keep], logits=self.logits[keep], units=[self.units[i] for i in keep],
        expected_l0=self.expected_l0[keep], loss_trace=self.loss_trace[:, keep],
        task_loss_trace=self.task_loss_trace[:, keep], replacement=rows(self.replacement), targets=rows(self.targets),
        diverged_at=self.diverged_at[keep])


def prepare(params: Params, items: Items, config: SearchConfig, control: Control | None = None,
            mean_h: dict | None = None) -> Shared:
  """Computes the gate-independent arrays once: the embedded input, replacement states, control."""
  model = models.of_params(params)
  states = model.site_states(config.sites)
  if interventions.replacement_kind(config.replacement).learned and states != ("h",):
    raise ValueError(f"the learned replacement learns one h vector per LSTM layer; with sites={config.sites!r} use "
                     f"counterfactual, zero or mean.")
  r = interventions.replacement_states(params, items, config.replacement, mean_h)
  shared = dict(inputs=interventions.model_inputs(params, items), r={k: r[k] for k in states})
  if config.mu > 0:
    if control is None:
      raise ValueError("mu > 0 needs control text (an items.Control) for the KL term.")
    cm = interventions.mean_states(params, control.tokens, control.length)
    shapes = interventions.unit_shapes(params)
    shared.update(control_inputs=model.embed_inputs(params, control.tokens),
                  control_log_p=jax.nn.log_softmax(model.apply(params, control.tokens), axis=-1),
                  control_mask=interventions.length_mask(control.length, control.tokens.shape[1]),
                  control_r={k: cm[k].reshape(shapes[k]) for k in states},
                  control_classes=control.classes_V)
  return Shared(**shared)


def init_state(params: Params, lambdas: jax.Array, config: SearchConfig, shared: Shared) -> SweepState:
  """All gate logits at ``config.init_logit``; the learned replacement starts at the mean (or given) states."""
  model = models.of_params(params)
  n = model.num_units(params, config.sites)
  num = lambdas.shape[0]
  logits = jnp.full((num, n), config.init_logit, jnp.float32)
  cfg = model.config_of(params)
  rep = jnp.broadcast_to(jnp.asarray(shared.r["h"]).reshape(-1, cfg["hidden_size"])[:cfg["num_layers"]]
                         if config.replacement == "learned" else jnp.zeros((cfg["num_layers"], cfg["hidden_size"])),
                         (num, cfg["num_layers"], cfg["hidden_size"]))
  opt_state = jax.vmap(optax.adam(config.learning_rate).init)((logits, rep))
  zeros = jnp.zeros((num,), jnp.float32)
  return SweepState(logits=logits, replacement=rep, opt_state=opt_state, baseline=zeros, multiplier=zeros,
                    step=jnp.zeros((), jnp.int32), diverged_at=jnp.full((num,), -1, jnp.int32))


def _finite_runs(tree) -> jax.Array:
  """(Λ,) whether every float of each run (leading axis) in ``tree`` is finite."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return functools.reduce(jnp.logical_and, [jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1) for x in leaves])


def _step_fn(params: Params, items: Items, shared: Shared, config: SearchConfig, key: jax.Array,
             total_steps: jax.Array, runs: int = 1) -> Callable:
  """The update of one run at one step: (logits, replacement, opt_state, baseline, multiplier, value, step) -> new.

  ``value`` is the run's lambda, or its target size k when ``config.targets`` (then lambda is the Lagrange
  multiplier, updated after each step). ``total_steps`` sets the ramp and the hard phase (endgame.py).
  ``runs``, the number of runs vmapped together, sizes the control term's chunks (``interventions.kl_chunk``).
  """
  task_loss = objectives.LOSSES[config.objective]
  opt = optax.adam(config.learning_rate)
  num_items = items.prefix.shape[0]
  model = models.of_params(params)
  num_units = model.num_units(params, config.sites)
  learned = interventions.replacement_kind(config.replacement).learned

  def batch_of(step):
    k_batch, k_gate = jax.random.split(jax.random.fold_in(key, step))
    if config.batch_size >= num_items:
      return jnp.arange(num_items), k_gate
    return jax.random.randint(k_batch, (config.batch_size,), 0, num_items), k_gate

  # The control term, a stochastic estimate like the items' minibatch (its own random stream): a minibatch of
  # control rows, the full-vocabulary KL decoded exactly at some of their real tokens (interventions.control_kl_at).
  num_control = 0 if shared.control_mask is None else shared.control_mask.shape[0]
  control_rows = num_control if config.control_batch_size in (0, num_control) else config.control_batch_size
  runs *= config.num_samples if config.method == "reinforce" else 1
  chunk = interventions.kl_chunk(int(model.unembedding(params)[0].shape[0]), runs)

  def control_of(step):  # (rows, flat positions in those rows or None for all)
    k_rows, k_positions = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, step), 1))
    rows = jax.random.randint(k_rows, (control_rows,), 0, num_control) if control_rows < num_control else \
        jnp.arange(num_control)
    mask = shared.control_mask[rows].reshape(-1)
    return rows, (jax.random.choice(k_positions, mask.shape[0], (config.control_positions,), p=mask / mask.sum())
                  if config.control_positions else None)

  def task(z_N, rep_LxH, idx, step):
    """Mean task loss (+ mu * KL control) of the intervention z on the items at idx."""
    r = {**shared.r, "h": rep_LxH[:, None, None, :]} if learned else shared.r
    r = {k: v[:, idx] if v.shape[1] != 1 else v for k, v in r.items()}
    m = interventions.margin(params, items.take(idx), shared.inputs[idx], z_N, r, config.sites)
    loss = jnp.mean(task_loss(m))
    if config.mu > 0:
      rows, at = control_of(step)
      intervention = model.intervention_of(z_N, shared.control_r, config.sites)
      top, _ = model.run(params, shared.control_inputs[rows], intervention)
      kl = interventions.control_kl_at(params, top, shared.control_log_p[rows], shared.control_mask[rows],
                                       shared.control_classes, at, chunk)
      return loss + config.mu * kl, loss
    return loss, loss

  def hard_concrete(logits, rep, lam, idx, k_gate, baseline, hard, k, step):
    def total(p):
      la, r = p
      z, l0 = gates.sample(k_gate, la), gates.expected_l0(la)
      if config.hard_fraction > 0:  # the read-out set in the forward pass, its size as the L0 term
        z_st = endgame.straight_through(la, endgame.read_out_mask(la, k))
        z, l0 = jnp.where(hard, z_st, z), jnp.where(hard, z_st.sum(), l0)
      obj, t = task(z, r, idx, step)
      return obj + lam * l0, t
    (value, t), grads = jax.value_and_grad(total, has_aux=True)((logits, rep))
    return value, t, grads, baseline, gates.expected_l0(logits)

  def reinforce(logits, rep, lam, idx, k_gate, baseline, hard, k, step):
    del hard, k
    z_KxN = gates.bernoulli_sample(k_gate, jnp.broadcast_to(logits, (config.num_samples,) + logits.shape))
    f_K, t_K = jax.vmap(lambda z: task(z, rep, idx, step))(z_KxN)
    loo = config.baseline == "leave_one_out"
    surrogate = lambda phi: (gates.reinforce_surrogate(phi, z_KxN, f_K, baseline, loo)
                             + lam * jnp.sum(jax.nn.sigmoid(phi)))
    g_logits = jax.grad(surrogate)(logits)
    g_rep = jnp.zeros_like(rep)
    if learned:  # the replacement gets the pathwise gradient at the sampled gates
      g_rep = jax.grad(lambda r: jnp.mean(jax.vmap(lambda z: task(z, r, idx, step)[0])(z_KxN)))(rep)
    new_baseline = gates.moving_average(baseline, f_K.mean(), config.baseline_decay)
    l0 = jnp.sum(jax.nn.sigmoid(logits))
    return f_K.mean() + lam * l0, t_K.mean(), (g_logits, g_rep), new_baseline, l0

  estimator = hard_concrete if config.method == "hard_concrete" else reinforce

  def step(logits, rep, opt_state, baseline, multiplier, value, step_index):
    idx, k_gate = batch_of(step_index)
    ramp = endgame.progress(step_index, total_steps, config.ramp_fraction if config.schedule == "ramp" else 0.0)
    hard = endgame.in_hard_phase(step_index, total_steps, config.hard_fraction)
    k = value if config.targets else None
    # With a target size the hard phase's read-out has exactly k units: no size penalty is left to pay.
    lam = jnp.where(hard, 0.0, multiplier) if config.targets else value * ramp
    objective, t, grads, baseline, l0 = estimator(logits, rep, lam, idx, k_gate, baseline, hard, k, step_index)
    updates, opt_state = opt.update(grads, opt_state, (logits, rep))
    logits, rep = optax.apply_updates((logits, rep), updates)
    if config.targets:  # the multiplier prices the relaxed phase's constraint; the hard phase holds it
      updated = endgame.multiplier_update(multiplier, l0, endgame.target_size(value, num_units, ramp),
                                          config.multiplier_lr)
      multiplier = jnp.where(hard, multiplier, updated)
    return logits, rep, opt_state, baseline, multiplier, objective, t

  return step


@functools.partial(jax.jit, static_argnames=("config",))
def run_steps(params: Params, items: Items, shared: Shared, key: jax.Array, state: SweepState,
              values: jax.Array, step_indices: jax.Array, total_steps: jax.Array, config: SearchConfig
              ) -> tuple[SweepState, jax.Array, jax.Array]:
  """Runs the steps ``step_indices`` (of ``total_steps``) of every run: lax.scan over steps of the vmapped update.

  The compiled piece of :func:`sweep`, public so that benchmarks can compile it ahead of time
  (``run_steps.lower(...).compile()``). ``values`` are the lambdas (or target sizes); ``config.steps`` is
  not read, so one compiled program serves any step count. A run whose update is not finite is frozen at its
  last finite state from then on (``SweepState.diverged_at``). Returns (new state, objective and task loss
  per step and run, each (steps, Λ); NaN where a run had diverged).
  """
  vstep = jax.vmap(_step_fn(params, items, shared, config, key, total_steps, values.shape[0]),
                   in_axes=(0, 0, 0, 0, 0, 0, None))

  def body(carry, i):
    old, diverged_at = carry
    *updated, value, t = vstep(*old, values, i)
    # A run whose update holds NaN or inf is frozen at its last finite state; the others are left exactly as
    # they are (a per-run select), so they do not depend on whether another run diverged.
    ok = (diverged_at < 0) & _finite_runs((updated, value, t))
    kept = jax.tree.map(lambda n, o: jnp.where(ok.reshape(ok.shape + (1,) * (n.ndim - 1)), n, o), tuple(updated), old)
    diverged_at = jnp.where((diverged_at < 0) & ~ok, i, diverged_at)
    return (kept, diverged_at), (jnp.where(ok, value, jnp.nan), jnp.where(ok, t, jnp.nan))

  carry = ((state.logits, state.replacement, state.opt_state, state.baseline, state.multiplier), state.diverged_at)
  ((logits, rep, opt_state, base, mult), diverged_at), (objectives_, tasks) = jax.lax.scan(body, carry, step_indices)
  new = SweepState(logits=logits, replacement=rep, opt_state=opt_state, baseline=base, multiplier=mult,
                   step=state.step + step_indices.shape[0], diverged_at=diverged_at)
  return new, objectives_, tasks


def _mesh() -> Mesh:  # every process's devices under jax.distributed
  return Mesh(np.array(jax.devices()), ("lambda",))


def sweep(params: Params, items: Items, lambdas, seed: int = 0, *, config: SearchConfig | None = None,
          control: Control | None = None, mean_h: dict | None = None, chunk_steps: int | None = None,
          state: SweepState | None = None, callback: Callable[[SweepState, np.ndarray], None] | None = None,
          **settings) -> SweepResult:
  """Optimises one gate vector per lambda (or target size), all in one jitted, vmapped (and sharded) program.

  The random stream (minibatches, gate noise) depends on ``seed`` and the step only, not on the lambda,
  so a sweep over [l1, l2] equals two single-lambda sweeps with the same seed, and every lambda sees the
  same minibatches (common random numbers make the Pareto front smoother).

  Args:
    params: the language model (any family of ``models``: an LSTM or a transformer).
    items: the minimal pairs to flip.
    lambdas: sparsity coefficients, shape (Λ,); with ``targets=True``, target set sizes k instead: each run
      constrains E[L0] to k (ramped down from N with ``schedule="ramp"``) and reads out its k largest logits.
    seed: the random seed.
    config: a SearchConfig; or give its fields as keywords (``settings``: method, steps, learning_rate,
      batch_size, sites, replacement, objective, mu, num_samples, baseline, init_logit, schedule,
      ramp_fraction, hard_fraction, targets, multiplier_lr), which override ``config``'s. In short: method
      "hard_concrete" or "reinforce"; Adam for ``steps`` steps on minibatches of ``batch_size`` items;
      sites "h" or "hc" (LSTM), "mlp", "heads" or "mlp,heads" (transformer); replacement "counterfactual",
      "zero", "mean" (``mean_h`` or the prefixes' mean) or "learned" (LSTM); objective "flip" or "neutralise";
      ``mu`` > 0 adds mu * KL on ``control`` text (merged KL when ``control.classes_V`` is set); the end-game
      settings are endgame.py's.
    chunk_steps: run the steps in jitted chunks of this size, calling ``callback(state, losses)`` after each
      (progress, checkpoints); results do not depend on it.
    state: a SweepState to resume from (from ``callback`` or an earlier result).

  Returns:
    A SweepResult.
  """
  config = dataclasses.replace(config or SearchConfig(), **settings)
  config.validate()
  values = np.asarray(lambdas, np.float32).reshape(-1)
  if config.targets and (values.size == 0 or values.min() < 1 or np.any(values != np.round(values))):
    raise ValueError(f"target sizes must be positive integers, got {values.tolist()}.")
  mesh = _mesh()
  num_devices = mesh.devices.size
  padded = int(np.ceil(len(values) / num_devices) * num_devices)
  values_padded = np.concatenate([values, np.full(padded - len(values), values[-1], np.float32)])
  by_run, replicated = NamedSharding(mesh, PartitionSpec("lambda")), NamedSharding(mesh, PartitionSpec())

  start_time = time.perf_counter()
  params, items = jax.device_put((params, items), replicated)
  shared = jax.device_put(prepare(params, items, config, control, mean_h), replicated)
  values_dev = jax.device_put(jnp.asarray(values_padded), by_run)
  if state is None:
    state = init_state(params, values_dev, config, shared)
  elif state.logits.shape[0] != padded:
    raise ValueError(f"the state to resume has {state.logits.shape[0]} runs, this sweep {padded}.")
  state = jax.device_put(state, jax.tree.map(lambda a: replicated if a.ndim == 0 else by_run, state))

  key = jax.random.key(seed)
  steps = config.steps
  chunk = steps if chunk_steps is None else max(1, min(chunk_steps, steps))
  losses, tasks = [], []
  done = int(state.step)
  while done < steps:
    n = min(chunk, steps - done)
    state, v, t = run_steps(params, items, shared, key, state, values_dev, jnp.arange(done, done + n, dtype=jnp.int32),
                            jnp.asarray(steps, jnp.float32), dataclasses.replace(config, steps=1))
    done += n
    losses.append(multihost.host(v)[:, :len(values)])
    tasks.append(multihost.host(t)[:, :len(values)])
    if callback is not None:
      callback(state, losses[-1])
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start_time

  logits = multihost.host(state.logits)[:len(values)]
  empty = np.zeros((0, len(values)), np.float32)
  l0 = gates.expected_l0(logits) if config.method == "hard_concrete" else jax.nn.sigmoid(logits).sum(-1)
  targets = values if config.targets else None
  return SweepResult(
      lambdas=multihost.host(state.multiplier)[:len(values)] if config.targets else values, logits=logits,
      units=endgame.read_out(logits, targets), expected_l0=np.asarray(l0),
      loss_trace=np.concatenate(losses) if losses else empty,
      task_loss_trace=np.concatenate(tasks) if tasks else empty, seconds=seconds, state=state,
      replacement=multihost.host(state.replacement)[:len(values)] if config.replacement == "learned" else None,
      targets=targets, diverged_at=multihost.host(state.diverged_at)[:len(values)])
