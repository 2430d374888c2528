"""Meshes from flags, multi-host start-up, sharded parameters and batches.

A mesh has two named axes, `data` and `model`. The `--mesh` flag gives their sizes as
`data:-1,model:1`, where -1 means "the rest of the devices". Parameters are initialised already
sharded: the shapes come from `jax.eval_shape`, the specs from the logical rules, and `init` runs
under `jax.jit(..., out_shardings=...)`, so no host ever materialises the full parameters.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interp.parallel import sharding as shd

AXES = ("data", "model")
# Pure data parallelism over every device: the default of every run.
DEFAULT_MESH = "data:-1,model:1"


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh axis sizes; -1 on at most one axis takes the remaining devices."""

  data: int = -1
  model: int = 1

  def __post_init__(self):
    for name in AXES:
      size = getattr(self, name)
      if size == 0 or size < -1:
        raise ValueError(f"--mesh: size {size} of axis {name!r} must be a positive integer or -1 "
                         "(the rest of the devices)")

  @classmethod
  def parse(cls, text: str) -> "MeshConfig":
    """Parses `data:4,model:2` (either axis may be omitted; the flag is --mesh)."""
    sizes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
      name, _, value = part.partition(":")
      if name not in AXES or not value.lstrip("-").isdigit():
        raise ValueError(f"--mesh={text!r}: expected comma-separated AXIS:SIZE with AXIS in "
                         f"{AXES} and SIZE an integer (-1 = the rest), e.g. 'data:-1,model:2'")
      if name in sizes:
        raise ValueError(f"--mesh={text!r}: axis {name!r} is given twice; name each of "
                         f"{AXES} at most once")
      if int(value) == 0 or int(value) < -1:
        raise ValueError(f"--mesh={text!r}: size {value} of axis {name!r} must be a positive "
                         "integer or -1 (the rest of the devices)")
      sizes[name] = int(value)
    return cls(**sizes)

  def resolve(self, n_devices: int) -> tuple[int, int]:
    sizes = [self.data, self.model]
    if sizes.count(-1) > 1:
      raise ValueError(f"--mesh: at most one axis may be -1, got data={self.data}, "
                       f"model={self.model}")
    if -1 in sizes:
      known = int(np.prod([s for s in sizes if s != -1]))
      if n_devices % known:
        raise ValueError(f"--mesh: {n_devices} devices do not divide into {known}-sized groups")
      sizes[sizes.index(-1)] = n_devices // known
    if int(np.prod(sizes)) != n_devices:
      raise ValueError(f"--mesh: data={sizes[0]} x model={sizes[1]} = {np.prod(sizes)} devices, "
                       f"but {n_devices} are available")
    return sizes[0], sizes[1]


def make_mesh(config: MeshConfig = MeshConfig(), devices=None) -> Mesh:
  """A (data, model) mesh over `devices` (default: every device of every process).

  A fully specified mesh smaller than the devices of a single process uses the first devices
  (so `--mesh=data:1,model:1` runs on one device); across processes it must cover them all.

  Args:
    config: the parsed `--mesh` (`MeshConfig.parse`; a run config parses it once).
    devices: the devices to use (default all).
  Returns:
    The mesh, axes `data` and `model`.
  """
  if not isinstance(config, MeshConfig):
    raise TypeError(f"make_mesh takes a parsed MeshConfig (MeshConfig.parse), not {config!r}")
  devices = jax.devices() if devices is None else list(devices)
  wanted = config.data * config.model
  if wanted > 0 and wanted < len(devices) and jax.process_count() == 1:
    devices = devices[:wanted]  # a smaller mesh on one host (tests, small runs): the first N
  shape = config.resolve(len(devices))
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices=devices)
  except Exception:  # older/newer layouts: fall back to the plain order
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, AXES)


def maybe_initialize_distributed() -> None:
  """Joins the multi-process runtime when the launcher set JAX_COORDINATOR_ADDRESS etc.

  `launch/` sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID; on TPU pods and
  SLURM, `jax.distributed.initialize()` finds them itself (INTERP_DISTRIBUTED=auto).
  """
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    # CPU processes need a collectives backend to talk to each other; gloo ships with jaxlib.
    # (The option only affects the CPU client, and must be set before any backend starts.)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif os.environ.get("INTERP_DISTRIBUTED") == "auto":
    jax.distributed.initialize()


def param_shardings(mesh: Mesh, axes_tree, shapes_tree, rules: shd.Rules = shd.PARAM_RULES):
  """NamedShardings for a parameter tree; raises if a sharded dimension does not divide."""
  specs = shd.tree_specs(axes_tree, rules)

  def check(path, spec, shape):
    shd.check_divisible(shape.shape, spec, mesh, f"parameter {jax.tree_util.keystr(path)}")
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(check, specs, shapes_tree,
                                          is_leaf=lambda x: isinstance(x, P))


def sharded_init(init_fn: Callable, axes_fn: Callable, mesh: Mesh,
                 rules: shd.Rules = shd.PARAM_RULES):
  """Initialises parameters directly into their shardings.

  Args:
    init_fn: () -> params (pure; closes over its key).
    axes_fn: params-shaped tree -> tree of logical-axes tuples.
  Returns:
    (params, shardings).
  """
  shapes = jax.eval_shape(init_fn)
  shardings = param_shardings(mesh, axes_fn(shapes), shapes, rules)
  return jax.jit(init_fn, out_shardings=shardings)(), shardings


def put_params(params, axes_tree, mesh: Mesh, rules: shd.Rules = shd.PARAM_RULES):
  """Places host-resident parameters (e.g. loaded weights) onto the mesh."""
  shardings = param_shardings(mesh, axes_tree, params, rules)
  return jax.device_put(params, shardings), shardings


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  return NamedSharding(mesh, P("data", *([None] * (ndim - 1))))


def global_batch(mesh: Mesh, local: np.ndarray, name: str = "batch") -> jax.Array:
  """Assembles a global batch, sharded over `data`, from this process's slice.

  Every process passes its own rows (global_batch_size / process_count of them, the rows its
  devices hold); the result is one global array.
  """
  n_data = mesh.shape["data"]
  global_rows = local.shape[0] * jax.process_count()
  if global_rows % n_data:
    raise ValueError(f"{name}: global batch size {global_rows} is not divisible by the mesh's "
                     f"data axis ({n_data}); choose --batch_size as a multiple of {n_data}")
  sharding = batch_sharding(mesh, local.ndim)
  return jax.make_array_from_process_local_data(sharding, np.asarray(local),
                                                (global_rows,) + local.shape[1:])


def process_rows(global_batch_size: int) -> slice:
  """The rows of a global batch that this process supplies."""
  n = jax.process_count()
  if global_batch_size % n:
    raise ValueError(f"--batch_size={global_batch_size} is not divisible by the number of "
                     f"processes ({n})")
  per = global_batch_size // n
  return slice(jax.process_index() * per, (jax.process_index() + 1) * per)
