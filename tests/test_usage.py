"""User errors at the door: one line naming the flag or file, no traceback, nothing lost.

The binaries' one-line report (`interp.usage.run`) is checked on two real binaries; the checks
themselves (mesh, run folder, damaged records, sweep files, context length) at library level.
"""

import logging
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from interp import jsonio, usage
from interp.data import sources
from interp.models import config, transformer
from interp.parallel import mesh as mesh_lib
from interp.sae import activation_sources
from interp.sae import train as sae_train
from interp.train import run_folder
from interp.train.run_config import RunConfig
from interp.train.session import Session
from launch import hyper, local

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, message", [
    ("data:0,model:-1", "--mesh='data:0,model:-1': size 0 of axis 'data' must be a positive "
                        "integer or -1"),
    ("data:4,data:2", "--mesh='data:4,data:2': axis 'data' is given twice"),
    ("model:-3", "--mesh='model:-3': size -3 of axis 'model' must be a positive integer or -1"),
])
def test_meshes_need_distinct_axes_and_positive_sizes(text, message):
  with pytest.raises(ValueError) as e:
    mesh_lib.MeshConfig.parse(text)
  assert str(e.value).startswith(message)
  with pytest.raises(ValueError, match="must be a positive integer or -1"):
    mesh_lib.MeshConfig(data=0)


def test_binaries_print_a_user_error_as_one_line(tmp_path):
  (tmp_path / "afile").write_text("keep me")
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  env.pop("INTERP_TRACEBACK", None)
  cases = [
      ([ROOT / "experiments" / "train_lm.py", f"--workdir={tmp_path / 'afile'}"],
       f"train_lm.py: error: --workdir={tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, "
       "not a folder"),
      ([ROOT / "launch" / "sweep.py", f"--sweep_dir={tmp_path / 's'}", "--grid=lr=1",
        "--parallel=0", "--", "python", "experiments/train_lm.py"],
       "sweep.py: error: --parallel=0 must be >= 1"),
  ]
  for args, message in cases:
    out = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(message), out.stderr[-2000:]
    assert errors[0].endswith("--helpfull)")
    assert "Traceback" not in out.stderr and "flags:\n" not in out.stderr, out.stderr[-2000:]
    assert not [line for line in out.stderr.splitlines() if line.startswith("  --")]
  assert (tmp_path / "afile").read_text() == "keep me"


def test_only_this_projects_own_errors_are_user_errors():
  def raised(fn):
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except
      return e
  ours = raised(lambda: mesh_lib.MeshConfig.parse("data:0"))
  theirs = raised(lambda: np.zeros(3).reshape(2))  # a ValueError from inside numpy
  assert usage.is_user_error(ours) and not usage.is_user_error(theirs)
  assert not usage.is_user_error(raised(lambda: {}["missing"]))
  assert usage.one_line(ValueError("a\n  b")) == "a b"


def test_a_run_folder_must_be_a_writable_folder(tmp_path, monkeypatch):
  (tmp_path / "afile").write_text("x")
  with pytest.raises(NotADirectoryError,
                     match=r"^--workdir=.*afile/run: .*afile is a file, not a folder"):
    Session(RunConfig(workdir=str(tmp_path / "afile" / "run")))
  monkeypatch.setattr(os, "access", lambda path, mode: False)  # root can write anywhere
  with pytest.raises(PermissionError, match=r"^--workdir=.*new: .* is not writable"):
    run_folder.check_writable(str(tmp_path / "new"))


def test_resuming_with_the_same_tuple_flags_warns_of_nothing(tmp_path, caplog):
  run_folder.record_flags(str(tmp_path), {"multiples": (0.0, 2.0), "lr": 0.1})
  with caplog.at_level(logging.WARNING):
    run_folder.record_flags(str(tmp_path), {"multiples": (0.0, 2.0), "lr": 0.1})
    assert "changed flags" not in caplog.text  # the JSON list read back is the same tuple
    run_folder.record_flags(str(tmp_path), {"multiples": (0.0, 4.0), "lr": 0.1})
  assert "changed flags" in caplog.text and "multiples" in caplog.text


def test_damaged_records_name_their_file_and_stay_on_disk(tmp_path):
  (tmp_path / "flags.json").write_text('{"lr": 0.1,')
  with pytest.raises(jsonio.JSONFileError) as e:
    run_folder.record_flags(str(tmp_path), {"lr": 0.2})
  assert str(e.value).startswith(f"{tmp_path / 'flags.json'} is not valid JSON (")
  assert (tmp_path / "flags.json").read_text() == '{"lr": 0.1,'  # not overwritten
  (tmp_path / "sae_config.json").write_text("{not json")
  with pytest.raises(jsonio.JSONFileError, match=r"sae_config.json is not valid JSON \(.*line 1"):
    sae_train.load_params(str(tmp_path))


def test_sweep_files_with_errors_are_named(tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_hyper(h):\n  return h.sweep('lr', [1, 2]\n")
  with pytest.raises(ValueError, match=rf"^--sweep_file={bad}: syntax error at line 2"):
    hyper.load_file(str(bad))
  with pytest.raises(ValueError, match="no such file"):
    hyper.load_file(str(tmp_path / "missing.py"))
  # Launched runs use the launcher's own interpreter, not the first `python` on PATH.
  assert local.this_python(["python", "x.py"]) == [sys.executable, "x.py"]
  assert local.this_python(["/opt/py", "x.py"]) == ["/opt/py", "x.py"]


def test_context_longer_than_learned_positions_says_what_fits():
  cfg = config.attn_only(n_layers=1, d_model=8, n_heads=2, n_ctx=16, vocab_size=32)
  params = transformer.init_params(cfg, jax.random.key(0))
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig(data=1, model=1))
  with pytest.raises(ValueError, match=r"^--context_length=32 exceeds the n_ctx=16 positions "
                                       r"toy learned; pass --context_length=16 or less"):
    activation_sources.ModelActivations(
        cfg, params, mesh, "blocks.0.hook_resid_post", sources.TokenWindows(np.arange(64) % 32, "t"),
        context_length=32, batch_size=2, model_name="toy")


def test_experiment_numbers_are_checked_at_the_door(tmp_path):
  from interp.graphs import experiment as graph_experiment
  from interp.toy import experiment as toy_experiment
  with pytest.raises(ValueError, match=r"^--context_length=0: must be a positive integer$"):
    graph_experiment.GraphRunConfig(context_length=0)
  with pytest.raises(ValueError, match=r"^--steer_factor=nan: must be a finite number$"):
    graph_experiment.GraphRunConfig(steer_factor=float("nan"))
  with pytest.raises(ValueError, match=r"^--lr=nan: must be a finite number >= 0 \(0 = the "):
    toy_experiment.ToyExperimentConfig(family="intro", workdir=str(tmp_path), lr=float("nan"))
  with pytest.raises(ValueError, match=r"^--checkpoint_every=0: must be a positive integer"):
    toy_experiment.ToyExperimentConfig(family="intro", workdir=str(tmp_path), checkpoint_every=0)
  from interp.induction import experiment as induction_experiment
  with pytest.raises(ValueError, match=r"^--lr=nan: must be a finite number > 0$"):
    induction_experiment.InductionConfig(workdir=str(tmp_path), lr=float("nan"))
