"""Checkpoints: keep-N and data position, corrupt-latest fallback, config mismatch, save policies.

Real Orbax round trips on disk, no mocks; the training runs are tiny and in-process.
"""

import glob
import json
import logging
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import config as model_config
from interp.models import zoo
from interp.train import checkpoint, lm
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointConfig, CheckpointMismatchError
from interp.train.optim import OptimizerConfig


# Reading a damaged checkpoint, orbax leaves a callback aimed at an event loop it has already
# closed; Python reports it as an unraisable exception. It is harmless, and not ours to fix.
damaged_reads = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def tiny(workdir, d_model=32, **overrides) -> lm.TrainLMConfig:
  model = model_config.attn_only(n_layers=1, d_model=d_model, n_heads=2, n_ctx=16, vocab_size=256,
                                 norm="layernorm", d_mlp=64)
  kw = dict(workdir=str(workdir), model=model, batch_size=8, num_steps=30, log_every=5,
            mesh="data:-1", optimizer=OptimizerConfig(lr=1e-2, warmup_steps=5),
            checkpoint=CheckpointConfig(every_steps=10, keep=3))
  kw.update(overrides)
  return lm.TrainLMConfig.make(**kw)


def params_of(workdir):
  step, state, _ = zoo.read_latest(os.path.join(workdir, "checkpoints"))
  return step, state["params"]


def assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y), a, b)


def test_keeps_latest_n_with_the_data_position(tmp_path):
  results = lm.train_lm(tiny(tmp_path, num_steps=50))
  assert results["status"] == "completed" and results["step"] == 50
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["30", "40", "50"]
  step, state, data = zoo.read_latest(str(tmp_path / "checkpoints"))
  assert step == 50 and int(state["step"]) == 50
  assert data == {"step": 50, "data": "corpus", "seed": 0}
  for name in ("flags.json", "model_config.json", "data.json", "metrics.jsonl", "results.json"):
    assert (tmp_path / name).exists(), name
  saved = json.loads((tmp_path / "results.json").read_text())
  assert np.isfinite(saved["final"]["loss"]) and saved["final"]["step"] == 50
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(5, 51, 5))


def small_state(width=4, step=0):
  params = {"embed": {"W_E": jnp.full((3, width), float(step))}, "b": jnp.arange(float(width))}
  return state_lib.TrainState(step=jnp.int32(step), params=params, opt_state=(jnp.int32(step),))


def target_like(state):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def save_steps(directory, steps, width=4):
  ckpt = checkpoint.Checkpointer(str(directory), CheckpointConfig(every_steps=1, keep=5),
                                 catch_sigterm=False)
  for step in steps:
    ckpt.save(step, small_state(width, step), {"step": step})
  ckpt.close()


def damage_arrays(step_dir, how):
  files = glob.glob(str(step_dir / "state" / "**" / "d" / "*"), recursive=True)
  assert files
  for path in files:
    if how == "truncate":
      with open(path, "r+b") as f:
        f.truncate(7)
    else:
      os.remove(path)


@damaged_reads
@pytest.mark.parametrize("how", ["truncate", "delete"])
def test_restore_skips_a_damaged_latest_checkpoint(tmp_path, caplog, how):
  save_steps(tmp_path, [1, 2, 3])
  damage_arrays(tmp_path / "3", how)
  ckpt = checkpoint.Checkpointer(str(tmp_path), catch_sigterm=False)
  with caplog.at_level(logging.WARNING):
    state, data = ckpt.restore(target_like(small_state()))
  assert int(state.step) == 2 and data == {"step": 2}
  np.testing.assert_array_equal(state.params["embed"]["W_E"], np.full((3, 4), 2.0))
  assert any(f"{tmp_path}/3 is unreadable" in r.getMessage() and "falling back" in r.getMessage()
             for r in caplog.records)
  assert ckpt.manager.all_steps() == [1, 2]  # step 3 can be written again
  ckpt.close()
  assert os.listdir(str(tmp_path) + "_unreadable")[0].startswith("3-")  # set aside, not deleted


@damaged_reads
def test_restore_fails_clearly_when_no_checkpoint_is_readable(tmp_path):
  save_steps(tmp_path, [1])
  damage_arrays(tmp_path / "1", "truncate")
  ckpt = checkpoint.Checkpointer(str(tmp_path), catch_sigterm=False)
  with pytest.raises(RuntimeError, match=f"no checkpoint in {tmp_path} could be restored"):
    ckpt.restore(target_like(small_state()))
  ckpt.close()
  assert (tmp_path / "1").exists()  # nothing is moved when there is nothing to fall back to


def test_restore_into_other_shapes_names_the_checkpoint_and_parameter(tmp_path):
  save_steps(tmp_path, [1])
  ckpt = checkpoint.Checkpointer(str(tmp_path), catch_sigterm=False)
  with pytest.raises(CheckpointMismatchError) as err:
    ckpt.restore(target_like(small_state(width=6)))
  ckpt.close()
  message = str(err.value)
  assert f"checkpoint {tmp_path}/1 was written by a different model config" in message
  assert "params['b'] has shape (4,) in the checkpoint but (6,) in this model" in message
  assert "params['embed']['W_E'] has shape (3, 4) in the checkpoint but (3, 6)" in message


@damaged_reads
def test_corrupt_latest_checkpoint_resumes_from_the_previous_one_exactly(tmp_path, caplog):
  lm.train_lm(tiny(tmp_path))
  step, reference = params_of(tmp_path)
  assert step == 30
  damage_arrays(tmp_path / "checkpoints" / "30", "truncate")
  with caplog.at_level(logging.WARNING):
    results = lm.train_lm(tiny(tmp_path))
  assert any("checkpoints/30 is unreadable" in r.getMessage() for r in caplog.records)
  assert results["step"] == 30
  # Resumed from step 20, retrained 10 steps, and landed on the same bits.
  step, params = params_of(tmp_path)
  assert step == 30
  assert_trees_equal(params, reference)


def test_workdir_with_another_model_config_is_refused(tmp_path):
  lm.train_lm(tiny(tmp_path, num_steps=10))
  with pytest.raises(CheckpointMismatchError) as err:
    lm.train_lm(tiny(tmp_path, d_model=64, num_steps=10))
  message = str(err.value)
  assert f"--workdir={tmp_path}" in message and "d_model: 32 -> 64" in message
  assert ("params['blocks_0']['attn']['W_K'] has shape (32, 2, 16) in the saved run but "
          "(64, 2, 32) in this one" in message)

  # Without model_config.json, the checkpoint's own metadata catches it.
  os.remove(tmp_path / "model_config.json")
  with pytest.raises(CheckpointMismatchError) as err:
    lm.train_lm(tiny(tmp_path, d_model=64, num_steps=10))
  message = str(err.value)
  assert f"checkpoint {tmp_path}/checkpoints/10 was written by a different model config" in message
  assert ("params['blocks_0']['attn']['W_K'] has shape (32, 2, 16) in the checkpoint but "
          "(64, 2, 32) in this model" in message and "(and 13 more)" in message)
  assert not (tmp_path / "model_config.json").exists()  # a refused run writes no records


def test_time_policy_uses_the_injected_clock(tmp_path):
  now = [0.0]
  ckpt = checkpoint.Checkpointer(str(tmp_path), CheckpointConfig(every_steps=1000, every_secs=60),
                                 clock=lambda: now[0], catch_sigterm=False)
  state = {"w": jnp.arange(4.0)}
  assert not ckpt.should_save(1)
  now[0] = 61.0
  assert ckpt.should_save(2)
  ckpt.save(2, state, {"step": 2})
  assert not ckpt.should_save(3)
  now[0] = 125.0
  assert ckpt.should_save(4)
  assert ckpt.should_save(1000)  # the fixed interval still applies
  ckpt.close()
  assert zoo.read_latest(str(tmp_path))[0] == 2


def test_sigterm_asks_for_a_save_in_a_single_process(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path), CheckpointConfig(every_steps=1000))
  try:
    assert signal.getsignal(signal.SIGTERM) == ckpt.preemption._on_sigterm
    assert not ckpt.should_save(3) and not ckpt.preempted(3)
    os.kill(os.getpid(), signal.SIGTERM)
    assert ckpt.should_save(3) and ckpt.preempted(3)
  finally:
    ckpt.close()
  assert signal.getsignal(signal.SIGTERM) != ckpt.preemption._on_sigterm
