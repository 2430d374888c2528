"""Transcoders (PLT, skip, CLT): shapes, the replaced forward, training, sharding, CLT vs PLT.

The trained model is a 4-layer byte-level LM (d_model 32, GELU MLPs of width 128, LayerNorm)
trained for 300 steps on the bundled corpus; transcoders read 8192 of its tokens.
"""

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.data import sources
from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks
from interp.parallel import mesh as mesh_lib
from interp.sae import transcoder as tc
from interp.sae import transcoder_eval as te
from interp.sae import transcoder_train as tt
from interp.train import lm
from interp.train import session as session_lib
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig

LM = TransformerConfig(vocab_size=256, d_model=32, n_layers=4, n_heads=4, d_head=8, n_ctx=32,
                       d_mlp=128)
OPT = OptimizerConfig(lr=3e-3, warmup_steps=20, grad_clip=0.0)


def _capture(cfg, params, tokens):
  ins, outs = tc.sites(cfg)
  _, cache = jax.jit(lambda p, t: transformer.forward(cfg, p, t, Hooks(capture=ins + outs)))(
      params, tokens)
  stack = lambda names: np.stack([np.asarray(cache[s]) for s in names], 2).reshape(
      -1, cfg.n_layers, cfg.d_model)
  return stack(ins), stack(outs)


@pytest.fixture(scope="module")
def model():
  """(params, x_in, x_out [8192, 4, 32], eval tokens [128, 32]) of the briefly trained LM."""
  source = sources.make_source("corpus", 256)
  optimizer = OptimizerConfig(lr=1e-2, warmup_steps=10).build()
  init = state_lib.init_fn(lambda k: transformer.init_params(LM, k), optimizer)
  state = jax.jit(init)(jax.random.key(0))
  step = jax.jit(state_lib.make_step(lm.lm_loss(LM, None), optimizer))
  for i in range(300):
    state, _ = step(state, jnp.asarray(source.batch(0, i, 32, 33)))
  x_in, x_out = _capture(LM, state.params, jnp.asarray(source.batch(1, 0, 256, 32)))
  return state.params, x_in, x_out, jnp.asarray(source.batch(2, 0, 128, 32))


def _config(kind, activation="topk", **kw):
  return tc.TranscoderConfig(kind=kind, n_layers=LM.n_layers, d_model=LM.d_model, d_latent=32,
                             activation=activation, k=2, **kw)


def _paths(cfg, params, x):
  """Every way to encode and decode x, in one program."""
  acts = tc.encode(cfg, params, x)
  folded = tc.fold_scales(cfg, params)
  return {"pre": tc.encode_pre(cfg, params, x), "acts": acts,
          "out": tc.decode(cfg, params, acts, x),
          "layer_acts": jnp.stack([tc.encode_layer(cfg, params, x[..., l, :], l)
                                   for l in range(cfg.n_layers)], -2),
          "layer_out": jnp.stack([tc.decode_layer(cfg, params, acts, l, x[..., l, :])
                                  for l in range(cfg.n_layers)], -2),
          "folded_out": tc.decode(cfg, folded, tc.encode(cfg, folded, x), x)}


def test_shapes_and_layer_decode():
  key = jax.random.key(0)
  x = jax.random.normal(key, (5, 3, 4, 16))
  for kind, act in (("plt", "topk"), ("skip", "jumprelu"), ("clt", "topk"), ("clt", "jumprelu")):
    cfg = tc.TranscoderConfig(kind=kind, n_layers=4, d_model=16, d_latent=24, activation=act,
                              k=3)
    params = tc.init(cfg, key, x.reshape(-1, 4, 16), 2 * x.reshape(-1, 4, 16))
    params = dict(params, b_enc=params["b_enc"] + 0.3)  # jumprelu: some latents fire
    if kind == "skip":
      params["W_skip"] = 0.1 * jax.random.normal(key, params["W_skip"].shape)
    dec = (4, 24, 4, 16) if kind == "clt" else (4, 24, 16)
    assert params["W_dec"].shape == dec and params["W_enc"].shape == (4, 16, 24)
    assert ("W_skip" in params) == (kind == "skip")
    r = jax.device_get(_paths(cfg, params, x))
    assert r["pre"].shape == r["acts"].shape == (5, 3, 4, 24) and r["out"].shape == x.shape
    fired = (r["acts"] > 0).sum(-1)
    assert fired.max() <= 3 if act == "topk" else fired.max() > 0
    # Layer by layer (the replaced forward's path) agrees with all layers at once, and
    # folding the scales into the weights changes nothing downstream.
    np.testing.assert_allclose(r["layer_acts"], r["acts"], atol=1e-5)
    np.testing.assert_allclose(r["layer_out"], r["out"], atol=1e-5)
    np.testing.assert_allclose(r["folded_out"], r["out"], rtol=1e-4, atol=1e-4)
    axes = tc.param_axes(cfg, params)
    assert all(len(axes[k]) == params[k].ndim for k in params) and "latent" in axes["W_dec"]
  with pytest.raises(ValueError, match="--kind='mlt' is not one of"):
    tc.TranscoderConfig(kind="mlt")


def test_topk_keeps_the_k_largest_without_a_sort():
  """The per-layer TopK rule keeps exactly what a sort would, and on CPU compiles to XLA's TopK
  (a slice of top_k's values became a full sort there, 26x slower at the graph entry's shape)."""
  cfg = tc.TranscoderConfig(kind="plt", n_layers=3, d_model=8, d_latent=64, k=4)
  pre = jax.random.normal(jax.random.key(1), (16, 3, 64))
  f = jax.jit(lambda p: tc.activate(cfg, {}, p))
  cut = np.sort(np.asarray(pre), -1)[..., -4:-3]
  np.testing.assert_array_equal(np.asarray(f(pre)), np.where(pre >= cut, np.maximum(pre, 0), 0))
  if jax.default_backend() == "cpu":
    assert not re.search(r"\bsort\(", f.lower(pre).compile().as_text())


def _mlp_as_transcoder(model_cfg, params, kind):
  """A transcoder that computes each ReLU MLP exactly: n = d_mlp, W_enc = W_in, W_dec = W_out."""
  L, m = model_cfg.n_layers, model_cfg.d_mlp
  cfg = tc.TranscoderConfig(kind=kind, n_layers=L, d_model=model_cfg.d_model, d_latent=m,
                            activation="jumprelu")
  mlp = [params[f"blocks_{l}"]["mlp"] for l in range(L)]
  t = tc.init(cfg, jax.random.key(0))
  t.update(W_enc=jnp.stack([p["W_in"] for p in mlp]), b_enc=jnp.stack([p["b_in"] for p in mlp]),
           b_dec=jnp.stack([p["b_out"] for p in mlp]),
           jump_threshold=jnp.full((L, m), 2e-35))  # JumpReLU is ReLU
  w_out = jnp.stack([p["W_out"] for p in mlp])
  if kind == "clt":  # the MLPs on the diagonal, nothing across layers
    t["W_dec"] = jnp.einsum("lmd,lt->lmtd", w_out, jnp.eye(L))
  else:
    t["W_dec"] = w_out
  return cfg, t


def test_exact_mlp_replacement_gives_the_clean_loss():
  cfg = dataclasses.replace(LM, n_layers=2, d_mlp=64, act="relu", init_std=0.3)
  params = transformer.init_params(cfg, jax.random.key(1))
  tokens = jax.random.randint(jax.random.key(2), (4, 16), 0, 256)
  for kind in ("plt", "skip", "clt"):
    t_cfg, t = _mlp_as_transcoder(cfg, params, kind)
    r = te.replaced_loss(cfg, params, t_cfg, t, tokens)
    assert abs(r["ce_replaced"] - r["ce_clean"]) < 1e-4, r
    assert abs(r["ce_zero"] - r["ce_clean"]) > 0.05 and max(r["fvu"]) < 1e-6, r
  # A transcoder that is wrong at one layer is caught: the edits really replace the MLPs.
  t["W_dec"] = t["W_dec"].at[1].multiply(-1.0)
  wrong = te.replaced_loss(cfg, params, t_cfg, t, tokens)["ce_replaced"]
  assert abs(wrong - r["ce_clean"]) > 0.05


def test_clt_beats_plt_of_the_same_width(model):
  """Same latents per layer (32), same k (2 per layer and token), steps, data and seed: the
  CLT's replaced-model CE is lower. Both halve their training loss; CLT entries below the
  diagonal (target < source) stay exactly zero."""
  params, x_in, x_out, tokens = model
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))
  results = {}
  for kind in ("plt", "clt"):
    cfg = _config(kind)
    config = tt.TrainTranscoderConfig.make(cfg, batch_size=256, num_steps=600, log_every=100,
                                      init_sample=512, optimizer=OPT)
    run, t = tt.train_transcoder(config, (x_in, x_out), mesh)
    losses = [h["loss"] for h in run["history"]]
    assert losses[-1] < 0.5 * losses[0], (kind, losses)
    if kind == "clt":
      below = np.asarray(t["W_dec"]) * (1 - np.asarray(tc.clt_mask(4)))[:, None, :, None]
      assert np.count_nonzero(below) == 0
    results[kind] = te.replaced_loss(LM, params, cfg, t, tokens)
  plt_r, clt_r = results["plt"], results["clt"]
  print(f"\nCE clean {plt_r['ce_clean']:.4f}, MLPs zero-ablated {plt_r['ce_zero']:.4f}; "
        f"replaced by PLT {plt_r['ce_replaced']:.4f} (recovered {plt_r['ce_recovered']:.3f}, "
        f"FVU {np.round(plt_r['fvu'], 3)}), by CLT {clt_r['ce_replaced']:.4f} (recovered "
        f"{clt_r['ce_recovered']:.3f}, FVU {np.round(clt_r['fvu'], 3)})")
  assert clt_r["ce_replaced"] < plt_r["ce_replaced"]
  assert clt_r["ce_clean"] < clt_r["ce_replaced"] < clt_r["ce_zero"]
  assert np.mean(clt_r["fvu"][1:]) < np.mean(plt_r["fvu"][1:])  # the cross-layer gain
  assert all(abs(l0 - 2) < 0.1 for l0 in clt_r["l0"])


@pytest.mark.parametrize("kind,activation", [("skip", "topk"), ("clt", "jumprelu")])
def test_training_lowers_the_loss(model, kind, activation):
  _, x_in, x_out, _ = model
  cfg = _config(kind, activation, l0_coeff=0.01)
  config = tt.TrainTranscoderConfig.make(cfg, batch_size=256, num_steps=150, log_every=50,
                                    init_sample=512, optimizer=OPT)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))
  run, t = tt.train_transcoder(config, (x_in, x_out), mesh)
  losses = [h["loss"] for h in run["history"]]
  assert losses[-1] < 0.5 * losses[0], losses
  if kind == "clt":
    below = np.asarray(t["W_dec"]) * (1 - np.asarray(tc.clt_mask(4)))[:, None, :, None]
    assert np.count_nonzero(below) == 0
    assert 0 < run["final"]["l0"] < 32


def test_sharded_training_matches_one_device(model):
  """A CLT with JumpReLU (masked decoder, decoder-norm penalty, straight-through threshold) on
  data:2,model:4 (latents over 4 devices) == on one device, for 4 steps."""
  _, x_in, x_out, _ = model
  cfg = _config("clt", "jumprelu")
  config = tt.TrainTranscoderConfig.make(cfg, batch_size=64, num_steps=4, log_every=1,
                                    init_sample=128, optimizer=OPT)
  out = {}
  for spec in ("data:1,model:1", "data:2,model:4"):
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(spec))
    run, params = tt.train_transcoder(config, (x_in[:1024], x_out[:1024]), mesh)
    out[spec] = ([h["loss"] for h in run["history"]], jax.device_get(params))
  (loss_1, p_1), (loss_8, p_8) = out.values()
  np.testing.assert_allclose(loss_1, loss_8, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p_1, p_8)


def test_model_store_and_resume(model, tmp_path):
  """Paired rows from the model match its forward; a run resumed from its checkpoint ends
  where an uninterrupted one does."""
  params, _, _, _ = model
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:2,model:1"))
  store = tt.transcoder_store(LM, params, mesh, sources.make_source("corpus", 256),
                              batch_size=64, context_length=16, model_batch_size=4,
                              buffer_batches=2)
  rows = np.asarray(store.batch(0))
  assert rows.shape == (64, 8, 32)
  tokens = jnp.concatenate([np.asarray(store.source.tokens(t)) for t in (0, 1)])  # refill 0
  x_in, x_out = _capture(LM, params, tokens)
  pool = np.concatenate([x_in, x_out], 1)
  nearest = np.min(np.abs(pool[None] - rows[:, None]).max((2, 3)), 1)
  assert nearest.max() < 1e-4  # every row is some token's (inputs, outputs) pair
  cfg = _config("clt")
  base = dict(batch_size=64, log_every=2, init_sample=64, optimizer=OPT)
  _, straight = tt.train_transcoder(tt.TrainTranscoderConfig.make(cfg, num_steps=6, **base),
                                    store, mesh)
  workdir = str(tmp_path / "run")
  tt.train_transcoder(tt.TrainTranscoderConfig.make(cfg, workdir=workdir, num_steps=3, **base),
                      store, mesh)
  run, resumed = tt.train_transcoder(
      tt.TrainTranscoderConfig.make(cfg, workdir=workdir, num_steps=6, **base), store, mesh)
  assert run["step"] == 6 and run["history"][0]["step"] == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight), jax.device_get(resumed))
  # Rerunning the finished run trains nothing and keeps its final metrics (it reported none).
  again, _ = tt.train_transcoder(
      tt.TrainTranscoderConfig.make(cfg, workdir=workdir, num_steps=6, **base), store, mesh)
  assert again["history"] == [] and again["final"]["step"] == 6
  assert again["final"]["fvu"] == pytest.approx(run["final"]["fvu"], rel=1e-6)


def test_a_resume_refuses_an_inconsistent_data_position_and_closes_its_checkpointer(
    tmp_path, monkeypatch):
  """The transcoder run goes through the same session as every trainer: a checkpoint whose
  saved data position disagrees with its state's step is refused, and every refused start
  (that one, and an initial sample holding NaN) leaves its checkpointer closed."""
  closed = []
  original_close = session_lib.Checkpointer.close
  monkeypatch.setattr(session_lib.Checkpointer, "close",
                      lambda self: (closed.append(self.directory), original_close(self)))
  x = np.random.default_rng(0).normal(size=(256, 2, 32)).astype(np.float32)
  cfg = tc.TranscoderConfig(kind="plt", n_layers=2, d_model=32, d_latent=32, k=2)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:1,model:1"))
  config = lambda workdir, steps: tt.TrainTranscoderConfig.make(
      cfg, workdir=str(workdir), batch_size=64, num_steps=steps, log_every=1, init_sample=64,
      optimizer=OPT, checkpoint=CheckpointConfig(every_steps=1, async_save=False))
  assert tt.train_transcoder(config(tmp_path, 2), (x, x), mesh)[0]["status"] == "completed"
  path = tmp_path / "checkpoints" / "2" / "data" / "metadata"
  position = json.loads(path.read_text())
  path.write_text(json.dumps(dict(position, step=1)))
  closed.clear()
  with pytest.raises(RuntimeError, match="does not match its state"):
    tt.train_transcoder(config(tmp_path, 3), (x, x), mesh)
  assert closed == [str(tmp_path / "checkpoints")]

  closed.clear()
  bad = np.full_like(x, np.nan)
  with pytest.raises(FloatingPointError, match="non-finite"):
    tt.train_transcoder(config(tmp_path / "nan", 2), (bad, bad), mesh)
  assert closed == [str(tmp_path / "nan" / "checkpoints")]
