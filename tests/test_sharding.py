"""The same numbers on 1 device, on 8 simulated devices (data and data x model), and on 2 processes."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import config, sharded, transformer
from interp.parallel import mesh as mesh_lib
from interp.parallel import sharding as shd
from tests import multiprocess_forward as worker
from tests import subproc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs8 = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


def _logits(mesh_spec, devices=None, capture=("blocks.1.attn.hook_pattern",)):
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(mesh_spec), devices)
  params, shardings = sharded.init(worker.CFG, jax.random.key(0), mesh)
  fwd = sharded.make_forward(worker.CFG, mesh, shardings, capture=capture)
  logits, cache = fwd(params, mesh_lib.global_batch(mesh, worker.tokens()))
  return params, np.asarray(logits), cache


@needs8
@pytest.mark.parametrize("spec", ["data:8", "data:4,model:2", "data:2,model:4"])
def test_logits_match_one_device(spec):
  _, ref, ref_cache = _logits("data:1", jax.devices()[:1])
  params, out, cache = _logits(spec)
  assert np.abs(out - ref).max() <= 1e-5
  key = "blocks.1.attn.hook_pattern"
  np.testing.assert_allclose(np.asarray(cache[key]), np.asarray(ref_cache[key]), atol=1e-6)
  # Large parameters really are sharded: each device holds 1/model of the attention weights.
  w_q = params["blocks_0"]["attn"]["W_Q"]
  model = mesh_lib.MeshConfig.parse(spec).model
  assert w_q.addressable_shards[0].data.shape[1] == worker.CFG.n_heads // model


@needs8
def test_per_device_parameter_bytes_fall_with_model_axis():
  sizes = {}
  for model in (1, 2, 4):
    mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(f"data:-1,model:{model}"))
    params, _ = sharded.init(worker.CFG, jax.random.key(0), mesh)
    sizes[model] = max(shd.param_bytes_per_device(params).values())
  assert sizes[2] < 0.6 * sizes[1] and sizes[4] < 0.6 * sizes[2], sizes


def test_unsharded_forward_matches_sharded_path():
  params = transformer.init_params(worker.CFG, jax.random.key(0))
  ref, _ = transformer.forward(worker.CFG, params, jnp.asarray(worker.tokens()))
  _, out, _ = _logits("data:1", jax.devices()[:1])
  assert np.abs(out - np.asarray(ref)).max() <= 1e-5


@needs8
def test_batch_not_divisible_by_data_axis():
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:8"))
  with pytest.raises(ValueError, match=r"global batch size 6 is not divisible by the mesh's data "
                     r"axis \(8\).*--batch_size"):
    mesh_lib.global_batch(mesh, np.zeros((6, 4), np.int32))


@needs8
def test_width_not_divisible_by_model_axis():
  cfg = config.attn_only(1, 48, 3, 16, 64)  # 3 heads cannot split over model=2
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:4,model:2"))
  with pytest.raises(ValueError, match=r"parameter \['blocks_0'\]\['attn'\]\['W_[OQ]'\].*size 3.*"
                     r"not divisible by mesh axis 'model' of size 2"):
    sharded.init(cfg, jax.random.key(0), mesh)


def test_bad_mesh_flag():
  with pytest.raises(ValueError, match="--mesh='data:2,pipe:2'"):
    mesh_lib.MeshConfig.parse("data:2,pipe:2")
  with pytest.raises(ValueError, match="--mesh: data=3 x model=1 = 3 devices, but 8"):
    mesh_lib.MeshConfig(data=3).resolve(8)
  # A fully specified smaller mesh on one process takes the first devices.
  small = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:2,model:1"))
  assert small.devices.size == 2 and list(small.devices.flat) == jax.devices()[:2]
  with pytest.raises(ValueError, match="data=16 x model=1 = 16 devices, but 8"):
    mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:16"))


def test_two_processes_give_the_same_logits(tmp_path):
  """2 processes x 4 simulated devices, joined by jax.distributed (gloo), vs 1 device in-process."""
  out = tmp_path / "logits.npy"
  cmd = [sys.executable, os.path.join(ROOT, "launch", "local.py"), "--num_processes=2",
         "--devices_per_process=4", f"--logdir={tmp_path / 'logs'}", "--timeout_s=300", "--",
         sys.executable, "-m", "tests.multiprocess_forward", str(out), "data:4,model:2"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=360,
                        env=subproc.environment())
  assert proc.returncode == 0, proc.stderr[-3000:]
  log = (tmp_path / "logs" / "process_0.log").read_text()
  assert "devices=8 processes=2" in log, log
  _, ref, _ = _logits("data:1", jax.devices()[:1])
  assert np.abs(np.load(out) - ref).max() <= 1e-5


def test_local_launcher_fails_fast_when_a_process_crashes(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "launch", "local.py"), "--num_processes=2",
         f"--logdir={tmp_path}", "--timeout_s=120", "--", sys.executable, "-c",
         "import os, sys, time; pid = int(os.environ['JAX_PROCESS_ID']);"
         "print('worker', pid, flush=True); sys.exit(3) if pid == 1 else time.sleep(60)"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=100)
  assert proc.returncode == 3
  assert "process 1 exited with status 3" in proc.stderr and "worker 1" in proc.stderr


@needs8
def test_single_kv_head_is_replicated_not_split():
  cfg = config.gemma3_270m(vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=1,
                           d_head=8, d_mlp=64, n_ctx=16)
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:4,model:2"))
  params, _ = sharded.init(cfg, jax.random.key(0), mesh)
  assert params["blocks_0"]["attn"]["W_K"].sharding.spec == jax.sharding.PartitionSpec(
      None, None, None)
  assert params["blocks_0"]["attn"]["W_Q"].sharding.spec[1] == "model"
