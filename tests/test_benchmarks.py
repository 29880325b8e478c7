"""The benchmark harness: one ``run(context)`` per part, tables and compiled programs kept on the context."""

import inspect

import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import ablation, common, estimators, optimality, roofline, scaling, sweep, torch_ref
from benchmarks import torch_transformer
from jaxmask import interventions, search


def test_every_part_takes_only_the_context():  # run.py's PARTS (not imported: its flags are module-level)
  for module in (ablation, estimators, optimality, roofline, scaling, sweep, torch_ref, torch_transformer):
    assert list(inspect.signature(module.run).parameters) == ["context"], module.__name__


def test_context_keeps_tables_and_compiles_each_program_once(capsys):
  context = common.Context(quick=True)
  text = context.table("T", ["a", "b"], [[1, 0.5]])
  assert text == "### T\n\n| a | b |\n|---|---|\n| 1 | 0.5 |\n" and context.tables == [text]
  assert text in capsys.readouterr().out
  size = dict(vocab_size=20, hidden_size=8, num_layers=1, batch=4, steps=3)
  program = context.program(size, 2, 1)
  assert context.program(size, 2, 1) is program and context.program(size, 1, 1) is not program
  assert common.Context().tables == [] and common.Context().programs == {}  # nothing shared between runs



def test_gulordava_size_files_convert_and_read_back(tmp_path):
  """benchmarks/gulordava_size.py at a tiny size: the state dict converts, the Lakretz lines give back the items."""
  import pytest
  pytest.importorskip("torch")
  from benchmarks import gulordava_size
  from jaxmask import convert, formats, grammar
  from jaxmask.models import lstm
  state = {k: v.numpy() for k, v in gulordava_size.state_dict(vocab_size=30, hidden=8, layers=2).items()}
  assert lstm.config_of(convert.params_from_state_dict(state)) == dict(
      vocab_size=30, embed_size=8, hidden_size=8, num_layers=2)
  pairs = grammar.agreement_items(2, 0, split="search")
  lines = gulordava_size.lakretz_lines(pairs)
  kept = [pairs[i] for i in sorted({int(line.split("\t")[3][2:]) for line in lines})]
  assert 0 < len(kept) < len(pairs)  # sentComp items (first noun not the controller) are left out
  (tmp_path / "items.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
  lower = lambda words: tuple(w.lower() for w in words)
  assert [(lower(p.prefix), p.target, p.foil, lower(p.counterfactual), p.condition)
          for p in formats.read_items(str(tmp_path / "items.txt"), "lakretz")] == [
              (p.prefix, p.target, p.foil, p.counterfactual, p.condition) for p in kept]
def test_program_takes_given_params_and_items():  # a transformer's, where sized() builds an LSTM
  pytest.importorskip("transformers")
  size = torch_transformer.QUICK[0]
  _, params, items = torch_transformer.shared_model(size)
  context = common.Context(quick=True)
  program = context.program(size, 2, 1, model=(params, items))
  assert program.params is params and context.program(size, 2, 1, model=(params, items)) is program
  assert program.initial_state().logits.shape == (2, size["num_layers"] * size["d_mlp"])


def test_torch_hooks_margin_matches_jaxmask():
  """HF GPT-2 with forward hooks on mlp.act vs interventions.margin(sites="mlp"), same weights and gates."""
  torch = pytest.importorskip("torch")
  pytest.importorskip("transformers")
  size = torch_transformer.QUICK[1]
  model, params, items = torch_transformer.shared_model(size, init_scale=0.2)  # margins of order 1
  hooked = torch_transformer.HookedGPT2(model)
  t = torch_transformer.torch_items(items)
  hooked.r = hooked.counterfactual(t)
  shared = search.prepare(params, items, search.SearchConfig(sites="mlp"))
  for z in (np.random.default_rng(1).uniform(size=hooked.num_units), np.zeros(hooked.num_units),
            np.ones(hooked.num_units)):
    z = z.astype(np.float32)
    hooked.z, hooked.mode = torch.from_numpy(z), "patch"
    with torch.no_grad():
      got = hooked.margin(t["prefix"], t["length"], t["target"], t["foil"]).numpy()
    want = np.asarray(interventions.margin(params, items, shared.inputs, jnp.asarray(z), shared.r, sites="mlp"))
    np.testing.assert_allclose(got, want, atol=1e-4)
  hooked.mode = "off"
  with torch.no_grad():
    clean = hooked.margin(t["prefix"], t["length"], t["target"], t["foil"]).numpy()
  np.testing.assert_allclose(clean, np.asarray(interventions.margins(params, items))[0], atol=1e-4)
  assert np.abs(clean - got).max() > 0.1  # the hooks did intervene (z = 1: the counterfactual run's margins)
  hooked.remove()


@pytest.mark.slow
def test_torch_transformer_quick_runs():
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  context = common.Context(quick=True)
  result = torch_transformer.run(context)
  assert result["speedup"] > 0 and result["gpt2_small"]["speedup"] == result["speedup_gpt2_small"] > 0
  assert "speedup_vs_compile" in result or "torch_compile_skipped" in result
  assert "PyTorch hooks reference (transformer)" in context.tables[-1]


def test_torch_transformer_skips_without_torch(monkeypatch):
  monkeypatch.setattr(torch_transformer, "torch", None)
  assert "skipped" in torch_transformer.run(common.Context(quick=True))
