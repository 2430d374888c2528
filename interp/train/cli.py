"""What every training binary does first, and the `--compile_only` capacity it reports against.

Nothing here touches a device at import, so a binary may still set XLA_FLAGS before `start`.
"""

from __future__ import annotations

from absl import app

from interp.train.compile_only import TPU_V5P_HBM_GB


def start(argv) -> None:
  """Refuses stray arguments, joins `jax.distributed` (before anything touches a device) and
  hides Orbax's INFO lines."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from interp.parallel import mesh as mesh_lib
  from interp.train import checkpoint
  mesh_lib.maybe_initialize_distributed()
  checkpoint.quiet_orbax_logs()


def capacity_name(device_gb: float) -> str:
  """How a `--compile_only` report names the `--device_memory_gb` it compares against."""
  return "TPU v5p HBM" if device_gb == TPU_V5P_HBM_GB else "--device_memory_gb"
