"""interp's patching sweeps equal TransformerLens's `transformer_lens.patching` on shared weights."""

import dataclasses
import importlib.util

import numpy as np
import pytest

from interp.bench import harness, patching, patching_sides

needs_tl = pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is None,
                              reason="transformer_lens (and torch) needed for the peer side")


def test_tl_weights_map_onto_every_interp_parameter():
  import jax
  from interp.models import transformer
  for spec in patching.QUICK.values():
    params = patching_sides.params_from_tl(spec, patching_sides.random_weights(spec, 0))
    mcfg = patching_sides.interp_model_config(spec)
    want = jax.eval_shape(lambda: transformer.init_params(mcfg, jax.random.key(0)))
    assert jax.tree.map(lambda x: x.shape, params) == jax.tree.map(lambda x: x.shape, want)


@needs_tl
def test_quick_sweeps_match_transformer_lens(tmp_path):
  spec = patching.QUICK["gpt2_small"]  # has every site kind, MLPs and LayerNorms
  path = str(tmp_path / "w.npz")
  np.savez(path, **patching_sides.random_weights(spec, 0))
  cfg = patching.PatchingBenchConfig(out="", models=(spec,), reps=1, tl_reps=1, rounds=1,
                                     threads=1, chunk=0, seed=0, quick=True, weights=(path,))
  res = patching.worker(harness.ALL, cfg)[spec.name]
  report = patching.compare(spec, [res["interp"]], [res["tl"]])
  assert set(report["kinds"]) == {"resid", "heads", "attn_out", "mlp_out"}
  for kind, k in report["kinds"].items():
    assert k["shape"] == [spec.n_layers, spec.n_heads if kind == "heads" else spec.ctx], kind
    assert k["tl_value_range"] > 1e-3, kind  # the patches move the metric
    assert k["max_abs_diff"] < 1e-5, (kind, k["max_abs_diff"])
    assert k["interp_sweep_seconds"] > 0 and k["tl_sweep_seconds"] > 0
  assert report["all_parity"]


def test_bad_model_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"valid: \['attn_only', 'gpt2_small'\]"):
    patching.model_shapes(["gpt3"], quick=True)
  assert dataclasses.is_dataclass(patching.CONFIG)
