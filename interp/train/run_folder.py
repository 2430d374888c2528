"""The files every training run keeps in its workdir, beside checkpoints/ and metrics.jsonl.

  flags.json     the latest invocation's config (a resume with other flags logs what changed)
  <name>.json    what was trained (model / dictionary config, data description), atomically
  results.json   final metrics, written when the run completes
"""

from __future__ import annotations

import json
import os

from absl import logging

from interp import jsonio
from interp.train import metrics as metrics_lib


def write_json(workdir: str, name: str, value) -> None:
  """Writes <workdir>/<name> atomically (`interp.jsonio`), so a kill never leaves half a file."""
  jsonio.write_json_atomic(os.path.join(workdir, name), value, sort_keys=True)


def check_writable(workdir: str, flag: str = "workdir") -> None:
  """Refuses a run folder that is a file or cannot be written, before anything runs.

  Args:
    workdir: the run folder (it may not exist yet: then its nearest existing parent must be a
      writable folder).
    flag: the flag that named it, for the message.
  Raises:
    NotADirectoryError, PermissionError: naming the flag and the path.
  """
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise NotADirectoryError(f"--{flag}={workdir}: {path} is a file, not a folder; give a folder "
                             "for the run")
  if not os.access(path, os.W_OK | os.X_OK):
    raise PermissionError(f"--{flag}={workdir}: {path} is not writable; give a folder this user "
                          "can write")


def record_flags(workdir: str, flags: dict) -> None:
  """Writes flags.json; when resuming with other flags, logs each one that changed."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "flags.json")
  if os.path.exists(path):
    before = metrics_lib.flatten(jsonio.read_json(path))
    # As flags.json will hold them: a tuple reads back as a list and is the same flag.
    after = metrics_lib.flatten(json.loads(json.dumps(flags)))
    changed = {k: (before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys())
               if before.get(k) != after.get(k)}
    if changed:
      logging.warning("resuming %s with changed flags (old, new): %s", workdir, changed)
  write_json(workdir, "flags.json", flags)


def saved_flag(workdir: str, name: str):
  """A flag of the run that last started in `workdir` (from its flags.json), or None."""
  try:
    with open(os.path.join(workdir, "flags.json")) as f:
      return json.load(f).get(name)
  except (OSError, ValueError):
    return None


def config_changes(workdir: str, name: str, current: dict) -> list[str] | None:
  """`field: old -> new` for each difference from the saved <name>; None if nothing is saved."""
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return None
  saved = jsonio.read_json(path)
  return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}"
          for k in sorted(saved.keys() | current.keys()) if saved.get(k) != current.get(k)]


def last_row(path: str) -> dict | None:
  """The last metrics row on disk (a rerun of a finished run trains no step of its own)."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [line for line in f if line.strip()]
  return json.loads(rows[-1]) if rows else None
