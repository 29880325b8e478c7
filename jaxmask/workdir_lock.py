"""One run per workdir: ``WORKDIR/jaxmask.lock`` holds the owner's pid and host while a run uses the workdir.

The lock is an advisory ``flock`` on that file, which the operating system drops when its process dies, so a
lock left by a killed run (its pid no longer running) is stale and the next run takes it over; a second run
while the owner lives is refused with one sentence naming the owner. The file is emptied, not deleted, on
release (deleting it would let two later runs lock two different files). Local file systems only: NFS
``flock`` is not reliable.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from typing import Iterator

from absl import logging

LOCK_NAME = "jaxmask.lock"


class WorkdirBusy(ValueError):
  """The workdir is held by another live run; the message names it and the owner."""


def _owner(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    owner = json.loads(os.read(fd, 4096).decode("utf-8"))
  except ValueError:
    return {}
  return owner if isinstance(owner, dict) else {}


def _alive(pid: object) -> bool:
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


@contextlib.contextmanager
def hold(workdir: str, error: type[Exception] = WorkdirBusy, flag: str = "--workdir") -> Iterator[str]:
  """Holds ``workdir``'s lock for the ``with`` block; raises ``error`` of one sentence if a live run holds it."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = _owner(fd)
      raise error(f"{flag}={workdir} is in use by process {owner.get('pid', '?')} on {owner.get('host', '?')} "
                  f"(lock {path}); wait for that run to finish or use another {flag}.") from None
    previous = _owner(fd)
    if previous.get("pid") is not None:
      state = "no longer running" if previous.get("host") != socket.gethostname() or not _alive(
          previous["pid"]) else "running but not holding the lock"
      logging.warning("took over the stale lock %s of process %s on %s (%s).", path, previous["pid"],
                      previous.get("host"), state)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    os.fsync(fd)
    try:
      yield path
    finally:
      os.ftruncate(fd, 0)
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
