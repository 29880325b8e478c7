"""``python -m jaxmask.grammar``: prints how much of the vendored evaluation sets the vocabulary covers."""

from jaxmask.grammar import items

for name, value in items.coverage().items():
  print(f"{name:60s} {value:6.1%}")
