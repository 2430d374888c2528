"""IOI prompts: single-token names, well-formed prompts and aligned corruptions per tokenizer;
the circuit search and faithfulness mechanics on a toy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.circuits import weights
from interp.data import tokenized
from interp.ioi import circuit as ioi
from interp.ioi import experiment
from interp.ioi import prompts as ioi_data
from interp.models import config, transformer
from interp.models.config import TransformerConfig


def _check_prompts(tok, data: ioi_data.IOIData, bos):
  names = ioi_data.single_tokens(tok, ioi_data.NAMES)
  name_ids = {int(tokenized.encode(tok, " " + n)[0]) for n in names}
  assert len(names) >= 20
  for i in range(len(data.text)):
    io, s1, s1p1, s2, end = data.roles[i]
    row = data.tokens[i, :end + 1]
    # The slot-by-slot ids are exactly what the tokenizer makes of the whole prompt.
    whole = ([bos] if bos is not None else []) + list(tokenized.encode(tok, data.text[i]))
    assert list(row) == whole, data.text[i]
    assert data.text[i].endswith(" to") and not data.text[i].endswith(" to ")
    assert row[io] == data.answers[i, 0] and row[s1] == data.answers[i, 1] == row[s2]
    assert {int(row[io]), int(row[s1])} <= name_ids
    assert s1p1 == s1 + 1 and end == len(row) - 1
    assert (io < s1) == bool(data.abba[i])
    # p_ABC: same template and length, three different names, none of them IO or S.
    crow = data.corrupt[i, :end + 1]
    abc = [int(crow[io]), int(crow[s1]), int(crow[s2])]
    assert len(set(abc)) == 3 and set(abc) <= name_ids
    assert not set(abc) & {int(row[io]), int(row[s1])}
    others = np.ones(end + 1, bool)
    others[[io, s1, s2]] = False
    np.testing.assert_array_equal(crow[others], row[others])


def test_gemma_prompts(gemma_tokenizer):
  data = ioi_data.generate(gemma_tokenizer, 24, seed=3)
  _check_prompts(gemma_tokenizer, data, gemma_tokenizer.bos_id)
  assert data.abba.sum() == 12 and len(set(data.template.tolist())) > 3


def test_gpt2_prompts(npm_tokenizer_dir):
  from interp.models.tokenizer_bpe import BPETokenizer
  tok = BPETokenizer.from_files(npm_tokenizer_dir / "encoder.json",
                                npm_tokenizer_dir / "vocab.bpe")
  data = ioi_data.generate(tok, 16, seed=1)
  _check_prompts(tok, data, tok.eos_id)
  assert data.tokens[0, 0] == tok.eos_id  # GPT-2 convention: <|endoftext|> first


class _ByteTok:
  """A tokenizer where only a few names are single tokens: the generator must refuse it."""
  vocab_size = 256

  def encode(self, text):
    return list(text.encode())

  def decode(self, ids):
    return bytes(ids).decode()


def test_refuses_a_tokenizer_without_single_token_names():
  with pytest.raises(ValueError, match="single-token names"):
    ioi_data.generate(_ByteTok(), 4)


def test_faithfulness_of_everything_is_one_and_of_nothing_is_the_ablated_model():
  cfg = TransformerConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2, d_head=16,
                          n_ctx=64, d_mlp=64, init_std=0.3)
  params = transformer.init_params(cfg, jax.random.key(0))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 300, (6, 12)).astype(np.int32)
  corrupt = tokens.copy()
  corrupt[:, 3] = rng.integers(0, 300, 6)
  roles = np.tile(np.array([[2, 3, 4, 8, 11]], np.int32), (6, 1))
  data = ioi_data.IOIData(tokens, corrupt, np.array([[5, 6]] * 6, np.int32), roles,
                          np.array([0, 0, 0, 1, 1, 1], np.int32), np.array([1, 0] * 3, bool),
                          ("",) * 6)
  every = [(l, h) for l in range(2) for h in range(2)]
  full = ioi.faithfulness(cfg, params, data, every)
  assert full["faithfulness"] == pytest.approx(1.0, abs=1e-6)
  empty = ioi.faithfulness(cfg, params, data, [])
  assert empty["logit_diff_circuit"] == pytest.approx(empty["logit_diff_all_heads_ablated"])
  # Per-template means: a head ablated on the corrupted prompts of its own template group.
  means = ioi.template_means(cfg, params, data)
  _, cache = transformer.run_with_cache(cfg, params, jnp.asarray(corrupt), ["blocks.0.attn.hook_z"])
  np.testing.assert_allclose(means[0, 4], cache["blocks.0.attn.hook_z"][3:].mean(0), atol=1e-6)


def test_head_logit_diff_attribution_on_plain_arrays():
  # No norm: a head's direct path to the logits is z W_O W_U.
  cfg = config.attn_only(2, 16, 2, 16, 40)
  rng = np.random.default_rng(1)
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  params = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype), shapes)
  tokens = rng.integers(0, 40, (5, 9)).astype(np.int32)
  end = np.array([8, 6, 8, 7, 5])
  io, s = rng.integers(0, 40, 5), rng.integers(0, 40, 5)
  got = ioi.head_logit_diff_attribution(cfg, params, tokens, end, io, s)
  names = [f"blocks.{i}.attn.hook_z" for i in range(2)]
  _, cache = transformer.run_with_cache(cfg, params, jnp.asarray(tokens), names)
  w_o = np.asarray(weights.head_weights(cfg, params, fold_norms=False)["W_O"])  # [l h e d]
  w_u = np.asarray(params["unembed"]["W_U"])
  z = np.stack([np.asarray(cache[n])[np.arange(5), end] for n in names])  # [l b h e]
  ref = np.einsum("lbhe,lhed,db->lh", z, w_o, w_u[:, io] - w_u[:, s]) / 5
  assert got.shape == (2, 2)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  # END positions as IOIData keeps them ([b 1]) give the same.
  np.testing.assert_array_equal(
      ioi.head_logit_diff_attribution(cfg, params, tokens, end[:, None], io, s), got)
  with pytest.raises(ValueError, match=r"^io_ids must be \[5\] integers, one per prompt"):
    ioi.head_logit_diff_attribution(cfg, params, tokens, end, io[:4], s)
  with pytest.raises(ValueError, match=r"^end_positions must lie in \[0, 9\)"):
    ioi.head_logit_diff_attribution(cfg, params, tokens, end + 1, io, s)
  with pytest.raises(ValueError, match=r"^s_ids must lie in \[0, 40\)"):
    ioi.head_logit_diff_attribution(cfg, params, tokens, end, io, s + 40)


def test_agreement_measures():
  a = np.arange(10.0)
  out = experiment.agreement(a, 2 * a + 1, k=3)
  assert out["pearson_r"] == pytest.approx(1.0) and out["kendall_tau"] == pytest.approx(1.0)
  assert out["top3_overlap"] == 1.0
  assert experiment.agreement(a, -a, k=3)["kendall_tau"] == pytest.approx(-1.0)
