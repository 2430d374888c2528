"""The train loop and `experiments/train_lm.py`: exact resume, mesh parity, NaN guard, retracing.

The binary runs in subprocesses so each can choose its simulated device count before JAX starts.
The killed/preempted runs share a persistent compilation cache (they run the same program), but
the uninterrupted reference run compiles on its own, so the bit-identity check also covers a
fresh compilation.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from interp.models import config as model_config
from interp.models import zoo
from interp.parallel import mesh as mesh_lib
from interp.train import checkpoint, lm, loop
from interp.train import metrics as metrics_lib
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig
from tests import subproc

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINARY = str(ROOT / "experiments" / "train_lm.py")
TINY = ["--n_layers=1", "--d_model=32", "--n_heads=2", "--n_ctx=32", "--d_mlp=64",
        "--batch_size=8", "--lr=1e-2", "--warmup_steps=5", "--log_every=1", "--seed=1"]
NUM_STEPS = 300
CHECKPOINT_EVERY = 20
PARITY_STEPS = 20


def command(workdir, *flags):
  return [sys.executable, BINARY, f"--workdir={workdir}", *TINY, *flags]


def environment(devices: int, cache_dir=None, fast_compile: bool = True) -> dict:
  env = subproc.environment(devices, fast_compile=fast_compile, drop_jax=True)
  if cache_dir is not None:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def run_binary(workdir, *flags, devices=1, cache_dir=None, timeout=300):
  proc = subprocess.run(command(workdir, *flags), cwd=ROOT, env=environment(devices, cache_dir),
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def losses(workdir) -> dict[int, float]:
  rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().split("\n")
          if l.strip()]
  return {r["step"]: r["loss"] for r in rows}


def latest(workdir):
  return zoo.read_latest(os.path.join(workdir, "checkpoints"))


def wait_for_checkpoint(proc, workdir, after: int, timeout=120.0) -> int:
  """Polls until a finished checkpoint newer than `after` exists; returns its step."""
  folder = pathlib.Path(workdir) / "checkpoints"
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.exists() else []
    if steps and max(steps) > after:
      return max(steps)
    assert proc.poll() is None, f"run ended before a checkpoint after {after}: {proc.returncode}"
    time.sleep(0.01)
  raise TimeoutError(f"no checkpoint after step {after} in {folder}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted one-device run, compiled without any cache."""
  workdir = tmp_path_factory.mktemp("reference")
  run_binary(workdir, f"--num_steps={NUM_STEPS}", f"--checkpoint_every={CHECKPOINT_EVERY}")
  return workdir


def test_kill_and_resume_is_bit_identical(reference, tmp_path):
  workdir, cache = tmp_path / "run", tmp_path / "jax_cache"
  flags = (f"--num_steps={NUM_STEPS}", f"--checkpoint_every={CHECKPOINT_EVERY}")
  env = environment(1, cache)

  # 1. SIGKILL once the first checkpoint is on disk: no chance to clean up.
  proc = subprocess.Popen(command(workdir, *flags), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wait_for_checkpoint(proc, workdir, after=0)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = latest(workdir)[0]
  assert 0 < killed_at < NUM_STEPS and not (workdir / "results.json").exists()

  # 2. Resume, then SIGTERM (a preemption notice): it saves the step it is on and exits cleanly.
  proc = subprocess.Popen(command(workdir, *flags), cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  wait_for_checkpoint(proc, workdir, after=killed_at)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-4000:]
  assert "preempted: saved step" in out and "preempted at step" in out
  preempted_at = latest(workdir)[0]
  assert killed_at < preempted_at < NUM_STEPS

  # 3. Resume to the end.
  out = run_binary(workdir, *flags, cache_dir=cache).stderr
  assert f"resuming at step {preempted_at} of {NUM_STEPS}" in out

  step, state, data = latest(workdir)
  ref_step, ref_state, _ = latest(reference)
  assert step == ref_step == NUM_STEPS and data["step"] == NUM_STEPS
  for part in ("params", "opt_state"):
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), state[part], ref_state[part])
  assert losses(workdir) == losses(reference)  # the log reads like one uninterrupted run
  print(f"\nkilled at {killed_at}, preempted at {preempted_at}: final params bit-identical")


@pytest.mark.parametrize("mesh", ["data:8", "data:4,model:2"])
def test_losses_match_across_meshes(reference, tmp_path, mesh):
  """The binary's one-device run against TINY's config run here, on this process's 8 devices."""
  model = model_config.attn_only(n_layers=1, d_model=32, n_heads=2, n_ctx=32, vocab_size=256,
                                 norm="layernorm", positional="learned", d_mlp=64)
  lm.train_lm(lm.TrainLMConfig.make(workdir=str(tmp_path), model=model, batch_size=8,
                                    num_steps=PARITY_STEPS, seed=1, mesh=mesh, log_every=1,
                                    optimizer=OptimizerConfig(lr=1e-2, warmup_steps=5),
                                    checkpoint=CheckpointConfig(every_steps=100)))
  ref, got = losses(reference), losses(tmp_path)
  diffs = [abs(got[s] - ref[s]) for s in range(1, PARITY_STEPS + 1)]
  print(f"\n{mesh} vs 1 device: max |loss diff| over {PARITY_STEPS} steps = {max(diffs):.3g}")
  assert max(diffs) <= 1e-5


def tiny_config(workdir, **overrides):
  model = model_config.attn_only(n_layers=1, d_model=32, n_heads=2, n_ctx=16, vocab_size=256,
                                 norm="layernorm", d_mlp=64)
  kw = dict(workdir=str(workdir), model=model, batch_size=8, num_steps=5, log_every=1,
            mesh="data:-1", checkpoint=CheckpointConfig(every_steps=10))
  kw.update(overrides)
  return lm.TrainLMConfig.make(**kw)


def test_batch_size_not_divisible_by_the_data_axis_names_the_flag(tmp_path):
  with pytest.raises(ValueError, match=r"--batch_size=12 is not divisible by the mesh's data "
                                       r"axis \(8 from --mesh\)"):
    lm.train_lm(tiny_config(tmp_path, batch_size=12))


def test_divergence_stops_with_the_metric_and_step(tmp_path):
  # One device: the guard reads logged metrics, so the simulated eight would only add compile time.
  config = tiny_config(tmp_path, mesh="data:1", optimizer=OptimizerConfig(lr=1e30, warmup_steps=0))
  with pytest.raises(metrics_lib.NonFiniteMetricError,
                     match=r"metric '(loss|grad_norm)' is (nan|inf) at step 2"):
    lm.train_lm(config)


def toy_run(tmp_path, log_every, nan_from_batch=7, num_steps=20):
  """A linear least-squares model whose batches turn NaN from `nan_from_batch` on."""
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:-1"))
  optimizer = optax.sgd(0.1)
  init = state_lib.init_fn(lambda: {"w": jnp.zeros((4,))}, optimizer)
  params_sh = {"w": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())}
  shardings = state_lib.shardings(optimizer, jax.eval_shape(init).params, params_sh, mesh)
  state = jax.jit(init, out_shardings=shardings)()

  def loss_fn(params, batch):
    return jnp.mean((batch @ params["w"] - 1.0) ** 2), {}

  def batches(i):
    x = np.full((8, 4), np.nan if i >= nan_from_batch else 0.5, np.float32)
    return mesh_lib.global_batch(mesh, x)

  step = loop.compile_step(state_lib.make_step(loss_fn, optimizer), shardings,
                           mesh_lib.batch_sharding(mesh))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), CheckpointConfig(every_steps=5),
                                 catch_sigterm=False)
  hooks = [metrics_lib.MetricsHook(metrics_lib.MetricWriter(str(tmp_path)), log_every, num_steps,
                                   0),
           checkpoint.CheckpointHook(ckpt, num_steps, lambda s: {"step": s})]
  return loop.run(step, state, batches, num_steps, hooks), step


@pytest.mark.parametrize("log_every,caught_at", [(3, 9), (100, 10)])
def test_nan_stops_after_the_last_good_checkpoint(tmp_path, log_every, caught_at):
  """NaN enters with batch 7 (step 8). Caught by the metrics hook at the next log step, or by the
  checkpoint hook before it would save step 10; the step-5 checkpoint stays intact either way."""
  with pytest.raises(metrics_lib.NonFiniteMetricError,
                     match=f"metric 'loss' is nan at step {caught_at}"):
    toy_run(tmp_path, log_every)
  step, state, _ = zoo.read_latest(str(tmp_path / "ckpt"))
  assert step == 5 and np.isfinite(state["params"]["w"]).all()


def test_step_is_compiled_once_and_retracing_fails(tmp_path):
  (state, stopped), step = toy_run(tmp_path, log_every=5, nan_from_batch=10**6, num_steps=10)
  assert not stopped and int(state.step) == 10 and step.traces() == 1
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:-1"))
  wider = mesh_lib.global_batch(mesh, np.zeros((8, 4, 1), np.float32))
  with pytest.raises(loop.RetraceError, match="traced 2 times"):
    step(state, wider)
