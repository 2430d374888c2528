"""Results as plain JSON, and files written atomically.

  jsonable  nested results (dicts, lists, numpy / jax arrays and scalars) as plain JSON values:
            arrays become lists, floats are rounded, NaN becomes null (JSON has no NaN).
  read      `read_json` names the file in its error, so a damaged record says which one it is.
  atomic    the file is written beside its final name as `<path>.tmp`, flushed to disk and renamed
            over `path` (`os.replace`), so a reader, or a run killed mid-write, sees either the old
            file or the whole new one, never half a file.

A bottom-layer module (numpy only): every package may import it.
"""

from __future__ import annotations

import json
import os

import numpy as np


def jsonable(x, digits: int = 5):
  """Nested results as plain JSON.

  Args:
    x: dicts (keys become strings), lists, tuples, arrays (anything with `__array__`), numpy
      scalars and plain values, nested.
    digits: floats are rounded to this many decimals.

  Returns:
    The same structure of dicts, lists, ints, rounded floats, bools, strings and None (for NaN).
  """
  if isinstance(x, dict):
    return {str(k): jsonable(v, digits) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v, digits) for v in x]
  if hasattr(x, "__array__") and not isinstance(x, (float, int)):
    return jsonable(np.asarray(x).tolist(), digits)
  if isinstance(x, (float, np.floating)):
    return None if np.isnan(x) else round(float(x), digits)
  if isinstance(x, (np.integer, np.bool_)):
    return x.item()
  return x


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` atomically (see the module docstring).

  Args:
    path: the file; its folder must exist.
    text: the whole new contents.
  """
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    # Without the sync a crash soon after the rename can leave `path` empty on some filesystems.
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json_atomic(path: str, value, *, indent: int | None = 2, sort_keys: bool = False) -> None:
  """Writes `value` as JSON to `path` atomically.

  Args:
    path: the file; its folder must exist.
    value: JSON-serialisable (pass results through `jsonable` first).
    indent, sort_keys: as in `json.dump` (indent None: one line, for large files).
  """
  write_text_atomic(path, json.dumps(value, indent=indent, sort_keys=sort_keys))


class JSONFileError(ValueError):
  """A JSON file that exists but cannot be parsed; the message names the file."""


def read_json(path: str):
  """The JSON value in `path`.

  Args:
    path: the file.
  Returns:
    The parsed value.
  Raises:
    FileNotFoundError: there is no such file.
    JSONFileError: the file is not valid JSON (the message names it and where parsing stopped).
  """
  with open(path) as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise JSONFileError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                        "fix or remove the file") from None
