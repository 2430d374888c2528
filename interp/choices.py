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


def check_int(flag: str, value, minimum: int = 1) -> None:
  """Raises ValueError `--flag=value: must be a positive (minimum 1) / non-negative (0) integer`.

  Args:
    flag: the flag's name without dashes; value: its value; minimum: 1 or 0.
  """
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    kind = "positive" if minimum == 1 else "non-negative"
    raise ValueError(f"--{flag}={value}: must be a {kind} integer")


def check_real(flag: str, value, interval: str) -> None:
  """Raises ValueError `--flag=value: must be in INTERVAL` unless value is a finite number in it.

  Args:
    flag: the flag's name without dashes; value: its value.
    interval: "(0, inf)", "[0, inf)" or "(0, 1]"; the message quotes it.
  """
  lo_open = interval.startswith("(")
  hi = 1.0 if interval.endswith("1]") else math.inf
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        and (value > 0 if lo_open else value >= 0) and value <= hi)
  if not ok:
    raise ValueError(f"--{flag}={value}: must be a finite number in {interval}")


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
