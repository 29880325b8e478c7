"""jaxmask.workdir_lock: a live owner refuses a second run with one sentence; a dead owner's lock is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from jaxmask import experiment, train_lm, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLDER = ("import sys, time; from jaxmask import workdir_lock\n"
          "with workdir_lock.hold(sys.argv[1]):\n  print('held', flush=True); time.sleep(60)\n")


@pytest.fixture
def held(tmp_path):
  """A workdir whose lock another live process holds; yields (workdir, that process)."""
  proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
  assert proc.stdout.readline().strip() == "held"
  yield str(tmp_path), proc
  proc.kill()
  proc.wait()


def test_a_live_owner_refuses_a_second_run_with_one_sentence(held):
  workdir, proc = held
  with pytest.raises(workdir_lock.WorkdirBusy) as error:
    with workdir_lock.hold(workdir):
      pass
  assert str(error.value) == (f"--workdir={workdir} is in use by process {proc.pid} on {socket.gethostname()} "
                              f"(lock {workdir}/jaxmask.lock); wait for that run to finish or use another --workdir.")


def test_main_job_and_train_lm_refuse_a_held_workdir(held):
  workdir, proc = held
  with pytest.raises(experiment.ExperimentError, match=rf"in use by process {proc.pid}"):
    experiment.run(experiment.Config(workdir=workdir))
  with pytest.raises(train_lm.TrainingError, match=rf"in use by process {proc.pid}"):
    train_lm.train({}, workdir)


def test_a_killed_owner_leaves_a_stale_lock_that_is_taken_over(held):
  workdir, proc = held
  proc.kill()
  proc.wait()
  path = os.path.join(workdir, workdir_lock.LOCK_NAME)
  assert json.load(open(path))["pid"] == proc.pid  # SIGKILL left the owner's record behind
  with workdir_lock.hold(workdir):
    assert json.load(open(path)) == {"pid": os.getpid(), "host": socket.gethostname()}
  assert open(path).read() == ""  # released: emptied, not deleted


def test_a_lock_file_with_a_dead_pid_or_garbage_is_stale(tmp_path):
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                        text=True, check=True)
  for content in (json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}), "\x00garbage"):
    (tmp_path / workdir_lock.LOCK_NAME).write_text(content)
    with workdir_lock.hold(str(tmp_path)):
      assert json.load(open(tmp_path / workdir_lock.LOCK_NAME))["pid"] == os.getpid()
