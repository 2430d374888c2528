"""The precision policy in every dictionary (`interp.precision`): each SAE rule family
recovers the planted features in bfloat16 as well as in float32 on the same seed; a transcoder
and a CLT learn in bfloat16 as they do in float32; parameters and Adam's moments stay float32;
bfloat16 compiles to fewer temporary bytes; results and reports name the precision."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.parallel import mesh as mesh_lib
from interp.precision import BFLOAT16, FLOAT32
from interp.sae import synthetic
from interp.sae import train as sae_train
from interp.sae.config import SAEConfig
from tests.test_sae import FEATURES, LR, OPT, RULES

# Every rule with test_sae's settings (d_in 64, 512 latents, 256 planted directions), on fewer
# steps: the comparison is bf16 against float32 at the same step, not the final quality.
STEPS = 100
BATCH = 256
# bf16 may lose at most this much of the mean (over the 256 planted directions) best cosine
# with a decoder row, against float32 from the same init and batches. Rounding the matmul
# operands to 8 mantissa bits perturbs each step by ~2^-9 relative; over the run that moves the
# learned directions by thousandths. Measured (float32 -> bf16): batchtopk 0.778 -> 0.779, gated
# 0.801 -> 0.793, jumprelu 0.712 -> 0.711, matryoshka 0.764 -> 0.758, relu 0.893 -> 0.893,
# relu_weighted 0.923 -> 0.924, topk 0.937 -> 0.943: at most 0.008 lost, so 0.02 leaves room for
# other machines' rounding without letting a broken bf16 path (cosines ~0.3 at init) through.
MARGIN = 0.02


def _one_device():
  return mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))


def _recover(rule: str, precision):
  """(mean max cosine, final metrics, final state) of `rule` after STEPS steps in `precision`."""
  cfg = SAEConfig(d_in=64, d_sae=512, **RULES[rule])
  optim = dataclasses.replace(OPT, lr=LR.get(rule, 1e-2))
  mesh = _one_device()
  progs = sae_train.programs(cfg, optim, mesh, 1024, precision)
  store = synthetic.SyntheticStore(FEATURES, BATCH, mesh)
  state = progs.init(jax.random.key(0), store.sample(1024))
  for step in range(STEPS):
    state, metrics = progs.step(state, store.batch(step))
  cos = float(synthetic.max_cosine(FEATURES.directions(), state.params["W_dec"]).mean())
  return cos, jax.device_get(metrics), state


# Every rule family whose bf16 path differs: the L1 family (relu_weighted only reweights the
# penalty), TopK, BatchTopK (its threshold; Matryoshka is BatchTopK with prefix losses, which
# test_sae covers), JumpReLU's STE and Gated's gate. 35 s -> 25 s of the suite.
BF16_RULES = ("batchtopk", "gated", "jumprelu", "relu", "topk")


@pytest.mark.parametrize("rule", BF16_RULES)
def test_each_rule_family_recovers_planted_features_in_bf16(rule):
  cos32, m32, _ = _recover(rule, FLOAT32)
  cos16, m16, state = _recover(rule, BFLOAT16)
  print(f"\n{rule}: mean max cosine float32 {cos32:.4f} bf16 {cos16:.4f}; "
        f"fvu {float(m32['fvu']):.4f} / {float(m16['fvu']):.4f}")
  assert cos16 >= cos32 - MARGIN, (rule, cos32, cos16)
  assert abs(float(m16["fvu"]) - float(m32["fvu"])) <= 0.05, (m32, m16)
  assert cos16 != cos32  # it really computed in bf16
  for leaf in jax.tree.leaves((state.params, state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, leaf.dtype
  assert all(v.dtype == np.float32 for v in jax.tree.leaves(m16))


# ----- Transcoders and CLTs: a synthetic two-layer "MLP" per layer to replace.

def _mlp_pairs(n=2048, layers=2, d=16, hidden=32):
  """x_in [n, L, d] Gaussian; x_out[l] = relu(x_in[l] A_l) B_l, a sparse-ish MLP per layer."""
  ka, kb, kx = jax.random.split(jax.random.key(7), 3)
  a = jax.random.normal(ka, (layers, d, hidden)) / np.sqrt(d)
  b = jax.random.normal(kb, (layers, hidden, d)) / np.sqrt(hidden)
  x_in = jax.random.normal(kx, (n, layers, d))
  x_out = jnp.einsum("nlh,lhd->nld", jax.nn.relu(jnp.einsum("nld,ldh->nlh", x_in, a) - 0.5), b)
  return np.asarray(x_in), np.asarray(x_out)


@pytest.mark.parametrize("kind,activation", [("plt", "topk"), ("clt", "jumprelu")])
def test_transcoder_learns_in_bf16_as_in_float32(kind, activation):
  """The loss falls to under half its first value in bf16, and every logged loss is within 2%
  of float32's from the same init and batches; the state stays float32; results name it."""
  from interp.sae import transcoder as tc
  from interp.sae import transcoder_train as tt
  x_in, x_out = _mlp_pairs()
  cfg = tc.TranscoderConfig(kind=kind, n_layers=2, d_model=16, d_latent=64,
                            activation=activation, k=4, l0_coeff=0.01)
  mesh = _one_device()
  runs = {}
  for precision in ("float32", "bfloat16"):
    config = tt.TrainTranscoderConfig.make(cfg, batch_size=128, num_steps=60, log_every=20,
                                           init_sample=256, lr=1e-2, precision=precision)
    runs[precision] = tt.train_transcoder(config, (x_in, x_out), mesh)
  (r32, _), (r16, p16) = runs["float32"], runs["bfloat16"]
  l32 = np.array([h["loss"] for h in r32["history"]])
  l16 = np.array([h["loss"] for h in r16["history"]])
  print(f"\n{kind}/{activation} losses float32 {np.round(l32, 4)} bf16 {np.round(l16, 4)}")
  assert (r32["precision"], r16["precision"]) == ("float32", "bfloat16")
  assert l16[-1] < 0.5 * l16[0], l16
  np.testing.assert_allclose(l16, l32, rtol=0.02)
  assert not np.array_equal(l16, l32)  # it really computed in bf16
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(p16))


# ----- What bf16 saves, from the compiler (nothing runs), and what the report says.

def test_compile_only_reports_fewer_activation_bytes_in_bf16():
  """Per-device bytes of the SAE step on a small plan: the float32 state is the same size, the
  activations kept for the backward pass shrink (ReLU: the [batch, latents] codes the decoder
  gradient reads are bf16; TopK: the k values and gathered rows). Measured: ReLU 38.3 -> 29.8
  MB, TopK 9.3 -> 5.2 MB. CPU temporaries do not show it (they grow: CPUs widen bf16 operands
  to float32 copies, `interp.train.compile_only`), so they are reported, not asserted."""
  for activation, shrink in (("relu", 0.85), ("topk", 0.6)):
    reports = {}
    for precision in ("float32", "bfloat16"):
      config = sae_train.TrainSAEConfig.make(
          sae=SAEConfig(d_in=64, d_sae=4096, activation=activation), batch_size=1024,
          mesh="data:1,model:1", precision=precision)
      reports[precision] = sae_train.compile_only(config)
    f32, bf16 = reports["float32"], reports["bfloat16"]
    print("\n" + "\n".join(f"{activation} {p}: parameters {r.parameters}, optimizer "
                           f"{r.optimizer_state}, temporaries {r.temporaries}, kept for backward "
                           f"{r.kept_for_backward}, total {r.total}" for p, r in reports.items()))
    assert bf16.precision == "bfloat16" and "precision: bfloat16 compute" in bf16.format()
    assert f32.precision == "float32" and "kept for bwd" in bf16.format()
    assert (bf16.parameters, bf16.optimizer_state) == (f32.parameters, f32.optimizer_state)
    assert 0 < bf16.kept_for_backward < shrink * f32.kept_for_backward, (activation, reports)

def test_sae_run_records_its_precision_and_refuses_a_bad_one(tmp_path):
  """results.json names the resolved policy; `--precision=fp16` fails at the door, naming it."""
  import json
  cfg = SAEConfig(d_in=64, d_sae=128, activation="topk", k=4)
  mesh = _one_device()
  config = sae_train.TrainSAEConfig.make(workdir=str(tmp_path / "run"), sae=cfg, batch_size=64,
                                         num_steps=2, log_every=1, init_sample=64,
                                         mesh="data:1,model:1", precision="bfloat16")
  results, params = sae_train.train_sae(config, synthetic.SyntheticStore(FEATURES, 64, mesh))
  assert results["precision"] == "bfloat16" and results["status"] == "completed"
  assert json.loads((tmp_path / "run" / "results.json").read_text())["precision"] == "bfloat16"
  assert all(v.dtype in (jnp.float32, jnp.int32) for v in jax.tree.leaves(params))
  with pytest.raises(ValueError, match=r"--precision='fp16' is not one of: auto, float32"):
    sae_train.TrainSAEConfig.make(sae=cfg, precision="fp16")
