"""What every benchmark shares: the machine, timers, models and items of a given size, a compiled search program.

Timings are steady state: every jitted program is compiled ahead of time (``jit(...).lower(...).compile()``)
and its compile time reported apart. Each figure is the median of a few repeats.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmask import interventions, search
from jaxmask.models import lstm

DEFAULT = dict(vocab_size=600, hidden_size=128, num_layers=2, batch=64, steps=8)  # feasibility size (a)
GULORDAVA = dict(vocab_size=50_000, hidden_size=650, num_layers=2, batch=64, steps=12)  # size (b)


def machine() -> dict[str, Any]:
  """Cores, CPU model, library versions and the date: the header of every results table."""
  model = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  versions = {"python": platform.python_version(), "jax": jax.__version__, "numpy": np.__version__}
  for name in ("jaxlib", "flax", "optax", "torch"):
    try:
      versions[name] = __import__(name).__version__
    except ImportError:
      versions[name] = None
  return {"cores": os.cpu_count(), "cpu_model": model, "jax_backend": jax.default_backend(),
          "jax_devices": [str(d) for d in jax.devices()], "date_utc": datetime.datetime.now(
              datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_average_at_start": os.getloadavg(),
          "versions": versions}


def median_seconds(fn: Callable[[], Any], repeats: int = 3, warmup: int = 0) -> float:
  """Median wall time of ``fn()`` over ``repeats`` calls (after ``warmup`` untimed calls); fn must block."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def random_params(vocab_size: int, hidden_size: int, num_layers: int, seed: int = 0) -> lstm.Params:
  """An LSTM LM with random weights (embedding size = hidden size); timings do not depend on the values."""
  return lstm.init(jax.random.key(seed), vocab_size, hidden_size, hidden_size, num_layers)


def random_items(vocab_size: int, batch: int, steps: int, seed: int = 0) -> interventions.Items:
  """Items of a fixed shape: random prefixes, the counterfactual differing at position 1, full length."""
  rng = np.random.default_rng(seed)
  prefix = rng.integers(1, vocab_size, size=(batch, steps))
  counterfactual = prefix.copy()
  counterfactual[:, 1] = (prefix[:, 1] % (vocab_size - 1)) + 1
  target = rng.integers(1, vocab_size, size=batch)
  foil = (target % (vocab_size - 1)) + 1
  as_int = lambda a: jnp.asarray(a, jnp.int32)
  return interventions.Items(prefix=as_int(prefix), counterfactual=as_int(counterfactual),
                             length=as_int(np.full(batch, steps)), target=as_int(target), foil=as_int(foil))


def sized(size: dict[str, int], hidden_size: int | None = None, batch: int | None = None, seed: int = 0
          ) -> tuple[lstm.Params, interventions.Items]:
  """Random params and items of a size dict like DEFAULT, optionally overriding hidden size or batch."""
  hidden = hidden_size or size["hidden_size"]
  params = random_params(size["vocab_size"], hidden, size["num_layers"], seed)
  return params, random_items(size["vocab_size"], batch or size["batch"], size["steps"], seed)


class SearchProgram:
  """``search.run_steps`` compiled ahead of time for one shape: Λ lambdas, ``chunk`` steps per call.

  The gate-independent arrays (``search.prepare``) are computed once, as ``search.sweep`` does. Calling
  ``run(state)`` executes ``chunk`` steps of every lambda and returns the new state (blocked). ``control`` is
  the control text of the KL term (needed when ``config.mu > 0``).
  """

  def __init__(self, params: lstm.Params, items: interventions.Items, lambdas, config: search.SearchConfig,
               chunk: int | None = None, seed: int = 0, control: interventions.Control | None = None):
    self.params, self.items, self.config = params, items, config
    self.lambdas = jnp.asarray(np.asarray(lambdas, np.float32).reshape(-1))
    self.shared = search.prepare(params, items, config, control)
    self.key = jax.random.key(seed)
    self.chunk = chunk or config.steps
    start = time.perf_counter()
    self.total_steps = jnp.asarray(config.steps, jnp.float32)  # sets the ramp and the hard phase, if any
    lowered = search.run_steps.lower(params, items, self.shared, self.key, self.initial_state(), self.lambdas,
                                     jnp.arange(self.chunk, dtype=jnp.int32), self.total_steps, config=config)
    self.compiled = lowered.compile()
    self.compile_seconds = time.perf_counter() - start

  def initial_state(self) -> search.SweepState:
    return search.init_state(self.params, self.lambdas, self.config, self.shared)

  def run(self, state: search.SweepState, first_step: int = 0, key: jax.Array | None = None
          ) -> tuple[search.SweepState, jax.Array, jax.Array]:
    steps = jnp.arange(first_step, first_step + self.chunk, dtype=jnp.int32)
    out = self.compiled(self.params, self.items, self.shared, self.key if key is None else key, state,
                        self.lambdas, steps, self.total_steps)
    return jax.block_until_ready(out)

  def seconds(self, repeats: int = 3) -> float:
    """Median wall time of one call (``chunk`` steps of every lambda) from the initial state."""
    state = self.initial_state()
    return median_seconds(lambda: self.run(state), repeats, warmup=1)

  def peak_bytes(self) -> int:
    """XLA's peak estimate for one call: arguments + outputs + temporaries - aliased buffers."""
    m = self.compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)

  def xla_flops(self) -> float | None:
    """XLA's own FLOP count of the program (it counts a loop body once, whatever the trip count)."""
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan"))) if cost else None


def step_flops(batch: int, steps: int, hidden: int, num_layers: int, embed: int | None = None
               ) -> dict[str, float]:
  """Matmul FLOPs of one Hard Concrete search step, per lambda, with frozen weights.

  Per lambda and step (executed, every position of the padded rows): forward recurrences
  ``L * 2 B T H 4H``, forward input projections of layers 1..L-1 ``(L - 1) * 2 B T H 4H``, the same again
  backward for the gradient of the states (no weight gradients: weights are frozen), and the
  target/foil decoder rows (2 rows, negligible). Computed once per sweep and shared by every lambda and
  step, so not per step: the layer-0 input projections of x and x' and the counterfactual run's layers
  (``lstm.run_layers``: its logits are never computed). Elementwise work
  (sigmoids, tanh, the gate mix) is not counted, so the fraction of peak is, if anything, an underestimate.
  """
  embed = embed or hidden
  unit = 2.0 * batch * steps * hidden * 4 * hidden
  forward = num_layers * unit + (num_layers - 1) * unit + 2 * 2.0 * batch * hidden
  backward = num_layers * unit + (num_layers - 1) * unit
  projection0 = 2.0 * batch * steps * embed * 4 * hidden
  shared = 2 * projection0 + num_layers * unit + (num_layers - 1) * unit
  return {"per_lambda_step": forward + backward, "forward": forward, "backward": backward,
          "shared_once_per_sweep": shared}


def matmul_peak(n: int = 2048, repeats: int = 10) -> dict[str, float]:
  """The machine's fp32 matmul throughput: a jitted ``jnp.dot`` of two n x n matrices, best of ``repeats``."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(dot(a, b))
    best = min(best, time.perf_counter() - start)
  return {"n": n, "seconds": best, "gflops": 2.0 * n ** 3 / best / 1e9}


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
  """A Markdown table (printed by each part and pasted into RESULTS.md)."""
  fmt = lambda v: (f"{v:.3g}" if abs(v) < 1e4 else f"{v:.4g}") if isinstance(v, float) else str(v)
  lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def agreement_setup(checkpoint: str | None, per_cell: int = 40, heldout_per_cell: int = 20, items: str | None = None,
                    fmt: str = "tsv") -> dict[str, Any]:
  """The LM and the agreement items ("search" and "heldout" splits) for the estimators and ablation.

  With ``checkpoint`` the trained LM is loaded (``"default"``: the LM shipped in the package) and the items
  come from the language it was trained on; without, a 2 x 128 LM with random weights over the small
  language's vocabulary stands in (the timings hold, the found sets mean nothing) and the description says so.
  ``items`` (a file in ``formats.FORMATS`` format ``fmt``) replaces the generated items: its pairs with a
  counterfactual, alternately search and held-out.
  """
  from jaxmask import checkpoints, data, formats, grammar  # the data edge, only needed here
  language = "small"
  if checkpoint:
    params, config, vocab = checkpoints.load_default() if checkpoint == "default" else checkpoints.load(checkpoint)
    language = checkpoints.language_of(config)
    name = "shipped default LM" if checkpoint == "default" else os.path.basename(os.path.normpath(checkpoint))
    description = f"trained LM {name} ({config['num_layers']}x{config['hidden_size']}, V={config['vocab_size']})"
  else:
    vocab = grammar.vocabulary()
    params = random_params(len(vocab), DEFAULT["hidden_size"], DEFAULT["num_layers"])
    description = f"RANDOM-WEIGHT LM ({DEFAULT['num_layers']}x{DEFAULT['hidden_size']}, V={len(vocab)}; no --checkpoint)"
  if items:
    pairs = [p for p in formats.read_items(items, fmt, vocab) if p.counterfactual is not None]
    search_pairs, heldout_pairs = pairs[::2], pairs[1::2]
    description += f", items {os.path.basename(items)} ({len(pairs)} with a counterfactual)"
  else:
    search_pairs = grammar.agreement_items(per_cell, 0, split="search", language=language)
    heldout_pairs = grammar.agreement_items(heldout_per_cell, 1, split="heldout", language=language)
  encoded, _, _ = data.encode(search_pairs, vocab)
  heldout, _, _ = data.encode(heldout_pairs, vocab)
  return {"params": params, "items": encoded, "heldout": heldout, "description": description, "trained": bool(checkpoint)}


def lambdas(count: int) -> np.ndarray:
  """``count`` sparsity coefficients spread like the main job's default sweep (3e-4 .. 0.1)."""
  return np.geomspace(3e-4, 0.1, count).astype(np.float32) if count > 1 else np.asarray([3e-3], np.float32)


@dataclasses.dataclass
class Context:
  """What every part's ``run(context)`` reads and shares: the run's settings, the LM and items of the parts
  that need a trained model (loaded once), the compiled search programs (compiled once), the tables made.

  Attributes:
    quick: shorter runs of every part.
    checkpoint: trained LM directory, "default" for the shipped LM, None for random weights.
    items, fmt: items for the parts that use ``setup()`` (the estimators and ablation): a file in the format
      ``fmt`` (jaxmask.formats.FORMATS, default "tsv"); None uses the generated agreement items.
    estimators_lambda, estimators_seeds: the estimators part's sparsity coefficient and seeds.
    optimality_plot, optimality_cache: the optimality part's figure path and tiny-LM cache folder.
    tables: every Markdown table printed so far, for run.py's --tables file.
  """
  quick: bool = False
  checkpoint: str | None = None
  items: str | None = None
  fmt: str = "tsv"
  estimators_lambda: float = 0.01
  estimators_seeds: int = 5
  optimality_plot: str | None = None
  optimality_cache: str | None = None
  tables: list[str] = dataclasses.field(default_factory=list)
  programs: dict[tuple, SearchProgram] = dataclasses.field(default_factory=dict, repr=False)
  loaded: dict[str, Any] | None = dataclasses.field(default=None, repr=False)

  def setup(self) -> dict[str, Any]:
    """``agreement_setup(self.checkpoint, items=self.items, fmt=self.fmt)``, loaded on first use."""
    if self.loaded is None:
      self.loaded = agreement_setup(self.checkpoint, items=self.items, fmt=self.fmt)
    return self.loaded

  def program(self, size: dict[str, int], num_lambdas: int, chunk: int, hidden_size: int | None = None,
              batch: int | None = None, model: tuple[Any, interventions.Items] | None = None) -> SearchProgram:
    """The Hard Concrete search program at a size (random weights and items), compiled once per run.

    ``model``, (params, items) of any family (a transformer's, say), replaces the random LSTM and items that
    ``sized`` builds from ``size``; ``size`` then only names the program in the cache, so it must describe them.
    """
    key = (tuple(sorted(size.items())), num_lambdas, chunk, hidden_size, batch, model is not None)
    if key not in self.programs:
      params, items = model if model is not None else sized(size, hidden_size, batch)
      self.programs[key] = SearchProgram(params, items, lambdas(num_lambdas), search.SearchConfig(steps=chunk))
    return self.programs[key]

  def table(self, title: str, header: list[str], rows: list[list[Any]]) -> str:
    """Prints a Markdown table and keeps it for the --tables file."""
    self.tables.append(table(title, header, rows))
    print(self.tables[-1])
    return self.tables[-1]


@jax.jit
def _flip_loss(params, items, shared, gates_SxN):
  margin = lambda z: interventions.margin(params, items, shared.inputs, z, shared.r)
  return jax.vmap(lambda z: jnp.mean(jax.nn.softplus(margin(z))))(gates_SxN)


_flip_loss_grad = jax.jit(jax.vmap(jax.grad(lambda z, p, i, s: _flip_loss(p, i, s, z[None])[0]),
                                   in_axes=(0, None, None, None)))


def breakdown(program: SearchProgram, count: int) -> dict[str, float]:
  """Median ms of the parts of one step for ``count`` gate vectors vmapped, on the program's model and items.

  forward: the intervened margins and flip loss; forward_backward: plus the gradient for the gates;
  the rest of a step (gate sampling, expected L0, Adam, the minibatch gather) is the step time minus that.
  """
  z = jnp.full((count, program.initial_state().logits.shape[1]), 0.5)
  p, i, s = program.params, program.items, program.shared
  forward = median_seconds(lambda: jax.block_until_ready(_flip_loss(p, i, s, z)), repeats=3, warmup=1)
  both = median_seconds(lambda: jax.block_until_ready(_flip_loss_grad(z, p, i, s)), repeats=3, warmup=1)
  return {"forward_ms": 1e3 * forward, "forward_backward_ms": 1e3 * both}
