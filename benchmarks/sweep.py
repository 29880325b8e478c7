"""Lambdas in one vmapped jit vs the same lambdas one after another: throughput and peak memory.

Both sides run the compiled ``search.run_steps`` at the default size (2 x 128, batch 64 x 8 tokens):
vmapped, one program holds Λ lambdas; looped, the one-lambda program runs Λ times (its time is Λ times
its measured median; the gate-independent arrays are shared in the loop too, which favours the loop).
Peak memory is XLA's estimate for one compiled call (arguments + outputs + temporaries - aliases).
To explain the ratio, the same comparison is made for the forward pass alone (the intervened margins of
Λ gate vectors, vmapped vs one at a time): the batching gain the matmuls allow.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common

COUNTS = (1, 4, 16, 64)


def run(context: common.Context) -> dict[str, Any]:
  quick = context.quick
  chunk = 5 if quick else 30
  size = common.DEFAULT
  one = context.program(size, 1, chunk)
  t_one = one.seconds(repeats=5)
  # --quick: only 1 and 16 lambdas, and no forward-only comparison (each program compiles apart).
  forward_ms = (lambda count: float("nan")) if quick else (lambda count: common.breakdown(one, count)["forward_ms"])
  f_one = forward_ms(1)
  out, rows = {"size": size, "steps_per_call": chunk, "counts": {}}, []
  for count in (1, 16) if quick else COUNTS:
    prog = context.program(size, count, chunk)
    t_vmap = prog.seconds(repeats=1 if quick and count >= 16 else 2 if count >= 16 else 3)
    t_loop = count * t_one
    f_vmap = forward_ms(count)
    r = {"vmapped_seconds": t_vmap, "loop_seconds": t_loop,
         "vmapped_lambda_steps_per_second": count * chunk / t_vmap,
         "loop_lambda_steps_per_second": count * chunk / t_loop, "throughput_ratio": t_loop / t_vmap,
         "vmapped_peak_bytes": prog.peak_bytes(), "loop_peak_bytes": one.peak_bytes(),
         "compile_seconds": prog.compile_seconds, "forward_only_ratio": count * f_one / f_vmap}
    out["counts"][str(count)] = r
    rows.append([count, r["vmapped_lambda_steps_per_second"], r["loop_lambda_steps_per_second"], r["throughput_ratio"],
                 r["forward_only_ratio"], r["vmapped_peak_bytes"] / 2 ** 20, r["loop_peak_bytes"] / 2 ** 20,
                 r["compile_seconds"]])
  out["throughput_ratio_16"] = out["counts"]["16"]["throughput_ratio"]
  if "64" in out["counts"]:
    out["throughput_ratio_64"] = out["counts"]["64"]["throughput_ratio"]
  context.table(
      f"Sweep: Λ lambdas vmapped in one jit vs a loop of one-lambda runs (2x128, batch 64 x 8, {chunk} steps per call)",
      ["Λ", "vmapped λ·steps/s", "loop λ·steps/s", "throughput ratio", "forward-only ratio", "vmapped peak MiB",
       "loop peak MiB", "compile s"], rows)
  return out
