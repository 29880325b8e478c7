"""The main job unchanged on a transformer checkpoint: search, held-out evaluation, every baseline and the report."""

import json
import os

import jax
import pytest

from jaxmask import checkpoints, experiment
from jaxmask.models import transformer

from test_main import _tiny_config  # pylint: disable=g-bad-import-order


@pytest.fixture(scope="module")
def tiny_transformer(tmp_path_factory):
  """A random 2-layer GPT-2-style model over the shipped LM's vocabulary, saved as a jaxmask checkpoint."""
  _, config, vocab = checkpoints.load_default()
  params = transformer.init(jax.random.key(0), len(vocab), 32, 16, 2, 4, 24)
  params = jax.tree.map(lambda a: 10.0 * a, params)  # sd 0.2: margins far from zero, so sets flip items
  directory = tmp_path_factory.mktemp("transformer_tiny")
  checkpoints.save(str(directory), params, vocab, extra_config={"train": config["train"]})
  return directory


@pytest.mark.slow
def test_main_job_runs_on_a_transformer(tiny_transformer, tmp_path):
  results = experiment.run(_tiny_config(tmp_path, tiny_transformer, sites="mlp,heads"))
  for name in ("results.json", "pareto.png", "traces.png", "summary.md"):
    assert os.path.getsize(tmp_path / name) > 500
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["model"]["family"] == "transformer" and saved["model"]["num_units"] == 2 * (24 + 4)
  assert all(name.split(":")[1] in ("mlp", "head") for name in results["selected"]["units_readable"])
  assert {r["k"] for r in saved["baselines"]["greedy"]} >= {1, 2}
  assert "2 x 16 transformer, 56 units" in open(tmp_path / "summary.md").read()


@pytest.mark.slow
def test_main_job_runs_on_heads_alone(tiny_transformer, tmp_path):
  # Every control-text pass takes the run's sites (a heads-only gate vector once reached the MLP's clean pass).
  experiment.run(_tiny_config(tmp_path, tiny_transformer, sites="heads"))
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["model"]["num_units"] == 2 * 4 and saved["items"]["control_clean_perplexity"] > 1.0
  assert all(":head:" in name for name in saved["selected"]["units_readable"])
