"""The optimizer from a small config: AdamW after global-norm clipping, with linear warmup and
an optional linear decay to zero at the end of the run."""

from __future__ import annotations

import dataclasses
import math

import optax

from interp import choices


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Attributes:
    lr: peak learning rate, reached after `warmup_steps` and then held.
    warmup_steps: linear warmup from 0 (0 = none).
    decay_start, decay_end: the rate falls linearly from `lr` at step `decay_start` to 0 at step
      `decay_end` and stays 0 after (decay_end 0 = no decay). Set decay_end to the run's step
      count to end on 0; a function of the step alone, so a resumed run follows the same curve.
    weight_decay: decoupled (AdamW) weight decay.
    grad_clip: clip gradients to this global norm (0 = off).
    b1, b2: Adam moments.
  """

  lr: float = 3e-3
  warmup_steps: int = 20
  decay_start: int = 0
  decay_end: int = 0
  weight_decay: float = 0.0
  # Not flags: every binary keeps its config's value.
  grad_clip: float = dataclasses.field(default=1.0, metadata={"flag": None})
  b1: float = dataclasses.field(default=0.9, metadata={"flag": None})
  b2: float = dataclasses.field(default=0.99, metadata={"flag": None})

  def __post_init__(self):
    # NaN fails every comparison, so each check asks for what is allowed rather than refusing
    # what is not: a NaN or infinite rate would train, and save, NaN parameters.
    choices.numbers(self, positive=("lr",), non_negative=("weight_decay",))
    choices.check_int("warmup_steps", self.warmup_steps, minimum=0)
    choices.check_int("decay_start", self.decay_start, minimum=0)
    choices.check_int("decay_end", self.decay_end, minimum=0)
    if self.decay_end and not self.warmup_steps <= self.decay_start < self.decay_end:
      raise ValueError(f"--decay_start={self.decay_start}, --decay_end={self.decay_end}: need "
                       f"warmup_steps ({self.warmup_steps}) <= decay_start < decay_end "
                       "(decay_end 0 = no decay)")
    # Not flags, so named as fields: set by the binary's config, not the command line.
    if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
      raise ValueError(f"grad_clip={self.grad_clip}: must be a finite number >= 0 (0 = off)")
    for name in ("b1", "b2"):
      value = getattr(self, name)
      if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"{name}={value}: must be in [0, 1)")

  def schedule(self) -> optax.Schedule:
    pieces, boundaries = [], []
    if self.warmup_steps:
      pieces.append(optax.linear_schedule(0.0, self.lr, self.warmup_steps))
      boundaries.append(self.warmup_steps)
    pieces.append(optax.constant_schedule(self.lr))
    if self.decay_end:
      pieces.append(optax.linear_schedule(self.lr, 0.0, self.decay_end - self.decay_start))
      boundaries.append(self.decay_start)
    if len(pieces) == 1:
      return pieces[0]
    return optax.join_schedules(pieces, boundaries)

  def build(self) -> optax.GradientTransformation:
    adam = optax.adamw(self.schedule(), b1=self.b1, b2=self.b2, weight_decay=self.weight_decay)
    if not self.grad_clip:
      return adam
    return optax.chain(optax.clip_by_global_norm(self.grad_clip), adam)
