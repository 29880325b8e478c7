"""The benchmark harness: one ``run(context)`` per part, tables and compiled programs kept on the context."""

import inspect

from benchmarks import ablation, common, estimators, optimality, roofline, scaling, sweep, torch_ref


def test_every_part_takes_only_the_context():  # run.py's PARTS (not imported: its flags are module-level)
  for module in (ablation, estimators, optimality, roofline, scaling, sweep, torch_ref):
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
