"""Behavioural versus causal evidence on the same prompts, in numbers.

Vocabulary (beyond `interp.attribution`'s):
  prompts         a `Prompts` batch: b sequences of p tokens with, per prompt, the read position,
                  the answer token(s), a counterfactual prompt and the head source position.
  counterfactual  `corrupt` [b p], the prompt causal measurements patch activations in from
                  (IOI: p_ABC; repeated tokens: other random tokens). It fixes the causal
                  question: what carries the difference between this prompt and that one.
  causal effect   the drop of the metric under an intervention, clean - patched:
                    token i   its layer-0 residual stream (its embedding) patched from the
                              counterfactual: noising activation patching of
                              blocks.0.hook_resid_pre at one position, run as masking token i
                              with the counterfactual token as the baseline
                    head      "total": its hook_z at every position patched from the
                              counterfactual run; "direct": only its path to the logits
                              (`patching.path_patching` with the logits as receiver)
  behavioural     token attributions against a neutral baseline token, as the LIME / SHAP / IG
                  packages are used: occlusion, Shapley values (exact or KernelSHAP), LIME,
                  gradient x input, integrated gradients. Occlusion is itself a causal effect,
                  of the neutral-token intervention, not of the counterfactual one.
  attention-level per head, the attention from the read position to the source position and the
                  write norm |a v W_O| of that pair (`heads.head_evidence`).
  agreement       Kendall tau, Pearson r and top-k overlap (by |value|) of an evidence vector
                  with the causal one: across the players of each prompt (then averaged over
                  prompts), or across all heads (metric averaged over prompts). Heads are
                  compared by |effect|: attention and write norms cannot carry a sign.

Precision (`interp.precision`): `token_level`, `head_level` and what they call take
`precision=` (default float32, the unchanged program): every model forward (the masked
forwards behind occlusion, Shapley values, LIME and the token causal effects; the gradient
methods' forward and backward; the head evidence's forward; the clean run and the activation
and path patching behind the head effects) runs in its compute dtype. Logits, metrics, effects
and attributions are float32 (float64 on the host), and every head effect is measured against
the clean metric of the same policy, so a head that changes nothing has effect 0 in either.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from interp.attribution import gradients, heads, lime, masking, shapley
from interp.circuits import patching
from interp.ioi.experiment import agreement as _agreement
from interp.models import transformer
from interp.precision import Precision, as_precision

_forward = jax.jit(transformer.forward, static_argnums=(0, 5))

TOKEN_METHODS = ("occlusion", "shapley", "lime", "grad_x_input", "integrated_gradients")
HEAD_EVIDENCE = ("attention", "write_norm")
HEAD_CAUSAL = ("total", "direct")


@dataclasses.dataclass(frozen=True)
class Prompts:
  """A batch to explain. Arrays are NumPy; b prompts, p positions.

  Attributes:
    tokens, corrupt: int [b p], the prompts and their counterfactuals (same length).
    read: int [b], the position whose logits the metric reads.
    good: int [b], the answer token; bad: int [b] or None. The metric is the logit difference
      good - bad at `read` if `bad` is given, else the log-probability of `good` there.
    source: int [b], the key position the heads' evidence is about (IOI: IO; repeated tokens:
      the token after the read token's first occurrence).
    keep: bool [b p], positions never masked (BOS, `read`, padding after it).
    labels: per prompt, a string per token (figures only).
  """

  tokens: np.ndarray
  corrupt: np.ndarray
  read: np.ndarray
  good: np.ndarray
  source: np.ndarray
  keep: np.ndarray
  bad: np.ndarray | None = None
  labels: tuple[tuple[str, ...], ...] = ()

  def metric(self, i: int) -> masking.Metric:
    """Prompt i's metric over logits [p v] (a traced pytree: one program serves every prompt)."""
    if self.bad is None:
      return masking.LogProb(int(self.good[i]), int(self.read[i]))
    return masking.LogitDiff(int(self.good[i]), int(self.bad[i]), int(self.read[i]))

  def batch_metric(self):
    """metric(logits [b 1 v] at `read`) -> the mean over prompts, for the patching sweeps."""
    good = jnp.asarray(self.good)
    bad = None if self.bad is None else jnp.asarray(self.bad)

    def metric(logits):
      last = logits[:, -1].astype(jnp.float32)
      rows = jnp.arange(last.shape[0])
      if bad is None:
        return jax.nn.log_softmax(last, -1)[rows, good].mean()
      return (last[rows, good] - last[rows, bad]).mean()
    return metric


@dataclasses.dataclass(frozen=True)
class EvidenceConfig:
  """Attributes:
    baseline_token: the neutral token behavioural methods mask with (and IG's baseline).
    shapley_samples: KernelSHAP coalitions; 0 = exact Shapley values (2^q forwards).
    lime_samples: LIME coalitions; ig_steps: integrated-gradients steps.
    token_k, head_k: k of the top-k overlaps (tokens per prompt; heads, at most a quarter of
      them).
    seed: sampling of KernelSHAP and LIME; chunk: forwards per vmapped step.
  """

  baseline_token: int = 0
  shapley_samples: int = 0
  lime_samples: int = 256
  ig_steps: int = 32
  token_k: int = 3
  head_k: int = 5
  seed: int = 0
  chunk: int = 32


def agreement(estimate, exact, k: int) -> dict:
  """`ioi.experiment.agreement`: {pearson_r, kendall_tau, topk_overlap}, all NaN where a vector
  is constant (no ranking to agree with)."""
  estimate, exact = np.ravel(estimate), np.ravel(exact)
  if np.ptp(estimate) == 0 or np.ptp(exact) == 0:
    return {"pearson_r": float("nan"), "kendall_tau": float("nan"), "topk_overlap": float("nan")}
  k = min(k, estimate.size)
  out = _agreement(estimate, exact, k)
  out["topk_overlap"] = out.pop(f"top{k}_overlap")
  return out


def token_attributions(cfg, params, prompts: Prompts, i: int, config: EvidenceConfig,
                       precision: Precision | str | None = None) -> dict:
  """Every token attribution of prompt i, and its causal effects: {name: float64 [p]}; every
  forward under `precision` (module docstring; default float32)."""
  tokens, keep, metric = prompts.tokens[i], prompts.keep[i], prompts.metric(i)
  p = tokens.shape[0]
  precision = as_precision(precision)
  neutral = np.full(p, config.baseline_token, np.int32)
  value = masking.masked_lm_value(cfg, params, tokens, metric, neutral, keep, config.chunk,
                                  precision)
  counter = masking.masked_lm_value(cfg, params, tokens, metric, prompts.corrupt[i], keep,
                                    config.chunk, precision)
  key = jax.random.fold_in(jax.random.key(config.seed), i)
  if config.shapley_samples:
    shap = lambda v: shapley.kernel_shap(v, p, config.shapley_samples, key, keep)
  else:
    shap = lambda v: shapley.exact_shapley(v, p, keep)
  # One forward per distinct mask of the three neutral-token methods (`masking.together`).
  occluded, phi, coef = masking.together(
      value, lambda v: masking.occlusion(v, p, keep), shap,
      lambda v: lime.lime(v, p, max(config.lime_samples, 2), jax.random.fold_in(key, 1),
                          keep).coef)
  ig = gradients.lm_integrated_gradients(cfg, params, tokens, metric, config.baseline_token,
                                         keep, config.ig_steps, precision=precision)
  return {"causal": masking.occlusion(counter, p, keep),
          "occlusion": occluded, "shapley": phi, "lime": coef,
          "grad_x_input": np.asarray(gradients.lm_grad_x_input(cfg, params, tokens, metric,
                                                               precision), np.float64),
          "integrated_gradients": np.asarray(ig, np.float64)}


def token_level(cfg, params, prompts: Prompts, config: EvidenceConfig,
                precision: Precision | str | None = None) -> dict:
  """Token attributions of every prompt and their agreement with the causal effects, every
  forward under `precision` (module docstring; default float32).

  Returns:
    {"attributions": per prompt {name: [p]}, "agreement": {method: {kendall_tau, pearson_r,
    topk_overlap: means over prompts; per_prompt: the kendall taus}}}.
  """
  attributions, per_method = [], {m: [] for m in TOKEN_METHODS}
  if np.any((prompts.tokens == config.baseline_token) & ~prompts.keep):
    raise ValueError(f"baseline token {config.baseline_token} occurs among the players: masking "
                     "it would be no change; draw prompts without it or pick another")
  for i in range(prompts.tokens.shape[0]):
    attr = token_attributions(cfg, params, prompts, i, config, precision)
    attributions.append(attr)
    players = ~prompts.keep[i]
    for m in TOKEN_METHODS:
      per_method[m].append(agreement(attr[m][players], attr["causal"][players],
                                     config.token_k))
  out = {}
  for m, rows in per_method.items():
    mean = lambda key: float(np.nanmean([r[key] for r in rows])) if rows else float("nan")
    out[m] = {"kendall_tau": mean("kendall_tau"), "pearson_r": mean("pearson_r"),
              "topk_overlap": mean("topk_overlap"),
              "per_prompt": [r["kendall_tau"] for r in rows]}
  return {"attributions": attributions, "agreement": out}


def clean_metric(cfg, params, prompts: Prompts, precision: Precision | str | None = None) -> float:
  """The batch metric on the clean prompts, unembedding only `read` (forward under
  `precision`, default float32)."""
  logits, _ = _forward(cfg, params, jnp.asarray(prompts.tokens), None,
                       jnp.asarray(prompts.read)[:, None], as_precision(precision))
  return float(prompts.batch_metric()(logits))


def head_causal_effects(cfg, params, prompts: Prompts, chunk: int = 8,
                        precision: Precision | str | None = None) -> dict:
  """Per head [l h], the drop of the batch metric under patching from the counterfactual:
  "total" (its hook_z everywhere) and "direct" (only its path to the logits; `chunk` senders
  at a time). The clean run and every patched run are under `precision` (default float32),
  so each effect is a difference of two metrics of the same dtype."""
  tokens, corrupt = jnp.asarray(prompts.tokens), jnp.asarray(prompts.corrupt)
  at = jnp.asarray(prompts.read)[:, None]
  metric = prompts.batch_metric()
  precision = as_precision(precision)
  clean = clean_metric(cfg, params, prompts, precision)
  # Every head in one program (`patching`'s suffix sweep): `chunk` heads at a time would compile
  # a program per layer (Gemma 3 270M: 27 s of compiling against 10 s).
  total = patching.activation_patching(cfg, params, tokens, corrupt, metric, "heads",
                                       logits_at=at, chunk=None, precision=precision)
  direct = patching.path_patching(cfg, params, tokens, corrupt, metric, logits_at=at,
                                  chunk=chunk, precision=precision)
  return {"clean": clean, "total": clean - np.asarray(total, np.float64),
          "direct": clean - np.asarray(direct, np.float64)}


def ranks(x: np.ndarray) -> np.ndarray:
  """Rank of each entry by descending value, 1 = largest, same shape."""
  order = np.argsort(-np.ravel(x), kind="stable")
  out = np.empty(order.size, int)
  out[order] = np.arange(1, order.size + 1)
  return out.reshape(np.shape(x))


def mismatches(attention: np.ndarray, write: np.ndarray, effect: np.ndarray, k: int) -> dict:
  """Heads that attend strongly yet write little, and the reverse, with their causal rank.

  "Attends, writes little": in the top k by attention and at least k places lower by write
  norm (rank_write >= rank_attention + k). "Writes, attends little": the same with the two
  swapped. Each entry: {head "L{l}H{h}", attention, write_norm, effect, causal_rank (by
  |effect|)}, ordered by the rank that put it in the top k.
  """
  ra, rw, rc = ranks(attention), ranks(write), ranks(np.abs(effect))

  def rows(mask, by):
    out = []
    for _, l, h in sorted((by[l, h], l, h) for l, h in zip(*np.nonzero(mask))):
      out.append({"head": f"L{l}H{h}", "attention": float(attention[l, h]),
                  "write_norm": float(write[l, h]), "effect": float(effect[l, h]),
                  "causal_rank": int(rc[l, h])})
    return out
  return {"attends_writes_little": rows((ra <= k) & (rw >= ra + k), ra),
          "writes_attends_little": rows((rw <= k) & (ra >= rw + k), rw)}


def head_level(cfg, params, prompts: Prompts, config: EvidenceConfig,
               precision: Precision | str | None = None) -> dict:
  """Attention-level evidence per head against its causal effects, every forward under
  `precision` (module docstring; default float32).

  Returns:
    {"attention", "write_norm", "head_norm", "total", "direct": [l h] lists, "clean": float,
     "agreement": {evidence: {causal: agreement dict}} (evidence in HEAD_EVIDENCE plus "direct"
     against "total"), "mismatches": `mismatches` against the total effect}.
  """
  tokens = jnp.asarray(prompts.tokens)
  b, p = prompts.tokens.shape
  src = np.arange(p)[None, :] == prompts.source[:, None]
  qry = np.arange(p)[None, :] == prompts.read[:, None]
  ev = jax.tree.map(lambda x: np.asarray(x, np.float64),
                    heads.head_evidence(cfg, params, tokens, jnp.asarray(src), jnp.asarray(qry),
                                        precision))
  causal = head_causal_effects(cfg, params, prompts, config.chunk, precision)
  k = min(config.head_k, max(1, ev.attention.size // 4))  # a toy's 4 heads: top 1
  evidence = {"attention": ev.attention, "write_norm": ev.write_norm}
  table = {name: {c: agreement(x, np.abs(causal[c]), k) for c in HEAD_CAUSAL}
           for name, x in evidence.items()}
  table["direct"] = {"total": agreement(np.abs(causal["direct"]), np.abs(causal["total"]), k)}
  return {"attention": ev.attention.tolist(), "write_norm": ev.write_norm.tolist(),
          "head_norm": ev.head_norm.tolist(), "total": causal["total"].tolist(),
          "direct": causal["direct"].tolist(), "clean": causal["clean"], "agreement": table,
          "mismatches": mismatches(ev.attention, ev.write_norm, causal["total"], k)}


def known_ranks(result: dict, known_heads: dict) -> dict:
  """For a model whose mechanism is known: the rank (1 = top) every head evidence and causal
  effect gives each known head, e.g. {"induction": (1, 0)} -> {"induction": {"attention": 1,
  ...}}."""
  out = {}
  for role, (l, h) in known_heads.items():
    out[role] = {name: int(ranks(np.abs(np.asarray(result[name])))[l, h])
                 for name in HEAD_EVIDENCE + HEAD_CAUSAL}
  return out


def known_token_overlap(attributions: list[dict], known: np.ndarray, keep: np.ndarray) -> dict:
  """Per method, the mean over prompts of the share of the known tokens (bool [b p]) among
  its top |known| players by |attribution|."""
  out = {}
  for m in ("causal",) + TOKEN_METHODS:
    shares = []
    for i, attr in enumerate(attributions):
      players = np.flatnonzero(~keep[i])
      n = int(known[i].sum())
      top = players[np.argsort(-np.abs(attr[m][players]), kind="stable")[:n]]
      shares.append(known[i][top].mean())
    out[m] = float(np.mean(shares))
  return out
