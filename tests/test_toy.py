"""Toy models of superposition: the data path, the compiled sweep, and the learned geometry.

The geometry tests train small sweeps (a few thousand steps at a raised learning rate, on one
device) and assert what the paper finds: which features are represented and how they are
arranged, not just that training ran.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.toy import analytic, data, experiment, geometry, measures, model, train
from interp.toy import sweep as sweep_lib
from interp.train.checkpoint import CheckpointConfig, CheckpointMismatchError
from tests import subproc

ROOT = pathlib.Path(__file__).resolve().parents[1]
ONE = jax.devices()[:1]


def _config(n, m, steps, lr=1e-2, workdir="", **kw):
  kw.setdefault("log_every", max(1, steps // 4))
  return train.ToyTrainConfig.make(workdir=workdir, model=model.ToyModelConfig(n, m),
                                   num_steps=steps, lr=lr, **kw)


def _best(run, sweep, label):
  return measures.best_of(run.eval_loss, sweep.labels[label])


# ----- Data path.

def test_fused_threefry_is_jax_random_bit_for_bit():
  key = jax.random.key(3)
  cfg = data.DataConfig()
  for shape in [(5,), (1024, 20), (2, 3, 7)]:
    np.testing.assert_array_equal(data.threefry_bits(key, shape),
                                  jax.random.bits(key, shape, jnp.uint32))
  for d in [0, 1, 77, 2 ** 31 + 3]:
    np.testing.assert_array_equal(jax.random.key_data(data.fold_in(key, d, cfg)),
                                  jax.random.key_data(jax.random.fold_in(key, d)))
  jitted = jax.jit(lambda k, d: jax.random.key_data(data.fold_in(k, d, cfg)))
  np.testing.assert_array_equal(jitted(key, jnp.int32(9)),
                                jax.random.key_data(jax.random.fold_in(key, 9)))


@pytest.mark.parametrize("bits", ["32", "64"])
@pytest.mark.parametrize("prng", ["threefry2x32", "philox2x32"])
def test_feature_distribution(bits, prng):
  cfg = data.DataConfig(prng=prng, bits=bits)
  density = jnp.array([1.0, 0.3, 0.01, 0.0])
  x = np.asarray(jax.jit(lambda k: data.sample(k, density, 200_000, cfg))(
      data.root_key(0, prng)))
  present = x > 0
  np.testing.assert_allclose(present.mean(0), [1.0, 0.3, 0.01, 0.0], atol=3e-3)
  for i in range(3):
    v = x[present[:, i], i]
    assert v.min() >= 0 and v.max() <= 1
    sigma = 1 / np.sqrt(len(v))  # 4 standard errors of a uniform's mean and variance:
    assert abs(v.mean() - 0.5) < 4 * 0.29 * sigma and abs(v.var() - 1 / 12) < 4 * 0.075 * sigma
  assert abs(np.corrcoef(x[:, 0], x[:, 1])[0, 1]) < 0.01


def test_correlated_and_anticorrelated_sets():
  density = jnp.full((5,), 0.2)
  key = data.root_key(1, "threefry2x32")
  anti = np.asarray(data.sample(key, density, 100_000, data.DataConfig(sets="anticorrelated:2")))
  assert anti.shape == (100_000, 5)
  assert not np.any((anti[:, 0] > 0) & (anti[:, 1] > 0))  # never together
  np.testing.assert_allclose((anti > 0).mean(0), 0.2, atol=5e-3)  # marginals kept
  corr = np.asarray(data.sample(key, density, 100_000, data.DataConfig(sets="correlated:2")))
  np.testing.assert_array_equal(corr[:, 0] > 0, corr[:, 1] > 0)  # always together
  np.testing.assert_array_equal(corr[:, 2] > 0, corr[:, 3] > 0)
  np.testing.assert_allclose((corr > 0).mean(0), 0.2, atol=5e-3)
  assert data.DataConfig(sets="correlated:2").words_per_sample(5) == 2 * 3 + 1


def test_bad_choices_list_the_valid_ones():
  with pytest.raises(ValueError, match="anticorrelated"):
    data.FeatureSets.parse("sideways:2")
  with pytest.raises(ValueError, match="threefry2x32"):
    data.DataConfig(prng="mt19937")
  with pytest.raises(ValueError, match="geometry family only"):
    experiment.ToyExperimentConfig(family="intro", workdir="x", n_features=7)
  with pytest.raises(ValueError, match="'intro'"):
    experiment.ToyExperimentConfig(family="outro", workdir="x")


# ----- Measures and the analytic phase diagram.

def test_measures_on_known_arrangements():
  angles = np.radians(np.arange(5) * 72.0)
  pentagon = np.stack([np.cos(angles), np.sin(angles)])
  np.testing.assert_allclose(measures.dimensionality(pentagon), 0.4, atol=1e-6)
  np.testing.assert_allclose(measures.dims_per_feature(pentagon), 0.4, atol=1e-6)
  _, gaps = measures.angles_2d(pentagon)
  np.testing.assert_allclose(gaps, 72.0, atol=1e-4)
  antipodal = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
  np.testing.assert_allclose(measures.dimensionality(antipodal), [0.5, 0.5, 1.0], atol=1e-6)
  np.testing.assert_allclose(measures.superposition(antipodal), [1.0, 1.0, 0.0], atol=1e-6)
  assert measures.nearest_fraction(0.41)[0] == "2/5"


def test_analytic_phase_diagram():
  # The closed forms agree with the quadrature of the exact expected loss.
  for r, p in [(0.5, 0.3), (2.0, 1.0)]:
    not_rep, ded = analytic.unsuperposed_loss(r, p)
    theta = jnp.array([1.0, 0.0, 0.0, p / 2])
    np.testing.assert_allclose(analytic.expected_loss(theta, r, p), not_rep, rtol=2e-3)
    theta = jnp.array([0.0, 1.0, p / 2, 0.0])
    np.testing.assert_allclose(analytic.expected_loss(theta, r, p), ded, rtol=2e-3)
  out = analytic.solve(np.array([0.3, 1.0, 3.0]), np.array([1.0, 0.02]))
  # Dense: the less important feature is dropped (r = 1 ties; either is fine).
  assert out["label"][0][0] == "not represented" and out["label"][0][2] == "dedicated"
  assert list(out["label"][1]) == ["superposition"] * 3  # sparse: antipodal pairs win
  w1, w2 = out["theta"][1, 1, :2]
  assert w1 * w2 < 0  # and they are antipodal


# ----- The compiled sweep: sharding, resume, retracing.

def test_instances_independent_of_mesh_and_padding():
  """5 instances on 8 devices (padded to 8) train to the same numbers as on one device."""
  sweep = sweep_lib.product(5, {"density": [1.0, 0.3, 0.1, 0.05, 0.02]},
                            lambda density: (0.9 ** np.arange(5), density, True))
  one = train.train_toy(_config(5, 2, 10), sweep, ONE)
  eight = train.train_toy(_config(5, 2, 10), sweep, jax.devices()[:8])
  assert eight.timing["mesh"] == {"data": 8, "model": 1}
  np.testing.assert_allclose(one.params["W"], eight.params["W"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(one.eval_loss, eight.eval_loss, rtol=1e-5)
  # An instance's numbers do not depend on the rest of the sweep either.
  first = train.train_toy(_config(5, 2, 10), sweep_lib.Sweep(
      sweep.importance[:1], sweep.density[:1], sweep.relu[:1]), ONE)
  np.testing.assert_allclose(first.params["W"][0], one.params["W"][0], rtol=1e-5, atol=1e-6)


def test_params_and_state_are_sharded_over_instances():
  sweep = sweep_lib.product(20, {"seed": range(16)}, lambda seed: (np.ones(20), 0.1, True))
  program = train.build(_config(20, 5, 1), sweep, jax.devices()[:8])
  state = jax.jit(program.init, out_shardings=program.state_shardings)()
  assert state.params["W"].sharding.spec[0] == "data"
  shard = state.params["W"].addressable_shards[0].data
  assert shard.shape == (2, 5, 20)  # 16 instances / 8 devices
  for _ in range(3):
    state, _ = program.step(state, np.int32(0))
  assert program.step.traces() == 1


def test_resume_is_exact_and_refuses_another_sweep(tmp_path):
  sweep = sweep_lib.product(5, {"density": [1.0, 0.1]},
                            lambda density: (0.9 ** np.arange(5), density, True))
  ckpt = CheckpointConfig(every_steps=10, keep=2, async_save=False)
  straight = train.train_toy(_config(5, 2, 20), sweep, ONE)
  run = lambda steps, s=sweep: train.train_toy(
      _config(5, 2, steps, workdir=str(tmp_path), checkpoint=ckpt, log_every=5), s, ONE)
  run(10)
  resumed = run(20)
  assert resumed.timing["steps_this_call"] == 10
  np.testing.assert_array_equal(straight.params["W"], resumed.params["W"])
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [5, 10, 15, 20]
  other = sweep_lib.product(5, {"density": [1.0, 0.2]},
                            lambda density: (0.9 ** np.arange(5), density, True))
  with pytest.raises(CheckpointMismatchError, match="another sweep"):
    run(20, other)


# ----- Learned geometry.

def test_intro_geometry():
  """Density 1: only the two most important features, orthogonal. Sparse: a pentagon."""
  sweep = sweep_lib.product(5, {"density": [1.0, 0.05], "seed": range(3)},
                            lambda density, seed: (0.9 ** np.arange(5), density, True))
  run = train.train_toy(_config(5, 2, 2500), sweep, ONE)
  best = _best(run, sweep, "density")
  dense, sparse = run.params["W"][best[0]], run.params["W"][best[1]]
  order, gaps = measures.angles_2d(dense)
  assert sorted(order) == [0, 1]
  assert abs(min(gaps) - 90) < 5
  order, gaps = measures.angles_2d(sparse)
  assert len(order) == 5
  np.testing.assert_allclose(gaps, 72, atol=6)


def test_basic_linear_vs_relu():
  """Linear: exactly the top m features at any sparsity. ReLU: more than m when sparse."""
  sweep = sweep_lib.product(
      20, {"relu": [False, True], "sparsity": [0.0, 0.99], "seed": range(2)},
      lambda relu, sparsity, seed: (0.7 ** np.arange(20), 1 - sparsity, relu))
  run = train.train_toy(_config(20, 5, 2500), sweep, ONE)
  best = measures.best_of(run.eval_loss, sweep.labels["relu"] * 2 + sweep.labels["sparsity"])
  rep = {c: np.flatnonzero(measures.represented(run.params["W"][i])) for c, i in best.items()}
  assert rep[0].tolist() == [0, 1, 2, 3, 4] and rep[1].tolist() == [0, 1, 2, 3, 4]
  assert rep[2].tolist() == [0, 1, 2, 3, 4]  # ReLU, dense: no superposition
  assert len(rep[3]) > 5  # ReLU, sparse: superposition
  sup = measures.superposition(run.params["W"][best[3]])
  assert np.all(sup[rep[3]][5:] > 0.1)


def test_phase_diagram_agrees_with_analytic(tmp_path):
  cfg = experiment.ToyExperimentConfig(family="phase", workdir=str(tmp_path), grid=4, seeds=3,
                                       num_steps=1500)
  res = experiment.run_family(cfg, ONE)
  q = res["quantities"]
  assert q["agreement"] >= 0.8, q["disagreements"]
  assert q["counts_analytic"]["superposition"] >= 4
  assert os.path.exists(tmp_path / "phase_diagram.png")


def test_geometry_dstar_plateau():
  """D* = 1 when dense, then sticks at 1/2 (antipodal pairs) over a range of sparsities before
  falling further (n=60, m=6: the paper's n=200, m=20 shows the plateau at the same 1/(1-S))."""
  inverse = np.array([1.0, 2.4, 2.8, 3.2, 3.6, 10.0])
  sweep = sweep_lib.product(60, {"density": inverse},
                            lambda density: (np.ones(60), 1 / density, True))
  run = train.train_toy(_config(60, 6, 3000, lr=3e-3, batch_size=256), sweep, ONE)
  dstar = measures.dims_per_feature(run.params["W"])
  assert abs(dstar[0] - 1) < 0.05, dstar
  np.testing.assert_allclose(dstar[1:5], 0.5, atol=0.05)
  assert dstar[-1] < 0.4
  assert [p["fraction"] for p in geometry.plateaus(inverse, dstar)][-1:] == ["1/2"], dstar


# ----- Binaries and the figure suite.

@pytest.mark.parametrize("family", ["basic", "phase", "geometry"])  # intro: the binary's test
def test_family_quick_runs_write_figures(tmp_path, family):
  res = experiment.run_family(experiment.ToyExperimentConfig(
      family=family, workdir=str(tmp_path), quick=True), ONE)
  assert res["status"] == "completed"
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["quantities"] and saved["data_path"]["measured"]["ns_per_feature_sample"] > 0
  assert all(os.path.exists(f) for f in saved["figures"]) and saved["figures"]


def test_binary_smoke_and_resume(tmp_path):
  cmd = [sys.executable, str(ROOT / "experiments" / "toy_superposition.py"), "--family=intro",
         f"--workdir={tmp_path}", "--quick", "--cpu_devices=2"]
  env = subproc.environment(devices=0)
  first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  results = json.load(open(tmp_path / "results.json"))
  assert results["training"]["mesh"] == {"data": 2, "model": 1}
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.load(open(tmp_path / "results.json"))["training"]["steps_this_call"] == 0
