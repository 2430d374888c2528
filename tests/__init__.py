"""Test package. Every test process sees 8 simulated CPU devices (set before JAX starts), so
sharding tests can compare a 1-device mesh with 8-device meshes in one process.

The suite also compiles at XLA:CPU's backend optimisation level 1 instead of the default 3: at
the tests' sizes most seconds are XLA:CPU compiles, and this cuts the two-process suite by about
a tenth (787 s -> 703-737 s on a quiet 2-core CPU). Results differ from the default build's by
float32 rounding only (measured: 2.4e-3 on Gemma logits up to 59, where the default build reads
1.5e-3 against transformers). INTERP_TEST_XLA_OPT=3 (or an XLA_FLAGS that sets the level) runs
it with the default build. At levels below 3 XLA:CPU also compiles loop fusions with its older,
faster-compiling emitters (`harness.older_cpu_fusion_emitters`).
"""

import os

from interp.bench import harness  # no JAX inside: the flags below are set before JAX starts

_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _flags:
  _flags += " --xla_force_host_platform_device_count=8"
if "--xla_backend_optimization_level" not in _flags:
  _level = os.environ.get("INTERP_TEST_XLA_OPT", "1")
  _flags += f" --xla_backend_optimization_level={_level}"
  if _level != "3":
    _flags += " --xla_llvm_disable_expensive_passes=true"
    if "--xla_cpu_use_fusion_emitters" not in _flags:
      _flags += " " + harness.older_cpu_fusion_emitters()
os.environ["XLA_FLAGS"] = _flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
