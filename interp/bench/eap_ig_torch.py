"""EAP-IG written with TransformerLens hooks and torch autograd: the reference both the GPT-2-shaped
and the Gemma 3 rows of `interp.bench.discovery` time against interp.

Method (Hanna et al. 2024, integrated along the input embeddings): for each Gauss-Legendre point
alpha_k on [0, 1], run the clean prompts with `hook_embed` replaced by e_corr + alpha_k (e_clean -
e_corr), backward the metric, and accumulate w_k times the gradient at each receiver's input (a
clone of the tensor entering the receiver, so its gradient is through that branch only);
score[u, r] = (clean - corrupted output of u) . that sum, zero where u does not precede r.
torch is imported inside the function, so a JAX worker never imports it.
"""

from __future__ import annotations

import numpy as np


def scores(model, clean, recv_hooks, metric, diff, e_clean, e_corr, valid, alphas,
           weights_k) -> np.ndarray:
  """One scoring pass: the float64 scores [n_up n_recv].

  Args:
    model: a TransformerLens model (or bridge) with `run_with_hooks`.
    clean: clean token ids [b p].
    recv_hooks: hook names of the receivers' inputs, in score-column order.
    metric: logits -> scalar.
    diff: clean minus corrupted upstream outputs [n_up b p d].
    e_clean, e_corr: `hook_embed` of the clean and corrupted prompts.
    valid: bool [n_up n_recv], upstream strictly before receiver.
    alphas, weights_k: the integration points and weights.
  """
  import torch
  total = None
  for a, w in zip(alphas, weights_k):
    stored = []
    # A leaf that requires grad, so a graph exists even where the weights require none.
    mix = lambda x, hook, a=float(a): (e_corr + a * (e_clean - e_corr)).requires_grad_()

    def keep(x, hook):
      y = x.clone()  # its gradient is the gradient through this branch only
      stored.append(y)
      return y
    with torch.enable_grad():
      logits = model.run_with_hooks(
          clean, fwd_hooks=[("hook_embed", mix)] + [(n, keep) for n in recv_hooks])
      grads = torch.autograd.grad(metric(logits), stored)
    g = torch.stack([float(w) * x.float() for x in grads])  # summed in float32
    total = g if total is None else total + g
  return (torch.einsum("ubpd,rbpd->ur", diff.float(), total) * valid).double().numpy()
