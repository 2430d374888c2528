"""Feature clamping: steer a model by setting SAE latents at a hook (Templeton et al., 2024).

The SAE is spliced in with its reconstruction error kept: at the hook, x becomes
  x + decode(a') - decode(a) = x + (a' - a) W_dec / norm_scale,
where a = encode(x) and a' is a with the clamped latents set. Written as a difference, an
unclamped (or clamped-to-its-own-value) latent changes nothing, exactly: the model's output
is untouched until a clamp moves a latent, and then only along that latent's decoder row.

Vocabulary:
  clamp     latents [k] and values [k]; a value is absolute, or `multiple` x the latent's
            maximum activation (measured on text, `max_activations`).
  positions optional bool [p]: clamp only there (default: every position).
  dose      the clamp value along a sweep; `dose_response` maps a vector of doses in one
            compiled `lax.map` (one forward per dose, logits never all held at once).

Precision (`interp.precision`): every function that runs the model takes `precision` (default
float32, the unchanged program) for its forwards; the SAE reads the hook in float32 and the
clamp's decoder term is added in float32, then rounded once to the stream's dtype; logits,
probabilities, KL and losses are float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from interp.circuits import weights
from interp.models import generate, transformer
from interp.models.config import NormType, TransformerConfig
from interp.models.hooks import Hooks
from interp.precision import Precision
from interp.sae import dictionary
from interp.sae.config import SAEConfig


def clamp_edit(sae_cfg: SAEConfig, sae_params: dict, latents, values, positions=None):
  """The edit at the SAE's hook that clamps `latents` [k] to `values` (traced arrays).

  `values` is [k], or anything broadcastable to the activation's [b p k] (per-position values).
  """
  latents = jnp.atleast_1d(jnp.asarray(latents, jnp.int32))
  values = jnp.asarray(values, jnp.float32)
  w = sae_params["W_dec"][latents] / sae_params["norm_scale"]  # [k d]

  def edit(x):
    acts = dictionary.encode(sae_cfg, sae_params, x.astype(jnp.float32))[..., latents]  # [b p k]
    delta = jnp.broadcast_to(values, acts.shape) - acts
    if positions is not None:
      delta = jnp.where(jnp.asarray(positions)[None, :, None], delta, 0.0)
    return (x + delta @ w).astype(x.dtype)
  return edit


def splice_error_kept(sae_cfg: SAEConfig, sae_params: dict, latents, values, positions=None):
  """Reference form of `clamp_edit`: decode(a') + (x - decode(a)), for tests."""
  latents = jnp.atleast_1d(jnp.asarray(latents, jnp.int32))

  def edit(x):
    acts = dictionary.encode(sae_cfg, sae_params, x)
    new = acts.at[..., latents].set(jnp.broadcast_to(values, acts[..., latents].shape))
    if positions is not None:
      new = jnp.where(jnp.asarray(positions)[None, :, None], new, acts)
    return dictionary.decode(sae_cfg, sae_params, new) + (x - dictionary.decode(
        sae_cfg, sae_params, acts))
  return edit


def output_tokens(model_cfg: TransformerConfig, model_params, sae_params: dict, latent: int,
                  k: int = 10) -> np.ndarray:
  """The k tokens a latent's decoder row promotes most directly (its logit-lens top tokens)."""
  direction = sae_params["W_dec"][latent] / sae_params["norm_scale"]
  if model_cfg.norm == NormType.LAYERNORM:  # the final norm removes the mean first
    direction = direction - direction.mean()
  logits = direction @ weights.unembedding(model_cfg, model_params, fold_norms=True)
  return np.asarray(jax.lax.top_k(logits, k)[1])


@functools.partial(jax.jit, static_argnames=("model_cfg", "sae_cfg", "hook", "k", "precision"))
def promoted_tokens(model_cfg: TransformerConfig, model_params, sae_cfg: SAEConfig, sae_params,
                    hook: str, latents, values, prompts, prompt_mask, k: int = 10,
                    precision: Precision | str | None = None) -> jax.Array:
  """The k tokens whose next-token log-probability the clamp raises most, averaged over the
  real positions of `prompts` [b p]: the latent's output measured through the whole model (the
  decoder row's logit lens, `output_tokens`, ignores every layer after the hook)."""
  base, _ = transformer.forward(model_cfg, model_params, prompts, precision=precision)
  hooks = Hooks(edits={hook: clamp_edit(sae_cfg, sae_params, latents, values)})
  clamped, _ = transformer.forward(model_cfg, model_params, prompts, hooks, precision=precision)
  diff = jax.nn.log_softmax(clamped, -1) - jax.nn.log_softmax(base, -1)
  m = prompt_mask.astype(jnp.float32)[..., None]
  return jax.lax.top_k((diff * m).sum((0, 1)) / m.sum(), k)[1]


@functools.partial(jax.jit, static_argnames=("model_cfg", "sae_cfg", "hook", "precision"))
def max_activations(model_cfg: TransformerConfig, model_params, sae_cfg: SAEConfig, sae_params,
                    hook: str, tokens, precision: Precision | str | None = None) -> jax.Array:
  """Each latent's maximum activation over `tokens` [b p] (BOS position excluded): [d_sae]."""
  _, cache = transformer.run_with_cache(model_cfg, model_params, tokens, [hook],
                                        precision=precision)
  acts = dictionary.encode(sae_cfg, sae_params, cache[hook][:, 1:].astype(jnp.float32))
  return acts.max((0, 1))


@functools.partial(jax.jit, static_argnames=("model_cfg", "sae_cfg", "hook", "precision"))
def mean_activations(model_cfg: TransformerConfig, model_params, sae_cfg: SAEConfig, sae_params,
                     hook: str, tokens, mask, precision: Precision | str | None = None
                     ) -> jax.Array:
  """Each latent's mean activation over the tokens where `mask` [b p] is set: [d_sae]."""
  _, cache = transformer.run_with_cache(model_cfg, model_params, tokens, [hook],
                                        precision=precision)
  acts = dictionary.encode(sae_cfg, sae_params, cache[hook].astype(jnp.float32))
  m = mask.astype(jnp.float32)[..., None]
  return (acts * m).sum((0, 1)) / jnp.maximum(m.sum((0, 1)), 1.0)


def _nll(logits, tokens, mask):
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
  m = mask[:, 1:].astype(jnp.float32)
  return (nll * m).sum() / m.sum()


@functools.partial(jax.jit, static_argnames=("model_cfg", "sae_cfg", "hook", "precision"))
def dose_response(model_cfg: TransformerConfig, model_params, sae_cfg: SAEConfig, sae_params,
                  hook: str, latents, doses, prompts, prompt_mask, heldout, heldout_mask,
                  targets, precision: Precision | str | None = None) -> dict:
  """Effects of clamping `latents` to each row of `doses` [m k].

  Args:
    prompts, prompt_mask: [b p] unrelated prompts and their real-token mask.
    heldout, heldout_mask: [c q] held-out text for the loss.
    targets: [t] token ids (the latent's output tokens).
    precision: the forwards' policy (module docstring; None: float32).

  Returns:
    {target_prob [m]: mean next-token probability mass on `targets` over prompt positions,
     kl [m]: mean KL(unclamped || clamped) of the next-token distribution on the prompts,
     loss [m]: held-out next-token loss, loss_unclamped: the same without a clamp}.
  """
  fwd = functools.partial(transformer.forward, model_cfg, model_params, precision=precision)
  base_logits, _ = fwd(prompts)
  base_logp = jax.nn.log_softmax(base_logits.astype(jnp.float32), -1)
  pm = prompt_mask.astype(jnp.float32)

  def one(values):
    hooks = Hooks(edits={hook: clamp_edit(sae_cfg, sae_params, latents, values)})
    logits, _ = fwd(prompts, hooks)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    mass = jnp.exp(logp[..., targets]).sum(-1)
    kl = (jnp.exp(base_logp) * (base_logp - logp)).sum(-1)
    held, _ = fwd(heldout, hooks)
    return {"target_prob": (mass * pm).sum() / pm.sum(), "kl": (kl * pm).sum() / pm.sum(),
            "loss": _nll(held, heldout, heldout_mask)}

  out = jax.lax.map(one, doses)
  out["loss_unclamped"] = _nll(fwd(heldout)[0], heldout, heldout_mask)
  return out


class _Maker:
  """A hashable `make_edits` for `generate.greedy`: one compilation per (SAE config, hook)."""

  def __init__(self, sae_cfg: SAEConfig, hook: str):
    self.sae_cfg, self.hook = sae_cfg, hook

  def __hash__(self):
    return hash((self.sae_cfg, self.hook))

  def __eq__(self, other):
    return isinstance(other, _Maker) and (self.sae_cfg, self.hook) == (other.sae_cfg, other.hook)

  def __call__(self, args):
    sae_params, latents, values = args
    return {self.hook: clamp_edit(self.sae_cfg, sae_params, latents, values)}


def generate_clamped(model_cfg: TransformerConfig, model_params, sae_cfg: SAEConfig,
                     sae_params, hook: str, tokens, n_new: int, latents, values,
                     precision: Precision | str | None = None, lengths=None) -> np.ndarray:
  """Greedy continuation of `tokens` [p] or [b p] with the clamp applied at every position
  (each step's forward under `precision`; None: float32); `lengths` as in `generate.greedy`."""
  args = (sae_params, jnp.atleast_1d(jnp.asarray(latents, jnp.int32)),
          jnp.atleast_1d(jnp.asarray(values, jnp.float32)))
  return generate.greedy(model_cfg, model_params, tokens, n_new, _Maker(sae_cfg, hook), args,
                         precision, lengths)
