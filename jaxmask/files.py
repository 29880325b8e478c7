"""Reading and writing files safely: UTF-8 text whose errors name the file and line, and atomic writes.

Every reader of user text goes through :func:`read_text`, so a file in the wrong encoding, a damaged gzip
or a directory in its place is one sentence naming the file (and the line), never a codec traceback.
Every output goes through :func:`write_atomic` (write a temporary file beside it, flush it to disk, then
rename it over the target), so a run killed at any moment leaves either the old file or the new one,
never half of one that a later run would trust.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import zlib
from typing import Any, Callable


def decode(raw: bytes, path: str, error: type[Exception]) -> str:
  """``raw`` as UTF-8 text; ``error`` naming the file, line and column of the first byte that is not."""
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
    raise error(f"{path}, line {line}: byte 0x{raw[e.start]:02x} at column {column} is not UTF-8 text; save the "
                f"file as UTF-8.") from None


def read_text(path: str, error: type[Exception]) -> str:
  """The UTF-8 text of ``path`` (decompressed if it ends in .gz); ``error`` of one sentence if it cannot be read."""
  try:
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise error(f"{path}: no such file; check the path.") from None
  except IsADirectoryError:
    raise error(f"{path} is a directory; give the path of a file.") from None
  except (gzip.BadGzipFile, EOFError, zlib.error) as e:
    raise error(f"{path} is not a complete gzip file ({type(e).__name__}); give an uncompressed file or "
                f"re-download it.") from None
  except OSError as e:
    raise error(f"{path} cannot be read ({e.strerror or type(e).__name__}); check the file.") from None
  return decode(raw, path, error)


def write_atomic(path: str, write: Callable[[Any], None], binary: bool = False) -> None:
  """Calls ``write(f)`` on a temporary file beside ``path``, flushes it to disk, then renames it to ``path``."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` atomically."""
  write_atomic(path, lambda f: f.write(text))


def write_json(path: str, obj: Any, indent: int = 2) -> None:
  """Writes ``obj`` as JSON to ``path`` atomically."""
  write_text(path, json.dumps(obj, indent=indent) + "\n")
