"""Arrays across processes (several under ``jax.distributed``; one process is the plain case)."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def host(a: jax.Array) -> np.ndarray:
  """The whole array on this process, gathered from every process if there are several."""
  return np.asarray(multihost_utils.process_allgather(a, tiled=True) if jax.process_count() > 1 else a)
