"""Flag values checked at the door: against an enum (STYLE: no behaviour chosen by loose strings),
and numbers against their range, with a message naming the flag."""

from __future__ import annotations

import enum
import math


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


def numbers(config, positive=(), non_negative=(), unit=(), finite=()) -> None:
  """Checks numeric fields of a config, named as their flags (`--name`).

  Args:
    config: a dataclass whose fields are flags.
    positive: fields that must be finite and > 0.
    non_negative: fields that must be finite and >= 0.
    unit: fields that must lie in (0, 1].
    finite: fields that may be any finite number.
  Raises:
    ValueError: `--name=value: must be ...` for the first field out of its range (NaN included).
  """
  rules = ((positive, lambda v: v > 0, "a positive integer", "a finite number > 0"),
           (non_negative, lambda v: v >= 0, "a non-negative integer", "a finite number >= 0"),
           (unit, lambda v: 0 < v <= 1, "in (0, 1]", "in (0, 1]"),
           (finite, lambda v: True, "a finite number", "a finite number"))
  for names, ok, as_int, as_float in rules:
    for name in names:
      value = getattr(config, name)
      if not (math.isfinite(value) and ok(value)):
        what = as_int if isinstance(value, int) else as_float
        raise ValueError(f"--{name}={value}: must be {what}")
