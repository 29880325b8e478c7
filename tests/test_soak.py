"""The short soak (benchmarks/soak.py): the tiny main job SIGKILLed twice at random moments, rerun to completion,
gives the uninterrupted run's results.json, and no kill leaves a corrupt output."""

import os

import pytest

from benchmarks import soak


@pytest.mark.slow
def test_main_job_killed_twice_resumes_to_the_same_results(tmp_path):
  soak.compilation_cache(str(tmp_path / "jax_cache"))
  tallies = soak.soak(("main",), kills=2, kills_per_trial=2, seed=1, scratch=str(tmp_path), window=(0.2, 0.9),
                      extra=("--lambdas=0.01,1.0", "--control_sentences=10"))
  tally = tallies["main"]
  # On loaded cores a kill can come after the run has finished; soak() then draws it again in a new trial.
  assert 1 <= tally.kills <= 2 and tally.trials <= 6, tally
  assert (tally.differences, tally.corrupt_outputs, tally.reruns_failed) == (0, 0, 0), tally.notes
  assert os.path.exists(tmp_path / "main_reference" / "results.json")
