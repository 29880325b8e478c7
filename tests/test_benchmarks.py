"""The benchmark harness: one ``run(context)`` per part, tables and compiled programs kept on the context."""

import inspect

from benchmarks import common, run


def test_every_part_takes_only_the_context():
  for name, module in run.PARTS.items():
    assert list(inspect.signature(module.run).parameters) == ["context"], name


def test_context_keeps_tables_and_compiles_each_program_once(capsys):
  context = common.Context(quick=True)
  text = context.table("T", ["a", "b"], [[1, 0.5]])
  assert text == "### T\n\n| a | b |\n|---|---|\n| 1 | 0.5 |\n" and context.tables == [text]
  assert text in capsys.readouterr().out
  size = dict(vocab_size=20, hidden_size=8, num_layers=1, batch=4, steps=3)
  program = context.program(size, 2, 1)
  assert context.program(size, 2, 1) is program and context.program(size, 1, 1) is not program
  assert common.Context().tables == [] and common.Context().programs == {}  # nothing shared between runs
