"""experiments/train_sae.py end to end: SIGKILL and resume exactly, 2 processes == 1, a toy model.

The binary runs in subprocesses, each choosing its simulated device count before JAX starts.
"""

import glob
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np

from interp.models import zoo
from interp.parallel import mesh as mesh_lib
from interp.sae import experiment as sae_experiment
from interp.sae import saelens_format
from interp.sae import synthetic
from interp.sae import train as sae_train
from interp.sae.config import SAEConfig
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig
from tests.test_checkpoint import damaged_reads, flip_byte
from tests.test_train import environment, latest, wait_for_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
BINARY = str(ROOT / "experiments" / "train_sae.py")
# TopK with AuxK and a short dead window: the dead-latent counters (buffers) must resume too.
PLANTED = ["--source=planted", "--activation=topk", "--k=4", "--d_sae=256", "--batch_size=128",
           "--init_sample=256", "--log_every=1", "--lr=3e-3", "--warmup_steps=5",
           "--dead_steps=5", "--seed=1"]


# Runs on tiny models compile fast (tests/subproc.py) unless compared with a run in the test's
# own process; runs compared bit for bit all use the same flags.
def run(workdir, *flags, devices=1, timeout=300, fast_compile=False):
  env = environment(devices, fast_compile=fast_compile)
  proc = subprocess.run([sys.executable, BINARY, f"--workdir={workdir}", *flags], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def rows(workdir) -> dict[int, dict]:
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r for r in map(json.loads, filter(None, lines))}


def test_kill_and_resume_is_bit_identical(tmp_path):
  flags = (*PLANTED, "--num_steps=120", "--checkpoint_every=20")
  reference = tmp_path / "reference"
  run(reference, *flags, fast_compile=True)  # all three runs compile alike
  workdir = tmp_path / "run"
  proc = subprocess.Popen([sys.executable, BINARY, f"--workdir={workdir}", *flags], cwd=ROOT,
                          env=environment(1), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  wait_for_checkpoint(proc, workdir, after=0)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = latest(workdir)[0]
  assert killed_at < 120 and not (workdir / "results.json").exists()
  out = run(workdir, *flags, fast_compile=True).stderr
  assert f"resuming SAE training at step {killed_at} of 120" in out
  step, state, _ = latest(workdir)
  _, ref_state, _ = latest(reference)
  assert step == 120
  for part in ("params", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, state[part], ref_state[part])
  assert rows(workdir) == rows(reference)
  results = json.loads((workdir / "results.json").read_text())
  assert results["summary"]["l0"] == 4.0 and results["summary"]["mean_max_cosine"] > 0.5
  # The SAELens-format copy holds the trained dictionary.
  cfg, params = saelens_format.load(str(workdir / "saelens"))
  assert cfg.d_sae == 256 and params["W_dec"].shape == (256, 64)


def test_two_processes_match_one_process(tmp_path):
  """2 processes x 4 devices on data:2,model:4 == 1 process x 8 devices, to 1e-5."""
  steps = 12
  two = tmp_path / "two"
  cmd = [sys.executable, "launch/local.py", "--num_processes=2", "--devices_per_process=4",
         "--timeout_s=240", "--", sys.executable, BINARY, f"--workdir={two}", *PLANTED,
         "--mesh=data:2,model:4", f"--num_steps={steps}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  # Meanwhile, the same run in this process (8 simulated devices, data:8).
  features = synthetic.PlantedFeatures()
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse("data:8,model:1"))
  cfg = SAEConfig(d_in=64, d_sae=256, activation="topk", k=4, dead_mitigation="auxk",
                  dead_steps=5)
  config = sae_train.TrainSAEConfig.make(
      workdir=str(tmp_path / "one"), sae=cfg, batch_size=128, num_steps=steps, seed=1,
      mesh="data:8,model:1", log_every=1, init_sample=256,
      optimizer=OptimizerConfig(lr=3e-3, warmup_steps=5, grad_clip=0.0),
      checkpoint=CheckpointConfig(every_steps=200))
  sae_train.train_sae(config, synthetic.SyntheticStore(features, 128, mesh))
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-4000:]
  one, many = rows(tmp_path / "one"), rows(two)
  assert sorted(many) == list(range(1, steps + 1))  # process 0 alone wrote the metrics
  for step in one:
    for key in ("loss", "mse", "l0", "aux", "fvu"):
      np.testing.assert_allclose(many[step][key], one[step][key], rtol=1e-5, atol=1e-6,
                                 err_msg=f"{key} at step {step}")


def test_binary_on_a_toy_model(tiny_lm_run, tmp_path):
  """A tiny LM run (conftest), then an SAE on its residual stream: evaluated, with files."""
  lm_dir = tiny_lm_run
  workdir = tmp_path / "sae"
  run(workdir, f"--source=toy:{lm_dir}", "--hook=blocks.0.hook_resid_post", "--expansion=4",
      "--activation=topk", "--k=8", "--lr=3e-3", "--batch_size=256", "--num_steps=40", "--context_length=32",
      "--model_batch_size=8", "--buffer_batches=4", "--eval_sequences=16", "--init_sample=256",
      fast_compile=True)
  results = json.loads((workdir / "results.json").read_text())
  summary = results["summary"]
  assert set(summary) >= {"l0", "fvu", "ce_loss_recovered"}
  assert 0 < summary["l0"] < 128
  # Two dead fractions, each labelled with what it was measured on.
  assert "dead_fraction" not in summary
  eval_json = json.loads((workdir / "eval.json").read_text())
  evaluation = eval_json["metrics"]
  assert summary["dead_eval_tokens"] == evaluation["n_tokens"] == 16 * 31  # position 0 left out
  assert summary["dead_fraction_eval"] == evaluation["dead_fraction"]
  assert summary["dead_fraction_eval"] == eval_json["histogram"]["dead"] / 128  # 4 x d_model 32
  assert (summary["dead_train_window_steps"], summary["dead_train_window_tokens"]) == (
      200, 200 * 256)
  logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert summary["dead_fraction_train_window"] == [r for r in logged if "dead" in r][-1]["dead"]
  # 40 steps x 256 = 10,240 tokens: only the 10k window (40 steps) fits in the run.
  fired_ago = zoo.read_latest(str(workdir / "checkpoints"))[1]["params"]["fired_ago"]
  assert summary["silent_fraction_by_tokens"] == {"10000": float(np.mean(fired_ago >= 40))}
  assert np.isfinite(summary["ce_loss_recovered"]) and summary["fvu"] < 1.0
  for name in ("eval.json", "dashboard.json", "dashboard.html", "density.png", "saelens/cfg.json"):
    assert (workdir / name).exists(), name


def flip_a_parameter_byte(checkpoints, step) -> None:
  """Flips the middle byte of the first data file (largest first) whose flip changes the
  dictionary as an unverified read sees it (most of the bytes are the optimizer's moments)."""
  _, before, _ = zoo.read_latest(str(checkpoints))
  files = sorted(glob.glob(str(checkpoints / str(step) / "state" / "**" / "d" / "*"),
                 recursive=True), key=os.path.getsize, reverse=True)
  for path in files:
    flip_byte(path)
    _, after, _ = zoo.read_latest(str(checkpoints))
    if any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before["params"]),
                                                   jax.tree.leaves(after["params"]))):
      return
    flip_byte(path)  # back as it was
  raise AssertionError(f"no single flipped byte changes the parameters of step {step}")


@damaged_reads
def test_rerun_with_a_flipped_byte_in_the_final_step_exports_the_same_dictionary(tmp_path,
                                                                                   caplog):
  """A finished run re-run after its final checkpoint changed on disk never exports that state:
  it falls back to the previous step and retrains to the same bits."""
  cfg = SAEConfig(d_in=64, d_sae=128, activation="topk", k=4)
  config = sae_train.TrainSAEConfig.make(
      workdir=str(tmp_path), sae=cfg, batch_size=64, num_steps=20, seed=1, mesh="data:-1",
      log_every=10, init_sample=128, optimizer=OptimizerConfig(lr=3e-3, warmup_steps=5),
      checkpoint=CheckpointConfig(every_steps=10))
  src = sae_experiment.SourceConfig(source="planted", planted_d=64, planted_features=128)
  sae_experiment.run(config, src)
  weights = tmp_path / "saelens" / "sae_weights.safetensors"
  original = weights.read_bytes()
  flip_a_parameter_byte(tmp_path / "checkpoints", 20)
  with caplog.at_level(logging.WARNING):
    results = sae_experiment.run(config, src)
  assert results["status"] == "completed" and results["step"] == 20
  assert any("checkpoints/20 is unreadable (CorruptCheckpointError: state." in r.getMessage()
             for r in caplog.records)
  assert weights.read_bytes() == original
