"""PyTorch reference: the same Hard Concrete search written the way a researcher writes it today.

An ``nn.LSTMCell`` per layer stepped in a Python loop over time (hooks on ``nn.LSTM`` cannot intervene at
every step), one lambda after another, ``torch.optim.Adam`` on the gate logits, frozen weights. It gets the
same algorithmic savings as jaxmask where a researcher would take them: the counterfactual states are
computed once, and only the target and foil rows of the decoder are used. Compared with jaxmask's 16-lambda
sweep, eager and under ``torch.compile``, at the default size and at the Gulordava size.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from benchmarks import common
from jaxmask import gates, interventions
from jaxmask.models import lstm

try:
  import torch
except ImportError:  # torch is the optional extra
  torch = None

LAMBDAS = common.lambdas(16)


class TorchLM:
  """A frozen LSTM LM of LSTMCells with the weights of a jaxmask parameter pytree."""

  def __init__(self, params: lstm.Params):
    t = lambda a: torch.from_numpy(np.array(a, np.float32))
    self.embedding = t(params["embedding"])
    self.cells = []
    for layer in params["layers"]:
      hidden, inp = layer["w_hh"].shape[1], layer["w_ih"].shape[1]
      cell = torch.nn.LSTMCell(inp, hidden)
      with torch.no_grad():
        for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
          getattr(cell, name.replace("w_", "weight_").replace("b_", "bias_")).copy_(t(layer[name]))
      cell.requires_grad_(False)
      self.cells.append(cell)
    self.decoder_w, self.decoder_b = t(params["decoder"]["w"]), t(params["decoder"]["b"])
    self.hidden = self.cells[0].hidden_size

  def states(self, tokens_BxT: "torch.Tensor", gates_N: "torch.Tensor | None" = None,
             replacement: list[list["torch.Tensor"]] | None = None) -> list[list["torch.Tensor"]]:
    """h of every layer at every step, [layer][t] -> (B, H), with h~ = h + z (r - h) after each cell."""
    batch, steps = tokens_BxT.shape
    x = self.embedding[tokens_BxT]
    h = [torch.zeros(batch, self.hidden) for _ in self.cells]
    c = [torch.zeros(batch, self.hidden) for _ in self.cells]
    out = [[] for _ in self.cells]
    for t in range(steps):
      inp = x[:, t]
      for l, cell in enumerate(self.cells):
        h[l], c[l] = cell(inp, (h[l], c[l]))
        if gates_N is not None:
          z = gates_N[l * self.hidden:(l + 1) * self.hidden]
          h[l] = h[l] + z * (replacement[l][t] - h[l])
        out[l].append(h[l])
        inp = h[l]
    return out

  def margin(self, top: list["torch.Tensor"], length_B, target_B, foil_B) -> "torch.Tensor":
    """logit(target) - logit(foil) at position length - 1, from the target and foil decoder rows only."""
    h_last = torch.stack(top, 1)[torch.arange(len(length_B)), length_B - 1]
    w = self.decoder_w[target_B] - self.decoder_w[foil_B]
    return (w * h_last).sum(-1) + self.decoder_b[target_B] - self.decoder_b[foil_B]


def torch_items(items: interventions.Items) -> dict[str, "torch.Tensor"]:
  return {k: torch.from_numpy(np.asarray(getattr(items, k)).astype(np.int64))
          for k in ("prefix", "counterfactual", "length", "target", "foil")}


def hard_concrete_loss(model: TorchLM, items: dict, replacement, log_alpha, u, lam) -> "torch.Tensor":
  """One sampled Hard Concrete objective: mean flip loss + lam * E[L0] (the formulas of jaxmask.gates)."""
  s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / gates.BETA)
  z = torch.clamp(s * (gates.ZETA - gates.GAMMA) + gates.GAMMA, 0.0, 1.0)
  top = model.states(items["prefix"], z, replacement)[-1]
  m = model.margin(top, items["length"], items["target"], items["foil"])
  l0 = torch.sigmoid(log_alpha - gates.BETA * math.log(-gates.GAMMA / gates.ZETA)).sum()
  return torch.nn.functional.softplus(m).mean() + lam * l0


class TorchSearch:
  """One-lambda-at-a-time Hard Concrete search; ``compiled`` wraps the loss (and its backward) in torch.compile."""

  def __init__(self, params: lstm.Params, items: interventions.Items, compiled: bool = False):
    self.model = TorchLM(params)
    self.items = torch_items(items)
    with torch.no_grad():
      self.replacement = self.model.states(self.items["counterfactual"])
    self.num_units = len(self.model.cells) * self.model.hidden
    self.loss = torch.compile(hard_concrete_loss) if compiled else hard_concrete_loss

  def search(self, lam: float, steps: int, learning_rate: float = 0.1, seed: int = 0) -> np.ndarray:
    """``steps`` Adam steps on the gate logits for one lambda; returns the final log_alpha."""
    generator = torch.Generator().manual_seed(seed)
    log_alpha = torch.zeros(self.num_units, requires_grad=True)
    opt = torch.optim.Adam([log_alpha], lr=learning_rate)
    lam_t = torch.tensor(float(lam))  # a tensor, so torch.compile does not specialise on each lambda
    for _ in range(steps):
      u = torch.rand(self.num_units, generator=generator).clamp(1e-6, 1 - 1e-6)
      loss = self.loss(self.model, self.items, self.replacement, log_alpha, u, lam_t)
      opt.zero_grad()
      loss.backward()
      opt.step()
    return log_alpha.detach().numpy()


def _time_torch(params, items, lambdas, steps, compiled: bool) -> dict[str, float]:
  """Seconds for ``steps`` steps of each of ``lambdas`` one after another (after a warm-up: the compile)."""
  start = time.perf_counter()
  runner = TorchSearch(params, items, compiled)
  runner.search(float(lambdas[0]), 2)
  warm = time.perf_counter() - start
  start = time.perf_counter()
  for lam in lambdas:
    runner.search(float(lam), steps)
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "per_step_ms": 1e3 * seconds / (steps * len(lambdas)), "warmup_seconds": warm}


def _jax_sweep_seconds(program: common.SearchProgram, steps: int) -> float:
  """Wall time of a real ``steps``-step sweep: the compiled chunk run back to back from the initial state."""
  def sweep():
    state = program.initial_state()
    for first in range(0, steps, program.chunk):
      state, _, _ = program.run(state, first_step=first)
  return common.median_seconds(sweep, repeats=1, warmup=1)


def compare(context: common.Context, size: dict[str, int], steps: int, chunk: int, lambdas_timed: int,
            torch_steps: int, with_compile: bool
            ) -> dict[str, Any]:
  """The 16-lambda sweep of ``steps`` steps: jaxmask (one vmapped program) vs torch eager (and compiled).

  jaxmask runs ``steps`` steps (chunks of ``chunk``) when ``chunk`` divides ``steps``, else times one chunk
  and scales it; torch runs ``torch_steps`` steps of ``lambdas_timed`` of the 16 lambdas and scales to
  16 x ``steps`` (every step and lambda costs the same). ``extrapolated`` says whether either scaled.
  """
  params, items = common.sized(size)
  program = context.program(size, len(LAMBDAS), chunk)
  exact = steps % chunk == 0 and steps // chunk <= 3
  jax_seconds = _jax_sweep_seconds(program, steps) if exact else program.seconds(repeats=2) * steps / chunk
  out = {"size": size, "steps": steps, "lambdas": len(LAMBDAS), "jax_sweep_seconds": jax_seconds,
         "jax_compile_seconds": program.compile_seconds, "jax_steps_timed": steps if exact else chunk,
         "torch_lambdas_timed": lambdas_timed, "torch_steps_timed": torch_steps,
         "extrapolated": lambdas_timed < len(LAMBDAS) or torch_steps < steps or not exact}
  scale = len(LAMBDAS) * steps / (lambdas_timed * torch_steps)
  eager = _time_torch(params, items, LAMBDAS[:lambdas_timed], torch_steps, compiled=False)
  out["torch_eager_sweep_seconds"] = eager["seconds"] * scale
  out["torch_eager_per_step_ms"] = eager["per_step_ms"]
  out["speedup"] = out["torch_eager_sweep_seconds"] / jax_seconds
  if with_compile:
    comp = _time_torch(params, items, LAMBDAS[:lambdas_timed], torch_steps, compiled=True)
    out["torch_compile_sweep_seconds"] = comp["seconds"] * scale
    out["torch_compile_per_step_ms"] = comp["per_step_ms"]
    out["torch_compile_seconds"] = comp["warmup_seconds"]
    out["speedup_vs_compile"] = out["torch_compile_sweep_seconds"] / jax_seconds
    out["speedup_vs_compile_with_compile_time"] = ((out["torch_compile_sweep_seconds"] + comp["warmup_seconds"])
                                                   / (jax_seconds + program.compile_seconds))
  out["jax_per_lambda_step_ms"] = 1e3 * jax_seconds / (steps * len(LAMBDAS))
  return out


def best_threads(params: lstm.Params, items: interventions.Items, steps: int = 5) -> dict[str, Any]:
  """Sets torch to the faster of 1 thread and all cores for this eager step (small ops can run faster on one)."""
  per_step = {}
  for threads in sorted({1, os.cpu_count()}):
    torch.set_num_threads(threads)
    per_step[threads] = _time_torch(params, items, LAMBDAS[:1], steps, compiled=False)["per_step_ms"]
  best = min(per_step, key=per_step.get)
  torch.set_num_threads(best)
  return {"threads": best, "calibration_ms_per_step": {str(k): v for k, v in per_step.items()}}


def run(context: common.Context) -> dict[str, Any]:
  quick = context.quick
  if torch is None:
    return {"skipped": "torch is not installed (pip install jaxmask[torch])"}
  steps, chunk = (20, 10) if quick else (90, 30)
  threads = best_threads(*common.sized(common.DEFAULT))
  default = compare(context, common.DEFAULT, steps, chunk, lambdas_timed=4 if quick else 16, torch_steps=steps,
                    with_compile=True)
  gul = compare(context, common.GULORDAVA, steps, 1 if quick else 2, lambdas_timed=1, torch_steps=2 if quick else 3,
                with_compile=not quick)
  result = dict(default)
  result.update(gulordava=gul, torch_threads=threads)
  rows = []
  for name, r in (("default 2x128", default), ("Gulordava 2x650, V=50k", gul)):
    rows.append([name, r["jax_per_lambda_step_ms"], r["torch_eager_per_step_ms"],
                 r.get("torch_compile_per_step_ms", "not run"), r["jax_sweep_seconds"],
                 r["torch_eager_sweep_seconds"], r.get("torch_compile_sweep_seconds", "not run"), r["speedup"],
                 r.get("speedup_vs_compile", "not run"),
                 f"torch {r['torch_lambdas_timed']} λ x {r['torch_steps_timed']} steps, jax {r['jax_steps_timed']} steps"])
  context.table(f"PyTorch reference: 16-lambda sweep, {steps} steps, batch 64 (torch threads = "
                f"{threads['threads']}, the faster of " + ", ".join(
                    f"{k}: {v:.3g}" for k, v in threads["calibration_ms_per_step"].items()) + " ms/step; "
                "compile times apart)",
                ["size", "jax ms/(λ·step)", "eager ms/step", "compile ms/step", "jax sweep s", "eager sweep s",
                 "compile sweep s", "speedup vs eager", "speedup vs compile", "timed (rest scaled)"], rows)
  return result
