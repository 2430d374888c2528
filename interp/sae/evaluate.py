"""How good a dictionary is on a model: reconstruction, spliced-in loss, densities, top contexts.

Vocabulary (beyond `interp.sae.config`):
  site          the hook whose activation x [b p ...] the dictionary reads; trailing axes are
                flattened to d_in (attn.hook_z [b p h e] -> h * e).
  evaluated     the tokens that count: every position of every sequence, less position 0 when
                `exclude_bos` (a prepended BOS has an outlier activation no dictionary is trained
                on; it is left unedited by every intervention and counted nowhere).
  splice        the forward pass with x replaced by reconstruct(x) at evaluated positions;
  zero / mean   ... replaced by 0 / by the mean of x over all evaluated tokens (a first pass).
CE, CE recovered, KL, FVU and density are defined in `interp.sae.eval_metrics`.

One jitted step per batch of sequences runs the clean, spliced and ablated forwards and returns
sums (accumulated in float64 on the host) and a running top-M per latent, merged on device with
`lax.top_k`, so no activations are stored. The dashboards of the chosen latents take one more
pass (to the site only, `interp.sae.dashboard`): their histogram bins and quantile bands are
relative to each latent's maximum, known only after the first.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from interp import choices, jsonio
from interp.models import sharded, transformer
from interp.models.config import NormType, TransformerConfig
from interp.models.hooks import Hooks, check_names, hook_shapes
from interp.parallel import mesh as mesh_lib
from interp.parallel import sharding as shd
from interp.sae import dashboard as dash
from interp.sae import dictionary as dic
from interp.sae import eval_metrics
from interp.sae.config import SAEConfig


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Attributes:
    batch_size: sequences per jitted step (a multiple of the mesh's data axis).
    exclude_bos: leave position 0 out of everything (models that prepend a BOS).
    mean_ablation: also splice in the mean activation (one extra forward pass per batch).
    ultra_low_density: the density below which a (live) latent is ultra-low.
    density_bins, density_range: the log10-density histogram.
    dashboard_latents: latents with top contexts, the densest first (-1: all, 0: none).
    top_m: contexts kept per latent.
    context_before, context_after: tokens shown either side of the top-activating token.
    hist_bins, hist_decades: each dashboard latent's activation histogram: log-spaced bins
      from max * 10**-hist_decades to max (`interp.sae.dashboard`).
    quantile_bands, band_samples: contexts sampled from bands of lower activation.
    promoted_k: tokens a latent's decoder promotes (and suppresses) listed.
    dashboard_seed: the band samples' draw.
  """

  batch_size: int = 32
  exclude_bos: bool = True
  mean_ablation: bool = True
  ultra_low_density: float = 1e-5
  density_bins: int = 56
  density_range: tuple[float, float] = (-7.0, 0.0)
  dashboard_latents: int = 64
  top_m: int = 10
  context_before: int = 8
  context_after: int = 2
  hist_bins: int = 24
  hist_decades: float = 3.0
  quantile_bands: int = 3
  band_samples: int = 3
  promoted_k: int = 10
  dashboard_seed: int = 0

  def __post_init__(self):
    choices.numbers(self, positive=("hist_bins", "hist_decades", "promoted_k"),
                    non_negative=("quantile_bands", "band_samples"))
    if self.batch_size <= 0 or self.top_m < 0 or self.density_bins <= 0:
      raise ValueError(f"batch_size ({self.batch_size}) and density_bins ({self.density_bins}) "
                       f"must be positive, top_m ({self.top_m}) non-negative")
    if self.context_before < 0 or self.context_after < 0 or self.dashboard_latents < -1:
      raise ValueError("context_before/after must be >= 0 and dashboard_latents >= -1")
    if not self.density_range[0] < self.density_range[1]:
      raise ValueError(f"density_range {self.density_range} must increase")


@dataclasses.dataclass
class Evaluation:
  """What `evaluate` measured.

  Attributes:
    metrics: flat {name: float} (JSON-able), see `evaluate`.
    density: [d_sae] firing frequency of each latent.
    histogram: {"edges": [bins + 1] log10 density, "counts": [bins] live latents, "dead": int}.
    top_values, top_index: [d_sae, top_m] each latent's largest activations and the flat token
      index (sequence * ctx + position) they occurred at; -inf / -1 where there were fewer.
    dashboard: one dict per chosen latent (`interp.sae.dashboard.latent_dashboards`).
    meta: site, dictionary config and token counts.
  """

  metrics: dict
  density: np.ndarray
  histogram: dict
  top_values: np.ndarray
  top_index: np.ndarray
  dashboard: list
  meta: dict

  def to_json(self) -> dict:
    """Metrics and histogram as plain JSON (dashboard data goes to its own file)."""
    return {**self.meta, "metrics": self.metrics,
            "histogram": {k: np.asarray(v).tolist() for k, v in self.histogram.items()}}


# ---------------------------------------------------------------------------------------------
# Jitted programs (their pure pieces: `interp.sae.eval_metrics`)


def _masks(valid, p, start):
  pos_ok = jnp.arange(p) >= start
  tok_mask = valid[:, None] & pos_ok[None, :]
  return pos_ok, tok_mask


def _site_input(cfg, params, tokens, site, final_inverse=False):
  """(logits, x [b p d_in] float32), and with `final_inverse` 1 / the final norm's divisor
  [b p] (ones without norms: what the dashboards' direct path freezes)."""
  final = ("ln_final.hook_scale",) if final_inverse and cfg.norm != NormType.NONE else ()
  logits, cache = transformer.forward(cfg, params, tokens, Hooks(capture=(site,) + final))
  x = cache[site]
  x = x.reshape(x.shape[0], x.shape[1], -1).astype(jnp.float32)
  if not final_inverse:
    return logits, x
  inverse = (1.0 / cache[final[0]][..., 0].astype(jnp.float32) if final
             else jnp.ones(x.shape[:2], jnp.float32))
  return logits, x, inverse


def _replace(value, pos_ok):
  """An edit writing `value` [b p d_in] (flattened site) at evaluated positions."""
  def edit(a):
    sel = pos_ok.reshape((1, -1) + (1,) * (a.ndim - 2))
    return jnp.where(sel, value.reshape(a.shape).astype(a.dtype), a)
  return edit


def _programs(model_cfg, sae_cfg, site, config, mesh, model_sh, sae_sh):
  """(mean_fn, step_fn, acts_fn), jitted plainly or with in/out shardings over `mesh`."""
  flat = lambda tree: (None, ()) if tree is None else (jax.tree.structure(tree),
                                                        tuple(jax.tree.leaves(tree)))
  return _compiled(model_cfg, sae_cfg, site, config, mesh, *flat(model_sh), *flat(sae_sh))


@functools.lru_cache(maxsize=8)
def _compiled(model_cfg, sae_cfg, site, config, mesh, model_def, model_leaves, sae_def,
              sae_leaves):
  """`_programs`, memoised (shardings flattened to hashables), so repeated evaluations of one
  model, dictionary shape and config compile once."""
  model_sh = None if model_def is None else jax.tree.unflatten(model_def, model_leaves)
  sae_sh = None if sae_def is None else jax.tree.unflatten(sae_def, sae_leaves)
  start = int(config.exclude_bos)

  def ctx():
    return shd.activation_rules(mesh, shd.ACT_RULES)

  def mean_fn(params, tokens, valid):
    with ctx():
      _, x = _site_input(model_cfg, params, tokens, site)
      _, tok_mask = _masks(valid, tokens.shape[1], start)
      m = tok_mask.astype(jnp.float32)[..., None]
      return jnp.sum(m * x, (0, 1)), jnp.sum(m)

  def step_fn(params, sae, tokens, valid, mean, top_v, top_i, offset):
    with ctx():
      b, p = tokens.shape
      pos_ok, tok_mask = _masks(valid, p, start)
      pred_mask = tok_mask[:, :-1].astype(jnp.float32)
      logits, x, inverse = _site_input(model_cfg, params, tokens, site, final_inverse=True)
      acts = dic.encode(sae_cfg, sae, x)
      x_hat = dic.reconstruct(sae_cfg, sae, x)
      flat_mask = tok_mask.reshape(-1)
      out = eval_metrics.activation_sums(x.reshape(b * p, -1), x_hat.reshape(b * p, -1),
                                         acts.reshape(b * p, -1), flat_mask)
      out["n_pred"] = jnp.sum(pred_mask)
      out["final_inverse"] = jnp.sum(tok_mask * inverse)
      f_mask = tok_mask.astype(jnp.float32)
      out["nll_clean"], _ = eval_metrics.nll_kl(logits, logits, tokens, pred_mask, f_mask)
      # Nothing upstream of the site changes, so the edit `reconstruct(x)` at the site writes
      # exactly this x_hat; computing it once keeps one encoder pass per batch.
      runs = {"spliced": x_hat, "zero": jnp.zeros_like(x)}
      if config.mean_ablation:
        runs["mean"] = jnp.broadcast_to(mean, x.shape)
      for name, value in runs.items():
        edited, _ = transformer.forward(model_cfg, params, tokens,
                                        Hooks(edits={site: _replace(value, pos_ok)}))
        out["nll_" + name], out["kl_" + name] = eval_metrics.nll_kl(logits, edited, tokens,
                                                                    pred_mask, f_mask)
      if top_v.shape[1]:
        top_v, top_i = eval_metrics.top_update(top_v, top_i, acts.reshape(b * p, -1), flat_mask,
                                               offset)
      return out, top_v, top_i

  def acts_fn(params, sae, tokens, latents):
    with ctx():
      _, x = _site_input(model_cfg, params, tokens, site)
      return jnp.take(dic.encode(sae_cfg, sae, x), latents, axis=-1)

  if mesh is None:
    return jax.jit(mean_fn), jax.jit(step_fn, donate_argnums=(5, 6)), jax.jit(acts_fn)
  rep, rows = shd.replicated(mesh), NamedSharding(mesh, P("data"))
  lat = NamedSharding(mesh, P("model", None))
  return (jax.jit(mean_fn, in_shardings=(model_sh, rows, rows), out_shardings=rep),
          jax.jit(step_fn, in_shardings=(model_sh, sae_sh, rows, rows, rep, lat, lat, rep),
                  out_shardings=(rep, lat, lat), donate_argnums=(5, 6)),
          jax.jit(acts_fn, in_shardings=(model_sh, sae_sh, rows, rep), out_shardings=rep))


# ---------------------------------------------------------------------------------------------
# Host side


def _token_array(tokens, vocab_size: int) -> np.ndarray:
  if isinstance(tokens, (np.ndarray, jax.Array)):
    arr = np.asarray(tokens)
  else:
    arr = np.concatenate([np.asarray(t) for t in tokens], 0)
  if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or arr.shape[0] == 0:
    raise ValueError(f"tokens must be non-empty integer batches [n, ctx], got {arr.dtype} "
                     f"{arr.shape}")
  if arr.min() < 0 or arr.max() >= vocab_size:
    raise ValueError(f"token ids lie in [{arr.min()}, {arr.max()}], outside the model's "
                     f"vocabulary [0, {vocab_size})")
  if arr.size >= 2**31:
    raise ValueError(f"{arr.size} tokens: evaluate at most 2**31 - 1 at a time")
  return arr.astype(np.int32)


def _dashboard(arr, density, top_v, acts_fn, model_cfg, model_params, site, sae_cfg,
               sae_params, config, decode, inverse) -> list[dict]:
  """Dashboards of the densest latents (`interp.sae.dashboard`); `top_v` gives their maxima."""
  order = [int(i) for i in np.argsort(-density, kind="stable") if density[i] > 0]
  if config.dashboard_latents >= 0:
    order = order[:config.dashboard_latents]
  if not order or top_v.shape[1] == 0:
    return []
  latents = jnp.asarray(order, jnp.int32)
  promoted = None
  if dash.writes_residual(model_cfg, site, sae_cfg.d_in):
    directions = sae_params["W_dec"][latents] / sae_params["norm_scale"]  # raw units
    promoted = dash.direct_logits(model_cfg, model_params, directions,
                                  min(config.promoted_k, model_cfg.vocab_size), inverse)
  return dash.latent_dashboards(lambda tok: acts_fn(model_params, sae_params, tok, latents),
                                arr, order, top_v[order, 0], config, decode, promoted=promoted)


def evaluate(model_cfg: TransformerConfig, model_params, site: str, sae_cfg: SAEConfig,
             sae_params: dict, tokens: np.ndarray | jax.Array | Iterable,
             config: EvalConfig = EvalConfig(), *, mesh: Mesh | None = None,
             decode: Callable[[Sequence[int]], str] | None = None) -> Evaluation:
  """Evaluates a dictionary reading `site` of a model on token sequences.

  Args:
    model_cfg, model_params: the model (placed on `mesh` here when one is given).
    site: the hook name the dictionary reads.
    sae_cfg, sae_params: the dictionary (`interp.sae.dictionary` params with buffers).
    tokens: int [n, ctx] sequences, or an iterable of such batches (any sizes).
    config: batching, BOS handling and what to collect.
    mesh: run sharded (tokens over `data`, latents over `model`); None = plain jit.
    decode: token ids -> text; adds text to the dashboard contexts.
  Returns:
    An `Evaluation`. metrics: n_tokens, n_predictions, l0, mse (mean ||x - x_hat||^2 per token,
    raw units), fvu, cosine (mean cos(x, x_hat)), l2_ratio (mean ||x_hat|| / ||x||), ce_clean,
    ce_spliced, ce_zero, ce_loss_recovered, kl_spliced, kl_zero, dead_fraction,
    ultra_low_density_fraction, mean_log10_density (live latents), and with `mean_ablation`
    ce_mean, kl_mean, ce_loss_recovered_mean_ablation.
  """
  check_names(model_cfg, [site], "SAE site")
  width = math.prod(hook_shapes(model_cfg, 1, 1)[site][2:])
  if width != sae_cfg.d_in:
    raise ValueError(f"the dictionary reads d_in={sae_cfg.d_in}, but {site} is {width} wide")
  arr = _token_array(tokens, model_cfg.vocab_size)
  if arr.shape[1] < 2 + config.exclude_bos:
    raise ValueError(f"sequences of {arr.shape[1]} tokens leave no next-token predictions")
  model_sh = sae_sh = None
  if mesh is not None:
    if config.batch_size % mesh.shape["data"]:
      raise ValueError(f"batch_size={config.batch_size} is not divisible by the mesh's data axis "
                       f"({mesh.shape['data']})")
    model_params, model_sh = sharded.place(model_cfg, model_params, mesh)
    sae_params, sae_sh = mesh_lib.put_params(sae_params, dic.param_axes(sae_params), mesh)
  mean_fn, step_fn, acts_fn = _programs(model_cfg, sae_cfg, site, config, mesh, model_sh, sae_sh)

  mean = jnp.zeros((sae_cfg.d_in,), jnp.float32)
  if config.mean_ablation:
    sums = [mean_fn(model_params, jnp.asarray(tok), jnp.asarray(valid))
            for _, tok, valid in dash.chunks(arr, config.batch_size)]
    total = sum(np.asarray(s, np.float64) for s, _ in sums)
    mean = jnp.asarray(total / max(sum(float(c) for _, c in sums), 1.0), jnp.float32)

  m = config.top_m if config.dashboard_latents else 0
  top_v = jnp.full((sae_cfg.d_sae, m), -jnp.inf, jnp.float32)
  top_i = jnp.full((sae_cfg.d_sae, m), -1, jnp.int32)
  parts = []
  for s, tok, valid in dash.chunks(arr, config.batch_size):
    out, top_v, top_i = step_fn(model_params, sae_params, jnp.asarray(tok), jnp.asarray(valid),
                                mean, top_v, top_i, jnp.int32(s * arr.shape[1]))
    parts.append(out)
  parts = jax.device_get(parts)
  metrics, density = eval_metrics.metrics_from_sums(parts, config.mean_ablation,
                                                    config.ultra_low_density)
  top_v, top_i = np.asarray(top_v), np.asarray(top_i)
  inverse = sum(float(p["final_inverse"]) for p in parts) / max(metrics["n_tokens"], 1.0)
  dashboard = _dashboard(arr, density, top_v, acts_fn, model_cfg, model_params, site, sae_cfg,
                         sae_params, config, decode, inverse)
  histogram = eval_metrics.density_histogram(density, config.density_bins,
                                             config.density_range)
  meta = {"site": site, "sae": sae_cfg.to_dict(), "n_sequences": int(arr.shape[0]),
          "context_length": int(arr.shape[1]), "exclude_bos": config.exclude_bos}
  return Evaluation(metrics=metrics, density=density, histogram=histogram, top_values=top_v,
                    top_index=top_i, dashboard=dashboard, meta=meta)


def write_dashboard_data(path: str, evaluation: Evaluation) -> str:
  """Writes the data the latent dashboards show, as JSON, atomically.

  The file: {site, sae, n_sequences, context_length, exclude_bos, metrics, latents: [{latent,
  density, fired, mean_activation, max_activation, histogram {edges, counts}, contexts: [{sequence,
  position, activation, window_start, tokens, acts (per token of the window), text and
  token_strs (when decoded)}], bands: [{low, high, contexts}], promoted and suppressed:
  [{token, value, str}] (residual-stream sites)}]}; `interp.viz.dashboard_html` renders it.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  value = {**evaluation.meta, "metrics": evaluation.metrics, "latents": evaluation.dashboard}
  jsonio.write_json_atomic(path, value, indent=None)
  return path
