"""Edge scores for every edge at once: EAP and EAP-IG.

Vocabulary (`interp.discovery.graph` for nodes, receivers and edges):
  clean run    the base run, tokens `clean`; the metric's value there is F(1).
  source       the upstream outputs an edge is patched from: the corrupted run's, or their
               mean over the batch (mean ablation). With every edge patched the metric is F(0).
  F(mask)      the metric of the edge-patched forward (`interp.discovery.forward.run`).
  score[u, r]  an edge's estimated effect, signed so that positive means the edge supports the
               clean behaviour: about F(1) - F(1 with edge (u, r) patched).

EAP (Syed et al., 2023; Nanda's attribution patching on edges): one forward on each input and
one backward,

  score[u, r] = (out_u(clean) - source_u) . d metric / d in_r   at the clean run,

summed over batch and positions (the metric already averages over prompts).

EAP-IG (Hanna et al., 2024) averages that gradient over points between the corrupted and the
clean run, `steps` of them batched into one compiled call, with Gauss-Legendre nodes and weights
on [0, 1] (exact for a polynomial of degree 2 steps - 1):
  path=activations  every edge at mask alpha, the straight line between source and clean
                    activations on every edge at once; score[u, r] = sum_k w_k (out_u(alpha_k) -
                    source_u) . dF/d in_r(alpha_k) = the integral of dF/d mask[u, r], so the
                    scores sum to F(1) - F(0) (completeness) up to the quadrature's error, which
                    is zero when F is a polynomial in alpha (a linear model).
  path=inputs       the embed output interpolated from the corrupted to the clean tokens'
                    (the paper's variant); score = (out_u(clean) - source_u) . mean gradient.
"""

from __future__ import annotations

import enum
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from interp.choices import choice
from interp.circuits import patching
from interp.circuits.metrics import apply_metric, columns_of
from interp.discovery import forward
from interp.discovery.graph import EdgeGraph
from interp.precision import Precision, as_precision

Metric = Callable[[jax.Array], jax.Array]


class Method(str, enum.Enum):
  EAP = "eap"
  EAP_IG = "eap_ig"          # integrated along the activations (edge masks)
  EAP_IG_INPUTS = "eap_ig_inputs"  # integrated along the input embeddings


class MetricKind(str, enum.Enum):
  LOGIT_DIFF = "logit_diff"
  PROB = "prob"
  KL = "kl"


def make_metric(kind: MetricKind, answers=None, clean_logits=None) -> Metric:
  """A metric over logits [b k v] (last read position).

  Args:
    kind: logit_diff (mean logit[correct] - logit[wrong]), prob (mean probability of the
      correct token) or kl (mean KL(clean || patched), which is 0 at the clean run).
    answers: int [b 2] (correct, wrong), for logit_diff and prob.
    clean_logits: [b k v] clean logits, for kl.
  """
  kind = choice(MetricKind, kind, "metric")
  if kind == MetricKind.KL:
    return patching.kl_from(clean_logits)
  answers = jnp.asarray(answers)
  if kind == MetricKind.PROB:
    return lambda logits: jnp.take_along_axis(jax.nn.softmax(logits[:, -1], -1),
                                              answers[:, :1], 1).mean()
  return patching.logit_diff(answers)  # a ColumnMetric: two unembedding columns per prompt


def _grads(graph, params, tokens, source, metric, alpha, logits_at, embed_out=None,
           precision=None, per_head=True):
  """(metric, outs, d metric / d in_r [n_recv b p d]) with every edge's mask at `alpha`
  (None: 1), by `forward.run_uniform` (the model's own forward, no per-edge sums); outs is
  None unless `per_head`."""
  deltas = forward.layer_deltas(graph, tokens, as_precision(precision).compute_dtype)

  def f(d):
    logits, outs = forward.run_uniform(graph, params, tokens, source, alpha, d, logits_at,
                                       embed_out, precision, columns_of(metric), per_head)
    return apply_metric(metric, logits), outs
  (value, outs), g = jax.value_and_grad(f, has_aux=True)(deltas)
  return value, outs, forward.stack_deltas(g)


def _contract(graph, diff, grad):
  """score[u, r] = sum over b, p, d of diff[u] * grad[r], on valid edges only (float32: a
  product of two bfloat16 numbers is exact in float32, and the sum accumulates there)."""
  diff, grad = diff.astype(jnp.float32), grad.astype(jnp.float32)
  return jnp.einsum("ubpd,rbpd->ur", diff, grad) * jnp.asarray(graph.valid, diff.dtype)


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights of the `steps`-point Gauss-Legendre rule on [0, 1]."""
  x, w = np.polynomial.legendre.leggauss(steps)
  return ((x + 1) / 2).astype(np.float32), (w / 2).astype(np.float32)


def edge_scores(graph: EdgeGraph, params, clean, source, metric: Metric,
                method: Method = Method.EAP, steps: int = 8, logits_at=None,
                corrupt=None, chunk: int | None = None,
                precision: Precision | str | None = None) -> jax.Array:
  """Scores [n_up n_recv] of every edge (0 on invalid edges). Jit-able.

  Args:
    graph, params: the model.
    clean: int [b p] tokens of the base run.
    source: [n_up b p d] (or [n_up 1 p d]) upstream outputs to patch from
      (`forward.outputs` of the corrupted tokens, or its batch mean).
    metric: metric(logits [b k v]) -> scalar.
    method: eap, eap_ig (along activations) or eap_ig_inputs (along inputs; needs `corrupt`).
    steps: integration points for EAP-IG, evaluated as one batched call (`chunk` at a time).
    logits_at: int [b k] positions the metric reads.
    corrupt: int [b p] corrupted tokens, for eap_ig_inputs.
    chunk: integration points vmapped together (default 1: one at a time, least memory).
    precision: `interp.precision` policy or name for the forward and backward passes
      (default float32); scores, metric and logits are float32 whatever it is.

  Returns:
    float32 [n_up n_recv].
  """
  method = choice(Method, method, "method")
  if method == Method.EAP_IG_INPUTS and corrupt is None:
    raise ValueError("method=eap_ig_inputs integrates from the corrupted tokens: give corrupt")
  fn = compiled_scorer(graph, metric, method, steps, chunk, precision)
  return fn(params, clean, source, logits_at, corrupt)


# Jitted scorers by (graph, metric, method, steps, chunk): a fresh `jax.jit` per call would
# retrace and recompile every time. Keyed by identity (an EdgeGraph holds an array, so it is not
# hashable); each entry holds its graph and metric, so their ids cannot be reused while cached.
_SCORERS: dict = {}
_MAX_SCORERS = 8


def compiled_scorer(graph: EdgeGraph, metric: Metric, method: Method, steps: int = 8,
                    chunk: int | None = None, precision: Precision | str | None = None):
  """The jitted fn(params, clean, source, logits_at, corrupt) -> scores that `edge_scores`
  calls, built once per (graph, metric, method, steps, chunk) and reused (it compiles once per
  argument shapes)."""
  method = choice(Method, method, "method")
  precision = as_precision(precision)
  key = (id(graph), id(metric), method, steps, chunk, precision)
  hit = _SCORERS.get(key)
  if hit is not None and hit[0] is graph and hit[1] is metric:
    return hit[2]
  fn = forward.jit(functools.partial(_edge_scores, graph, metric=metric, method=method,
                                     steps=steps, chunk=chunk, precision=precision))
  if len(_SCORERS) >= _MAX_SCORERS:
    _SCORERS.pop(next(iter(_SCORERS)))
  _SCORERS[key] = (graph, metric, fn)
  return fn


def _integrate(term, alphas, weights, chunk):
  """sum_k term(alpha_k, w_k), `chunk` points at a time (vmapped) inside a scan whose carry is
  the running sum, so only one chunk's terms are ever held (a `lax.map` kept all `steps`)."""
  steps = len(alphas)
  chunk = min(chunk or 1, steps)
  pad = -steps % chunk  # padded points have weight 0
  a = np.concatenate([alphas, np.zeros(pad, np.float32)]).reshape(-1, chunk)
  w = np.concatenate([weights, np.zeros(pad, np.float32)]).reshape(-1, chunk)
  first = jax.vmap(lambda x, y: term(x, y))(jnp.asarray(a[0]), jnp.asarray(w[0])).sum(0)

  def body(total, aw):
    return total + jax.vmap(lambda x, y: term(x, y))(aw[0], aw[1]).sum(0), None
  total, _ = jax.lax.scan(body, first, (jnp.asarray(a[1:]), jnp.asarray(w[1:])))
  return total


def _edge_scores(graph, params, clean, source, logits_at, corrupt, *, metric, method, steps,
                 chunk, precision):
  params = forward.prepare(graph.cfg, params, precision)  # once, not at every point
  if method == Method.EAP:
    _, outs, g = _grads(graph, params, clean, source, metric, None, logits_at,
                        precision=precision)
    return _contract(graph, outs - source, g)
  alphas, weights = gauss_legendre(steps)
  if method == Method.EAP_IG:
    def point(a, w):
      _, outs, g = _grads(graph, params, clean, source, metric, a, logits_at,
                          precision=precision)
      return w * _contract(graph, outs - source, g)
    return _integrate(point, alphas, weights, chunk)
  prec = as_precision(precision)
  e_clean = prec.cast_compute(forward.embed(graph.cfg, params, clean))
  e_corr = prec.cast_compute(forward.embed(graph.cfg, params, corrupt))

  def grad_at(a, w):
    x = e_corr + a * (e_clean - e_corr)
    return w * _grads(graph, params, clean, source, metric, None, logits_at, x,
                      precision, per_head=False)[2]
  g = _integrate(grad_at, alphas, weights, chunk)
  clean_outs = forward.run_uniform(graph, params, clean, source, logits_at=logits_at,
                                   precision=precision)[1]
  return _contract(graph, clean_outs - source, g)
