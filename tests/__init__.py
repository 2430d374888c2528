"""Test package. Every test process sees 8 simulated CPU devices (set before JAX starts), so
sharding tests can compare a 1-device mesh with 8-device meshes in one process."""

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
