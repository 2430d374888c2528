"""Every binary still defines the flags it defined before its flags were generated from configs.

`tests/golden/flags_<binary>.json` records each flag's name, default, type and (for enums)
choices as the hand-written definitions had them; sweeps and READMEs pass these names, so a
binary may add flags but never drop or re-default one. absl flags are process-global, so one
fresh interpreter imports the binaries in turn and deletes each one's flags before the next
(one interpreter rather than one each: the imports of JAX and the library are paid once).
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
import importlib, json, sys, traceback
from absl import app, flags, logging  # their flags exist before any binary's, and stay
baseline = set(flags.FLAGS)
out = {}
for binary in sys.argv[1:]:
  try:
    importlib.import_module("experiments." + binary)
  except Exception:
    out[binary] = {"error": traceback.format_exc()}
  else:
    out[binary] = {"flags": {}}
    for name, f in flags.FLAGS._flags().items():
      d = list(f.default) if isinstance(f.default, tuple) else f.default
      e = {"default": d, "type": f.flag_type()}
      if hasattr(f.parser, "enum_values"):
        e["choices"] = list(f.parser.enum_values)
      out[binary]["flags"][name] = e
  # The next binary may define the same names. Flags of third-party modules (Orbax's) are
  # defined once, at their first import, so they stay.
  ours = {f.name for module, fs in flags.FLAGS.flags_by_module_dict().items()
          if module.startswith(("experiments.", "interp.")) for f in fs}
  for name in (ours & set(flags.FLAGS)) - baseline:
    delattr(flags.FLAGS, name)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def dumped() -> dict:
  """Binary -> {"flags": {name: {default, type, choices?}}} or {"error": its traceback}."""
  binaries = [p.stem.removeprefix("flags_") for p in GOLDEN]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
  out = subprocess.run([sys.executable, "-c", _DUMP, *binaries], cwd=ROOT, env=env, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_binary_keeps_its_flags(path, dumped):
  binary = path.stem.removeprefix("flags_")
  assert "error" not in dumped[binary], dumped[binary].get("error")
  now = dumped[binary]["flags"]
  want = json.loads(path.read_text())
  missing = sorted(set(want) - set(now))
  assert not missing, f"{binary} no longer defines {missing}"
  for name, old in want.items():
    default = MACHINE.get((binary, name), old["default"])
    assert now[name]["default"] == default, (binary, name, now[name]["default"], default)
    assert now[name]["type"] == old["type"], (binary, name, now[name]["type"], old["type"])
    assert now[name].get("choices") == old.get("choices"), (binary, name)
