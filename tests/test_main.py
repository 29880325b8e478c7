"""The main job end to end on a tiny LM: outputs, resume after interruption, user errors."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import planted
from jaxmask import baselines, checkpoints, data, experiment, search, train_lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config(workdir, checkpoint, **overrides):
  """configs/agreement_tiny.cfg, parsed by the main job's own flags, with the given overrides."""
  from jaxmask import main
  main.FLAGS.unparse_flags()
  main.FLAGS(["main", f"--flagfile={os.path.join(ROOT, 'configs', 'agreement_tiny.cfg')}", f"--workdir={workdir}",
              f"--checkpoint={checkpoint}"])
  config = dataclasses.replace(main.config_from_flags(), **overrides)
  main.FLAGS.unparse_flags()
  return config


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
  """The lm_tiny LM, trained once for this module."""
  directory = tmp_path_factory.mktemp("lm_tiny")
  train_lm.train(train_lm.read_flagfile(os.path.join(ROOT, "configs", "lm_tiny.cfg")), str(directory), progress=False)
  return directory


@pytest.mark.slow
def test_main_job_writes_its_outputs_and_resumes_to_the_same_result(tiny_lm, tmp_path):
  results = experiment.run(_tiny_config(tmp_path / "a", tiny_lm))
  for name in ("results.json", "pareto.png", "traces.png", "summary.md"):
    assert os.path.getsize(tmp_path / "a" / name) > 500
  saved = json.load(open(tmp_path / "a" / "results.json"))
  assert saved["model"]["num_units"] == 64 and saved["model"]["layers"] == 2
  hc = [r for r in saved["sweep"] if r["method"] == "hard_concrete"]
  assert [r["lambda"] for r in hc] == pytest.approx([0.001, 0.01, 0.1, 1.0])
  for row in saved["sweep"]:
    assert set(row) >= {"method", "lambda", "units", "expected_l0", "train_flip_rate", "heldout_flip_rate",
                        "heldout_flip_rate_by_condition", "control_kl", "seconds"}
    assert 0.0 <= row["heldout_flip_rate"] <= 1.0 and row["control_kl"] >= 0.0
    assert 0.0 <= row["control_kl_merged"] <= row["control_kl"] + 1e-6  # merging outcomes never adds KL
  # The all-unit intervention turns the model into its counterfactual run: it flips what the clean model got right.
  assert set(saved["selected"]) >= {"method", "lambda", "units", "units_readable", "heldout_flip_rate",
                                    "control_kl", "control_kl_merged", "other_phenomenon_flip_rate"}
  assert set(saved["baselines"]) == set(baselines.METHODS)  # every registered method, the probe included
  ks = [r["k"] for r in saved["baselines"]["hard_concrete"]]
  assert ks[:3] == [1, 2, 4]
  assert os.path.getsize(tmp_path / "a" / "specificity.png") > 500  # --specificity_mu: every set's side effects
  for method, rows in saved["baselines"].items():
    for row in rows if method != "random" else []:
      assert row["control_kl_merged"] >= 0.0 and 0.0 <= row["ci95"][0] <= row["heldout_flip_rate"] <= row["ci95"][1]
  per_seed = saved["baselines"]["hard_concrete"][0]["units_per_seed"]
  assert len(per_seed) == 2 and all(len(u) == 1 for u in per_seed)  # target-size sweeps read out exactly k
  seeds = saved["seeds"]  # the same search and selection with two more optimisation seeds
  assert seeds["seeds"] == [saved["config"]["seed"] + i for i in range(3)] and len(seeds["units"]) == 3
  assert seeds["units"][0] == saved["selected"]["units"]
  jaccard = np.asarray(seeds["jaccard"])
  np.testing.assert_allclose(np.diag(jaccard), 1.0)
  np.testing.assert_allclose(jaccard, jaccard.T)
  clean_ppl = saved["items"]["control_clean_perplexity"]
  assert 1.0 < clean_ppl < saved["model"]["vocab_size"]
  for row in hc:  # an empty set leaves the control text's perplexity as it is; any mean-replaced unit moves it
    assert (row["control_perplexity"] == pytest.approx(clean_ppl, rel=1e-6)) == (not row["units"])
  assert "| method |" in open(tmp_path / "a" / "summary.md").read()

  # Interrupt a second run after its first search checkpoint, then rerun the same command: same result.
  config = _tiny_config(tmp_path / "b", tiny_lm)
  real_sweep = search.sweep

  def interrupted(*args, callback=None, **kwargs):
    def stop(state, losses):
      callback(state, losses)
      raise KeyboardInterrupt
    return real_sweep(*args, callback=stop, **kwargs)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(search, "sweep", interrupted)
    with pytest.raises(KeyboardInterrupt):
      experiment.run(config)
  resumed = experiment.run(config)
  for a, b in zip(results["sweep"], resumed["sweep"]):
    assert a["units"] == b["units"] and a["heldout_flip_rate"] == pytest.approx(b["heldout_flip_rate"])
  assert resumed["selected"]["units"] == results["selected"]["units"]


@pytest.mark.slow
def test_a_diverged_lambda_is_named_and_left_out_while_the_others_finish(tiny_lm, tmp_path):
  """--lambdas=0.01,1e30,1.0: lambda=1e30 overflows Adam's second moment at step 0; the run still exits 0."""
  proc = subprocess.run([sys.executable, "-m", "jaxmask.main", f"--flagfile={os.path.join(ROOT, 'configs', 'agreement_tiny.cfg')}",
                         f"--checkpoint={tiny_lm}", f"--workdir={tmp_path / 'faulty'}", "--baselines=none",
                         "--lambdas=0.01,1e30,1.0"], cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert ("lambda=1e+30 of the hard_concrete search diverged (NaN/inf) at step 0; its row is left out of the results; "
          "lower --learning_rate (now 0.1) or drop it from --lambdas.") in proc.stderr
  assert "Selected" in proc.stdout and "Traceback" not in proc.stderr
  saved = json.load(open(tmp_path / "faulty" / "results.json"))
  assert saved["diverged"] == [{"lambda": pytest.approx(1e30), "step": 0}]
  assert [r["lambda"] for r in saved["sweep"]] == pytest.approx([0.01, 1.0])
  assert "lambda=1e+30 at step 0" in open(tmp_path / "faulty" / "summary.md").read()
  # The other lambdas' rows are those of a run whose middle lambda is healthy (the same compiled sweep).
  healthy = experiment.run(_tiny_config(tmp_path / "healthy", tiny_lm, baselines="none", lambdas=(0.01, 0.1, 1.0)))
  assert healthy["diverged"] == []
  for row, other in zip(saved["sweep"], [healthy["sweep"][0], healthy["sweep"][2]]):
    assert row["units"] == other["units"] and row["expected_l0"] == other["expected_l0"]
    assert row["heldout_flip_rate"] == other["heldout_flip_rate"] and row["control_kl"] == pytest.approx(other["control_kl"])


def test_every_lambda_diverging_is_one_sentence(tiny_lm, tmp_path):
  with pytest.raises(experiment.ExperimentError, match=r"^the hard_concrete search diverged \(NaN or inf\) at every "
                                                       r"lambda; lower --learning_rate \(now 1e\+39\)\.$"):
    experiment.run(_tiny_config(tmp_path, tiny_lm, baselines="none", steps=2, learning_rate=1e39))


def test_without_checkpoint_the_shipped_lm_is_used_and_a_missing_one_is_one_sentence(tiny_lm, tmp_path, monkeypatch):
  shipped = checkpoints.pack(tiny_lm, str(tmp_path / "default_lm"))
  monkeypatch.setattr(checkpoints, "DEFAULT_DIR", shipped)
  params, model_config, vocab, path = experiment.load_model(experiment.Config(workdir=str(tmp_path / "w")))
  assert path == shipped and model_config["num_layers"] == len(params["layers"]) and "<eos>" in vocab
  os.remove(os.path.join(shipped, "params.npz"))
  with pytest.raises(experiment.ExperimentError, match=r"params.npz is missing; reinstall jaxmask"):
    experiment.load_model(experiment.Config(workdir=str(tmp_path / "w")))


def test_known_keeps_the_items_the_model_gets_right_both_ways():
  items = planted.items(8)
  swapped = items.replace(target=items.target.at[:3].set(items.foil[:3]), foil=items.foil.at[:3].set(items.target[:3]))
  pairs = [data.Pair(("x",), "y", "z", condition=str(i)) for i in range(8)]
  kept, kept_pairs, stats = experiment.known(planted.params(), swapped, pairs)
  assert [p.condition for p in kept_pairs] == [str(i) for i in range(3, 8)]
  assert stats == {"encoded": 8, "known": 5, "wrong_on_prefix": 3, "wrong_on_counterfactual": 3}
  assert kept.prefix.shape[0] == 5


def test_select_smallest_set_reaching_the_target_in_every_condition():
  rows = [{"units": [1, 2, 3], "heldout_flip_rate": 0.99, "heldout_flip_rate_by_condition": {"a": 1.0, "b": 0.97}},
          {"units": [1, 2], "heldout_flip_rate": 0.96, "heldout_flip_rate_by_condition": {"a": 1.0, "b": 0.9}},
          {"units": [], "heldout_flip_rate": 0.0, "heldout_flip_rate_by_condition": {"a": 0.0, "b": 0.0}}]
  assert experiment.select(rows, 0.95, every_condition=True) == (0, True)
  assert experiment.select(rows, 0.95, every_condition=False) == (1, True)
  assert experiment.select(rows, 0.999, every_condition=True) == (0, False)


def test_diverged_target_sizes_are_named_and_kept_read_out_at_their_last_finite_step(capsys):
  from jaxmask import sweeps
  result = search.SweepResult(lambdas=np.zeros(3), logits=np.zeros((3, 8)), units=[[0], [0, 1], [0, 1, 2, 3]],
                              expected_l0=np.zeros(3), loss_trace=np.zeros((5, 3)), task_loss_trace=np.zeros((5, 3)),
                              seconds=0.0, state=None, targets=np.array([1, 2, 4]), diverged_at=np.array([-1, 3, -1]))
  sweeps.report_diverged(result, 0.1, "hard_concrete target-size sweep (target_hard_concrete_seed0)")
  assert capsys.readouterr().err == (
      "k=2 of the hard_concrete target-size sweep (target_hard_concrete_seed0) diverged (NaN/inf) at step 3; its set "
      "is read out at its last finite step; lower --learning_rate (now 0.1) or drop it from --baseline_ks.\n")
  assert sweeps.diverged_runs(result) == [{"k": 2, "step": 3}]
  assert result.finite().units == [[0], [0, 1, 2, 3]] and result.finite().targets.tolist() == [1, 4]
  with pytest.raises(experiment.ExperimentError, match=r"diverged \(NaN or inf\) at every size; lower --learning_rate"):
    sweeps.report_diverged(dataclasses.replace(result, diverged_at=np.array([0, 3, 1])), 0.1, "x")


def test_other_settings_in_the_same_workdir_are_refused(tiny_lm, tmp_path):
  experiment.run(_tiny_config(tmp_path, tiny_lm, baselines="none", steps=20))
  with pytest.raises(experiment.ExperimentError, match="holds a hard_concrete search with other settings"):
    experiment.run(_tiny_config(tmp_path, tiny_lm, baselines="none", steps=20, learning_rate=0.05))


def test_user_tsv_errors_name_the_file_and_line(tiny_lm, tmp_path):
  bad = tmp_path / "bad.tsv"
  bad.write_text("prefix\ttarget\tfoil\tcounterfactual\nthe dog\tbarks\n")
  with pytest.raises(experiment.ExperimentError, match="bad.tsv, line 2"):
    experiment.run(_tiny_config(tmp_path / "w", tiny_lm, eval_items=str(bad)))
  no_cf = tmp_path / "nocf.tsv"
  no_cf.write_text("prefix\ttarget\tfoil\nthe dog\tbarks\tbark\n")
  with pytest.raises(experiment.ExperimentError, match="no counterfactual"):
    experiment.run(_tiny_config(tmp_path / "w", tiny_lm, eval_items=str(no_cf)))
  with pytest.raises(experiment.ExperimentError, match="no such file"):
    experiment.run(_tiny_config(tmp_path / "w", tiny_lm, train_items=str(tmp_path / "missing.tsv")))


def test_checkpoint_that_does_not_match_its_config_is_one_sentence(tiny_lm, tmp_path):
  params, config, vocab = checkpoints.load(str(tiny_lm))
  checkpoints.save(str(tmp_path / "m"), params, vocab)
  cfg = json.load(open(tmp_path / "m" / "config.json"))
  cfg["hidden_size"] = 48
  json.dump(cfg, open(tmp_path / "m" / "config.json", "w"))
  with pytest.raises(experiment.ExperimentError, match="does not match its model config"):
    experiment.run(_tiny_config(tmp_path / "w", tmp_path / "m"))


@pytest.mark.parametrize("flags,message", [
    (["--lambdas=0.1,abc"], "--lambdas=0.1,abc: expected a comma-separated list"),
    (["--checkpoint=/nonexistent/lm"], "does not exist"),
    (["--method=adam"], "--method"),
    (["--phenomenon=syntax"], "--phenomenon"),
])
def test_command_line_errors_are_one_sentence_without_traceback(tmp_path, flags, message):
  proc = subprocess.run([sys.executable, "-m", "jaxmask.main", f"--workdir={tmp_path}", *flags], cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("mu", [0.0, 0.01])
def test_memory_estimate_is_near_xlas_own_and_names_the_flag(mu):
  from benchmarks import common, kl
  from jaxmask import config as config_lib
  params, items = common.sized(dict(vocab_size=2000, hidden_size=64, num_layers=2, batch=256, steps=10))
  control = kl.random_control(2000, 100)
  config = config_lib.Config(workdir="unused", lambdas=(0.001, 0.01, 0.1, 1.0), mu=mu, steps=3)
  estimate = experiment.memory_estimate(params, config, items, control)
  compiled = common.SearchProgram(params, items, config.lambdas, config_lib.search_config_of(config, config.method), 3,
                                  control=control if mu else None)
  assert 0.7 < estimate["sweep"][0] / compiled.peak_bytes() < 1.3
  assert experiment.check_memory(estimate).startswith("Estimated peak memory 0.")
  with pytest.raises(experiment.ExperimentError, match=r"the sweep needs an estimated .* GiB but this machine has "
                                                       r".* GiB; lower it with --batch_size \(or fewer --lambdas\)\.$"):
    experiment.check_memory({**estimate, "sweep": (2 ** 60, estimate["sweep"][1])})


def test_memory_estimate_covers_the_baselines_step():
  """With --baselines=all the estimate has a baselines part, near XLA's own peak for the step's largest program
  (here a chunk of Integrated Gradients' backward passes over every search item); without, none."""
  import jax.numpy as jnp
  from benchmarks import common, kl
  from jaxmask import attribution, interventions, objectives
  from jaxmask import config as config_lib
  params, items = common.sized(dict(vocab_size=2000, hidden_size=64, num_layers=2, batch=256, steps=10))
  control = kl.random_control(2000, 100)
  config = config_lib.Config(workdir="unused", lambdas=(0.001, 0.01, 0.1, 1.0), steps=3, baseline_ks=(1, 2, 4, 8))
  estimate = experiment.memory_estimate(params, config, items, control)
  start, end = interventions.span(items)
  chunk = interventions.rows_per_chunk(params, items.prefix.shape[0], end - start, backward=True)
  m = attribution.chunk_gradients.lower(params, items, jnp.zeros((chunk, 128)), "counterfactual", None, "h",
                                         loss_fn=objectives.flip_loss).compile().memory_analysis()
  xla = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  assert 0.7 < estimate["baselines"][0] / xla < 1.5
  assert "baselines" not in experiment.memory_estimate(params, dataclasses.replace(config, baselines="none"), items,
                                                       control)


@pytest.mark.slow
def test_main_job_over_2_processes_gives_the_results_of_one(tiny_lm, tmp_path):
  """--coordinator_address/--num_processes/--process_id: 2 processes of 4 CPU devices each, one workdir."""
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", "jaxmask.main", f"--flagfile={os.path.join(ROOT, 'configs', 'agreement_tiny.cfg')}",
             f"--checkpoint={tiny_lm}", "--baselines=none"]
  procs = [subprocess.Popen(command + [f"--workdir={tmp_path / 'two'}", f"--coordinator_address=localhost:{port}",
                                       "--num_processes=2", f"--process_id={i}"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  for p in procs:
    assert "Estimated peak memory" in p.communicate(timeout=600)[0] and p.returncode == 0
  subprocess.run(command + [f"--workdir={tmp_path / 'one'}"], cwd=ROOT, check=True, capture_output=True, timeout=600)
  two, one = (json.load(open(tmp_path / name / "results.json")) for name in ("two", "one"))
  assert [(r["units"], r["heldout_flip_rate"]) for r in two["sweep"]] == [
      (r["units"], r["heldout_flip_rate"]) for r in one["sweep"]]
  assert two["selected"] == one["selected"]
