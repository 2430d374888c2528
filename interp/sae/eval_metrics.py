"""Metrics of a dictionary from per-batch sums: the pure pieces `interp.sae.evaluate` jits and
merges.

Vocabulary (tokens that count: the evaluated tokens of `interp.sae.evaluate`):
  CE            next-token cross-entropy of the logits at evaluated positions p < ctx - 1.
  CE recovered  (CE_zero - CE_splice) / (CE_zero - CE_clean): 1 = as good as the model's own
                activation, 0 = as bad as deleting it.
  KL            KL(clean || intervention) of the next-token distributions, per evaluated token.
  FVU           sum ||x - x_hat||^2 / sum ||x - mean x||^2 over evaluated tokens.
  density       fraction of evaluated tokens on which a latent fires (act > 0); dead: never;
                ultra-low: fires, but on fewer than `ultra_low_density` of the tokens.

Each jitted batch returns sums (`activation_sums`, `nll_kl`) and merges its top activations into a
running top-M (`top_update`); the host adds the sums in float64 (`merge_moments` for the
variance) and turns them into metrics (`metrics_from_sums`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def activation_sums(x: jax.Array, x_hat: jax.Array, acts: jax.Array, mask: jax.Array) -> dict:
  """Sums over the tokens where `mask` [n] holds, of inputs x, reconstructions x_hat [n, d_in] and
  activations acts [n, d_sae]: the counts, errors and moments the metrics are built from."""
  m = mask.astype(jnp.float32)
  n = m.sum()
  mean = (m[:, None] * x).sum(0) / jnp.maximum(n, 1.0)
  norm_x = jnp.linalg.norm(x, axis=-1)
  norm_h = jnp.linalg.norm(x_hat, axis=-1)
  fired = (acts > 0) & mask[:, None]
  return {
      "n": n,
      "sse": jnp.sum(m * jnp.sum((x - x_hat) ** 2, -1)),
      "mean": mean,
      "m2": jnp.sum(m * jnp.sum((x - mean) ** 2, -1)),
      "cos": jnp.sum(m * jnp.sum(x * x_hat, -1) / jnp.maximum(norm_x * norm_h, 1e-12)),
      "l2_ratio": jnp.sum(m * norm_h / jnp.maximum(norm_x, 1e-12)),
      "l0": jnp.sum(fired.astype(jnp.float32)),
      "fired": jnp.sum(fired.astype(jnp.int32), 0),
  }


def top_update(values: jax.Array, index: jax.Array, acts: jax.Array, mask: jax.Array,
               offset: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Merges one batch into the running top-M per latent.

  Args:
    values, index: [d_sae, M] the running top activations and their flat token indices.
    acts: [n, d_sae] this batch's activations; mask: [n] tokens that count.
    offset: flat index of this batch's first token.
  Returns:
    The new (values, index), each latent's M largest, in decreasing order.
  """
  m = values.shape[1]
  masked = jnp.where(mask[:, None], acts, -jnp.inf).T                    # [d_sae, n]
  v_b, i_b = jax.lax.top_k(masked, min(m, masked.shape[1]))
  v = jnp.concatenate([values, v_b], 1)
  i = jnp.concatenate([index, offset + i_b.astype(index.dtype)], 1)
  v, pick = jax.lax.top_k(v, m)
  return v, jnp.take_along_axis(i, pick, 1)


def nll_kl(logits_clean, logits, tokens, pred_mask, tok_mask):
  """(sum of next-token NLL over pred_mask [b p-1], sum of KL(clean || logits) over tok_mask)."""
  logp = jax.nn.log_softmax(logits, -1)
  logq = jax.nn.log_softmax(logits_clean, -1)
  nll = -jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]
  kl = jnp.sum(jnp.exp(logq) * (logq - logp), -1)
  return jnp.sum(nll * pred_mask), jnp.sum(kl * tok_mask)


def merge_moments(parts) -> tuple[float, np.ndarray, float]:
  """Chan et al.'s pairwise merge of (n, mean, M2) in float64: n, mean, total M2."""
  n, mean, m2 = 0.0, None, 0.0
  for nb, mb, m2b in parts:
    nb, mb, m2b = float(nb), np.asarray(mb, np.float64), float(m2b)
    if nb == 0:
      continue
    if mean is None:
      n, mean, m2 = nb, mb, m2b
      continue
    delta = mb - mean
    total = n + nb
    m2 += m2b + float(delta @ delta) * n * nb / total
    mean = mean + delta * nb / total
    n = total
  return n, mean, m2


def density_histogram(density: np.ndarray, bins: int = 56,
                      log10_range: tuple[float, float] = (-7.0, 0.0)) -> dict:
  """Histogram of log10 densities of the live latents (values outside the range are clipped
  into the end bins); dead latents are counted apart, as their log density is -inf."""
  density = np.asarray(density, np.float64)
  alive = density > 0
  edges = np.linspace(log10_range[0], log10_range[1], bins + 1)
  logd = np.clip(np.log10(density[alive]), edges[0], edges[-1])
  counts, _ = np.histogram(logd, edges)
  return {"edges": edges, "counts": counts.astype(np.int64), "dead": int((~alive).sum())}


def density_figure(histogram: dict, title: str = "latent density"):
  """A matplotlib Figure of `density_histogram` output (no pyplot state; save with savefig)."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(6, 3.5), layout="constrained")
  ax = fig.subplots()
  edges, counts = np.asarray(histogram["edges"]), np.asarray(histogram["counts"])
  ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue")
  ax.set_xlabel("log10 density (fraction of tokens a latent fires on)")
  ax.set_ylabel("latents")
  ax.set_title(f"{title} ({histogram['dead']} dead, not shown)")
  return fig


def density_metrics(fired: np.ndarray, n_tokens: float, ultra_low: float = 1e-5) -> dict:
  """Dead and ultra-low-density fractions from per-latent firing counts over `n_tokens` tokens.

  Returns:
    dead_fraction (never fired), ultra_low_density_fraction (fired, but with density below
    `ultra_low`; disjoint from dead), mean_log10_density (over live latents).
  """
  fired = np.asarray(fired)
  density = fired / max(float(n_tokens), 1.0)
  alive = fired > 0
  return {"dead_fraction": float(np.mean(~alive)),
          "ultra_low_density_fraction": float(np.mean(alive & (density < ultra_low))),
          "mean_log10_density": (float(np.mean(np.log10(density[alive]))) if np.any(alive)
                                 else float("nan"))}


def _ratio(num: float, den: float) -> float:
  return num / den if den else float("nan")


def metrics_from_sums(parts: list[dict], mean_ablation: bool,
                      ultra_low_density: float) -> tuple[dict, np.ndarray]:
  """Metrics from the per-batch sums of the evaluation step.

  Args:
    parts: one dict of sums per batch (`activation_sums` plus n_pred and nll_* / kl_* for the
      clean, spliced, zero and, with `mean_ablation`, mean runs), on the host.
    mean_ablation: whether the mean-ablated run was measured.
    ultra_low_density: the density below which a live latent is ultra-low.
  Returns:
    (metrics, density [d_sae]); the metrics are listed in `interp.sae.evaluate.evaluate`.
  """
  total = lambda key: float(sum(np.asarray(p[key], np.float64) for p in parts))
  n, _, m2 = merge_moments((p["n"], p["mean"], p["m2"]) for p in parts)
  n_pred = total("n_pred")
  fired = sum(np.asarray(p["fired"], np.int64) for p in parts)
  density = fired / max(n, 1.0)
  ce = {k: _ratio(total("nll_" + k), n_pred)
        for k in ("clean", "spliced", "zero") + (("mean",) if mean_ablation else ())}
  metrics = {
      "n_tokens": n, "n_predictions": n_pred,
      "l0": _ratio(total("l0"), n), "mse": _ratio(total("sse"), n),
      "fvu": _ratio(total("sse"), m2), "cosine": _ratio(total("cos"), n),
      "l2_ratio": _ratio(total("l2_ratio"), n),
      "ce_clean": ce["clean"], "ce_spliced": ce["spliced"], "ce_zero": ce["zero"],
      "ce_loss_recovered": _ratio(ce["zero"] - ce["spliced"], ce["zero"] - ce["clean"]),
      "kl_spliced": _ratio(total("kl_spliced"), n), "kl_zero": _ratio(total("kl_zero"), n),
      **density_metrics(fired, n, ultra_low_density),
  }
  if mean_ablation:
    metrics.update(ce_mean=ce["mean"], kl_mean=_ratio(total("kl_mean"), n),
                   ce_loss_recovered_mean_ablation=_ratio(ce["mean"] - ce["spliced"],
                                                          ce["mean"] - ce["clean"]))
  return metrics, density
