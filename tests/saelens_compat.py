"""Imports SAELens (sae-lens 6.54.12) next to TransformerLens 4.3, for tests and benchmarks.

Why: sae-lens 6.54.12, the only version in the registry, pins transformer-lens<4, and only
transformer-lens 4.3.0 is installable here. TransformerLens 4 removed `HookedTransformer` and a
few other modules that SAELens imports at module level, so `import sae_lens` fails although its
SAE classes (`StandardSAE`, `TopKSAE`, `JumpReLUSAE`, `GatedSAE`, their training variants,
`save_model`, `load_from_disk`) are plain torch and run unchanged. It is installed with
`pip install --no-deps -r requirements-saelens.txt` (the Makefile's env-dev step).

What is stubbed: while `sae_lens` is imported, a meta-path finder answers every
`transformer_lens.*` module that no real finder can locate with an empty stub module whose
attributes are fresh empty classes. With TransformerLens 4.3 that is `HookedTransformer`,
`utils`, `components`, `components.mlps`, `components.mlps.can_be_used_as_mlp` — model-side
code only (SAELens's `HookedSAETransformer`, `load_model`, evals and training runners, which need a
TransformerLens 3 model and are not used here). The one name the SAE classes really need,
`transformer_lens.HookedTransformer.HookedRootModule` (the base class of `SAE`), is aliased to
TransformerLens 4.3's own `transformer_lens.HookedRootModule`; `transformer_lens.hook_points`
exists in 4.3 and is the real one. Modules that exist are never replaced. The finder is removed
once `sae_lens` has been imported (the stub modules stay in `sys.modules`, where SAELens's
modules reference them).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

# Exactly the modules the shim may create (TransformerLens 4.3 lacks them); anything else missing
# under transformer_lens stays an ImportError, so a new gap shows up instead of being papered over.
STUBBED = ("transformer_lens.HookedTransformer", "transformer_lens.utils",
           "transformer_lens.components", "transformer_lens.components.mlps",
           "transformer_lens.components.mlps.can_be_used_as_mlp")


class _Stub(types.ModuleType):
  """A module that returns a new empty class for any attribute (names imported from it)."""

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    cls = type(name, (), {"__module__": self.__name__})
    setattr(self, name, cls)
    return cls


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Serves `_Stub`s for the STUBBED modules that no other finder can locate."""

  def find_spec(self, fullname, path, target=None):
    if fullname not in STUBBED:
      return None
    for finder in sys.meta_path:
      if finder is self or not hasattr(finder, "find_spec"):
        continue
      try:
        if finder.find_spec(fullname, path, target) is not None:
          return None  # the real module exists: use it
      except (ImportError, ValueError, AttributeError):
        continue
    return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

  def create_module(self, spec):
    module = _Stub(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    if module.__name__ == "transformer_lens.HookedTransformer":
      import transformer_lens
      module.HookedRootModule = transformer_lens.HookedRootModule


def import_sae_lens() -> types.ModuleType:
  """Imports and returns `sae_lens`, stubbing TransformerLens 3 modules that 4.3 lacks.

  Returns:
    The `sae_lens` module.

  Raises:
    ImportError: sae_lens (or torch / transformer_lens) is not installed, or it needs a
      TransformerLens module beyond STUBBED.
  """
  if "sae_lens" in sys.modules:
    return sys.modules["sae_lens"]
  importlib.import_module("transformer_lens")
  finder = _Finder()
  sys.meta_path.insert(0, finder)
  try:
    return importlib.import_module("sae_lens")
  finally:
    sys.meta_path.remove(finder)
