"""launch/: multi-process parity and resharded resume, a SIGKILLed process, sweeps, fail-fast,
dry-run goldens, AOT.

Binaries and launchers run in subprocesses (each chooses its own simulated devices); the
reference runs and resumes run in this process on its 8 simulated devices. Regenerate the golden
dry-run files with `UPDATE_GOLDEN=1 pytest tests/test_launch.py -k golden`.
"""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from interp.models import config as model_config
from interp.train import lm
from interp.train.checkpoint import CheckpointConfig, CheckpointMismatchError
from interp.train.optim import OptimizerConfig
from tests import subproc

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
BINARY = str(ROOT / "experiments" / "train_lm.py")
TINY = ["--n_layers=1", "--d_model=32", "--n_heads=2", "--n_ctx=32", "--d_mlp=64",
        "--batch_size=8", "--lr=1e-2", "--warmup_steps=5", "--log_every=1", "--seed=1"]
HALF, FULL = 6, 12


def tiny_config(workdir, mesh, num_steps):
  """TINY as a TrainLMConfig (the binary's defaults for everything else)."""
  model = model_config.attn_only(n_layers=1, d_model=32, n_heads=2, n_ctx=32, vocab_size=256,
                                 norm="layernorm", positional="learned", d_mlp=64)
  return lm.TrainLMConfig.make(workdir=str(workdir), model=model, batch_size=8,
                               num_steps=num_steps, seed=1, mesh=mesh, log_every=1,
                               optimizer=OptimizerConfig(lr=1e-2, warmup_steps=5),
                               checkpoint=CheckpointConfig(every_steps=HALF))


def metric_rows(workdir) -> dict[int, dict]:
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  rows = [json.loads(l) for l in lines if l.strip()]
  assert len(rows) == len({r["step"] for r in rows}), "a step was logged twice"
  return {r["step"]: r for r in rows}


def max_diff(a: dict, b: dict, steps) -> float:
  return max(abs(a[s][k] - b[s][k]) for s in steps for k in ("loss", "accuracy", "grad_norm"))


def launcher(*args, timeout=300, env=None, **kw):
  cmd = [sys.executable, *map(str, args)]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                        env=env or subproc.environment(), **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """1 process x 8 devices on data:8, FULL steps, in this process."""
  workdir = tmp_path_factory.mktemp("reference")
  lm.train_lm(tiny_config(workdir, "data:8", FULL))
  return workdir


def test_two_processes_match_one_then_resume_resharded_on_one(request, tmp_path):
  """2 processes x 4 devices (data:8) == 1 x 8; its checkpoint resumes on data:4,model:2."""
  workdir = tmp_path / "run"
  cmd = [sys.executable, "launch/local.py", "--num_processes=2", "--devices_per_process=4",
         "--timeout_s=240", "--", sys.executable, BINARY, f"--workdir={workdir}", *TINY,
         "--mesh=data:-1", f"--num_steps={HALF}", f"--checkpoint_every={HALF}"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=subproc.environment())
  reference = request.getfixturevalue("reference")  # computed while the processes start up
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-4000:]
  assert f"completed at step {HALF}" in out  # process 0's output, echoed
  logs = sorted(p.name for p in (workdir / "logs").iterdir())
  assert logs == ["process_0.log", "process_1.log"]  # streamed into the run folder
  ref, two = metric_rows(reference), metric_rows(workdir)
  assert sorted(two) == list(range(1, HALF + 1))  # only process 0 wrote metrics
  final = json.loads((workdir / "results.json").read_text())["final"]
  assert max_diff({HALF: final}, ref, [HALF]) <= 1e-5
  assert max_diff(two, ref, range(1, HALF + 1)) <= 1e-5

  # The 2-process, data:8 checkpoint resumes in 1 process on data:4,model:2: Orbax restores
  # into the new shardings, and the losses continue as if nothing changed.
  lm.train_lm(tiny_config(workdir, "data:4,model:2", FULL))
  resumed = metric_rows(workdir)
  diff = max_diff(resumed, ref, range(HALF + 1, FULL + 1))
  print(f"\n2x4 vs 1x8: final {final}; resumed on data:4,model:2, max diff {diff:.2g}")
  assert diff <= 1e-5


def test_a_mesh_that_cannot_hold_the_checkpoint_says_why(reference):
  with pytest.raises(CheckpointMismatchError,
                     match=r"cannot resume --workdir=.* \(checkpointed with --mesh=data:8\) on "
                           r"--mesh=data:2,model:4 .*W_[OQ].*not divisible by mesh axis 'model' "
                           r"of size 4.*pick such a --mesh \(e.g. --mesh=data:8\)"):
    lm.train_lm(tiny_config(reference, "data:2,model:4", FULL + 4))


def test_sweep_runs_skips_finished_and_gathers(tmp_path):
  """data x seed: 4 runs of one compiled program, so a shared compilation cache makes them cheap
  (the test is of the sweep, not of the training)."""
  sweep_dir = tmp_path / "sweep"
  args = ["launch/sweep.py", f"--sweep_dir={sweep_dir}", "--grid=data=corpus,repeat:8",
          "--grid=seed=0,1", "--parallel=2", "--devices_per_process=1", "--timeout_s=200",
          "--plot_metric=final.loss", "--plot_x=data", "--", sys.executable, BINARY,
          "--n_layers=1", "--d_model=16", "--n_heads=1", "--n_ctx=16", "--d_mlp=0",
          "--batch_size=4", "--num_steps=3", "--log_every=1", "--checkpoint_every=3"]
  env = subproc.environment(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
                            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  proc = launcher(*args, env=env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "0 finished already (skipped); 4 to run on local, 2 at a time" in proc.stdout
  with open(sweep_dir / "results.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["run"] for r in table] == ["data=corpus,seed=0", "data=corpus,seed=1",
                                       "data=repeat:8,seed=0", "data=repeat:8,seed=1"]
  assert {r["status"] for r in table} == {"completed"}
  assert all(float(r["final.loss"]) > 0 for r in table)
  assert (sweep_dir / "summary.png").stat().st_size > 1000
  assert (sweep_dir / "data=repeat:8,seed=1" / "logs" / "process_0.log").exists()

  # Re-run: finished runs are skipped; one whose results were lost runs again (and, resuming
  # from its final checkpoint, trains nothing and reports the same numbers).
  lost = sweep_dir / "data=corpus,seed=1" / "results.json"
  before = json.loads(lost.read_text())["final"]
  lost.unlink()
  proc = launcher(*args, env=env)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "3 finished already (skipped); 1 to run" in proc.stdout
  assert json.loads(lost.read_text())["final"] == before
  print("\n" + (sweep_dir / "results.csv").read_text())


def test_sweep_specs_expand_name_and_refuse_bad_input():
  from launch import hyper
  runs = hyper.from_flags(["lr=1e-3,1e-2", "seed=0,1"], ["d_model=32,64", "n_heads=2,4"])
  assert len(runs) == 8 and runs[0] == {"lr": "1e-3", "seed": "0", "d_model": "32",
                                        "n_heads": "2"}
  assert {(r["d_model"], r["n_heads"]) for r in runs} == {("32", "2"), ("64", "4")}
  assert hyper.name(runs[-1]) == "lr=1e-2,seed=1,d_model=64,n_heads=4"
  assert hyper.parse_axis("mesh=data:8|data:4,model:2") == [{"mesh": "data:8"},
                                                            {"mesh": "data:4,model:2"}]
  assert hyper.name({"data": "files:/a/*.txt"}) == "data=files:_a__.txt"
  file_runs, command = hyper.load_file(str(ROOT / "experiments" / "sweeps" / "train_lm_lr.py"))
  assert len(file_runs) == 6 and file_runs[0] == {"lr": "0.001", "seed": "0"}
  assert command[:2] == ["python", "experiments/train_lm.py"]
  with pytest.raises(ValueError, match=r"different lengths \[2, 3\]"):
    hyper.from_flags(zipped=["a=1,2", "b=1,2,3"])
  with pytest.raises(ValueError, match=r"--grid='lr': expected FLAG=V1,V2"):
    hyper.from_flags(["lr"])
  with pytest.raises(ValueError, match="--workdir cannot be swept"):
    hyper.from_flags(["workdir=a,b"])
  with pytest.raises(ValueError, match=r"appear in two factors"):
    hyper.from_flags(["lr=1,2", "lr=3"])


def _alive(pid: int) -> bool:
  try:
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except (FileNotFoundError, IndexError):
    return False
  return state not in ("Z", "X")  # a zombie is dead, just not yet reaped


CRASHER = ("import os, subprocess, sys, time; pid = int(os.environ['JAX_PROCESS_ID']);"
           "child = subprocess.Popen(['sleep', '120']);"
           "open(sys.argv[1] + f'/pids_{pid}', 'w').write(f'{os.getpid()} {child.pid}');"
           "print('worker', pid, 'up', flush=True); time.sleep(1.5);"
           "print('worker 1 crashing', flush=True) if pid == 1 else time.sleep(120);"
           "sys.exit(3)")


def test_a_crashing_process_fails_fast_and_leaves_nothing_running(tmp_path):
  start = time.monotonic()
  proc = launcher("launch/local.py", "--num_processes=2", f"--logdir={tmp_path / 'logs'}",
                  "--timeout_s=100", "--", sys.executable, "-c", CRASHER, str(tmp_path),
                  timeout=110)
  elapsed = time.monotonic() - start
  assert proc.returncode == 3, proc.stderr
  assert "process 1 exited with status 3" in proc.stderr and "worker 1 crashing" in proc.stderr
  assert elapsed < 60, elapsed
  pids = [int(p) for i in (0, 1) for p in (tmp_path / f"pids_{i}").read_text().split()]
  time.sleep(0.5)
  assert not [p for p in pids if _alive(p)], "processes left running"


def test_sigterm_to_the_launcher_reaches_every_process(tmp_path):
  worker = ("import signal, sys, time;"
            "signal.signal(signal.SIGTERM, lambda *a: (print('saved, exiting', flush=True), "
            "sys.exit(0)));print('ready', flush=True); time.sleep(120)")
  logs = tmp_path / "logs"
  proc = subprocess.Popen([sys.executable, "launch/local.py", "--num_processes=2",
                           f"--logdir={logs}", "--grace_s=20", "--", sys.executable, "-c",
                           worker], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.monotonic() + 30
  while time.monotonic() < deadline and not all(
      (logs / f"process_{i}.log").exists() and "ready" in (logs / f"process_{i}.log").read_text()
      for i in (0, 1)):
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=40)
  assert proc.returncode == 0, err
  for i in (0, 1):
    assert "saved, exiting" in (logs / f"process_{i}.log").read_text()


SELF_KILLER = """
import json, os, pathlib, signal, sys, time
logs, me = pathlib.Path(sys.argv[1]), int(os.environ["JAX_PROCESS_ID"])
print("worker", me, "up", flush=True)
if (logs / "again").exists():
  sys.exit(0)
deadline = time.time() + 5
while not (logs / "pids.json").exists() and time.time() < deadline:
  time.sleep(0.01)
if me == 1:
  (logs / "pid_1").write_text(str(os.getpid()))
  os.kill(os.getpid(), signal.SIGKILL)
listed = logs / "pids.json"
pids = json.loads(listed.read_text())["processes"] if listed.exists() else []
print("pids.json lists me:", pids[:1] == [os.getpid()], flush=True)
while not (logs / "pid_1").exists():
  time.sleep(0.001)
stat = pathlib.Path("/proc", (logs / "pid_1").read_text(), "stat")
while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
  time.sleep(0.001)
print("worker 0: the collective failed", flush=True)  # as a dead process's peer does
sys.exit(1)
"""


def test_a_process_killed_by_a_signal_is_named_and_the_logs_survive_a_rerun(tmp_path):
  """Process 1 SIGKILLs itself; process 0 then fails on its own, as a peer of a dead process
  does. The launcher names the killed one, and re-running appends to the logs."""
  logs = tmp_path / "logs"
  args = ("launch/local.py", "--num_processes=2", f"--logdir={logs}", "--timeout_s=60", "--",
          sys.executable, "-c", SELF_KILLER, str(logs))
  proc = launcher(*args, timeout=90)
  assert proc.returncode == 128 + signal.SIGKILL, proc.stderr
  assert proc.stderr.splitlines()[0] == (
      f"launch/local.py: process 1 was killed by SIGKILL (status 137); killed the other 1 "
      f"process(es) at once; its log: {logs / 'process_1.log'}")
  assert "pids.json lists me: True" in (logs / "process_0.log").read_text()
  assert not (logs / "pids.json").exists()  # only there while the processes run
  (logs / "again").touch()
  proc = launcher(*args, timeout=90)
  assert proc.returncode == 0, proc.stderr
  text = (logs / "process_1.log").read_text()
  assert text.count("==== launch/local.py ") == 2 and text.count("worker 1 up") == 2, text


def two_process_command(workdir, num_steps):
  """train_lm on 2 processes x 1 device (data:2), saving every step, so a save is nearly always
  in flight. With two devices the gradient all-reduce is one addition, which does not depend on
  the order, so the run matches 1 process x 2 devices bit for bit (the test below relies on it)."""
  return [sys.executable, "launch/local.py", "--num_processes=2", "--devices_per_process=1",
          "--noecho", "--timeout_s=240", "--", sys.executable, BINARY, f"--workdir={workdir}",
          *TINY, "--mesh=data:-1", f"--num_steps={num_steps}", "--checkpoint_every=1"]


def every_checkpoint(workdir) -> dict[int, dict]:
  """Every step folder read back as host arrays; a partial or unfinished one fails here."""
  folder = workdir / "checkpoints"
  names = sorted(p.name for p in folder.iterdir())
  assert all(n.isdigit() for n in names), f"unfinished saves left in {folder}: {names}"
  manager = ocp.CheckpointManager(folder, item_handlers={"state": ocp.PyTreeCheckpointHandler()},
                                  options=ocp.CheckpointManagerOptions(read_only=True))

  def read(step):
    tree = manager.item_metadata(step)["state"].tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(restore_args=as_numpy))).state
  return {int(n): read(int(n)) for n in names}


def in_groups(groups) -> list[int]:
  """Live processes whose process group is one of `groups` (the launcher's process leaders)."""
  def group(pid):
    try:
      return int(pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (FileNotFoundError, IndexError, ValueError):
      return None
  pids = [int(p.name) for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()]
  return [p for p in pids if group(p) in groups and _alive(p)]


def test_sigkill_of_one_process_stops_the_other_and_the_rerun_is_bit_identical(tmp_path):
  steps, run = 6, tmp_path / "run"
  # The rerun reuses the programs; the reference runs in this process, so no fast compile.
  env = subproc.environment(fast_compile=False,
                            JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
                            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  proc = subprocess.Popen(two_process_command(run, steps), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  pids_file, folder = run / "logs" / "pids.json", run / "checkpoints"
  deadline = time.monotonic() + 180
  # SIGKILL process 1 once a checkpoint is complete and a later save is being written.
  while not (folder.exists() and any(p.name.isdigit() for p in folder.iterdir())
             and any("tmp" in p.name for p in folder.iterdir()) and pids_file.exists()):
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()  # its processes die with it
      pytest.fail(f"no save in flight to interrupt: {proc.communicate()[1][-3000:]}")
    time.sleep(0.005)
  pids = json.loads(pids_file.read_text())["processes"]
  os.kill(pids[1], signal.SIGKILL)
  killed = time.monotonic()
  _, err = proc.communicate(timeout=60)
  stopped_after = time.monotonic() - killed
  assert proc.returncode == 137, err[-3000:]
  assert (f"launch/local.py: process 1 was killed by SIGKILL (status 137); killed the other 1 "
          f"process(es) at once; its log: {run / 'logs' / 'process_1.log'}") in err
  assert stopped_after < 10, stopped_after  # not the collectives' timeout
  assert not in_groups(set(pids)), "processes left running"
  left = sorted(p.name for p in folder.iterdir())
  resume_at = max(int(n) for n in left if n.isdigit())
  assert resume_at < steps and not (run / "results.json").exists()

  # The same command again deletes the partial save and resumes from the last complete step;
  # meanwhile the uninterrupted reference runs here, on 2 of this process's devices.
  again = subprocess.Popen(two_process_command(run, steps), cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  reference = tmp_path / "reference"
  lm.train_lm(tiny_config(reference, "data:2", steps))
  _, err = again.communicate(timeout=240)
  assert again.returncode == 0, err[-3000:]
  assert f"resuming at step {resume_at} of {steps}" in (run / "logs" / "process_0.log").read_text()
  got, want = every_checkpoint(run), every_checkpoint(reference)
  assert max(got) == max(want) == steps
  for part in ("params", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, got[steps][part], want[steps][part])
  assert metric_rows(run) == metric_rows(reference)
  print(f"\nkilled process 1 during the save after step {resume_at} (left: {left}); the launcher "
        f"stopped {stopped_after:.2f} s later; the rerun is bit-identical")


DRY_RUNS = {
    "tpu_pod_queued_resource.txt": [
        "launch/tpu_pod.py", "--tpu=interp-v5p", "--zone=us-east5-a", "--project=my-project",
        "--create=queued_resource", "--accelerator_type=v5p-64", "--spot", "--delete_after",
        "--source_dir=/home/me/interp", "--jax_spec=jax[tpu]==0.10.2", "--dry_run", "--",
        "python", "experiments/train_lm.py", "--workdir=/mnt/gcs/runs/lm",
        "--mesh=data:-1,model:4", "--d_model=1024", "--n_heads=16"],
    "tpu_pod_existing.txt": [
        "launch/tpu_pod.py", "--tpu=interp-v4", "--zone=us-central2-b", "--noinstall",
        "--dry_run", "--", "python", "experiments/train_lm.py", "--workdir=/mnt/shared/runs/lm",
        "--data=files:/mnt/shared/text/*.txt"],
    "slurm_per_gpu.txt": [
        "launch/slurm.py", "--nodes=2", "--gpus_per_node=8", "--partition=gpu",
        "--account=interp", "--time=04:00:00", "--cpus_per_task=12", "--requeue",
        "--setup=source .venv/bin/activate", "--sbatch=--mem=0", "--repo_dir=/home/me/interp",
        "--dry_run", "--", "python", "experiments/train_lm.py", "--workdir=runs/lm",
        "--mesh=data:-1,model:8"],
    "slurm_per_node.txt": [
        "launch/slurm.py", "--job_name=lm-nodes", "--nodes=4", "--gpus_per_node=4",
        "--tasks=per_node", "--signal_secs=0", "--repo_dir=/home/me/interp", "--dry_run", "--",
        "python", "experiments/train_lm.py", "--workdir=/scratch/runs/lm"],
}


@pytest.mark.parametrize("golden", sorted(DRY_RUNS))
def test_dry_run_matches_golden(golden):
  proc = launcher(*DRY_RUNS[golden], timeout=60)
  assert proc.returncode == 0, proc.stderr[-3000:]
  path = GOLDEN / golden
  if os.environ.get("UPDATE_GOLDEN"):
    path.write_text(proc.stdout)
  assert proc.stdout == path.read_text(), f"differs from {path} (UPDATE_GOLDEN=1 to rewrite)"


def test_compile_only_reports_per_device_memory(tmp_path):
  config = tiny_config(tmp_path / "never_written", "data:4,model:2", 10)
  report = lm.compile_only(config, capacity_gb=1.0, capacity_name="test")
  # W_E [256, 32] and W_U [32, 256] split over model=2: each device holds half of them.
  params = sum(x * 4 for x in (256 * 32 // 2, 32 * 256 // 2))
  assert report.mesh == {"data": 4, "model": 2} and report.devices == 8
  assert report.parameters > params
  assert abs(report.optimizer_state - 2 * report.parameters) <= 64  # Adam's mu, nu (+ counts)
  assert report.batch == 8 // 4 * 33 * 4  # 2 rows of n_ctx + 1 int32 tokens
  assert report.arguments == (report.parameters + report.optimizer_state + report.other_state
                              + report.batch)
  assert report.temporaries > 0 and report.fits
  assert "per-device memory" in report.format()
  assert not (tmp_path / "never_written").exists()

  proc = launcher(BINARY, "--compile_only", "--mesh=data:2,model:4", "--d_model=64",
                  "--n_heads=4", "--batch_size=8", "--device_memory_gb=0.001",
                  env=subproc.environment(devices=8, fast_compile=False))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "mesh data=2 x model=4 (8 cpu devices)" in proc.stdout
  assert "does NOT fit" in proc.stdout, proc.stdout


def test_gather_plots_a_result_against_a_result_grouped_by_a_flag(tmp_path):
  """An L0-FVU frontier: x and y are results columns, one line per --activation."""
  from launch import gather as gather_lib
  runs = [{"activation": a, "k": k} for a in ("topk", "relu") for k in (1, 2)]
  for run in runs:
    folder = tmp_path / f"activation={run['activation']},k={run['k']}"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(
        {"status": "completed", "summary": {"l0": run["k"] * 4.0, "fvu": 1.0 / run["k"]}}))
  csv_path, png = gather_lib.gather(str(tmp_path), runs, "summary.fvu", "summary.l0",
                                    ["activation"])
  assert png and os.path.getsize(png) > 0
  rows = list(csv.DictReader(open(csv_path)))
  assert sorted(float(r["summary.l0"]) for r in rows) == [4.0, 4.0, 8.0, 8.0]
  with pytest.raises(ValueError, match="neither a swept flag nor a results column"):
    gather_lib.gather(str(tmp_path), runs, "summary.fvu", "summary.nope")
