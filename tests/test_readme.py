"""The README's Python example runs as written, and its two commands are the ones CI and users run."""

import math
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_api_example_runs_as_written(capsys):
  block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
  exec(compile(block, "README.md", "exec"), {})
  printed = capsys.readouterr().out.splitlines()
  p_nonzero = 1 / (1 + math.exp(-(2 / 3) * math.log(1.1 / 0.1)))  # P(z != 0) at log_alpha = 0
  assert abs(float(printed[0]) - 32 * p_nonzero) < 1e-3
  units = eval(printed[1])
  assert len(units) == 2 and all(u == sorted(u) for u in units)


def test_ci_runs_exactly_the_readme_test_command():
  commands = re.findall(r"```sh\n(python3 -m venv .*?)\n```", README)
  assert any("jaxmask.main --flagfile=configs/agreement.cfg" in c for c in commands)
  test_command = next(c for c in commands if "pytest" in c)
  assert test_command in open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
