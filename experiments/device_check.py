r"""The device check: one program a person with a GPU runs once (under 8 minutes on one H200).

  python experiments/device_check.py                         # or: make device-check
  python experiments/device_check.py --quick --out=/tmp/device_check.json   # CPU, < 1 minute
  python experiments/device_check.py --sections=env,parity --precisions=float32
  python experiments/device_check.py --budgets=graph:200 --deadline_s=520

Prints a table as each section finishes (environment; parity of forward, gradients and a
sharded step against the CPU; SAE step throughput beside SAELens; forward with cache beside
TransformerLens; attribution-graph construction at 512 / 2,048 / 8,192 tokens; a ~1B-parameter
LM step's MFU), then each goal beside its measurement, and rewrites --out after every section.
What each number means is in `interp.bench.device_check` and `interp.bench.device_report`.
"""

from __future__ import annotations

import sys

from interp import config_flags
from interp import usage
from interp.bench import device_check

_CONFIG = config_flags.define(device_check.DeviceCheckConfig)


def main(argv):
  del argv
  cfg = _CONFIG.build()
  device_check.run(cfg, sys.argv)
  print(f"wrote {cfg.out}")


if __name__ == "__main__":
  usage.run(main)
