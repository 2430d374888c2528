"""Smoke test of experiments/bench_graph.py: one short prompt on a tiny trained LM (`toy:RUN`)."""

import json
import os
import subprocess
import sys

from interp.models import config as model_config
from interp.train import lm
from interp.train.checkpoint import CheckpointConfig
from interp.train.optim import OptimizerConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, "experiments", "bench_graph.py")


def test_one_length_on_a_tiny_lm(tmp_path):
  run = tmp_path / "lm"
  model = model_config.attn_only(n_layers=1, d_model=32, n_heads=2, n_ctx=16, vocab_size=256,
                                 norm="layernorm", d_mlp=64)
  lm.train_lm(lm.TrainLMConfig.make(workdir=str(run), model=model, batch_size=8, num_steps=2,
                                    log_every=1, mesh="data:-1",
                                    optimizer=OptimizerConfig(lr=1e-2, warmup_steps=1),
                                    checkpoint=CheckpointConfig(every_steps=2, keep=1)))
  out = tmp_path / "runs" / "bench_graph.json"  # the binary creates the missing folder
  proc = subprocess.run([sys.executable, BINARY, f"--model=toy:{run}", "--lengths=8",
                         "--d_latent=32", "--k=2", "--max_feature_nodes=8", "--chunk=4",
                         f"--out={out}"], cwd=ROOT, timeout=240, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-4000:]
  report = json.loads(out.read_text())

  [row] = report["rows"]
  assert "error" not in row, row
  assert row["tokens"] == 8
  assert row["first_build_s"] > 0 and row["timings"]["total_s"] > 0
  assert 0 < row["active_features"] <= 8 * 2  # k per layer and token, one layer
  assert row["feature_rows"] <= 8 and row["logit_rows"] > 0
  assert row["peak_rss_gb"] >= row["rss_after_load_gb"] > 0
  assert report["model"] == f"toy:{run}" and report["k"] == 2
  assert len(report["machine"]["loadavg"]) == 3
