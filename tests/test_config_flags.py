"""config_flags: flags from nested frozen dataclasses, and the configs built back from them."""

from __future__ import annotations

import dataclasses
import enum

import pytest
from absl import app, flags

from interp import config_flags


class Color(str, enum.Enum):
  RED = "red"
  BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Inner:
  """Attributes:
    every_steps: save this often. More text that is not help.
    secret: not a flag.
  """

  every_steps: int = dataclasses.field(default=10, metadata={"flag": "inner_every"})
  secret: float = dataclasses.field(default=0.5, metadata={"flag": None})


@dataclasses.dataclass(frozen=True)
class Outer:
  """Attributes:
    workdir: the run folder.
    color, sizes: what and how big.
    inner: nested.
  """

  workdir: str
  color: Color = Color.RED
  sizes: tuple[int, ...] = (1, 2)
  inner: Inner = Inner(every_steps=20, secret=0.25)

  def __post_init__(self):
    if self.inner.every_steps <= 0:
      raise ValueError(f"--inner_every={self.inner.every_steps} must be positive")


def _define(**kw):
  fv = flags.FlagValues()
  return fv, config_flags.define(Outer, flag_values=fv, module_name="binary", **kw)


def test_types_defaults_help_and_renames():
  fv, _ = _define()
  assert sorted(fv) == ["color", "inner_every", "sizes", "workdir"]
  assert fv["color"].parser.enum_values == ["red", "blue"]
  assert fv["sizes"].default == ["1", "2"]
  assert fv["inner_every"].default == 20  # from the nested default instance
  assert fv["inner_every"].help == "Save this often."
  assert fv["sizes"].help == "What and how big."
  assert fv["workdir"].default is None
  assert {f.name for f in fv.get_key_flags_for_module("binary")} == set(fv)


def test_build_from_parsed_flags():
  fv, cfg = _define(defaults={"inner_every": 5})
  fv(["prog", "--workdir=w", "--color=blue", "--sizes=3,4,5"])
  out = cfg.build()
  assert out == Outer("w", Color.BLUE, (3, 4, 5), Inner(every_steps=5, secret=0.25))


def test_bad_value_is_a_usage_error():
  fv, cfg = _define()
  fv(["prog", "--workdir=w", "--inner_every=0"])
  with pytest.raises(app.UsageError, match="--inner_every=0"):
    cfg.build()


def test_fixed_values_and_collisions():
  fv, cfg = _define(skip=("workdir",))
  fv(["prog"])
  assert cfg.build(workdir="x", inner={"secret": 1.0}).inner == Inner(20, 1.0)
  with pytest.raises(ValueError, match="--color would hold both"):
    config_flags.define(Outer, flag_values=flags.FlagValues(), meta={"sizes": {"flag": "color"}})
