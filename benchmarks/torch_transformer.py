"""PyTorch hooks reference on a transformer: the Hard Concrete search as a TransformerLens / nnsight user writes it.

A Hugging Face ``GPT2LMHeadModel`` with random weights, frozen, whose weights jaxmask also runs
(``convert_gpt2.params_from_state_dict``: both sides compute the same model). Forward hooks on every block's
``mlp.act`` (the GELU module) cache the counterfactual run's post-GELU activations once (a no-grad pass), then
replace them at every position with h + z (r - h), z sampled from Hard Concrete gates (the formulas of
jaxmask.gates); margin = logit(target) - logit(foil) at position length - 1, from the final hidden state and the
target and foil rows of the head only (the saving torch_ref.py gives its LSTM too); loss = mean softplus(margin)
+ lambda * E[L0]; ``torch.optim.Adam`` on the gate logits, one lambda after another. Eager, and under
``torch.compile`` (the loss and its backward, hooks included) where that works. Compared with jaxmask's 16-lambda
sweep (one vmapped program, sites="mlp") at the default transformer's size and at GPT-2 small.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from benchmarks import common
from jaxmask import convert_gpt2, gates, interventions, models

try:
  import torch
  import transformers
except ImportError:  # torch and transformers are optional extras
  torch = transformers = None

LAMBDAS = common.lambdas(16)
# (a) the default transformer's size and (b) GPT-2 small; batch 64 x 12 tokens
DEFAULT = dict(vocab_size=5_600, d_model=128, num_layers=2, num_heads=4, d_mlp=512, positions=64, batch=64, steps=12)
GPT2_SMALL = dict(vocab_size=50_257, d_model=768, num_layers=12, num_heads=12, d_mlp=3072, positions=1024, batch=64,
                  steps=12)
QUICK = (dict(vocab_size=60, d_model=16, num_layers=2, num_heads=2, d_mlp=32, positions=8, batch=8, steps=6),
         dict(vocab_size=200, d_model=32, num_layers=3, num_heads=4, d_mlp=64, positions=8, batch=8, steps=6))
JAX_STATE_BYTES = 4 * 2 ** 30  # the vmapped lambdas' activations jaxmask may hold here (the machine is shared)


def hf_model(size: dict[str, int], seed: int = 0, init_scale: float = 0.02) -> "transformers.GPT2LMHeadModel":
  """A frozen GPT2LMHeadModel with random weights (GPT-2's init, sd ``init_scale``), nonzero biases and LayerNorm
  parameters."""
  config = transformers.GPT2Config(vocab_size=size["vocab_size"], n_positions=size["positions"],
                                   n_embd=size["d_model"], n_layer=size["num_layers"], n_head=size["num_heads"],
                                   n_inner=size["d_mlp"], activation_function="gelu_new", resid_pdrop=0.0,
                                   embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=init_scale, bos_token_id=0,
                                   eos_token_id=0)
  torch.manual_seed(seed)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or ".ln_" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model.requires_grad_(False)


def shared_model(size: dict[str, int], seed: int = 0, init_scale: float = 0.02):
  """(HF model, the same weights as jaxmask params, random items of the size's vocabulary and shape)."""
  model = hf_model(size, seed, init_scale)
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  params = convert_gpt2.params_from_state_dict(state, size["num_heads"])
  return model, params, common.random_items(size["vocab_size"], size["batch"], size["steps"], seed)


class HookedGPT2:
  """Forward hooks on each block's ``mlp.act``: cache its output, or replace it with h + z (r - h).

  ``mode`` "cache" stores every layer's post-GELU activations (B, T, F) in ``cache``; "patch" mixes them with
  ``r`` (a cached run) using the gates ``z`` (N = L * F, layer-major, as jaxmask's flat unit ids); "off" leaves
  them. Set the attributes, then call :meth:`margin`.
  """

  def __init__(self, model):
    self.model = model
    self.d_mlp = model.config.n_inner or 4 * model.config.n_embd
    self.num_units = model.config.n_layer * self.d_mlp
    self.mode, self.z, self.r, self.cache = "off", None, None, {}
    self.handles = [block.mlp.act.register_forward_hook(self._hook(l)) for l, block in enumerate(model.transformer.h)]

  def _hook(self, layer: int):
    def hook(module, inputs, output):
      del module, inputs
      if self.mode == "cache":
        self.cache[layer] = output.detach()
      elif self.mode == "patch":
        z = self.z[layer * self.d_mlp:(layer + 1) * self.d_mlp]
        return output + z * (self.r[layer] - output)
      return None
    return hook

  def remove(self) -> None:
    for h in self.handles:
      h.remove()

  def margin(self, prefix_BxT, length_B, target_B, foil_B):
    """logit(target) - logit(foil) at position length - 1: the final (LN_f) hidden state and two head rows."""
    top = self.model.transformer(input_ids=prefix_BxT).last_hidden_state
    h_last = top[torch.arange(top.shape[0]), length_B - 1]
    w = self.model.lm_head.weight
    return ((w[target_B] - w[foil_B]) * h_last).sum(-1)

  def counterfactual(self, items: dict) -> list:
    """The post-GELU activations of the run on x', one (B, T, F) per layer (a no-grad pass, run once)."""
    self.mode, self.cache = "cache", {}
    with torch.no_grad():
      self.model.transformer(input_ids=items["counterfactual"])
    self.mode = "off"
    return [self.cache[l] for l in range(len(self.cache))]


def hard_concrete_loss(hooked: HookedGPT2, items: dict, log_alpha, u, lam):
  """One sampled Hard Concrete objective: mean softplus(margin) + lam * E[L0] (the formulas of jaxmask.gates)."""
  s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / gates.BETA)
  hooked.z = torch.clamp(s * (gates.ZETA - gates.GAMMA) + gates.GAMMA, 0.0, 1.0)
  hooked.mode = "patch"
  m = hooked.margin(items["prefix"], items["length"], items["target"], items["foil"])
  l0 = torch.sigmoid(log_alpha - gates.BETA * math.log(-gates.GAMMA / gates.ZETA)).sum()
  return torch.nn.functional.softplus(m).mean() + lam * l0


def torch_items(items: interventions.Items) -> dict:
  return {k: torch.from_numpy(np.asarray(getattr(items, k)).astype(np.int64))
          for k in ("prefix", "counterfactual", "length", "target", "foil")}


class TorchSearch:
  """One-lambda-at-a-time search with hooks; ``compiled`` wraps the loss (and its backward) in torch.compile."""

  def __init__(self, model, items: interventions.Items, compiled: bool = False):
    self.hooked = HookedGPT2(model)
    self.items = torch_items(items)
    self.hooked.r = self.hooked.counterfactual(self.items)
    self.loss = torch.compile(hard_concrete_loss) if compiled else hard_concrete_loss

  def search(self, lam: float, steps: int, learning_rate: float = 0.1, seed: int = 0) -> np.ndarray:
    """``steps`` Adam steps on the gate logits for one lambda; returns the final log_alpha."""
    generator = torch.Generator().manual_seed(seed)
    n = self.hooked.num_units
    log_alpha = torch.zeros(n, requires_grad=True)
    opt = torch.optim.Adam([log_alpha], lr=learning_rate)
    lam_t = torch.tensor(float(lam))  # a tensor, so torch.compile does not specialise on each lambda
    for _ in range(steps):
      u = torch.rand(n, generator=generator).clamp(1e-6, 1 - 1e-6)
      loss = self.loss(self.hooked, self.items, log_alpha, u, lam_t)
      opt.zero_grad()
      loss.backward()
      opt.step()
    return log_alpha.detach().numpy()

  def close(self) -> None:
    self.hooked.remove()


def _time_torch(model, items, lambdas, steps, compiled: bool) -> dict[str, float]:
  """Seconds for ``steps`` steps of each of ``lambdas`` one after another (after a 2-step warm-up: the compile)."""
  start = time.perf_counter()
  runner = TorchSearch(model, items, compiled)
  try:
    runner.search(float(lambdas[0]), 2)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for lam in lambdas:
      runner.search(float(lam), steps)
    seconds = time.perf_counter() - start
  finally:
    runner.close()
  return {"seconds": seconds, "per_step_ms": 1e3 * seconds / (steps * len(lambdas)), "warmup_seconds": warm}


def jax_lambdas(size: dict[str, int], params, budget: int = JAX_STATE_BYTES) -> int:
  """How many of the 16 lambdas jaxmask vmaps at once here: 16, or fewer (a power of 2) when the activations of
  their forward and backward passes (``interventions.rows_per_chunk``'s estimate) exceed ``budget`` bytes."""
  floats = models.of_params(params).activation_floats(params, size["steps"])
  per_lambda = size["batch"] * size["steps"] * floats * 4 * 2
  count = len(LAMBDAS)
  while count > 1 and count * per_lambda > budget:
    count //= 2
  return count


def compare(context: common.Context, size: dict[str, int], steps: int, chunk: int, lambdas_timed: int,
            torch_steps: int, with_compile: bool | str) -> dict[str, Any]:
  """The 16-lambda sweep of ``steps`` steps: jaxmask (one vmapped program) vs torch hooks, eager (and compiled).

  As torch_ref.compare: jaxmask runs ``steps`` steps (chunks of ``chunk``) when ``chunk`` divides them (at most
  3 chunks), else times one chunk and scales; torch runs ``torch_steps`` steps of ``lambdas_timed`` lambdas and
  scales to 16 x ``steps``. Where 16 vmapped lambdas would not fit ``JAX_STATE_BYTES``, jaxmask vmaps fewer and
  its time is scaled by 16 / that. ``with_compile`` a string: compile not run, the string says why.
  """
  model, params, items = shared_model(size)
  jl = jax_lambdas(size, params)
  program = context.program(size, jl, chunk, model=(params, items))
  exact = steps % chunk == 0 and steps // chunk <= 3
  jax_seconds = (common.median_seconds(lambda: _sweep(program, steps), repeats=1, warmup=1) if exact
                 else program.seconds(repeats=2) * steps / chunk) * len(LAMBDAS) / jl
  out = {"size": size, "steps": steps, "lambdas": len(LAMBDAS), "jax_lambdas_vmapped": jl,
         "jax_sweep_seconds": jax_seconds, "jax_compile_seconds": program.compile_seconds,
         "jax_peak_mib": program.peak_bytes() / 2 ** 20, "jax_steps_timed": steps if exact else chunk,
         "torch_lambdas_timed": lambdas_timed, "torch_steps_timed": torch_steps,
         "extrapolated": lambdas_timed < len(LAMBDAS) or torch_steps < steps or not exact or jl < len(LAMBDAS)}
  scale = len(LAMBDAS) * steps / (lambdas_timed * torch_steps)
  eager = _time_torch(model, items, LAMBDAS[:lambdas_timed], torch_steps, compiled=False)
  out["torch_eager_sweep_seconds"] = eager["seconds"] * scale
  out["torch_eager_per_step_ms"] = eager["per_step_ms"]
  out["speedup"] = out["torch_eager_sweep_seconds"] / jax_seconds
  if isinstance(with_compile, str):
    out["torch_compile_skipped"] = with_compile
  elif with_compile:
    try:
      comp = _time_torch(model, items, LAMBDAS[:lambdas_timed], torch_steps, compiled=True)
    except Exception as e:  # pylint: disable=broad-except  # a failed compile is a result, not a crash
      out["torch_compile_skipped"] = f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    else:
      out["torch_compile_sweep_seconds"] = comp["seconds"] * scale
      out["torch_compile_per_step_ms"] = comp["per_step_ms"]
      out["torch_compile_seconds"] = comp["warmup_seconds"]
      out["speedup_vs_compile"] = out["torch_compile_sweep_seconds"] / jax_seconds
      out["speedup_vs_compile_with_compile_time"] = ((out["torch_compile_sweep_seconds"] + comp["warmup_seconds"])
                                                     / (jax_seconds + program.compile_seconds))
  out["jax_per_lambda_step_ms"] = 1e3 * jax_seconds / (steps * len(LAMBDAS))
  return out


def _sweep(program: common.SearchProgram, steps: int) -> None:
  """A real ``steps``-step sweep: the compiled chunk run back to back from the initial state."""
  state = program.initial_state()
  for first in range(0, steps, program.chunk):
    state, _, _ = program.run(state, first_step=first)


def best_threads(size: dict[str, int], steps: int = 5) -> dict[str, Any]:
  """Sets torch to the faster of 1 thread and all cores for the eager step at ``size``."""
  model, _, items = shared_model(size)
  per_step = {}
  for threads in sorted({1, os.cpu_count()}):
    torch.set_num_threads(threads)
    per_step[threads] = _time_torch(model, items, LAMBDAS[:1], steps, compiled=False)["per_step_ms"]
  best = min(per_step, key=per_step.get)
  torch.set_num_threads(best)
  return {"threads": best, "calibration_ms_per_step": {str(k): v for k, v in per_step.items()}}


def _name(size: dict[str, int]) -> str:
  return (f"{size['num_layers']}x{size['d_model']}, {size['num_heads']} heads, F={size['d_mlp']}, "
          f"V={size['vocab_size']:,}")


def run(context: common.Context) -> dict[str, Any]:
  if torch is None:
    return {"skipped": "torch or transformers is not installed (pip install jaxmask[torch] transformers)"}
  quick = context.quick
  small, large = QUICK if quick else (DEFAULT, GPT2_SMALL)
  steps, chunk = (6, 3) if quick else (90, 30)
  threads = best_threads(small, steps=3 if quick else 5)
  default = compare(context, small, steps, chunk, lambdas_timed=2 if quick else 16, torch_steps=steps,
                    with_compile=True)
  big = compare(context, large, steps, 1 if quick else 2, lambdas_timed=1, torch_steps=2,
                with_compile="not attempted at GPT-2 small (time budget on 2 shared cores; its compile time "
                             "was not measured)" if not quick else "not run in --quick")
  result = dict(default)
  result.update(gpt2_small=big, speedup_gpt2_small=big["speedup"], torch_threads=threads)
  rows = []
  for name, r in (("default " + _name(small), default), ("GPT-2 small " + _name(large), big)):
    jax_timed = f"jax {r['jax_steps_timed']} steps"
    if r["jax_lambdas_vmapped"] < len(LAMBDAS):
      jax_timed += f" of {r['jax_lambdas_vmapped']} λ vmapped (memory), x{len(LAMBDAS) // r['jax_lambdas_vmapped']}"
    rows.append([name, r["jax_per_lambda_step_ms"], r["torch_eager_per_step_ms"],
                 r.get("torch_compile_per_step_ms", "not run"), r["jax_sweep_seconds"],
                 r["torch_eager_sweep_seconds"], r.get("torch_compile_sweep_seconds", "not run"), r["speedup"],
                 r.get("speedup_vs_compile", "not run"),
                 f"torch {r['torch_lambdas_timed']} λ x {r['torch_steps_timed']} steps, {jax_timed}"])
  context.table(f"PyTorch hooks reference (transformer): 16-lambda sweep, {steps} steps, batch "
                f"{small['batch']} x {small['steps']} tokens, hooks on mlp.act (torch threads = {threads['threads']}, "
                "the faster of " + ", ".join(f"{k}: {v:.3g}" for k, v in threads["calibration_ms_per_step"].items())
                + " ms/step; compile times apart)",
                ["size", "jax ms/(λ·step)", "eager ms/step", "compile ms/step", "jax sweep s", "eager sweep s",
                 "compile sweep s", "speedup vs eager", "speedup vs compile", "timed (rest scaled)"], rows)
  return result
