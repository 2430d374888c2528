"""Every binary still defines the flags it defined before its flags were generated from configs.

`tests/golden/flags_<binary>.json` records each flag's name, default, type and (for enums)
choices as the hand-written definitions had them; sweeps and READMEs pass these names, so a
binary may add flags but never drop or re-default one. Each binary is imported in a fresh
interpreter because absl flags are process-global.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = sorted((ROOT / "tests" / "golden").glob("flags_*.json"))
# Defaults computed from the machine when the binary is imported.
MACHINE = {("toy_superposition", "cpu_devices"): len(os.sched_getaffinity(0))}

_DUMP = """
import importlib, json, sys
from absl import flags
importlib.import_module("experiments." + sys.argv[1])
out = {}
for name, f in flags.FLAGS._flags().items():
  d = list(f.default) if isinstance(f.default, tuple) else f.default
  e = {"default": d, "type": f.flag_type()}
  if hasattr(f.parser, "enum_values"):
    e["choices"] = list(f.parser.enum_values)
  out[name] = e
print(json.dumps(out))
"""


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_binary_keeps_its_flags(path):
  binary = path.stem.removeprefix("flags_")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run([sys.executable, "-c", _DUMP, binary], cwd=ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout
  now = json.loads(out)
  want = json.loads(path.read_text())
  missing = sorted(set(want) - set(now))
  assert not missing, f"{binary} no longer defines {missing}"
  for name, old in want.items():
    default = MACHINE.get((binary, name), old["default"])
    assert now[name]["default"] == default, (binary, name, now[name]["default"], default)
    assert now[name]["type"] == old["type"], (binary, name, now[name]["type"], old["type"])
    assert now[name].get("choices") == old.get("choices"), (binary, name)
