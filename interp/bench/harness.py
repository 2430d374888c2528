"""Running a benchmark: isolated workers, rounds, paired timings, the JSON report.

Vocabulary, shared by every workload module (`interp.bench.forward`, `sae`, `toy`, `graph`):
  workload  one benchmark: a frozen config dataclass, the sides it runs and how their results
            are pooled and compared. Its module defines `CONFIG` (the config class) and
            `worker(side, cfg) -> dict`, the work one worker process does.
  side      one implementation under test: ours (interp) or a peer (TransformerLens, SAELens, a
            plain PyTorch loop). A worker may also run the pseudo-sides `PAIR` and `ALL`.
  worker    a fresh interpreter, `python -m interp.bench.<workload> --side=S --config=FILE
            --out=FILE`, that runs one side and writes its result as JSON (`spawn` starts one;
            the module's `__main__` block calls `worker_main`). A process per side keeps one
            library's allocator, thread pools and imports out of the other's memory and timings.
  round     one worker per side, sides alternating, so drifting background load hits both;
            rounds are pooled (timings: median over every timed call; memory: the worst round).
  pair      one worker that builds both sides and alternates single calls (`alternate`): the
            per-pair time ratio is the headline speed, since other tenants' load hits both alike.
  runner    one side, built (`Runner`): setup (timed apart, e.g. JAX's compile), one call,
            block until its outputs exist, facts to report after timing.

Imports nothing from `interp` but its sibling `measure` (so anything may use it), and neither
JAX nor torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from typing import Callable, Mapping, Sequence

from interp.bench import measure  # its sibling: no JAX, torch or other interp imports

# The folder holding the `interp` package this module belongs to: workers import the same one.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def older_cpu_fusion_emitters() -> str:
  """XLA_FLAGS that compile XLA:CPU's loop fusions with its older IR emitters instead of the
  MLIR fusion emitters, for processes whose numbers are not timings. Measured on jaxlib 0.10.2:
  faster compiles (the device check's --quick run 46.6 s -> 35.2 s, `make test` ~740 s -> ~600
  s, every test passing as before) but slower code (the SAE benchmark's TopK step 8,548 ->
  7,297 activations/s), so timed runs leave it out. XLA stops a process on a flag it does not
  know, so this is empty on other jaxlib versions until measured there."""
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""
  return "--xla_cpu_use_fusion_emitters=false" if version.startswith("0.10.") else ""


# For processes whose numbers are not timings (a --quick run, a test's child): XLA:CPU's compiles
# dominate at tiny sizes, and these skip LLVM's optimisation passes (about half the compile time
# of a train step) and use the faster-compiling fusion emitters.
FAST_COMPILE_XLA_FLAGS = " ".join(
    ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
     older_cpu_fusion_emitters()]).strip()

# Pseudo-sides a worker may run besides a workload's own sides.
PAIR = "pair"  # both sides in one process, calls alternating: paired timings only
ALL = "all"    # every side and then the pair in one process (smoke test: memory not isolated)


@dataclasses.dataclass
class Runner:
  """One side, built: `setup` (timed apart, e.g. compile) returns facts, `call` runs once,
  `block` waits until its outputs exist, `report` returns facts gathered after the timed calls."""
  setup: Callable[[], dict]
  call: Callable[[], object]
  block: Callable[[object], object]
  report: Callable[[], dict]


# ----- Workers.

def worker_env(xla_flags: str = "", strip_device_count: bool = False,
               **overrides: str) -> dict[str, str]:
  """This process's environment, adjusted for a worker.

  Args:
    xla_flags: appended to XLA_FLAGS (experiments on our side only, usually).
    strip_device_count: drop a forced host device count (tests simulate 8 CPU devices; a
      benchmark should see the machine as it is).
    **overrides: variables set as given, replacing the adjusted ones.

  Returns:
    The environment for `spawn`.
  """
  env = dict(os.environ)
  flags = env.get("XLA_FLAGS", "").split()
  if strip_device_count:
    flags = [f for f in flags if not f.startswith(_DEVICE_COUNT)]
  if xla_flags:
    flags.append(xla_flags)
  if flags or "XLA_FLAGS" in env:
    env["XLA_FLAGS"] = " ".join(flags)
  env.update(overrides)
  return env


def spawn(module: str, side: str, cfg, env: Mapping[str, str] | None = None,
          timeout: float | None = None) -> dict:
  """Runs `side` of a workload in a fresh interpreter and returns the JSON it wrote.

  Args:
    module: the workload module, e.g. "interp.bench.forward".
    side: passed to the module's `worker` (a str enum passes its value).
    cfg: the workload's config dataclass (sent as JSON).
    env: the worker's environment (default: this process's).
    timeout: seconds before the worker is killed (subprocess.TimeoutExpired).

  Returns:
    The worker's result.
  """
  side = getattr(side, "value", side)
  env = dict(os.environ if env is None else env)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
  with tempfile.TemporaryDirectory() as tmp:
    cfg_path, out = os.path.join(tmp, "config.json"), os.path.join(tmp, "result.json")
    with open(cfg_path, "w") as fh:
      json.dump(dataclasses.asdict(cfg), fh)
    cmd = [sys.executable, "-m", module, f"--side={side}", f"--config={cfg_path}",
           f"--out={out}"]
    subprocess.run(cmd, env=env, check=True, timeout=timeout)
    with open(out) as fh:
      return json.load(fh)


def worker_main(module: str, argv: Sequence[str] | None = None) -> None:
  """The `__main__` of a workload module: runs one side and writes its JSON.

  The module is imported by name (not used as `__main__`), so its classes are the ones the
  rest of the library sees.

  Args:
    module: the workload module's import name.
    argv: --side, --config, --out (default: sys.argv[1:]).
  """
  parser = argparse.ArgumentParser(prog=f"python -m {module}")
  for name in ("side", "config", "out"):
    parser.add_argument(f"--{name}", required=True)
  args = parser.parse_args(argv)
  mod = importlib.import_module(module)
  with open(args.config) as fh:
    cfg = decode(mod.CONFIG, json.load(fh))
  result = mod.worker(args.side, cfg)
  with open(args.out, "w") as fh:
    json.dump(result, fh)


def decode(cls, data):
  """`data` (from `dataclasses.asdict` and JSON) back as a `cls`: nested dataclasses, enums
  and tuples rebuilt from their type hints."""
  if dataclasses.is_dataclass(cls):
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: decode(hints[f.name], data[f.name])
                  for f in dataclasses.fields(cls) if f.init})
  if isinstance(cls, type) and issubclass(cls, enum.Enum):
    return cls(data)
  if typing.get_origin(cls) is tuple:
    item = typing.get_args(cls)[0]
    return tuple(decode(item, x) for x in data)
  return data


# ----- Paired timings and pooling.

def alternate(runners: Mapping[str, Runner], pairs: int, warmup: int) -> dict[str, list[float]]:
  """Warms each side up, then alternates single calls `pairs` times: wall seconds per side."""
  for r in runners.values():
    measure.time_calls(r.call, r.block, warmup)
  seconds = {side: [] for side in runners}
  for _ in range(pairs):
    for side, r in runners.items():
      time.sleep(0.2)  # let the other library's worker threads stop spinning
      seconds[side].append(measure.timed(r.call, r.block)[0])
  return seconds


def ratios(ours: Sequence[float], peer: Sequence[float]) -> list[float]:
  """Per pair, the peer's seconds over ours (> 1: ours is faster)."""
  return [p / o for o, p in zip(ours, peer)]


def pooled(rounds: Sequence[Mapping], key: str) -> list[float]:
  """Every value of the list `key` over all rounds."""
  return [t for r in rounds for t in r[key]]


def worst(rounds: Sequence[Mapping], key: str) -> float:
  """The largest `key` over rounds (memory: the worst round)."""
  return max(r[key] for r in rounds)


def median_over(rounds: Sequence[Mapping], key: str) -> float:
  """The median of `key` over rounds."""
  return statistics.median(r[key] for r in rounds)


# ----- The report.

def write_report(path: str, report: Mapping) -> None:
  """Writes `report` as indented JSON, atomically (a reader never sees half a file)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".json")
  try:
    with os.fdopen(fd, "w") as fh:
      json.dump(report, fh, indent=1)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def table(rows: Sequence[Sequence[object]], left: int = 1) -> str:
  """Rows as aligned text columns, the first row a header.

  Args:
    rows: cells, already formatted or plain values (str() applies).
    left: how many leading columns are left-aligned (labels); the rest align right (numbers).

  Returns:
    The table, one line a row.
  """
  cells = [[str(c) for c in row] for row in rows]
  widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(cells[0]))]
  return "\n".join(" ".join(c.ljust(w) if i < left else c.rjust(w)
                            for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                   for row in cells)
