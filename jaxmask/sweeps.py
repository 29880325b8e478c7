"""The main job's searches: a sweep checkpointed with orbax (a killed run resumes), its flip rates and the selection rule."""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from jaxmask import checkpoints, data, files, interventions, search
from jaxmask.config import Config, ExperimentError, fingerprint, search_config_of
from jaxmask.models import lstm


def flip_rates(margins_SxB: np.ndarray, pairs: list[data.Pair]) -> tuple[list[float], list[dict[str, float]]]:
  """Per set: the fraction of items whose intervened margin is negative, overall and by condition."""
  flipped = np.asarray(margins_SxB) < 0
  conditions = sorted({p.condition for p in pairs})
  cond = np.array([p.condition for p in pairs])
  by = [{c: float(row[cond == c].mean()) for c in conditions} for row in flipped]
  return flipped.mean(axis=1).tolist(), by



def run_sweep(params: lstm.Params, items: interventions.Items, config: Config, method: str, control: interventions.Control | None,
              name: str = "", targets: tuple[int, ...] = ()) -> search.SweepResult:
  """The sweep of ``method`` over ``config.lambdas`` (or over target sizes ``targets``), checkpointed.

  A progress bar, and an orbax checkpoint per chunk in ``config.workdir/(name or search_{method})``; a
  directory holding a search with other settings is refused. Runs that diverged (NaN or inf) are named on
  stderr (:func:`report_diverged`) and stay in the result, frozen at their last finite state.
  """
  search_config = search_config_of(config, method, bool(targets))
  values = np.asarray(targets or config.lambdas, np.float32)
  directory = os.path.abspath(os.path.join(config.workdir, name or f"search_{method}"))
  run_fingerprint = fingerprint(search_config, config.seed, items, values)
  os.makedirs(directory, exist_ok=True)
  marker = os.path.join(directory, "fingerprint.txt")
  if os.path.exists(marker) and files.read_text(marker, ExperimentError).strip() != run_fingerprint:
    raise ExperimentError(f"--workdir={config.workdir} holds a {method} search with other settings or items "
                          f"({directory}); use a new --workdir or delete that directory to start over.")
  files.write_text(marker, run_fingerprint)
  num = len(values)
  traces = {"loss": np.full((config.steps, num), np.nan, np.float32)}
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=1))
  state, restored = None, None
  if manager.latest_step() is not None:
    padded = int(np.ceil(num / jax.device_count()) * jax.device_count())
    init = jax.eval_shape(lambda: search.init_state(params, jnp.zeros(padded), search_config,  # shapes only
                                                    search.prepare(params, items, search_config, control)))
    _, restored = checkpoints.restore_latest(manager, ocp.args.StandardRestore({"state": init, **traces}),
                                             f"{method} search")
  if restored is not None:
    state = restored["state"]
    traces = {k: np.asarray(restored[k]) for k in traces}
    print(f"Resuming the {method} search from step {int(state.step)} ({directory}).", flush=True)
  start = 0 if state is None else int(state.step)
  bar = tqdm.tqdm(total=config.steps, initial=start, desc=f"{name or method} x{num} {'sizes' if targets else 'lambdas'}", unit="step",
                  dynamic_ncols=True)
  position = [start]

  def save(s: search.SweepState, losses: np.ndarray) -> None:
    done = int(s.step)
    traces["loss"][position[0]:done] = losses
    position[0] = done
    bar.update(len(losses))
    last = losses[-1][np.isfinite(losses[-1])]  # NaN: a diverged run
    bar.set_postfix(loss=f"{float(last.mean()):.3f}" if last.size else "nan")
    manager.save(done, args=ocp.args.StandardSave({"state": s, **traces}))
    checkpoints.seal(manager, done)

  result = search.sweep(params, items, values, config.seed, config=search_config,
                        control=control if config.mu > 0 else None, chunk_steps=config.chunk_steps, state=state,
                        callback=save)
  manager.wait_until_finished()
  bar.close()
  result.loss_trace = traces["loss"]
  report_diverged(result, config.learning_rate,
                  f"{method} {'target-size sweep' if targets else 'search'}" + (f" ({name})" if name else ""))
  return result


def diverged_runs(result: search.SweepResult) -> list[dict]:
  """The runs of a sweep that diverged (NaN or inf), as results.json records them: [{"lambda" (or "k"), "step"}]."""
  if result.targets is not None:
    return [{"k": int(k), "step": int(s)} for k, s in zip(result.targets, result.diverged_at) if s >= 0]
  return [{"lambda": float(lam), "step": int(s)} for lam, s in zip(result.lambdas, result.diverged_at) if s >= 0]


def report_diverged(result: search.SweepResult, learning_rate: float, what: str) -> None:
  """One sentence on stderr per run of the sweep that diverged; ExperimentError when every run did.

  A lambda's run is left out of the results (the callers take ``result.finite()``); a target size's set is
  read out at its last finite step, as the method comparison needs a set at every k.
  """
  rows = diverged_runs(result)
  key, flag = ("k", "--baseline_ks") if result.targets is not None else ("lambda", "--lambdas")
  if rows and len(rows) == len(result.diverged_at):
    raise ExperimentError(f"the {what} diverged (NaN or inf) at every {'size' if key == 'k' else 'lambda'}; lower "
                          f"--learning_rate (now {learning_rate}).")
  fate = "its set is read out at its last finite step" if key == "k" else "its row is left out of the results"
  for row in rows:
    print(f"{key}={row[key]:g} of the {what} diverged (NaN/inf) at step {row['step']}; {fate}; lower "
          f"--learning_rate (now {learning_rate}) or drop it from {flag}.", file=sys.stderr, flush=True)


def select(sweep_rows: list[dict], target_flip: float, every_condition: bool = True) -> tuple[int, bool]:
  """(index of the smallest set whose held-out flip rate reaches target_flip, whether one did).

  With ``every_condition`` the flip rate of every condition must reach it (a set that flips 95% of the
  items overall can still leave a whole construction unflipped); otherwise the overall rate. Ties in size
  go to the higher flip rate; when no set reaches the target, the non-empty set with the highest rate.
  """
  def rate(row):
    return min(row["heldout_flip_rate_by_condition"].values()) if every_condition else row["heldout_flip_rate"]

  reaching = [i for i, r in enumerate(sweep_rows) if rate(r) >= target_flip and r["units"]]
  if reaching:
    return min(reaching, key=lambda i: (len(sweep_rows[i]["units"]), -rate(sweep_rows[i]))), True
  return max(range(len(sweep_rows)), key=lambda i: (bool(sweep_rows[i]["units"]), rate(sweep_rows[i]),
                                                     -len(sweep_rows[i]["units"]))), False

