"""Sweeps as data: lists of flag overrides, built from grids and zips (big_vision's `get_hyper`).

A sweep is a list of runs; a run is an ordered dict of flag overrides {flag name: value}. They are
built with four combinators:

  sweep("lr", [1e-3, 3e-3])          -> [{lr: 1e-3}, {lr: 3e-3}]
  product([a, b])                    -> every run of a combined with every run of b (a grid)
  zip([a, b])                        -> a[i] combined with b[i] (equal lengths)
  fixed("num_steps", 200)            -> [{num_steps: 200}]
  chain([a, b])                      -> the runs of a, then those of b

On the command line, `--grid=lr=1e-3,3e-3` is `sweep(...)` producted with the other --grid
flags, and the --zip flags are zipped into one more factor of that product (a value list
containing `,` can be separated with `|` instead: `--grid='mesh=data:8|data:4,model:2'`).
In a Python file (beside the experiment, e.g. `experiments/sweeps/train_lm_lr.py`):

  COMMAND = ["python", "experiments/train_lm.py", "--num_steps=200"]   # optional

(`python` there, or after `--`, is the interpreter that runs the sweep, when the runs are local.)

  def get_hyper(h):
    return h.product([h.sweep("lr", [1e-3, 3e-3, 1e-2]), h.sweep("seed", [0, 1])])

Each run's folder is named from its overrides (`name`), e.g. `lr=0.001,seed=0`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import re
import types

Run = dict[str, str]

_FLAG = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+:@-]")
MAX_NAME = 120
RESERVED = ("workdir",)  # the sweep sets it for every run


def flag_value(value) -> str:
  """How a Python value is written as an absl flag value."""
  if isinstance(value, bool):
    return "true" if value else "false"
  return str(value)


def sweep(name: str, values) -> list[Run]:
  if not _FLAG.match(name):
    raise ValueError(f"sweep flag name {name!r} is not a flag name (letters, digits, _)")
  if name in RESERVED:
    raise ValueError(f"--{name} cannot be swept: the sweep gives every run its own --workdir")
  values = list(values)
  if not values:
    raise ValueError(f"sweep({name!r}, []): give at least one value")
  return [{name: flag_value(v)} for v in values]


def fixed(name: str, value) -> list[Run]:
  return sweep(name, [value])


def product(factors) -> list[Run]:
  runs = [{}]
  for factor in factors:
    runs = [_merge(a, b) for a in runs for b in factor]
  return runs


def zip(factors) -> list[Run]:  # pylint: disable=redefined-builtin
  factors = list(factors)
  lengths = [len(f) for f in factors]
  if len(set(lengths)) > 1:
    names = [sorted({k for r in f for k in r}) for f in factors]
    raise ValueError(f"zip: the zipped lists have different lengths {lengths} ({names}); "
                     "zipped flags need the same number of values")
  return [_merge_all(runs) for runs in itertools.zip_longest(*factors, fillvalue={})]


def chain(parts) -> list[Run]:
  return [run for part in parts for run in part]


def _merge(a: Run, b: Run) -> Run:
  both = set(a) & set(b)
  if both:
    raise ValueError(f"flag(s) {sorted(both)} appear in two factors of one sweep")
  return {**a, **b}


def _merge_all(runs) -> Run:
  out: Run = {}
  for run in runs:
    out = _merge(out, run)
  return out


HYPER = types.SimpleNamespace(sweep=sweep, fixed=fixed, product=product, zip=zip, chain=chain)


def parse_axis(text: str, flag: str = "grid") -> list[Run]:
  """`lr=1e-3,3e-3` (or `mesh=data:8|data:4,model:2`) -> sweep("lr", ["1e-3", "3e-3"])."""
  name, sep, values = text.partition("=")
  if not sep or not values:
    raise ValueError(f"--{flag}={text!r}: expected FLAG=V1,V2,... (or FLAG=V1|V2|... when values "
                     "contain commas), e.g. --grid=lr=1e-3,3e-3")
  parts = values.split("|") if "|" in values else values.split(",")
  try:
    return sweep(name.strip(), [p.strip() for p in parts])
  except ValueError as e:
    raise ValueError(f"--{flag}={text!r}: {e}") from None


def from_flags(grid=(), zipped=()) -> list[Run]:
  """The runs of --grid (producted) and --zip (zipped, one more factor) flags."""
  factors = [parse_axis(g, "grid") for g in grid]
  if zipped:
    factors.append(zip([parse_axis(z, "zip") for z in zipped]))
  return product(factors)


def load_file(path: str) -> tuple[list[Run], list[str] | None]:
  """(runs of `get_hyper(HYPER)`, the file's COMMAND or None) from a sweep file."""
  spec = importlib.util.spec_from_file_location("interp_sweep_file", path)
  if spec is None or spec.loader is None:
    raise ValueError(f"--sweep_file={path}: not a Python file")
  if not os.path.isfile(path):
    raise ValueError(f"--sweep_file={path}: no such file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ValueError(f"--sweep_file={path}: syntax error at line {e.lineno}: {e.msg}") from None
  if not hasattr(module, "get_hyper"):
    raise ValueError(f"--sweep_file={path} defines no get_hyper(h); see launch/hyper.py")
  runs = [{k: flag_value(v) for k, v in run.items()} for run in module.get_hyper(HYPER)]
  command = getattr(module, "COMMAND", None)
  return runs, (list(command) if command else None)


def name(run: Run) -> str:
  """The run's folder name: `k=v,k=v` with unsafe characters as `_`, hashed when very long."""
  text = ",".join(f"{k}={v}" for k, v in run.items()) or "default"
  safe = _UNSAFE.sub("_", text)
  if len(safe) > MAX_NAME or safe in (".", ".."):
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    safe = f"{safe[:MAX_NAME - 11]}-{digest}"
  return safe


def check_unique(runs: list[Run]) -> None:
  seen: dict[str, Run] = {}
  for run in runs:
    key = name(run)
    if key in seen:
      raise ValueError(f"two runs of the sweep map to the folder {key!r}: {seen[key]} and {run}")
    seen[key] = run
