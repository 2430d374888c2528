"""The precision policy (`interp.precision`): bfloat16 compute with float32 state and outputs.

Measured on CPU (XLA runs bfloat16 there too, with every matrix product summed in float32):
Gemma 3 270M in bfloat16 against float32 on held-out corpus windows, exact resume of a bfloat16
run, 1 device against 8, the `--precision` flag, and the bytes the policy saves.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.data import sources, tokenized
from interp.models import config as model_config
from interp.models import generate, sharded, transformer
from interp.models import zoo
from interp.parallel import mesh as mesh_lib
from interp.precision import BFLOAT16, FLOAT32, Precision, as_precision
from interp.train import lm
from interp.train.checkpoint import CheckpointConfig
from tests import multiprocess_forward as worker

needs8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


# ----- The policy object and its flag.

def test_parse_resolves_auto_by_backend():
  assert Precision.parse("float32") == FLOAT32 and Precision.parse("bfloat16") == BFLOAT16
  assert Precision.parse("auto", backend="cpu") == FLOAT32
  assert Precision.parse("auto", backend="gpu") == BFLOAT16
  assert Precision.parse("auto", backend="tpu") == BFLOAT16
  assert Precision.parse("auto") == FLOAT32  # these tests run on CPU
  assert (BFLOAT16.params, BFLOAT16.compute, BFLOAT16.output) == ("float32", "bfloat16", "float32")
  assert as_precision(None) == FLOAT32 and as_precision("bfloat16") == BFLOAT16


@pytest.mark.parametrize("text", ["fp16", "bf16", "", "Float32", None])
def test_parse_refuses_other_values_naming_the_flag(text):
  with pytest.raises(ValueError) as e:
    Precision.parse(text, flag="precision")
  assert str(e.value) == f"--precision={text!r} is not one of: auto, float32, bfloat16"


def test_train_config_refuses_a_bad_precision():
  with pytest.raises(ValueError, match=r"^--precision='half' is not one of: auto, float32, "):
    lm.TrainLMConfig.make(model=model_config.attn_only(vocab_size=256), precision="half")


def test_cast_compute_touches_only_floating_leaves():
  tree = {"w": jnp.ones((2, 3)), "ids": jnp.arange(3), "mask": jnp.ones(2, bool)}
  out = BFLOAT16.cast_compute(tree)
  assert out["w"].dtype == jnp.bfloat16
  assert out["ids"].dtype == tree["ids"].dtype and out["mask"].dtype == jnp.bool_
  assert FLOAT32.cast_compute(tree)["w"] is tree["w"]


def test_matmul_sums_in_float32_and_rounds_once():
  """1 + 256 terms of 2**-9: float32 sums give 1.5 (a bfloat16 number), whereas adding them one
  at a time to a bfloat16 total (8-bit mantissa) would stay at 1.0."""
  a = jnp.concatenate([jnp.ones(1), jnp.full(256, 2.0 ** -9)]).astype(jnp.bfloat16)
  b = jnp.ones((257, 1), jnp.bfloat16)
  out = BFLOAT16.matmul(a[None], b)
  assert out.dtype == jnp.bfloat16 and float(out[0, 0]) == 1.5
  assert BFLOAT16.matmul(a[None], b, output=True).dtype == jnp.float32


# ----- The transformer under the policy.

def _toy():
  cfg = model_config.attn_only(vocab_size=64, n_layers=2, d_model=32, n_heads=4, n_ctx=64,
                               d_mlp=64, norm="layernorm", positional="learned")
  return cfg, transformer.init_params(cfg, jax.random.key(0))


def test_bf16_cache_is_half_the_bytes_and_logits_stay_float32():
  cfg, params = _toy()
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, cfg.vocab_size)
  # hook_result is a head-batched product (bphe,hed->bphd), which XLA's CPU dot cannot take as
  # bfloat16 -> float32.
  names = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post", "blocks.1.attn.hook_z",
           "blocks.1.attn.hook_result"]
  run = jax.jit(transformer.run_with_cache, static_argnums=(0, 3, 5))
  l32, c32 = run(cfg, params, tokens, tuple(names), None, "float32")
  l16, c16 = run(cfg, params, tokens, tuple(names), None, "bfloat16")
  assert l16.dtype == l32.dtype == jnp.float32
  assert {c.dtype for c in c16.values()} == {jnp.dtype(jnp.bfloat16)}
  assert sum(c.nbytes for c in c16.values()) * 2 == sum(c.nbytes for c in c32.values())
  # The float32 master parameters are what the caller still holds.
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
  assert float(jnp.abs(l16 - l32).max()) < 0.05 * float(jnp.abs(l32).max())
  # Parameters as the bfloat16 forward reads them: half the bytes, norm gains kept float32.
  cast = transformer.cast_params(params, BFLOAT16)
  assert cast["blocks_0"]["ln1"]["w"].dtype == jnp.float32
  matrices = [p for p in jax.tree.leaves(cast) if p.ndim > 1]
  assert {p.dtype for p in matrices} == {jnp.dtype(jnp.bfloat16)}
  # Greedy decoding takes the policy too, and agrees on this prompt.
  out16 = generate.greedy(cfg, params, np.asarray(tokens[0, :4]), 4, precision="bfloat16")
  assert out16.shape == (8,) and (out16[:4] == np.asarray(tokens[0, :4])).all()


# ----- Gemma 3 270M: bfloat16 against float32 on held-out text.

N_WINDOWS, WINDOW = 4, 64  # 256 tokens of the Python reference, spread over the corpus
# Measured on CPU (jax 0.10.2): top-1 agreement 0.988 (253 of 256), largest |logit diff| 0.51
# on logits up to 33.4, and where the two disagree float32 ranks bf16's choice at most 0.044
# below its own top one: near ties. Why the bounds: bfloat16 keeps 8 mantissa bits (a relative
# step of 2**-8, 0.4%), and rounding the residual stream after each of 18 layers adds up to a
# few tenths of a logit at Gemma's scale (0.85 with XLA's own CPU widening of the products), so
# 1.5 leaves about 2-3x headroom for another CPU or XLA version; the top-1 token may change only
# at such near ties, so at least 0.95 must agree (12 of 256 may differ) and a changed token must
# sit within 0.25 of float32's best.
MIN_AGREEMENT, MAX_LOGIT_DIFF, MAX_TIE_GAP = 0.95, 1.5, 0.25


@functools.partial(jax.jit, static_argnums=(0, 3))
def _gemma_logits(cfg, params, tokens, precision):
  return transformer.forward(cfg, params, tokens, precision=precision)[0]


def test_gemma_bf16_agrees_with_float32(gemma, gemma_tokenizer):
  cfg, params = gemma
  text = tokenized.corpus_text("corpus")
  rows = []
  for i in range(N_WINDOWS):
    start = (2 * i + 1) * len(text) // (2 * N_WINDOWS)
    ids = gemma_tokenizer.encode(text[start:start + 8 * WINDOW])[:WINDOW]  # <bos> first
    assert len(ids) == WINDOW
    rows.append(ids)
  tokens = jnp.asarray(np.array(rows, np.int32))
  f32 = np.asarray(_gemma_logits(cfg, params, tokens, FLOAT32))
  bf16 = np.asarray(_gemma_logits(cfg, params, tokens, BFLOAT16))
  agreement = float((f32.argmax(-1) == bf16.argmax(-1)).mean())
  diff = float(np.abs(f32 - bf16).max())
  # Where they disagree, bfloat16's choice is close to float32's own top logit.
  top = f32.max(-1)
  chosen = np.take_along_axis(f32, bf16.argmax(-1)[..., None], -1)[..., 0]
  worst_gap = float((top - chosen).max())
  print(f"\nGemma 3 270M bf16 vs float32 on {N_WINDOWS} x {WINDOW} corpus tokens: top-1 agreement "
        f"{agreement:.3f}, max |logit diff| {diff:.3f} (max |logit| {np.abs(f32).max():.1f}), "
        f"largest float32 gap to the bf16 choice {worst_gap:.3f}")
  assert agreement >= MIN_AGREEMENT
  assert diff <= MAX_LOGIT_DIFF
  assert worst_gap <= MAX_TIE_GAP


# ----- Training in bfloat16.

def _tiny_config(workdir, **overrides):
  model = model_config.attn_only(n_layers=1, d_model=32, n_heads=2, n_ctx=16, vocab_size=256,
                                 norm="layernorm", d_mlp=64)
  kw = dict(workdir=str(workdir), model=model, batch_size=8, num_steps=6, log_every=1,
            mesh="data:1", checkpoint=CheckpointConfig(every_steps=3), precision="bfloat16")
  kw.update(overrides)
  return lm.TrainLMConfig.make(**kw)


def test_bf16_run_resumes_bit_identically_with_float32_state(tmp_path):
  whole = lm.train_lm(_tiny_config(tmp_path / "whole"))
  lm.train_lm(_tiny_config(tmp_path / "split", num_steps=3))
  resumed = lm.train_lm(_tiny_config(tmp_path / "split"))
  assert resumed["final"] == whole["final"] and resumed["step"] == 6
  _, a, _ = zoo.read_latest(str(tmp_path / "whole" / "checkpoints"))
  _, b, _ = zoo.read_latest(str(tmp_path / "split" / "checkpoints"))
  for part in ("params", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, a[part], b[part])
  floats = [x.dtype for x in jax.tree.leaves((a["params"], a["opt_state"]))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and set(floats) == {np.dtype(np.float32)}
  print(f"\nbf16 run resumed at step 3 ends at loss {resumed['final']['loss']:.6f}, bit-identical")


@needs8
def test_bf16_on_one_device_matches_eight():
  """The bfloat16 forward and a bfloat16 training run, on 1 device and on data:4 x model:2."""
  tokens = worker.tokens()

  def logits(spec, devices=None):
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(spec), devices)
    params, shardings = sharded.init(worker.CFG, jax.random.key(0), mesh)
    fwd = sharded.make_forward(worker.CFG, mesh, shardings, capture=["blocks.1.hook_resid_mid"],
                               precision="bfloat16")
    out, cache = fwd(params, mesh_lib.global_batch(mesh, tokens))
    assert cache["blocks.1.hook_resid_mid"].dtype == jnp.bfloat16
    return np.asarray(out)

  one, eight = logits("data:1", jax.devices()[:1]), logits("data:4,model:2")
  diff = float(np.abs(one - eight).max())
  # Splitting a contraction over `model` reorders float32 partial sums, which can move a value
  # across a bfloat16 rounding boundary: one bfloat16 step (2**-8 relative) of the activations.
  assert diff <= 2 ** -7 * float(np.abs(one).max()), diff
  losses = {spec: _first_step_loss(_tiny_config("", mesh=spec))
            for spec in ("data:1", "data:4,model:2")}
  print(f"\nbf16 1 vs 8 devices: max |logit diff| {diff:.2e} (max |logit| "
        f"{np.abs(one).max():.2f}); first-step loss {losses['data:1']:.6f} vs "
        f"{losses['data:4,model:2']:.6f}")
  assert abs(losses["data:1"] - losses["data:4,model:2"]) <= 1e-3


def _first_step_loss(config) -> float:
  """The loss of the trainer's own compiled bf16 step on batch 0 (no run folder, no session)."""
  mesh = mesh_lib.make_mesh(config.run.mesh_config)
  programs = lm._checked_programs(config, mesh)  # pylint: disable=protected-access
  source = sources.make_source(config.data, config.model.vocab_size)
  batch = sources.make_batches(source, mesh, 0, config.batch_size, config.model.n_ctx + 1)(0)
  _, metrics = programs.step(programs.init(jax.random.key(0)), batch)
  return float(metrics["loss"])


# ----- What the policy saves, from the compiler (nothing runs).

def test_compile_only_reports_fewer_temporary_bytes_in_bf16():
  """Per-device bytes of the train step: the float32 state is the same size, activations kept
  for the backward pass shrink. Activation-heavy shapes (long context, small weights), so the
  bfloat16 copy of the parameters does not dominate."""
  model = model_config.attn_only(n_layers=1, d_model=64, n_heads=4, n_ctx=128, vocab_size=256,
                                 norm="layernorm", d_mlp=256)
  reports = {p: lm.compile_only(_tiny_config("", model=model, precision=p, mesh="data:1"))
             for p in ("float32", "bfloat16")}
  f32, bf16 = reports["float32"], reports["bfloat16"]
  print("\n" + "\n".join(f"{p}: parameters {r.parameters}, optimizer {r.optimizer_state}, "
                         f"temporaries {r.temporaries}, total {r.total}"
                         for p, r in reports.items()))
  assert bf16.precision == "bfloat16" and "precision: bfloat16 compute" in bf16.format()
  assert (bf16.parameters, bf16.optimizer_state) == (f32.parameters, f32.optimizer_state)
  assert bf16.temporaries < f32.temporaries
  assert dataclasses.replace(bf16, precision="").format().count("precision") == 0
