"""The environment a test gives a process it starts: a binary, a launcher, a benchmark's workers.

Those processes are asserted on what they compute, and at the tests' tiny sizes most of their
seconds are XLA:CPU compiles, so by default they compile without LLVM's optimisations
(`FAST_COMPILE`). Their numbers then differ from the test process's (tests/__init__.py: level 1)
by float32 rounding only: a test that compares a subprocess with a run in its own process, bit
for bit or closer than that rounding, passes `fast_compile=False`, and the child compiles as the
test process does.
"""

from __future__ import annotations

import os

from interp.bench import harness

FAST_COMPILE = tuple(harness.FAST_COMPILE_XLA_FLAGS.split())
DEVICE_COUNT = "--xla_force_host_platform_device_count"


def environment(devices: int | None = None, fast_compile: bool = True,
                drop_jax: bool = False, **extra: str) -> dict[str, str]:
  """This process's environment, adjusted for a child.

  Args:
    devices: None keeps the simulated device count this process has (8, from tests/__init__.py);
      0 drops it (the child sees the machine as it is, or chooses its own); n forces n.
    fast_compile: append `FAST_COMPILE` to XLA_FLAGS.
    drop_jax: drop every JAX_* variable (JAX_PLATFORMS=cpu is set again).
    **extra: variables set as given, after the rest.
  """
  env = dict(os.environ)
  if drop_jax:
    env = {k: v for k, v in env.items() if not k.startswith("JAX_")}
    env["JAX_PLATFORMS"] = "cpu"
  flags = env.get("XLA_FLAGS", "").split()
  if devices is not None:
    flags = [f for f in flags if not f.startswith(DEVICE_COUNT)]
    if devices:
      flags.append(f"{DEVICE_COUNT}={devices}")
  if fast_compile:  # replaces the level this process compiles at (tests/__init__.py)
    flags = [f for f in flags if f.split("=")[0] not in {g.split("=")[0] for g in FAST_COMPILE}]
    flags += FAST_COMPILE
  env["XLA_FLAGS"] = " ".join(flags)
  env.update(extra)
  return env
