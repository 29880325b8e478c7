"""The commands' flag parser: absl's, with every error (a flagfile in the wrong encoding, a malformed line, a bad
value) answered by one sentence naming the flagfile and line, and exit code 1, instead of a traceback.

    app.run(main, flags_parser=flagfiles.parser("main"))
"""

from __future__ import annotations

import re
import sys
from typing import Callable

from absl import flags

from jaxmask import files


class FlagfileError(ValueError):
  """A flagfile that cannot be used; the message names the file and line."""


def _flagfiles(argv: list[str]) -> list[str]:
  return [arg.split("=", 1)[1] for arg in argv[1:] if re.match(r"--?flagfile=", arg)]


def check(path: str) -> list[str]:
  """The lines of a flagfile; FlagfileError naming the file and line if it is not UTF-8 ``--name=value`` text."""
  lines = files.read_text(path, FlagfileError).split("\n")
  for number, line in enumerate(lines, 1):
    line = line.strip()
    if line and not line.startswith(("#", "//")) and not line.startswith("-"):
      shown = line if len(line) <= 60 else line[:57] + "..."
      raise FlagfileError(f"{path}, line {number}: expected --name=value, got {shown!r}; fix the line.")
  return lines


def _where(error: flags.Error, paths: list[str], argv: list[str]) -> str:
  """"FILE, line N: " for the flagfile line that set the flag an absl error names; "FILE: " when that line
  cannot be told; "" when the flag came from the command line."""
  match = re.search(r"flag '([^']*)'|flag --?([^=:\s]+)", str(error))
  if not match:
    return ""
  name = match.group(1) if match.group(1) is not None else match.group(2)
  for path in paths:
    for number, line in enumerate(check(path), 1):
      if line.strip().lstrip("-").split("=", 1)[0].strip() in (name, f"no{name}"):
        return f"{path}, line {number}: "
  on_command_line = any(arg.lstrip("-").split("=", 1)[0] in (name, f"no{name}") for arg in argv[1:])
  return "" if on_command_line or not paths else f"{', '.join(paths)}: "


def parse(argv: list[str], flag_values: flags.FlagValues, program: str) -> list[str]:
  """``flag_values(argv)``; exits with one sentence (exit code 1) naming the flagfile and line on any error."""
  paths = _flagfiles(argv)
  try:
    for path in paths:
      check(path)
    return flag_values(argv)
  except FlagfileError as e:
    sys.exit(f"{program}: {e}")
  except flags.Error as e:
    reason = " ".join(str(e).split())
    sys.exit(f"{program}: {_where(e, paths, argv)}{reason.rstrip('.')}; fix the flag (see --helpshort).")
  except (UnicodeDecodeError, OSError) as e:  # a nested --flagfile inside a flagfile
    sys.exit(f"{program}: a flagfile nested in {', '.join(paths) or 'the command line'} cannot be read "
             f"({type(e).__name__}); give UTF-8 flagfiles that exist.")


def parser(program: str) -> Callable[[list[str]], list[str]]:
  """The ``flags_parser`` of ``app.run`` for ``program``: :func:`parse` on absl's global flags."""
  return lambda argv: parse(argv, flags.FLAGS, program)
