"""Backward-compatible alias of :mod:`jaxmask.models.lstm` (the README's library example imports it by this name)."""

from jaxmask.models.lstm import *  # noqa: F401,F403
