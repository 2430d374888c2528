"""The optimizer from a small config: AdamW after global-norm clipping, with linear warmup."""

from __future__ import annotations

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Attributes:
    lr: peak learning rate, reached after `warmup_steps` and then held.
    warmup_steps: linear warmup from 0 (0 = none).
    weight_decay: decoupled (AdamW) weight decay.
    grad_clip: clip gradients to this global norm (0 = off).
    b1, b2: Adam moments.
  """

  lr: float = 3e-3
  warmup_steps: int = 20
  weight_decay: float = 0.0
  # Not flags: every binary keeps its config's value.
  grad_clip: float = dataclasses.field(default=1.0, metadata={"flag": None})
  b1: float = dataclasses.field(default=0.9, metadata={"flag": None})
  b2: float = dataclasses.field(default=0.99, metadata={"flag": None})

  def __post_init__(self):
    if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0:
      raise ValueError(f"--lr ({self.lr}) must be positive, --warmup_steps "
                       f"({self.warmup_steps}) and grad_clip ({self.grad_clip}) non-negative")

  def schedule(self) -> optax.Schedule:
    if not self.warmup_steps:
      return optax.constant_schedule(self.lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, self.lr, self.warmup_steps),
         optax.constant_schedule(self.lr)], [self.warmup_steps])

  def build(self) -> optax.GradientTransformation:
    adam = optax.adamw(self.schedule(), b1=self.b1, b2=self.b2, weight_decay=self.weight_decay)
    if not self.grad_clip:
      return adam
    return optax.chain(optax.clip_by_global_norm(self.grad_clip), adam)
