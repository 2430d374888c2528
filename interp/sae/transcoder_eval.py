"""A transcoder judged by the model: next-token loss with every MLP replaced by it.

Vocabulary (beyond `interp.sae.transcoder` and `interp.sae.evaluate`):
  clean      the model's own forward.
  replaced   one forward in which each layer's hook_mlp_out is the transcoder's prediction from
             that same forward's MLP inputs: an edit at layer l's input site encodes it and
             records acts[l] in a Python dict during the trace, and the edit at layer l's
             hook_mlp_out decodes from acts[0..l] (a CLT reads every earlier layer's latents).
             Errors compound through the layers, as they do in a replacement model.
  zero       every hook_mlp_out replaced by 0 (all MLPs ablated).
  CE         mean next-token cross-entropy over positions 0 .. p-2 of every sequence.
  recovered  (CE_zero - CE_replaced) / (CE_zero - CE_clean).
  FVU, L0    per layer on the clean forward's activations (as in training).
`dashboards` gives the feature-dashboard data (`interp.sae.dashboard`) of every layer's latents.

Precision (`interp.precision`): `replaced_loss` runs the model's forwards and the transcoder's
products under one policy (default float32); cross-entropies, FVU and L0 are float32.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from interp.models import transformer
from interp.models.config import NormType, TransformerConfig
from interp.models.hooks import Hooks
from interp.precision import Precision, as_precision
from interp.sae import dashboard as dash
from interp.sae import transcoder as tc


def _ce(logits, tokens):
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))


def replacement_edits(model_cfg: TransformerConfig, cfg: tc.TranscoderConfig, params: dict,
                      record: dict | None = None,
                      precision: Precision | str | None = None) -> dict:
  """Hook edits that replace every MLP by the transcoder within one forward pass.

  Args:
    model_cfg, cfg, params: the model's config and the transcoder.
    record: a dict that receives {layer: acts [b p n]} during the trace (optional).
    precision: the transcoder's products (default float32).
  Returns:
    {hook name: edit} for `interp.models.hooks.Hooks(edits=...)`.
  """
  ins, outs = tc.sites(model_cfg)
  L = cfg.n_layers
  acts, x_ins = ({} if record is None else record), {}

  def read(l):
    def edit(x):
      x_ins[l] = x
      acts[l] = tc.encode_layer(cfg, params, x, l, precision)
      return x
    return edit

  def write(l):
    def edit(x):
      stacked = jnp.stack([acts[s] for s in range(l + 1)], axis=2)  # layers 0..l: [b p l+1 n]
      return tc.decode_layer(cfg, params, stacked, l, x_ins[l], precision).astype(x.dtype)
    return edit

  edits = {ins[l]: read(l) for l in range(L)}
  edits.update({outs[l]: write(l) for l in range(L)})
  return edits


@functools.lru_cache(maxsize=8)
def _program(model_cfg: TransformerConfig, cfg: tc.TranscoderConfig, prec: Precision):
  ins, outs = tc.sites(model_cfg)

  def run(model_params, params, tokens):
    clean, cache = transformer.forward(model_cfg, model_params, tokens,
                                       Hooks(capture=ins + outs), precision=prec)
    replaced, _ = transformer.forward(
        model_cfg, model_params, tokens,
        Hooks(edits=replacement_edits(model_cfg, cfg, params, precision=prec)), precision=prec)
    zero_edits = {o: jnp.zeros_like for o in outs}
    zero, _ = transformer.forward(model_cfg, model_params, tokens, Hooks(edits=zero_edits),
                                  precision=prec)
    # The cache holds compute-dtype activations; FVU is measured in float32.
    x_in = jnp.stack([cache[s] for s in ins], axis=2).reshape(
        -1, len(ins), model_cfg.d_model).astype(jnp.float32)
    x_out = jnp.stack([cache[s] for s in outs], axis=2).reshape(x_in.shape).astype(jnp.float32)
    acts = tc.encode(cfg, params, x_in, prec)
    err = jnp.sum((x_out - tc.decode(cfg, params, acts, x_in, prec)) ** 2, axis=(0, 2))
    var = jnp.sum((x_out - x_out.mean(0)) ** 2, axis=(0, 2))
    return {"ce_clean": _ce(clean, tokens), "ce_replaced": _ce(replaced, tokens),
            "ce_zero": _ce(zero, tokens), "fvu": err / jnp.maximum(var, 1e-12),
            "l0": jnp.mean(jnp.sum(acts > 0, -1).astype(jnp.float32), 0)}

  return jax.jit(run)


def replaced_loss(model_cfg: TransformerConfig, model_params, cfg: tc.TranscoderConfig,
                  params: dict, tokens, precision: Precision | str | None = None) -> dict:
  """The model's loss clean, with every MLP replaced by the transcoder, and with MLPs ablated.

  Args:
    model_cfg, model_params: the model.
    cfg, params: the transcoder (scales folded in or not).
    tokens: int [batch, seq] sequences (one jitted batch).
    precision: the forwards' and the transcoder's compute dtype (default float32).
  Returns:
    {ce_clean, ce_replaced, ce_zero, ce_recovered: floats; fvu, l0: per-layer lists}.
  """
  if cfg.n_layers != model_cfg.n_layers or cfg.d_model != model_cfg.d_model:
    raise ValueError(f"transcoder of {cfg.n_layers} layers x d_model {cfg.d_model} for a model "
                     f"of {model_cfg.n_layers} x {model_cfg.d_model}")
  program = _program(model_cfg, cfg, as_precision(precision))
  out = jax.device_get(program(model_params, params, jnp.asarray(tokens)))
  res = {k: float(out[k]) for k in ("ce_clean", "ce_replaced", "ce_zero")}
  gap = res["ce_zero"] - res["ce_clean"]
  res["ce_recovered"] = (res["ce_zero"] - res["ce_replaced"]) / gap if gap else float("nan")
  res.update(fvu=np.asarray(out["fvu"]).tolist(), l0=np.asarray(out["l0"]).tolist())
  return res


def _directions(cfg: tc.TranscoderConfig, params: dict, layers, latents) -> jax.Array:
  """[K d] what each (layer, latent) writes into the residual stream per unit activation, in
  model units: its decoder row at its layer, or for a CLT the sum of its rows over every layer
  it writes to (all of them land in the residual stream the final norm reads)."""
  layers, latents = jnp.asarray(layers), jnp.asarray(latents)
  out_scale = params["out_scale"]
  if cfg.kind == tc.Kind.CLT:
    w = params["W_dec"][layers, latents] * tc.clt_mask(cfg.n_layers)[layers][..., None]
    return jnp.sum(w / out_scale[None, :, None], axis=1)
  return params["W_dec"][layers, latents] / out_scale[layers][:, None]


@functools.lru_cache(maxsize=8)
def _acts_program(model_cfg: TransformerConfig, cfg: tc.TranscoderConfig):
  ins, _ = tc.sites(model_cfg)

  final = ("ln_final.hook_scale",) if model_cfg.norm != NormType.NONE else ()

  def acts(model_params, params, tokens, capture=()):
    _, cache = transformer.forward(model_cfg, model_params, tokens, Hooks(capture=ins + capture))
    x_in = jnp.stack([cache[s] for s in ins], axis=2).astype(jnp.float32)
    return tc.encode(cfg, params, x_in), cache

  def survey(model_params, params, tokens, mask):
    """Per-latent firing counts and maxima [L n], and the sum of 1 / the final norm's divisor
    (the direct path's frozen scale) over the evaluated tokens."""
    a, cache = acts(model_params, params, tokens, final)
    a = jnp.where(mask[:, :, None, None], a, 0.0)  # [b p L n]
    m = mask.astype(jnp.float32)
    inverse = jnp.sum(m / cache[final[0]][..., 0]) if final else jnp.sum(m)
    return jnp.sum(a > 0, (0, 1), dtype=jnp.int32), jnp.max(a, (0, 1)), inverse

  def chosen(model_params, params, tokens, layers, latents):
    return acts(model_params, params, tokens)[0][:, :, layers, latents]  # [b p K]

  return jax.jit(survey), jax.jit(chosen)


def dashboards(model_cfg: TransformerConfig, model_params, cfg: tc.TranscoderConfig,
               params: dict, tokens, config, decode=None,
               include: Sequence[tuple[int, int]] = ()) -> list[dict]:
  """Feature-dashboard data of a transcoder's (or CLT's) densest latents in every layer.

  Args:
    model_cfg, model_params: the model.
    cfg, params: the transcoder.
    tokens: int [n, ctx] sequences.
    config: an `interp.sae.evaluate.EvalConfig`; `dashboard_latents` counts per layer.
    decode: token ids -> text.
    include: (layer, latent) pairs shown as well (an attribution graph's features), fired or not.
  Returns:
    `interp.sae.dashboard.latent_dashboards` dicts, each with its `layer`, layer by layer,
    densest first within a layer, then the included ones; other latents that never fired are
    left out.
  """
  arr = np.asarray(tokens, np.int32)
  survey, chosen = _acts_program(model_cfg, cfg)
  p, start = arr.shape[1], int(config.exclude_bos)
  fired, top, inverse, n_tok = 0, None, 0.0, 0
  for _, tok, valid in dash.chunks(arr, config.batch_size):
    mask = valid[:, None] & (np.arange(p) >= start)[None, :]
    f, m, inv = jax.device_get(survey(model_params, params, jnp.asarray(tok), jnp.asarray(mask)))
    fired, top = fired + f, m if top is None else np.maximum(top, m)
    inverse, n_tok = inverse + float(inv), n_tok + int(mask.sum())
  layers, latents = [], []
  for l in range(cfg.n_layers):
    order = [int(i) for i in np.argsort(-fired[l], kind="stable") if fired[l, i] > 0]
    if config.dashboard_latents >= 0:
      order = order[:config.dashboard_latents]
    extra = sorted({int(i) for layer, i in include if layer == l} - set(order))
    order += extra
    layers += [l] * len(order)
    latents += order
  if not latents:
    return []
  lay, lat = jnp.asarray(layers, jnp.int32), jnp.asarray(latents, jnp.int32)
  promoted = dash.direct_logits(model_cfg, model_params, _directions(cfg, params, lay, lat),
                                min(config.promoted_k, model_cfg.vocab_size),
                                inverse / max(n_tok, 1))
  return dash.latent_dashboards(
      lambda tok: chosen(model_params, params, tok, lay, lat), arr, latents,
      top[np.asarray(layers), np.asarray(latents)], config, decode, layers=layers,
      promoted=promoted)
