"""The sweep: the planted circuit, vmap/shard/chunk equivalences, settings."""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import planted
from jaxmask import interventions, search

SWEEP = dict(steps=300, learning_rate=0.1, batch_size=32)


@pytest.mark.parametrize("seed", range(5))
def test_hard_concrete_finds_exactly_the_planted_units(seed):
  result = search.sweep(planted.params(), planted.items(seed=seed), [0.02], seed=seed, **SWEEP)
  assert result.units == [planted.PLANTED]
  assert result.expected_l0[0] == pytest.approx(3.0, abs=0.1)
  # The hard phase's objective is the read-out's own J(S) = mean flip loss + lambda |S| (on a minibatch).
  m = np.asarray(interventions.margins(planted.params(), planted.items(seed=seed), interventions.units_to_gates([planted.PLANTED], 8)))
  assert result.loss_trace.shape == (300, 1)
  assert result.loss_trace[-1, 0] == pytest.approx(np.logaddexp(0, m).mean() + 0.02 * 3, abs=0.02)


@pytest.mark.parametrize("baseline", ["moving_average", "leave_one_out"])
def test_reinforce_finds_the_planted_units_given_enough_steps(baseline):
  result = search.sweep(planted.params(), planted.items(), [0.02], method="reinforce", baseline=baseline,
                        steps=600, learning_rate=0.1, batch_size=32)
  assert result.units == [planted.PLANTED]


def test_large_lambda_selects_nothing():
  result = search.sweep(planted.params(), planted.items(), [5.0], **SWEEP)
  assert result.units == [[]]


def test_a_sweep_over_two_lambdas_equals_two_single_sweeps():
  p, it = planted.params(), planted.items()
  both = search.sweep(p, it, [0.02, 0.3], seed=3, **SWEEP)
  for i, lam in enumerate([0.02, 0.3]):
    one = search.sweep(p, it, [lam], seed=3, **SWEEP)
    np.testing.assert_allclose(both.logits[i], one.logits[0], rtol=1e-4, atol=1e-4)
    assert both.units[i] == one.units[0]


def test_chunks_and_resume_give_the_same_result():
  p, it = planted.params(), planted.items()
  whole = search.sweep(p, it, [0.02, 0.1], **SWEEP)
  saved = []
  search.sweep(p, it, [0.02, 0.1], chunk_steps=100, callback=lambda s, _: saved.append(s), **SWEEP)
  assert len(saved) == 3 and int(saved[0].step) == 100
  resumed = search.sweep(p, it, [0.02, 0.1], state=saved[0], **SWEEP)  # as if killed after 100 steps
  np.testing.assert_allclose(resumed.logits, whole.logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(resumed.loss_trace, whole.loss_trace[100:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["hard_concrete", "reinforce"])
def test_a_diverged_lambda_is_frozen_and_leaves_the_other_runs_exactly_as_they_are(method):
  """lambda=1e21 overflows Adam's second moment (gradient**2 > 3.4e38, float32) a few steps into the ramp."""
  p, it = planted.params(), planted.items()
  faulty = search.sweep(p, it, [0.02, 1e21], method=method, **SWEEP)
  healthy = search.sweep(p, it, [0.02, 0.3], method=method, **SWEEP)  # the same program without the fault
  step = int(faulty.diverged_at[1])
  assert faulty.diverged_at[0] == -1 and step == {"hard_concrete": 15, "reinforce": 7}[method]
  np.testing.assert_array_equal(faulty.logits[0], healthy.logits[0])  # bit for bit
  np.testing.assert_array_equal(faulty.loss_trace[:, 0], healthy.loss_trace[:, 0])
  assert np.isfinite(faulty.loss_trace[:step, 1]).all() and np.isnan(faulty.loss_trace[step:, 1]).all()
  assert np.isfinite(faulty.logits).all() and faulty.units[0] == healthy.units[0]
  if method == "hard_concrete":  # and as a sweep of the healthy lambda alone (another program: rounding differs)
    alone = search.sweep(p, it, [0.02], **SWEEP)
    np.testing.assert_allclose(faulty.logits[0], alone.logits[0], rtol=1e-6, atol=1e-6)
    assert faulty.units[0] == planted.PLANTED
  # The frozen run holds the state before its faulty step; a resume from before or after it gives the same.
  saved = []
  search.sweep(p, it, [0.02, 1e21], method=method, chunk_steps=step, callback=lambda s, _: saved.append(s), **SWEEP)
  assert np.asarray(saved[0].diverged_at).tolist() == [-1, -1] and np.asarray(saved[1].diverged_at).tolist() == [-1, step]
  np.testing.assert_array_equal(np.asarray(saved[0].logits)[1], faulty.logits[1])
  for state in saved[:2]:
    resumed = search.sweep(p, it, [0.02, 1e21], method=method, state=state, **SWEEP)
    np.testing.assert_array_equal(resumed.logits, faulty.logits)
    assert resumed.diverged_at.tolist() == [-1, step]
  only = faulty.finite()
  assert only.lambdas.tolist() == [pytest.approx(0.02)] and only.units == faulty.units[:1]
  assert only.loss_trace.shape == (300, 1)


@pytest.mark.parametrize("replacement,sites", [("zero", "h"), ("mean", "hc"), ("learned", "h")])
def test_other_replacements_and_sites_run(replacement, sites):
  result = search.sweep(planted.params(), planted.items(), [0.01], replacement=replacement, sites=sites,
                        steps=50, learning_rate=0.1, batch_size=16)
  assert result.logits.shape == (1, 8 * len(sites))
  assert np.isfinite(result.loss_trace).all()
  # Zero or mean replacement of the planted units removes the evidence but cannot flip the sign.
  assert all(u in range(8 * len(sites)) for u in result.units[0])


def test_kl_control_term_is_added():
  p, it = planted.params(), planted.items()
  control = interventions.Control(tokens=it.prefix, length=it.length)
  plain = search.sweep(p, it, [0.02], steps=1, learning_rate=0.1, init_logit=4.0)
  with_kl = search.sweep(p, it, [0.02], steps=1, learning_rate=0.1, mu=1.0, control=control, init_logit=4.0)
  # Gates nearly all open: mean replacement of every unit costs about 0.135 nats per token here.
  assert with_kl.loss_trace[0, 0] - plain.loss_trace[0, 0] == pytest.approx(0.135, abs=0.03)
  np.testing.assert_allclose(with_kl.task_loss_trace, plain.task_loss_trace, rtol=1e-6)
  # With every word in one outcome class the merged KL, which the term then uses, is zero.
  one_class = control.replace(classes_V=jnp.zeros(p["decoder"]["w"].shape[0], jnp.int32))
  merged = search.sweep(p, it, [0.02], steps=1, learning_rate=0.1, mu=1.0, control=one_class, init_logit=4.0)
  np.testing.assert_allclose(merged.loss_trace, plain.loss_trace, atol=1e-5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="adam"), "unknown method"), (dict(replacement="noise"), "unknown replacement"),
    (dict(sites="x"), "sites must be"), (dict(mu=1.0), "needs control text")])
def test_bad_settings_say_what_is_wrong(kwargs, message):
  with pytest.raises(ValueError, match=message):
    search.sweep(planted.params(), planted.items(), [0.1], steps=2, **kwargs)


_SHARDED = """
import json, sys
sys.path.insert(0, "tests")
import jax, planted
from jaxmask import search
r = search.sweep(planted.params(), planted.items(), [0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0], steps=150,
                 learning_rate=0.1, batch_size=32, seed=1)
print(json.dumps({"devices": jax.device_count(), "units": r.units, "logits": r.logits.tolist(),
                  "sharding": str(r.state.logits.sharding.spec)}))
"""


def test_sharded_sweep_over_8_devices_equals_one_device():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = {}
  for n in (1, 8):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _SHARDED], cwd=root, env=env, capture_output=True, text=True,
                          check=True)
    out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out[1]["devices"] == 1 and out[8]["devices"] == 8
  assert "lambda" in out[8]["sharding"]
  assert out[1]["units"] == out[8]["units"]
  np.testing.assert_allclose(out[1]["logits"], out[8]["logits"], rtol=1e-4, atol=1e-4)


_PROCESS = """
import json, sys
sys.path.insert(0, "tests")
import jax
process, processes, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if processes > 1:
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=processes, process_id=process)
import planted
from jaxmask import search
r = search.sweep(planted.params(), planted.items(), [0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 1.0], steps=150,
                 learning_rate=0.1, batch_size=32, seed=1)
print(json.dumps({"devices": jax.device_count(), "local": jax.local_device_count(), "units": r.units,
                  "logits": r.logits.tolist(), "loss": r.loss_trace.tolist()}))
"""


def test_sweep_over_2_processes_equals_one_process():
  """jax.distributed on localhost: 2 processes of 4 CPU devices each shard the lambdas over all 8 devices."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", _PROCESS, str(i), "2", port], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
  one = subprocess.run([sys.executable, "-c", _PROCESS, "0", "1", port], cwd=root, check=True, capture_output=True,
                       text=True, env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=1"))
  single = json.loads(one.stdout.strip().splitlines()[-1])
  assert [(o["devices"], o["local"]) for o in outs] == [(8, 4), (8, 4)] and single["devices"] == 1
  for out in outs:  # every process gets the whole result
    assert out["units"] == single["units"]
    np.testing.assert_allclose(out["logits"], single["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["loss"], single["loss"], rtol=1e-4, atol=1e-5)
