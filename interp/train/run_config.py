"""The settings every training run shares, embedded as `run` in each trainer's config.

  workdir      the run folder ("" = none: nothing is written or restored; tests, notebooks)
  seed         the root of the run's randomness (each trainer says what it seeds)
  mesh         the `--mesh` text (`data:-1,model:1`), parsed once into `mesh_config`
  num_steps    total updates of the whole run (a resumed run continues to this step)
  log_every    metrics are fetched, checked for NaN/Inf and written every this many steps
  optimizer    AdamW settings (`interp.train.optim`)
  checkpoint   when to save and how many to keep (`interp.train.checkpoint`)

A trainer's own config holds `run` beside what only it has (model, data, batch size, ...), with
its own default `RunConfig`; `config_dict` writes such a config as one flat dict, the run's
fields beside the trainer's, which is what flags.json holds.
"""

from __future__ import annotations

import dataclasses

from interp import choices
from interp.parallel.mesh import DEFAULT_MESH, MeshConfig
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Attributes: see the module docstring."""

  workdir: str = ""
  seed: int = 0
  mesh: str = DEFAULT_MESH
  num_steps: int = 1000
  log_every: int = 50
  optimizer: OptimizerConfig = OptimizerConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  # The text is kept as given (flags.json and error messages quote it); this is its meaning.
  mesh_config: MeshConfig = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    object.__setattr__(self, "mesh_config", MeshConfig.parse(self.mesh))
    choices.numbers(self, positive=("num_steps", "log_every"), non_negative=("seed",))

  def replace(self, **changes) -> RunConfig:
    """A copy with `changes` (e.g. a trainer's defaults with this run's workdir)."""
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    return {"workdir": self.workdir, "seed": self.seed, "mesh": self.mesh,
            "num_steps": self.num_steps, "log_every": self.log_every,
            "optimizer": dataclasses.asdict(self.optimizer),
            "checkpoint": dataclasses.asdict(self.checkpoint)}


def config_dict(config) -> dict:
  """A trainer's config as one flat JSON-able dict: its `run` fields beside its own.

  Args:
    config: a dataclass with a `run: RunConfig` field; nested configs are written with their
      `to_dict()` if they have one (enums as values), other dataclasses field by field.
  Returns:
    The dict flags.json holds.
  """
  out = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, RunConfig):
      out.update(value.to_dict())
    elif hasattr(value, "to_dict"):
      out[field.name] = value.to_dict()
    elif dataclasses.is_dataclass(value):
      out[field.name] = dataclasses.asdict(value)
    else:
      out[field.name] = value
  return out


def split_run(base: RunConfig, **kwargs) -> tuple[RunConfig, dict]:
  """Flat keyword settings (as the flags name them) split into a run and the rest.

  Args:
    base: the trainer's default run; kwargs naming a RunConfig field replace it there, and
      kwargs naming an OptimizerConfig field (lr, warmup_steps, weight_decay, ...) replace it
      in the run's optimizer.
  Returns:
    (run, the other kwargs): `SomeConfig(run=run, **rest)` builds the trainer's config.
  """
  run_names = {f.name for f in dataclasses.fields(RunConfig) if f.init}
  optim_names = {f.name for f in dataclasses.fields(OptimizerConfig)}
  run = base.replace(**{k: v for k, v in kwargs.items() if k in run_names})
  optim = {k: v for k, v in kwargs.items() if k in optim_names}
  if optim:
    run = run.replace(optimizer=dataclasses.replace(run.optimizer, **optim))
  return run, {k: v for k, v in kwargs.items() if k not in run_names | optim_names}


class EmbedsRun:
  """Mixin for a trainer's config: a dataclass with a `run: RunConfig` field whose default is
  the trainer's defaults."""

  @classmethod
  def make(cls, *args, **kwargs):
    """From flat settings, as the flags name them: RunConfig and OptimizerConfig fields
    (workdir, seed, lr, ...) go into `run`, starting from the trainer's default run."""
    run, rest = split_run(cls.__dataclass_fields__["run"].default, **kwargs)
    return cls(*args, run=run, **rest)

  def replace(self, **changes):
    """A copy with flat `changes`, as `make` takes them."""
    run, rest = split_run(self.run, **changes)
    return dataclasses.replace(self, run=run, **rest)

  def to_dict(self) -> dict:
    return config_dict(self)
