"""The model zoo: a model named by one spec string, parsed once at the door, loaded one way.

Vocabulary:
  spec    what a `--model` (or `--source`) flag names, as `KIND` or `KIND:PATH`:
            gemma3_270m   Gemma 3 270M from the pip-installed GGUF (`gguf_loader`), with its
                          SentencePiece tokenizer
            gpt2:FOLDER   GPT-2 from a local Hugging Face folder (safetensors, `hf_loader`),
                          with its BPE tokenizer files
            toy:RUN       the newest checkpoint of a `train_lm` run folder (byte tokens, no
                          tokenizer object)
  Model   the loaded model on the host: its name (the spec's text), `TransformerConfig`, plain
          parameter dict and tokenizer (None for byte-level toys)

`ModelSpec.parse` checks the text (and, for an experiment that needs a tokenizer or a kind of
model, the kinds it accepts) and raises a ValueError naming the flag; `config` reads only the
architecture, `load` the weights too. Binaries parse once and hand the spec (or the loaded
`Model`) down, so nothing parses or loads a model twice.
"""

from __future__ import annotations

import dataclasses
import enum
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from interp import jsonio
from interp.models import gguf_loader, hf_loader, tokenizer_bpe, tokenizer_spm
from interp.models.config import TransformerConfig
from interp.parallel import checksum


class ModelKind(str, enum.Enum):
  GEMMA3_270M = "gemma3_270m"
  GPT2 = "gpt2"
  TOY = "toy"


_WITH_PATH = {ModelKind.GPT2: ":FOLDER", ModelKind.TOY: ":RUN"}  # the kinds that take a folder


def _spelled(kinds) -> str:
  return " | ".join(k.value + _WITH_PATH.get(k, "") for k in kinds)


SPECS = _spelled(ModelKind)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A parsed model spec: the kind and, for gpt2 and toy, the folder."""

  kind: ModelKind
  path: str = ""

  @classmethod
  def parse(cls, text: str, flag: str = "model",
            kinds: tuple[ModelKind, ...] = tuple(ModelKind)) -> "ModelSpec":
    """The spec `text` names; a ValueError naming `--flag` when it is malformed.

    Args:
      text: `gemma3_270m`, `gpt2:FOLDER` or `toy:RUN`.
      flag: the flag the text came from, for the error message.
      kinds: the kinds the caller can use (e.g. IOI needs a tokenizer, so not toy).
    """
    name, sep, path = str(text).partition(":")
    allowed = _spelled(kinds)
    try:
      kind = ModelKind(name)
    except ValueError:
      raise ValueError(f"--{flag}={text!r}: expected {allowed}") from None
    if kind not in kinds:
      raise ValueError(f"--{flag}={text!r}: this experiment takes {allowed}")
    if kind in _WITH_PATH and not path:
      raise ValueError(f"--{flag}={text!r}: give the folder, e.g. {kind.value}:/path/to/run")
    if kind not in _WITH_PATH and sep:
      raise ValueError(f"--{flag}={text!r}: {kind.value} takes no folder")
    return cls(kind, path)

  def __str__(self) -> str:
    return f"{self.kind.value}:{self.path}" if self.path else self.kind.value


@dataclasses.dataclass
class Model:
  """A loaded model on the host."""

  name: str
  cfg: TransformerConfig
  params: dict
  tokenizer: object | None


def read_latest(directory: str) -> tuple[int, dict, dict]:
  """The newest checkpoint in `directory` as host numpy arrays, with no model code needed.

  The parameters are verified against the checksums saved with them; a step whose files
  changed on disk is skipped (with a warning) for the previous one.

  Returns:
    (step, state as nested dicts {"step", "params", "opt_state"} of np.ndarrays, data position).
  Raises:
    FileNotFoundError: there is no checkpoint.
    CorruptCheckpointError: not even the oldest step verifies.
  """
  manager = ocp.CheckpointManager(
      os.path.abspath(directory),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                     "checksums": ocp.JsonCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0, create=False))
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    for step in steps:
      path = os.path.join(os.path.abspath(directory), str(step))
      tree = manager.item_metadata(step)["state"].tree
      as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
      items = {"state": ocp.args.PyTreeRestore(restore_args=as_numpy),
               "data": ocp.args.JsonRestore()}
      verified = os.path.isdir(os.path.join(path, "checksums"))
      if verified:
        items["checksums"] = ocp.args.JsonRestore()
      restored = manager.restore(step, args=ocp.args.Composite(**items))
      if not verified:  # written before checksums were recorded
        return step, restored.state, restored.data
      try:
        checksum.verify_restored(path, restored.state, restored.checksums)
        return step, restored.state, restored.data
      except checksum.CorruptCheckpointError as e:
        if step == steps[-1]:
          raise
        logging.warning("%s; reading the previous checkpoint", e)
  finally:
    manager.close()


def config(spec: ModelSpec) -> TransformerConfig:
  """The architecture `spec` names, without loading its weights."""
  if spec.kind == ModelKind.GEMMA3_270M:
    return gguf_loader.gemma3_config(gguf_loader.read_gguf(gguf_loader.default_gemma_path()))
  if spec.kind == ModelKind.GPT2:
    return hf_loader.gpt2_config(jsonio.read_json(os.path.join(spec.path, "config.json")))
  return TransformerConfig.from_dict(jsonio.read_json(os.path.join(spec.path, "model_config.json")))


def load(spec: ModelSpec) -> Model:
  """The model `spec` names, on the host."""
  if spec.kind == ModelKind.GEMMA3_270M:
    path = gguf_loader.default_gemma_path()
    cfg, params = gguf_loader.load_gemma3_gguf(path)
    return Model(str(spec), cfg, params, tokenizer_spm.SPMTokenizer.from_gguf(path))
  if spec.kind == ModelKind.GPT2:
    cfg, params = hf_loader.load_gpt2(spec.path)
    return Model(str(spec), cfg, params, tokenizer_bpe.BPETokenizer.from_folder(spec.path))
  _, state, _ = read_latest(os.path.join(spec.path, "checkpoints"))
  return Model(str(spec), config(spec), state["params"], None)
