"""Feature clamping: the error-kept splice is exact with no clamp, and moves what it should."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import generate, transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks
from interp.sae import dictionary
from interp.sae.config import SAEConfig
from interp.steering import clamp as steering

CFG = TransformerConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_head=16, n_ctx=32,
                        d_mlp=64, init_std=0.2, tied_embeddings=True, positional="rope")
HOOK = "blocks.1.hook_resid_post"
SAE = SAEConfig(d_in=32, d_sae=48, activation="relu")


@pytest.fixture(scope="module")
def setup():
  params = transformer.init_params(CFG, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (3, 10), 0, CFG.vocab_size)
  _, cache = transformer.run_with_cache(CFG, params, tokens, [HOOK])
  sae = dictionary.init(SAE, jax.random.key(2), cache[HOOK].reshape(-1, 32))
  acts = dictionary.encode(SAE, sae, cache[HOOK])
  latent = int(jnp.argmax((acts > 0).mean((0, 1))))  # a latent that fires
  return params, tokens, sae, acts, latent


def _logits(params, tokens, edit=None):
  return transformer.forward(CFG, params, tokens, Hooks(edits={HOOK: edit} if edit else {}))[0]


def test_clamping_to_its_own_value_changes_nothing(setup):
  params, tokens, sae, acts, latent = setup
  own = acts[..., latent:latent + 1]  # [b p 1]: each position's own activation
  out = _logits(params, tokens, steering.clamp_edit(SAE, sae, [latent], own))
  ref = _logits(params, tokens)
  assert float(jnp.abs(out - ref).max()) <= 1e-5


def test_clamp_equals_the_error_kept_splice(setup):
  params, tokens, sae, acts, latent = setup
  ours = _logits(params, tokens, steering.clamp_edit(SAE, sae, [latent, 3], jnp.array([5.0, 0.0])))
  ref = _logits(params, tokens, steering.splice_error_kept(SAE, sae, [latent, 3],
                                                           jnp.array([5.0, 0.0])))
  np.testing.assert_allclose(ours, ref, atol=2e-4)
  assert float(jnp.abs(ours - _logits(params, tokens)).max()) > 1e-2


def test_position_mask_leaves_earlier_positions_alone(setup):
  params, tokens, sae, acts, latent = setup
  positions = jnp.arange(10) >= 6
  out = _logits(params, tokens, steering.clamp_edit(SAE, sae, [latent], [8.0], positions))
  ref = _logits(params, tokens)
  np.testing.assert_allclose(out[:, :6], ref[:, :6], atol=1e-6)
  assert float(jnp.abs(out[:, 6:] - ref[:, 6:]).max()) > 1e-2


def test_dose_response_raises_the_output_tokens_and_the_side_effects(setup):
  params, tokens, sae, acts, latent = setup
  targets = jnp.asarray(steering.output_tokens(CFG, params, sae, latent, k=3))
  mask = jnp.ones(tokens.shape, bool)
  doses = jnp.array([[0.0], [2.0], [8.0], [32.0]])
  out = steering.dose_response(CFG, params, SAE, sae, HOOK, jnp.array([latent]), doses, tokens,
                               mask, tokens, mask, targets)
  prob, kl, loss = map(np.asarray, (out["target_prob"], out["kl"], out["loss"]))
  assert np.all(np.diff(prob[1:]) > 0), prob  # the latent's output tokens gain mass with the dose
  assert prob[-1] > 3 * prob[0]
  assert np.all(np.diff(kl[1:]) > 0) and kl[-1] > 1.0, kl
  shift = np.abs(loss - float(out["loss_unclamped"]))
  assert shift[-1] > shift[1] and shift[-1] > 0.1, (loss, out["loss_unclamped"])


def test_generation_with_a_clamp(setup):
  params, tokens, sae, acts, latent = setup
  prompt = np.asarray(tokens[0, :4])
  free = generate.greedy(CFG, params, prompt, 6)
  own = steering.generate_clamped(CFG, params, SAE, sae, HOOK, prompt, 6, [latent], [0.0])
  strong = steering.generate_clamped(CFG, params, SAE, sae, HOOK, prompt, 6, [latent], [1e4])
  top = steering.output_tokens(CFG, params, sae, latent, k=1)[0]
  assert list(strong[4:]) == [top] * 6
  assert own.shape == free.shape == (10,)
