"""Flag values checked against an enum at the door (STYLE: no behaviour chosen by loose strings)."""

from __future__ import annotations

import enum


def choice(kind: type[enum.Enum], value, flag: str):
  """`kind(value)`, or a ValueError naming `flag` and listing the valid values."""
  try:
    return kind(value)
  except ValueError:
    valid = ", ".join(repr(k.value) for k in kind)
    raise ValueError(f"{flag}={value!r} is not one of: {valid}") from None


def subset(values, valid, flag: str, allow_empty: bool = False) -> tuple:
  """`values` as a tuple, or a ValueError naming `flag`, the unknown ones and the valid ones."""
  values = tuple(values)
  unknown = set(values) - set(valid)
  if unknown or not (values or allow_empty):
    raise ValueError(f"{flag}: unknown {sorted(unknown)}; valid: {', '.join(valid)}")
  return values
