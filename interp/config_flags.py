"""absl flags generated from frozen config dataclasses, and the configs built back from them.

The one place in the library that defines flags; library code still never reads `FLAGS`. A
binary calls `define(SomeConfig)` at import and `.build()` in `main`, so every option is
written once: its type is the field's annotation, its default the field's default and its help
the first sentence of the class docstring's `Attributes:` entry (`name: text`, or
`a, b: text` for several fields).

Vocabulary:
  leaf     a field of type int, float, str, bool, an `enum.Enum` subclass (a `DEFINE_enum`
           listing the valid values), a tuple of those (a comma-separated `DEFINE_list`, or a
           repeatable flag with `multi`), or `X | None` of one of them.
  nested   a field whose type is a dataclass (or `X | None`): flattened, so its leaves become
           flags of their own, named by field name alone (`optimizer.lr` is `--lr`). Two
           leaves with one name are an error at `define` time.
  meta     per-field options, from the field's `metadata` or the `meta` argument of `define`
           (which wins): `flag` renames the flag (`None` hides the field: it keeps its
           default), `default`, `choices` (a str field as an enum flag), `multi`, `required`,
           `help`.

A field's default comes from the nearest default instance: `TrainSAEConfig.optimizer`'s
default `OptimizerConfig(lr=1e-3, ...)` gives `--lr` the default 1e-3, and a hidden field
such as its `grad_clip` keeps that instance's value when the config is built. Flags are
registered under the config class (`--helpfull` groups them by config) and declared key
flags of the binary (`--help` lists them).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import sys
import types
import typing
from typing import Any, Iterable, Mapping

from absl import app, flags

_SCALARS = (bool, int, float, str)


def _unwrap_optional(t):
  """`X | None` -> (X, True); anything else -> (t, False)."""
  if typing.get_origin(t) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if len(args) == 1:
      return args[0], True
  return t, False


def attribute_help(cls) -> dict[str, str]:
  """The first sentence of each `Attributes:` entry of `cls`'s docstring, by field name.

  Args:
    cls: a dataclass whose docstring has an `Attributes:` section of `name: text` entries
      (`a, b: text` documents several fields; deeper-indented lines continue an entry).
  Returns:
    {field name: one-line help}; fields without an entry are absent.
  """
  doc = inspect.getdoc(cls) or ""
  lines = doc.splitlines()
  try:
    start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
  except StopIteration:
    return {}
  entries: list[tuple[list[str], list[str]]] = []
  indent = None
  for line in lines[start + 1:]:
    if not line.strip():
      continue
    depth = len(line) - len(line.lstrip())
    m = re.match(r"\s*([\w, /]+?):\s+(.*)", line)
    if m and (indent is None or depth <= indent):
      indent = depth
      names = [n for n in re.split(r"[,/ ]+", m.group(1)) if n]
      entries.append((names, [m.group(2)]))
    elif entries and indent is not None and depth > indent:
      entries[-1][1].append(line.strip())
    else:
      break  # the section ended
  out = {}
  for names, text in entries:
    joined = " ".join(text)
    first = re.split(r"(?<=[.;])\s+(?=[A-Z(`])", joined, maxsplit=1)[0]
    for name in names:
      out[name] = first[:1].upper() + first[1:]
  return out


def _text(value) -> str:
  """How a list element is written on the command line (4.0 as `4`, enums by value)."""
  if isinstance(value, enum.Enum):
    return str(value.value)
  if isinstance(value, float) and value.is_integer():
    return str(int(value))
  return str(value)


@dataclasses.dataclass
class _Leaf:
  path: tuple[str, ...]   # field names from the root config
  kind: type              # bool, int, float, str, an Enum, or tuple (then `item` is set)
  item: type | None
  holder: Any = None      # the absl FlagHolder


def _new_flag(name, kind, item, default, help_, meta):
  """An absl Flag object for one leaf (registered by the caller)."""
  if kind is tuple:
    values = None if default is None else [_text(v) for v in default]
    if meta.get("multi"):
      return flags.MultiFlag(flags.ArgumentParser(), flags.ArgumentSerializer(), name, values,
                             help_)
    return flags.Flag(flags.ListParser(), flags.CsvListSerializer(","), name, values, help_)
  choices = meta.get("choices")
  if isinstance(kind, type) and issubclass(kind, enum.Enum):
    choices = choices or [e.value for e in kind]
    default = default.value if isinstance(default, enum.Enum) else default
  if choices is not None:
    return flags.EnumFlag(name, default, help_, list(choices))
  if kind is bool:
    return flags.BooleanFlag(name, default, help_)
  parser = {int: flags.IntegerParser, float: flags.FloatParser, str: flags.ArgumentParser}[kind]
  return flags.Flag(parser(), flags.ArgumentSerializer(), name, default, help_)


class ConfigFlags:
  """The flags of one config class, and the config built back from their parsed values."""

  def __init__(self, cls, leaves: dict[str, _Leaf]):
    self.cls = cls
    self._leaves = leaves

  def __getitem__(self, flag_name: str):
    """The parsed value of one of these flags (e.g. a derived value's input)."""
    return self._leaves[flag_name].holder.value

  def kwargs(self) -> dict:
    """{field name: parsed value} of the leaves, for a flat config or a factory function."""
    return {path[-1]: value for path, value in self.values().items()}

  def values(self) -> dict:
    """{field path tuple: parsed value}, converted to the annotated types."""
    out = {}
    for leaf in self._leaves.values():
      value = leaf.holder.value
      if leaf.kind is tuple and value is not None:
        value = tuple(leaf.item(v) for v in value)
      elif (value is not None and isinstance(leaf.kind, type)
            and issubclass(leaf.kind, enum.Enum)):
        value = leaf.kind(value)
      out[leaf.path] = value
    return out

  def build(self, **fixed):
    """The config from the parsed flags.

    Args:
      **fixed: values for top-level fields that are not flags (derived or hidden ones); a
        dict for a nested field sets some of its fields, a dataclass replaces it whole.
    Returns:
      An instance of the config class.
    Raises:
      app.UsageError: the config's `__post_init__` refused a value (its message names it).
    """
    tree: dict = {}
    for path, value in self.values().items():
      node = tree
      for name in path[:-1]:
        node = node.setdefault(name, {})
      node[path[-1]] = value
    _merge(tree, fixed)
    try:
      return _construct(self.cls, tree, None)
    except ValueError as e:  # a bad flag value: say which, without a traceback
      raise app.UsageError(str(e)) from e


def _merge(tree: dict, fixed: Mapping) -> None:
  for name, value in fixed.items():
    if isinstance(value, Mapping) and isinstance(tree.get(name), dict):
      _merge(tree[name], value)
    else:
      tree[name] = value


def _construct(cls, tree: dict, base):
  """`cls` from {field: value or subtree}; fields not in `tree` keep `base`'s or the default."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for field in dataclasses.fields(cls):
    if field.name not in tree:
      continue
    value = tree[field.name]
    if isinstance(value, dict):
      sub_cls, _ = _unwrap_optional(hints[field.name])
      sub_base = getattr(base, field.name, None) if base is not None else _default(field)
      value = _construct(sub_cls, value, sub_base if dataclasses.is_dataclass(sub_base) else None)
    kwargs[field.name] = value
  if base is not None:
    return dataclasses.replace(base, **kwargs)
  return cls(**kwargs)


def _default(field):
  if field.default is not dataclasses.MISSING:
    return field.default
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return dataclasses.MISSING


def define(cls, *, defaults: Mapping[str, Any] | None = None,
           meta: Mapping[str, Mapping[str, Any]] | None = None,
           only: Iterable[str] | None = None, skip: Iterable[str] = (),
           flag_values: flags.FlagValues = flags.FLAGS,
           module_name: str | None = None) -> ConfigFlags:
  """Defines one absl flag per leaf field of `cls`, nested dataclasses flattened.

  Args:
    cls: a (frozen) dataclass.
    defaults: {flag name: default} where this binary's default differs from the field's.
    meta: {field name: options} (see the module doc), merged over the field's metadata.
    only: if given, the only flag names to define (the other fields keep their defaults).
    skip: flag names (or nested field names) not to define: derived or hidden in this binary.
    flag_values: the registry (absl's global `FLAGS` unless testing).
    module_name: the binary the flags are key flags of (default: the caller's module).
  Returns:
    A `ConfigFlags` whose `build()` makes the config from the parsed flags.
  Raises:
    ValueError: a field type no flag can hold, or two leaves with the same flag name.
  """
  if module_name is None:
    module_name = sys._getframe(1).f_globals.get("__name__", "__main__")
    if module_name == "__main__":
      module_name = sys.argv[0]  # as absl names the main module's flags
  defaults = dict(defaults or {})
  meta = dict(meta or {})
  only = None if only is None else set(only)
  skip = set(skip)
  leaves: dict[str, _Leaf] = {}

  def walk(c, base, path):
    hints = typing.get_type_hints(c)
    helps = attribute_help(c)
    for field in dataclasses.fields(c):
      opts = {**field.metadata, **meta.get(field.name, {})}
      name = opts.get("flag", field.name)
      if not field.init or name is None or name in skip or field.name in skip:
        continue  # init=False fields are derived from the others (RunConfig.mesh_config)
      kind, _ = _unwrap_optional(hints[field.name])
      default = getattr(base, field.name) if base is not None else _default(field)
      if dataclasses.is_dataclass(kind):
        walk(kind, default if dataclasses.is_dataclass(default) else None,
             path + (field.name,))
        continue
      if only is not None and name not in only:
        continue
      item = None
      if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        kind = tuple
      if not (kind in _SCALARS or kind is tuple
              or (isinstance(kind, type) and issubclass(kind, enum.Enum))):
        raise ValueError(f"{c.__name__}.{field.name}: no flag type for {hints[field.name]}")
      if name in leaves:
        raise ValueError(f"--{name} would hold both {'.'.join(leaves[name].path)} and "
                         f"{'.'.join(path + (field.name,))}; rename one with metadata")
      if default is dataclasses.MISSING:
        default = None
      default = defaults.pop(name, opts.get("default", default))
      required = opts.get("required", False)
      flag = _new_flag(name, kind, item, default, opts.get("help", helps.get(field.name, "")),
                       opts)
      holder = flags.DEFINE_flag(flag, flag_values, module_name=f"{c.__module__}.{c.__name__}",
                                 required=required)
      flag_values.register_key_flag_for_module(module_name, flag)
      leaves[name] = _Leaf(path + (field.name,), kind, item, holder)

  walk(cls, None, ())
  if defaults:
    raise ValueError(f"defaults for flags {cls.__name__} does not define: {sorted(defaults)}")
  return ConfigFlags(cls, leaves)
