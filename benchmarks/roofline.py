"""The FLOPs one search step executes, divided by its measured time, against the machine's matmul peak.

FLOPs are counted analytically (``common.step_flops``: matmuls only, weights frozen, so no weight
gradients; the layer-0 input projection and the counterfactual run are computed once per sweep and not
counted per step). The peak is a jitted ``jnp.dot`` of two 2048 x 2048 fp32 matrices. To explain the
fraction, the same rate is measured for the recurrence alone: a ``lax.scan`` of T dependent
(rows x H) @ (H x 4H) matmuls, the shape each LSTM step multiplies (rows = batch, or Λ x batch vmapped).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import common


def recurrence_gflops(rows: int, hidden: int, steps: int, repeats: int = 5) -> float:
  """GFLOP/s of ``steps`` dependent (rows x H) @ (H x 4H) matmuls with an LSTM-like nonlinearity between."""
  w = jax.random.normal(jax.random.key(0), (hidden, 4 * hidden), jnp.float32) / hidden ** 0.5
  h0 = jax.random.normal(jax.random.key(1), (rows, hidden), jnp.float32)

  @jax.jit
  def chain(h):
    def step(h, _):
      i, f, g, o = jnp.split(h @ w, 4, axis=-1)
      return jax.nn.sigmoid(o) * jnp.tanh(jax.nn.sigmoid(f) * h + jax.nn.sigmoid(i) * jnp.tanh(g)), None
    return jax.lax.scan(step, h, None, length=steps)[0]

  seconds = common.median_seconds(lambda: jax.block_until_ready(chain(h0)), repeats, warmup=1)
  return 2.0 * rows * hidden * 4 * hidden * steps / seconds / 1e9


def projection_gflops(rows: int, hidden: int, repeats: int = 5) -> float:
  """GFLOP/s of one (rows x H) @ (H x 4H) matmul: an upper layer's input projection over all steps at once."""
  x = jax.random.normal(jax.random.key(0), (rows, hidden), jnp.float32)
  w = jax.random.normal(jax.random.key(1), (4 * hidden, hidden), jnp.float32)
  project = jax.jit(lambda x: x @ w.T)
  seconds = common.median_seconds(lambda: jax.block_until_ready(project(x)), repeats, warmup=1)
  return 2.0 * rows * hidden * 4 * hidden / seconds / 1e9


def _measure(context: common.Context, size: dict[str, int], num_lambdas: int, chunk: int, peak: float,
             with_breakdown: bool = True
             ) -> dict[str, Any]:
  prog = context.program(size, num_lambdas, chunk)
  seconds = prog.seconds(repeats=2) / chunk
  parts = common.breakdown(prog, num_lambdas) if with_breakdown else {"forward_ms": float("nan"),
                                                                      "forward_backward_ms": float("nan")}
  flops = common.step_flops(size["batch"], size["steps"], size["hidden_size"], size["num_layers"])
  executed = num_lambdas * flops["per_lambda_step"]
  return {"lambdas": num_lambdas, "seconds_per_step": seconds, "flops_per_step": executed,
          "flops_shared_once_per_sweep": flops["shared_once_per_sweep"], "gflops": executed / seconds / 1e9,
          "fraction_of_peak": executed / seconds / 1e9 / peak, "compile_seconds": prog.compile_seconds,
          "xla_cost_analysis_flops_per_call": prog.xla_flops(), "breakdown_ms": {
              "step": 1e3 * seconds, **parts, "backward": parts["forward_backward_ms"] - parts["forward_ms"],
              "rest": 1e3 * seconds - parts["forward_backward_ms"]}}


def run(context: common.Context) -> dict[str, Any]:
  quick = context.quick
  peak = common.matmul_peak()
  chunk_default = 10 if quick else 30
  out = {"peak": peak, "default": {}, "gulordava": {}, "recurrence_gflops": {}}
  out["default"]["16"] = _measure(context, common.DEFAULT, 16, chunk_default, peak["gflops"])
  out["default"]["1"] = _measure(context, common.DEFAULT, 1, chunk_default, peak["gflops"])
  out["gulordava"]["16"] = _measure(context, common.GULORDAVA, 16, 1 if quick else 2, peak["gflops"],
                                   not quick)
  if not quick:
    out["gulordava"]["1"] = _measure(context, common.GULORDAVA, 1, 2, peak["gflops"])
  for name, size in (("default", common.DEFAULT), ("gulordava", common.GULORDAVA)):
    for lam in (1, 16):
      rows = lam * size["batch"]
      out["recurrence_gflops"][f"{name}_{lam}"] = {
          "rows": rows, "hidden": size["hidden_size"],
          "gflops": recurrence_gflops(rows, size["hidden_size"], size["steps"])}
  # The same matmul shape at two sizes of the row dimension: the upper layer's input projection of all
  # Λ x B x T rows at once, against the B x Λ rows one recurrent step multiplies.
  g = common.GULORDAVA
  out["projection_gflops"] = {} if quick else {f"rows_{rows}": projection_gflops(rows, g["hidden_size"])
                                               for rows in (16 * g["batch"], 16 * g["batch"] * g["steps"])}
  out["fraction_of_peak"] = out["default"]["16"]["fraction_of_peak"]
  out["fraction_of_peak_gulordava"] = out["gulordava"]["16"]["fraction_of_peak"]
  rows = []
  for name in ("default", "gulordava"):
    for lam, r in sorted(out[name].items(), key=lambda kv: int(kv[0])):
      rec = out["recurrence_gflops"][f"{name}_{lam}"]
      rows.append([f"{name} ({'2x128, B=64, T=8' if name == 'default' else '2x650, V=50k, B=64, T=12'})", lam,
                   1e3 * r["seconds_per_step"], r["flops_per_step"] / 1e9, r["gflops"], r["fraction_of_peak"],
                   rec["gflops"], rec["gflops"] / peak["gflops"]])
  context.table(
      f"Roofline: executed matmul FLOPs per step / time, vs jnp.dot 2048^3 peak = {peak['gflops']:.1f} GFLOP/s",
      ["size", "Λ", "ms/step", "GFLOP/step", "GFLOP/s", "fraction of peak",
       "recurrence-only GFLOP/s (same shape)", "recurrence-only fraction"], rows)
  rows = [[name, lam, r["breakdown_ms"]["step"], r["breakdown_ms"]["forward_ms"], r["breakdown_ms"]["backward"],
           r["breakdown_ms"]["rest"]] for name in ("default", "gulordava")
          for lam, r in sorted(out[name].items(), key=lambda kv: int(kv[0]))]
  if out["projection_gflops"]:
    context.table(
        f"Roofline: one (rows x 650) @ (650 x 2600) matmul, GFLOP/s (peak {peak['gflops']:.1f})",
        ["rows", "GFLOP/s", "fraction of peak"],
        [[k.split("_")[1], v, v / peak["gflops"]] for k, v in out["projection_gflops"].items()])
  context.table("Roofline: where a step's time goes (ms; forward and gradient timed alone, rest = step - both)",
                ["size", "Λ", "step", "forward (margins + loss)", "backward (gate gradient)",
                 "rest (sampling, L0, Adam, gather)"], rows)
  return out
