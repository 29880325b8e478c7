"""Time per search step (one lambda) against hidden size and batch size, with the fitted growth exponent.

The exponent is the slope of log(time) against log(size) by least squares. Matmul work grows as H^2 and
as B; an exponent below that means the smaller sizes are overhead-bound, not compute-bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks import common

HIDDEN = (128, 256, 650)
BATCH = (16, 64, 256)


def _exponent(x, y) -> float:
  return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def run(context: common.Context) -> dict[str, Any]:
  quick = context.quick
  chunk = 5 if quick else 30
  size = common.DEFAULT
  out, rows = {"steps_per_call": chunk, "hidden": {}, "batch": {}}, []
  for h in HIDDEN:
    prog = context.program(size, 1, chunk, hidden_size=None if h == size["hidden_size"] else h)
    out["hidden"][str(h)] = 1e3 * prog.seconds(repeats=1 if quick else 3) / chunk
    rows.append([f"H={h}, B={size['batch']}", out["hidden"][str(h)]])
  for b in BATCH:
    if b == size["batch"]:  # the same program as H=128 above
      out["batch"][str(b)] = out["hidden"][str(size["hidden_size"])]
      continue
    prog = context.program(size, 1, chunk, batch=b)
    out["batch"][str(b)] = 1e3 * prog.seconds(repeats=1 if quick else 3) / chunk
    rows.append([f"H={size['hidden_size']}, B={b}", out["batch"][str(b)]])
  out["exponent_hidden"] = _exponent(HIDDEN, [out["hidden"][str(h)] for h in HIDDEN])
  out["exponent_batch"] = _exponent(BATCH, [out["batch"][str(b)] for b in BATCH])
  rows.append(["fitted exponent in H (matmul work: 2)", out["exponent_hidden"]])
  rows.append(["fitted exponent in B (matmul work: 1)", out["exponent_batch"]])
  context.table(f"Scaling: ms per search step, one lambda, 2 layers, T=8 ({chunk} steps per call)",
                ["setting", "ms/step"], rows)
  return out
