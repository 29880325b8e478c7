"""Kill anywhere, resume, same result: SIGKILL the tiny jobs at random moments, rerun them, compare.

    python -m benchmarks.soak --kills=21 [--output=benchmarks/results_soak.json]

Jobs (round robin): ``train_lm`` (configs/lm_tiny.cfg), ``main`` (configs/agreement_tiny.cfg without the
method comparison) and ``baselines`` (the same with --baselines=all). Each job first runs once uninterrupted;
then every trial starts it on a fresh workdir, kills it with SIGKILL at a moment drawn uniformly over a
second uninterrupted run's wall time (``--kills_per_trial`` times), reruns the same command to completion and
compares: results.json without timings and the workdir (main, baselines), the trained parameters bit for bit
(train_lm). After every kill the workdir is checked for corrupt outputs: a results.json, summary.md or
config.json that does not parse, a PNG without its end chunk. tests/test_soak.py runs a short variant.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = ("train_lm", "main", "baselines")


@dataclasses.dataclass
class Tally:
  """What the soak of one job saw."""
  trials: int = 0
  kills: int = 0
  finished_before_kill: int = 0
  differences: int = 0
  corrupt_outputs: int = 0
  reruns_failed: int = 0
  seconds: float = 0.0
  notes: list[str] = dataclasses.field(default_factory=list)


def command(job: str, workdir: str, lm: str, extra: tuple[str, ...] = ()) -> list[str]:
  """The command line of a job on ``workdir`` (``lm``: the checkpoint the main jobs read)."""
  if job == "train_lm":
    return [sys.executable, "-m", "jaxmask.train_lm", f"--flagfile={ROOT}/configs/lm_tiny.cfg",
            f"--workdir={workdir}", "--noprogress", *extra]
  return [sys.executable, "-m", "jaxmask.main", f"--flagfile={ROOT}/configs/agreement_tiny.cfg",
          f"--checkpoint={lm}", f"--workdir={workdir}", f"--baselines={'all' if job == 'baselines' else 'none'}",
          *extra]


_ENV = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def compilation_cache(directory: str) -> None:
  """Lets the jobs share JAX's persistent compilation cache in ``directory``: the same compiled code, so the same
  results, in a fraction of the time (the tiny jobs are mostly compilation)."""
  _ENV.update(JAX_COMPILATION_CACHE_DIR=directory, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _start(cmd: list[str], log: str) -> subprocess.Popen:
  with open(log, "ab") as f:
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **_ENV})


def run_to_completion(cmd: list[str], log: str) -> float:
  """Runs ``cmd``; its wall time; RuntimeError with the log's tail if it fails."""
  start = time.perf_counter()
  proc = _start(cmd, log)
  if proc.wait() != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {open(log, errors='replace').read()[-2000:]}")
  return time.perf_counter() - start


def kill_at(cmd: list[str], log: str, seconds: float) -> bool:
  """Starts ``cmd`` and SIGKILLs it after ``seconds``; False if it had already finished."""
  proc = _start(cmd, log)
  try:
    proc.wait(timeout=seconds)
    return False
  except subprocess.TimeoutExpired:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def corrupt_outputs(workdir: str) -> list[str]:
  """Outputs in ``workdir`` that a later run or a reader could trust but that are damaged."""
  bad = []
  for root, _, names in os.walk(workdir):
    for name in names:
      path = os.path.join(root, name)
      if name.endswith(".tmp"):
        continue  # an interrupted atomic write's temporary file: never read
      if name in ("results.json", "config.json", "lm_config.json") and os.path.dirname(path) in (
          workdir, os.path.join(workdir, "train_state")):
        try:
          json.load(open(path, encoding="utf-8"))
        except ValueError:
          bad.append(path)
      elif name == "summary.md" and not open(path, encoding="utf-8", errors="replace").read().strip():
        bad.append(path)
      elif name.endswith(".png"):
        raw = open(path, "rb").read()
        if not (raw.startswith(b"\x89PNG") and raw.endswith(b"IEND\xaeB`\x82")):
          bad.append(path)
  return bad


def comparable(results: Any) -> Any:
  """results.json without what may differ between runs: timings and the workdir."""
  if isinstance(results, dict):
    return {k: comparable(v) for k, v in results.items()
            if k not in ("timing", "seconds", "workdir") and not k.endswith("_seconds")}
  if isinstance(results, list):
    return [comparable(v) for v in results]
  return results


def final_output(job: str, workdir: str) -> Any:
  """What must not differ from the uninterrupted run: results.json, or the trained parameters."""
  if job == "train_lm":
    import numpy as np  # pylint: disable=import-outside-toplevel
    from jaxmask import checkpoints  # pylint: disable=import-outside-toplevel
    params = checkpoints.load(workdir)[0]
    import jax  # pylint: disable=import-outside-toplevel
    return [np.asarray(a).tobytes() for a in jax.tree.leaves(params)]
  return comparable(json.load(open(os.path.join(workdir, "results.json"), encoding="utf-8")))


def soak(jobs: tuple[str, ...], kills: int, kills_per_trial: int, seed: int, scratch: str,
         window: tuple[float, float] = (0.0, 1.0), extra: tuple[str, ...] = (), lm: str | None = None
         ) -> dict[str, Tally]:
  """Kills the jobs ``kills`` times in all; returns each job's Tally. ``window``: the kill moments' range, as
  fractions of the uninterrupted run's wall time. ``lm``: a trained tiny LM (trained here when None)."""
  rng = random.Random(seed)
  tallies = {job: Tally() for job in jobs}
  log = os.path.join(scratch, "soak.log")
  if lm is None:
    lm = os.path.join(scratch, "lm")
    run_to_completion(command("train_lm", lm, lm), log)
  reference, duration = {}, {}
  for job in jobs:  # twice: the runs must agree, and the second (compiled code cached) times the kill moments
    workdir = os.path.join(scratch, f"{job}_reference")
    run_to_completion(command(job, workdir, lm, extra), log)
    reference[job] = final_output(job, workdir)
    duration[job] = run_to_completion(command(job, workdir + "_again", lm, extra), log)
    if final_output(job, workdir + "_again") != reference[job]:
      tallies[job].differences += 1
      tallies[job].notes.append("two uninterrupted runs differ: the job is not deterministic")
  remaining = {job: kills // len(jobs) + (i < kills % len(jobs)) for i, job in enumerate(jobs)}
  trial = 0
  while any(remaining.values()) and trial < 3 * kills:  # a kill that comes too late is drawn again
    for job in jobs:
      if not remaining[job]:
        continue
      tally, trial = tallies[job], trial + 1
      workdir = os.path.join(scratch, f"{job}_trial{trial}")
      cmd = command(job, workdir, lm, extra)
      start = time.perf_counter()
      for _ in range(min(kills_per_trial, remaining[job])):
        moment = rng.uniform(*window) * duration[job]
        if kill_at(cmd, log, moment):
          tally.kills += 1
          remaining[job] -= 1
          bad = corrupt_outputs(workdir)
          tally.corrupt_outputs += len(bad)
          tally.notes += [f"trial {trial}: corrupt {p} after a kill at {moment:.1f}s" for p in bad]
        else:
          tally.finished_before_kill += 1
      try:
        run_to_completion(cmd, log)
      except RuntimeError as e:
        tally.reruns_failed += 1
        tally.notes.append(f"trial {trial}: rerun failed: {e}")
      else:
        if final_output(job, workdir) != reference[job]:
          tally.differences += 1
          tally.notes.append(f"trial {trial}: the final output differs from the uninterrupted run's")
        tally.corrupt_outputs += len(corrupt_outputs(workdir))
      tally.trials += 1
      tally.seconds += time.perf_counter() - start
      shutil.rmtree(workdir, ignore_errors=True)
  return tallies


def define_flags() -> dict[str, flags.FlagHolder]:
  """The command's flags (defined only when it runs, so that tests can import this module beside other apps)."""
  return {"kills": flags.DEFINE_integer("kills", 21, "SIGKILLs in all, shared round robin by the jobs."),
          "per_trial": flags.DEFINE_integer("kills_per_trial", 2, "Kills of one workdir before the run to completion."),
          "jobs": flags.DEFINE_list("jobs", list(JOBS), f"Jobs to soak, of {', '.join(JOBS)}."),
          "seed": flags.DEFINE_integer("seed", 0, "Seed of the kill moments."),
          "output": flags.DEFINE_string("output", None, "Also write the figures as JSON here."),
          "cache": flags.DEFINE_bool("compilation_cache", True,
                                     "Share JAX's compilation cache between the jobs' runs.")}


FLAGS: dict[str, flags.FlagHolder] = {}


def main(argv: list[str]) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore of the compared parameters at INFO
  started = time.perf_counter()
  with tempfile.TemporaryDirectory(prefix="jaxmask_soak_") as scratch:
    if FLAGS["cache"].value:
      compilation_cache(os.path.join(scratch, "jax_cache"))
    tallies = soak(tuple(FLAGS["jobs"].value), FLAGS["kills"].value, FLAGS["per_trial"].value,
                   FLAGS["seed"].value, scratch)
  wall = time.perf_counter() - started
  print("| job | trials | kills | finished before the kill | differences | corrupt outputs | reruns failed | seconds |")
  print("|---|---|---|---|---|---|---|---|")
  for job, t in tallies.items():
    print(f"| {job} | {t.trials} | {t.kills} | {t.finished_before_kill} | {t.differences} | {t.corrupt_outputs} | "
          f"{t.reruns_failed} | {t.seconds:.0f} |")
  total = {k: sum(getattr(t, k) for t in tallies.values()) for k in ("kills", "differences", "corrupt_outputs",
                                                                       "reruns_failed")}
  print(f"In all: {total['kills']} kills, {total['differences']} differences, {total['corrupt_outputs']} corrupt "
        f"outputs, {total['reruns_failed']} failed reruns; {wall:.0f} s wall.")
  for t in tallies.values():
    for note in t.notes:
      print(note)
  if FLAGS["output"].value:
    with open(FLAGS["output"].value, "w", encoding="utf-8") as f:
      json.dump({"jobs": {j: dataclasses.asdict(t) for j, t in tallies.items()}, "total": total,
                 "wall_seconds": round(wall), "command": " ".join(sys.argv),
                 "machine": f"{os.cpu_count()} CPU cores (shared)"}, f, indent=1)
  if any(total[k] for k in ("differences", "corrupt_outputs", "reruns_failed")):
    sys.exit(1)


if __name__ == "__main__":
  FLAGS.update(define_flags())
  app.run(main)
