r"""How a search reaches a discrete set: the sparsity schedule, a final phase on hard gates, the read-out.

METHOD.md ("Reaching a discrete set") keeps the objective and the gates and leaves these free. The
relaxed objective is not the read-out's: a fractional gate lets a partly redundant unit pay for itself,
so a fixed-lambda run can stop at a larger set than the discrete objective would pick. The pieces here,
all pure and traceable (``step`` may be a traced scalar inside ``lax.scan``):

- a linear **ramp** of the sparsity pressure over the first fraction of the steps (DiffMask, Edge
  Pruning, subnetwork probing ramp or constrain rather than fix lambda);
- a **target size** k instead of lambda: the constraint :math:`E[L_0] \le t_s`, with the target
  :math:`t_s` ramped from N (every unit) down to k, enforced by a Lagrange multiplier that gradient
  ascent raises while the constraint is violated and lowers (clamped at 0) while it holds;
- a **hard phase**: the last fraction of the steps runs the read-out set itself in the forward pass,
  with the straight-through gradient of :math:`\sigma(\log\alpha)`, so those steps optimise the discrete
  set that will be reported, not a relaxation of it;
- the **read-out**: the units with logit > 0 (deterministic gate > 0.5), or exactly the k largest logits
  when a target size is given (Edge Pruning reads out its budget exactly the same way).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("fixed", "ramp")
# (ramp share, hard-phase share) of the steps when a search does not set them. Lambda sweeps: measured on the
# estimators benchmark (README "Reaching a discrete set"). Target-size sweeps need a longer relaxed phase to
# find units that act only jointly (AND, OR motifs): chosen among 8 settings on the optimality benchmark
# (benchmarks/RESULTS.md, "Ground truth"), so that benchmark's figures for it are not out-of-sample.
DEFAULT_PHASES = {"lambdas": (0.1, 0.9), "targets": (0.4, 0.4)}


def progress(step: jax.Array, total_steps: jax.Array, fraction: float) -> jax.Array:
  r"""The ramp factor :math:`\min(1, (s + 1) / (f T))` of step s of T (1 from the start when f = 0)."""
  if fraction <= 0:
    return jnp.ones((), jnp.float32)
  return jnp.minimum(1.0, (step + 1.0) / jnp.maximum(fraction * total_steps, 1.0))


def target_size(k: jax.Array, num_units: int, ramp: jax.Array) -> jax.Array:
  r"""The constraint's target at ramp factor r: :math:`t = N - (N - k)\, r`, from N (r = 0) down to k (r = 1)."""
  return num_units - (num_units - k) * ramp


def in_hard_phase(step: jax.Array, total_steps: jax.Array, hard_fraction: float) -> jax.Array:
  """Whether ``step`` lies in the final ``hard_fraction`` of ``total_steps`` (a boolean scalar)."""
  return step >= jnp.ceil((1.0 - hard_fraction) * total_steps)


def top_k_mask(logits_N: jax.Array, k: jax.Array) -> jax.Array:
  """1.0 on the k largest logits (ties to the lower index), else 0.0; k may be traced and fractional (floored)."""
  rank_N = jnp.argsort(jnp.argsort(-logits_N, stable=True), stable=True)
  return (rank_N < jnp.floor(k)).astype(logits_N.dtype)


def read_out_mask(logits_N: jax.Array, k: jax.Array | None = None) -> jax.Array:
  """The read-out set as a 0/1 vector: logit > 0, or the top k when a target size k is given."""
  if k is None:
    return (logits_N > 0).astype(logits_N.dtype)
  return top_k_mask(logits_N, k)


def straight_through(logits_N: jax.Array, hard_N: jax.Array) -> jax.Array:
  r"""Forward: the hard 0/1 gates; backward: the gradient of :math:`\sigma(\log\alpha)`.

  :math:`z = h + (\sigma(\log\alpha) - \mathrm{sg}[\sigma(\log\alpha)])`. The sigmoid never saturates to a
  zero gradient the way the clipped Hard Concrete sample does, so every unit, in the set or out of it,
  keeps getting the task's verdict on it.
  """
  soft_N = jax.nn.sigmoid(logits_N)
  return jax.lax.stop_gradient(hard_N) + (soft_N - jax.lax.stop_gradient(soft_N))  # exactly hard_N forward


def multiplier_update(multiplier: jax.Array, l0: jax.Array, target: jax.Array, learning_rate: float) -> jax.Array:
  r"""Projected gradient ascent on the Lagrange multiplier: :math:`\lambda \leftarrow \max(0, \lambda + \eta (L_0 - t))`."""
  return jnp.maximum(0.0, multiplier + learning_rate * (l0 - target))


def read_out(logits_SxN: np.ndarray, targets: np.ndarray | None = None) -> list[list[int]]:
  """The sorted flat unit ids of each row's read-out set (logit > 0, or the top ``targets[s]`` logits)."""
  logits_SxN = np.asarray(logits_SxN)
  if targets is None:
    return [sorted(np.flatnonzero(row > 0).tolist()) for row in logits_SxN]
  return [sorted(np.argsort(-row, kind="stable")[:int(k)].tolist()) for row, k in zip(logits_SxN, targets)]
