"""Checkpoints: keep-N and data position, corrupt-latest fallback, checksums, non-finite states,
config mismatch, save policies.

Real Orbax round trips on disk, no mocks; the training runs are tiny and in-process.
"""

import glob
import json
import logging
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import config as model_config
from interp.models import zoo
from interp.parallel import checksum
from interp.train import checkpoint, lm, loop
from interp.train import state as state_lib
from interp.train.checkpoint import CheckpointConfig, CheckpointMismatchError
from interp.train.metrics import NonFiniteMetricError
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


def random_state(step, width=512):
  """Incompressible parameters, so the data file is the largest file of the step's state."""
  w, b = jax.random.normal(jax.random.key(step), (2, 4, width))
  return state_lib.TrainState(step=jnp.int32(step), params={"W": w, "b": b},
                              opt_state=(jnp.int32(step),))


def flip_byte(path) -> None:
  """Flips the lowest bit of the middle byte of the file (doing it twice restores the file)."""
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 1]))


def flip_middle_byte(step_dir) -> str:
  """Flips the middle byte of the largest file under `<step>/state/`; returns its path."""
  files = [p for p in glob.glob(str(step_dir / "state" / "**"), recursive=True)
           if os.path.isfile(p)]
  path = max(files, key=os.path.getsize)
  flip_byte(path)
  return path


@damaged_reads
def test_a_flipped_byte_is_detected_and_the_previous_step_restored(tmp_path, caplog):
  ckpt = checkpoint.Checkpointer(str(tmp_path), CheckpointConfig(every_steps=1, keep=5),
                                 catch_sigterm=False)
  for step in (1, 2):
    ckpt.save(step, random_state(step), {"step": step})
  ckpt.close()
  assert "/d/" in flip_middle_byte(tmp_path / "2")  # the arrays' data, not metadata
  # The read-only reader (analyses, exports) skips the damaged step too, and moves nothing.
  with caplog.at_level(logging.WARNING):
    step, host, _ = zoo.read_latest(str(tmp_path))
  assert step == 1 and sorted(os.listdir(tmp_path)) == ["1", "2"]
  assert_trees_equal(host["params"], random_state(1).params)
  assert any(f"{tmp_path}/2: ['params']['" in r.getMessage() for r in caplog.records)
  caplog.clear()
  ckpt = checkpoint.Checkpointer(str(tmp_path), catch_sigterm=False)
  with caplog.at_level(logging.WARNING):
    state, data = ckpt.restore(target_like(random_state(0)))
  ckpt.close()
  assert int(state.step) == 1 and data == {"step": 1}
  assert_trees_equal(state.params, random_state(1).params)
  assert any(f"checkpoint {tmp_path}/2 is unreadable (CorruptCheckpointError: state.params['"
             in r.getMessage() and "does not match the checksum saved with it" in r.getMessage()
             for r in caplog.records)
  assert sorted(os.listdir(tmp_path)) == ["1"]
  assert os.listdir(str(tmp_path) + "_unreadable")[0].startswith("2-")


def test_checkpoints_without_checksums_restore_unverified_with_one_warning(tmp_path, caplog):
  save_steps(tmp_path, [1, 2])
  for step in ("1", "2"):
    shutil.rmtree(tmp_path / step / "checksums")  # as written before checksums were recorded
  ckpt = checkpoint.Checkpointer(str(tmp_path), catch_sigterm=False)
  with caplog.at_level(logging.WARNING):
    state, data = ckpt.restore(target_like(small_state()))
  assert int(state.step) == 2 and data == {"step": 2}
  warnings = [r.getMessage() for r in caplog.records if "no checksums" in r.getMessage()]
  assert warnings == [f"checkpoint {tmp_path}/2 has no checksums (written before they were "
                      "recorded); restoring it unverified"]
  with pytest.raises(CheckpointMismatchError, match="params\\['b'\\] has shape \\(4,\\)"):
    ckpt.restore(target_like(small_state(width=6)))  # shapes are still checked
  ckpt.close()


def test_checksums_are_the_same_on_any_mesh_and_see_one_flipped_bit():
  tree = {"w": jax.random.normal(jax.random.key(0), (8, 16)), "h": jnp.arange(8, dtype=jnp.bfloat16),
          "n": jnp.arange(16, dtype=jnp.int32), "mask": jnp.arange(8) % 3 == 0,
          "key": jax.random.key(1)}
  one = checksum.fingerprint(tree)
  assert one.non_finite == () and len(set(one.checksums.values())) == 5
  for axes in ((8, 1), (4, 2), (1, 8)):
    mesh = jax.make_mesh(axes, ("data", "model"))
    P = jax.sharding.PartitionSpec
    sharded = dict(tree, w=jax.device_put(tree["w"], jax.sharding.NamedSharding(mesh, P("data", "model"))),
                   n=jax.device_put(tree["n"], jax.sharding.NamedSharding(mesh, P(("data", "model")))))
    assert checksum.fingerprint(sharded) == one, axes
  bits = np.asarray(tree["w"]).view(np.uint32).copy()
  bits[5, 7] ^= 1 << 20
  flipped = checksum.fingerprint(dict(tree, w=jnp.asarray(bits.view(np.float32))))
  assert checksum.first_mismatch(one.checksums, flipped.checksums) == "['w']"
  assert flipped.checksums["['n']"] == one.checksums["['n']"]
  swapped = checksum.fingerprint(dict(tree, n=tree["n"][::-1]))  # position matters, not just values
  assert swapped.checksums["['n']"] != one.checksums["['n']"]
  nan = checksum.fingerprint(dict(tree, w=tree["w"].at[3, 3].set(jnp.inf)))
  assert nan.non_finite == ("['w']",)


def test_a_state_that_an_update_made_non_finite_is_never_saved(tmp_path):
  """The metrics are measured before the update, so only the state itself can tell."""
  ckpt = checkpoint.Checkpointer(str(tmp_path), CheckpointConfig(every_steps=1, keep=5),
                                 catch_sigterm=False)
  hook = checkpoint.CheckpointHook(ckpt, 5, lambda s: {"step": s})

  def step(state, batch):
    del batch
    poison = jnp.where(state.step == 2, jnp.nan, 1.0)
    params = jax.tree.map(lambda p: p * poison + 1.0, state.params)
    return state.replace(step=state.step + 1, params=params), {"loss": jnp.float32(1.0)}

  with pytest.raises(NonFiniteMetricError) as err:
    loop.run(step, small_state(), lambda i: None, 5, [hook])
  assert str(err.value).startswith(
      "state.params['b'] holds NaN or Inf after step 3 (also: state.params['embed']['W_E']); "
      "not saving it, stopping.")
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]
  _, saved, _ = zoo.read_latest(str(tmp_path))
  assert int(saved["step"]) == 2 and np.all(np.isfinite(saved["params"]["b"]))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_train_lm_with_an_overflowing_lr_keeps_its_last_finite_checkpoint(tmp_path):
  # 1e39 is a finite float, but inf in float32: the first update makes every parameter
  # non-finite while the loss it reports, measured before that update, is still finite.
  config = tiny(tmp_path, num_steps=3, optimizer=OptimizerConfig(lr=1e39, warmup_steps=0),
                checkpoint=CheckpointConfig(every_steps=1, keep=5))
  with pytest.raises(NonFiniteMetricError) as err:
    lm.train_lm(config)
  assert str(err.value).startswith("state.params['blocks_0']['attn']['W_K'] holds NaN or Inf "
                                   "after step 1 (also: state.params['blocks_0']['attn']['W_O'], ")
  assert " more); not saving it, stopping." in str(err.value)
  assert not glob.glob(str(tmp_path / "checkpoints" / "[0-9]*"))


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
