"""The IOI circuit of a model, found by path patching and attention analysis (Wang et al., 2022).

Metric: the logit difference LD = logit(IO) - logit(S) at END, averaged over prompts; the
corrupted run is p_ABC (`ioi.prompts`). Effects of path patching are reported as
(LD_patched - LD_clean) / LD_clean: -0.1 means the sender's paths carry 10% of the behaviour.

Head classes, each found by path patching into the class before it (senders limited to lower
layers) and confirmed by where the head attends (mean attention over prompts, `ATTENTION`):
  name mover (NM)           direct effect on the logits <= -threshold; attends END -> IO more
                            than END -> S1/S2
  negative name mover       direct effect >= +threshold; attends END -> IO more than to S
  S-inhibition              effect via the NMs' queries at END <= -threshold; attends END -> S2
                            more than END -> IO
  induction / duplicate     effect via the S-inhibition heads' keys and values at S2
                            <= -threshold; induction if it attends S2 -> S1+1 more than S2 -> S1,
                            duplicate-token otherwise
  previous-token            effect via the induction heads' keys at S1+1 <= -threshold; attends
                            S1+1 -> S1 with mean weight > PREV_TOKEN_ATTENTION
Each class keeps at most `max_per_class` heads (largest effect first). Faithfulness: LD with
every head outside the circuit mean-ablated (its hook_z replaced by its mean over the p_ABC
prompts of the same template, per position) divided by the model's LD.

Precision (`interp.precision`): the baseline forwards, attention by role, path patching
(`interp.circuits.patching`) and the faithfulness runs take the policy; logits and so every LD
are float32. Path-patching effects are relative to the clean LD under the same policy, so a
sender that changes nothing has effect 0 in either dtype. The direct logit attribution (a
linear read of the clean run, `interp.circuits.lens`) reads a forward under the same policy,
its contributions summed in float32.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from interp.circuits import lens, patching
from interp.ioi.prompts import ROLES, IOIData
from interp.models import transformer
from interp.models.config import TransformerConfig
from interp.models.hooks import Hooks
from interp.precision import Precision, as_precision

PREV_TOKEN_ATTENTION = 0.3

# (query role, key role) pairs whose mean attention is reported per head.
ATTENTION = (("END", "IO"), ("END", "S1"), ("END", "S2"), ("S2", "S1"), ("S2", "S1+1"),
             ("S1+1", "S1"))


@dataclasses.dataclass(frozen=True)
class CircuitConfig:
  """Attributes: threshold (fraction of the clean LD), max_per_class, chunk (senders or sites
  per vmapped batch)."""

  threshold: float = 0.02
  max_per_class: int = 4
  chunk: int = 8


def _role(data: IOIData, name: str) -> jnp.ndarray:
  return jnp.asarray(data.roles[:, ROLES.index(name)])


def attention_by_role(cfg: TransformerConfig, params, data: IOIData,
                      precision: Precision | str | None = None) -> np.ndarray:
  """Mean attention [l h len(ATTENTION)] from each query role to each key role."""
  names = [f"blocks.{i}.attn.hook_pattern" for i in range(cfg.n_layers)]
  _, cache = jax.jit(transformer.run_with_cache, static_argnums=(0, 3, 5))(
      cfg, params, jnp.asarray(data.tokens), tuple(names), None, as_precision(precision))
  rows = jnp.arange(data.tokens.shape[0])
  out = []
  for n in names:
    pat = cache[n].astype(jnp.float32)  # [b h p s]
    out.append(jnp.stack([pat[rows, :, _role(data, q), _role(data, k)].mean(0)
                          for q, k in ATTENTION], -1))
  return np.asarray(jnp.stack(out))


def _att(att: np.ndarray, q: str, k: str) -> np.ndarray:
  return att[..., ATTENTION.index((q, k))]


def _pick(effect: np.ndarray, ok: np.ndarray, sign: float, threshold: float, k: int,
          exclude=()) -> list[tuple[int, int]]:
  score = np.where(np.isnan(effect), 0.0, sign * effect)
  cand = [(float(score[l, h]), l, h) for l, h in zip(*np.nonzero(ok & (score >= threshold)))
          if (l, h) not in exclude]
  return [(int(l), int(h)) for _, l, h in sorted(cand, reverse=True)[:k]]


def _senders_below(cfg, layer: int) -> tuple[tuple[int, int], ...] | None:
  heads = tuple((l, h) for l in range(layer) for h in range(cfg.n_heads))
  return heads or None


def label(heads) -> list[str]:
  return [f"{l}.{h}" for l, h in heads]


_forward = jax.jit(transformer.forward, static_argnums=(0, 5))


def end_logits(cfg: TransformerConfig, params, tokens, end,
               precision: Precision | str | None = None) -> jax.Array:
  """float32 logits [b v] at END (`IOIData.end`) of each prompt, under `precision`."""
  return _forward(cfg, params, jnp.asarray(tokens), None, jnp.asarray(end),
                  as_precision(precision))[0][:, -1]


def logit_diffs(cfg: TransformerConfig, params, data: IOIData,
                precision: Precision | str | None = None) -> np.ndarray:
  """logit(IO) - logit(S) at END per prompt: float32 [b]."""
  last = end_logits(cfg, params, data.tokens, data.end, precision)
  return np.asarray(jnp.take_along_axis(last, jnp.asarray(data.answers), 1)
                    @ jnp.array([1., -1.]))


def find_circuit(cfg: TransformerConfig, params, data: IOIData,
                 config: CircuitConfig = CircuitConfig(),
                 precision: Precision | str | None = None) -> tuple[dict, dict]:
  """Baseline, direct effects, head classes and attention by role.

  Args:
    cfg, params, data: the model and the prompts; config: thresholds and chunk sizes.
    precision: every forward's compute dtype, path patching's included (module docstring;
      None: float32).
  Returns:
    (results, classes): results is JSON-ready (heads named "layer.head", effects [l h] as
    nested lists, relative to the clean LD); classes maps class name -> [(layer, head)].
  """
  tokens, corrupt = jnp.asarray(data.tokens), jnp.asarray(data.corrupt)
  end = jnp.asarray(data.end)
  metric = patching.logit_diff(jnp.asarray(data.answers))
  last = end_logits(cfg, params, tokens, end, precision)
  ld = logit_diffs(cfg, params, data, precision)
  ld_clean = float(ld.mean())
  ld_corrupt = float(metric(end_logits(cfg, params, corrupt, end, precision)[:, None]))
  top1 = np.asarray(jnp.argmax(last, -1)) == data.answers[:, 0]
  att = attention_by_role(cfg, params, data, precision)
  # Path patching runs under the same policy as `ld_clean`, so each effect is measured against
  # the clean LD of its own dtype: against another dtype's LD every effect would be offset by
  # the two LDs' rounding gap, not by anything the sender heads do.
  precision = as_precision(precision)
  rel = lambda out: (np.asarray(out) - ld_clean) / abs(ld_clean)
  pp = lambda receivers, positions, senders: rel(patching.path_patching(
      cfg, params, tokens, corrupt, metric, receivers=receivers, receiver_positions=positions,
      logits_at=end, senders=senders, chunk=config.chunk, precision=precision))
  thr, k = config.threshold, config.max_per_class

  direct = rel(patching.path_patching(cfg, params, tokens, corrupt, metric, logits_at=end,
                                      freeze_mlps=True, chunk=config.chunk,
                                      precision=precision))
  to_io = _att(att, "END", "IO") > np.maximum(_att(att, "END", "S1"), _att(att, "END", "S2"))
  nm = _pick(direct, to_io, -1, thr, k)
  nnm = _pick(direct, to_io, +1, thr, k)
  classes = {"name_mover": nm, "negative_name_mover": nnm}
  effects = {"direct": direct}

  def stage(name, receivers, role, senders_of, ok_fn, exclude):
    if not receivers:
      classes[name] = []
      return None
    layer = min(r[0] for r in receivers)
    senders = _senders_below(cfg, layer)
    if senders is None:
      classes[name] = []
      return None
    eff = pp(tuple(receivers), _role(data, role), senders)
    effects[senders_of] = eff
    return _pick(eff, ok_fn(), -1, thr, 2 * k, exclude)

  s_inh = stage("s_inhibition", [(l, h, "q") for l, h in nm], "END", "via_name_mover_queries",
                lambda: _att(att, "END", "S2") > _att(att, "END", "IO"), set(nm) | set(nnm))
  if s_inh is not None:
    classes["s_inhibition"] = s_inh[:k]
  s_inh = classes["s_inhibition"]
  found = stage("induction", [(l, h, w) for l, h in s_inh for w in ("k", "v")], "S2",
                "via_s_inhibition_keys_values", lambda: np.ones(att.shape[:2], bool),
                set(nm) | set(nnm) | set(s_inh))
  if found is not None:
    ind_ok = _att(att, "S2", "S1+1") > _att(att, "S2", "S1")
    classes["induction"] = [x for x in found if ind_ok[x]][:k]
    classes["duplicate_token"] = [x for x in found if not ind_ok[x]][:k]
  else:
    classes["duplicate_token"] = []
  ind = classes["induction"]
  prev = stage("previous_token", [(l, h, "k") for l, h in ind], "S1+1", "via_induction_keys",
               lambda: _att(att, "S1+1", "S1") > PREV_TOKEN_ATTENTION,
               {x for v in classes.values() for x in v})
  if prev is not None:
    classes["previous_token"] = prev[:k]

  results = {
      "baseline": {"logit_diff": ld_clean, "logit_diff_corrupt": ld_corrupt,
                   "accuracy": float((ld > 0).mean()), "io_top1": float(top1.mean()),
                   "n_prompts": int(tokens.shape[0])},
      "classes": {name: label(v) for name, v in classes.items()},
      "effects": {name: np.asarray(v).tolist() for name, v in effects.items()},
      "dla": head_logit_diff_attribution(cfg, params, data.tokens, data.end, data.answers[:, 0],
                                         data.answers[:, 1], precision).tolist(),
      "attention": {f"{q}->{k}": _att(att, q, k).tolist() for q, k in ATTENTION},
  }
  return results, classes


def head_logit_diff_attribution(cfg: TransformerConfig, params, tokens, end_positions, io_ids,
                                s_ids, precision: Precision | str | None = None) -> np.ndarray:
  """Each head's direct logit attribution to logit(IO) - logit(S) at END, mean over prompts.

  A head's direct contribution to a logit is its output at END, through the final norm's scale
  (the clean run's) and the unembedding (`interp.circuits.lens.direct_logit_attribution`); no
  other head or MLP is involved. Works on any prompts, not only `IOIData`.

  Args:
    cfg, params: the model.
    tokens: int [b p] prompts.
    end_positions: int [b] (or [b 1], as `IOIData.end`): the position read in each prompt.
    io_ids, s_ids: int [b]: the token ids whose logit difference is attributed.
    precision: the clean forward's compute dtype (`lens.direct_logit_attribution`; default
      float32); the attributions are float32.
  Returns:
    float [l h]: mean over the b prompts of each head's contribution to logit(IO) - logit(S).
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f"tokens must be [batch, seq] integer ids, got shape {tokens.shape} "
                     f"dtype {tokens.dtype}")
  b, p = tokens.shape
  end = np.asarray(end_positions)
  end = end[:, 0] if end.ndim == 2 and end.shape[1:] == (1,) else end
  for name, ids in (("end_positions", end), ("io_ids", np.asarray(io_ids)),
                    ("s_ids", np.asarray(s_ids))):
    if ids.shape != (b,) or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f"{name} must be [{b}] integers, one per prompt of tokens {tokens.shape}; "
                       f"got shape {ids.shape} dtype {ids.dtype}")
  if end.min() < 0 or end.max() >= p:
    raise ValueError(f"end_positions must lie in [0, {p}) for tokens {tokens.shape}; got "
                     f"{end.min()} to {end.max()}")
  for name, ids in (("io_ids", io_ids), ("s_ids", s_ids)):
    ids = np.asarray(ids)
    if ids.min() < 0 or ids.max() >= cfg.vocab_size:
      raise ValueError(f"{name} must lie in [0, {cfg.vocab_size}) for this model's vocabulary; "
                       f"got {ids.min()} to {ids.max()}")
  return np.asarray(_logit_diff_dla(cfg, params, jnp.asarray(tokens), jnp.asarray(end),
                                    jnp.asarray(io_ids, jnp.int32), jnp.asarray(s_ids, jnp.int32),
                                    as_precision(precision)))


@functools.partial(jax.jit, static_argnums=(0, 6))
def _logit_diff_dla(cfg, params, tokens, end, io_ids, s_ids, precision):
  rows = jnp.arange(tokens.shape[0])
  out = []
  for ids in (io_ids, s_ids):  # the target is read only at END; elsewhere any id will do
    targets = jnp.zeros_like(tokens).at[rows, end].set(ids)
    heads = lens.direct_logit_attribution(cfg, params, tokens, targets,
                                          precision)["heads"]  # [l h b p]
    out.append(heads[:, :, rows, end].mean(-1))
  return out[0] - out[1]


def template_means(cfg: TransformerConfig, params, data: IOIData,
                   precision: Precision | str | None = None) -> jax.Array:
  """Each prompt's mean-ablation value of hook_z: the mean over the p_ABC prompts of its
  template, per position: [l b p h e], summed in float32 and returned in the compute dtype."""
  names = patching.hook_names(cfg, "heads")
  _, cache = transformer.run_with_cache(cfg, params, jnp.asarray(data.corrupt), names,
                                        precision=precision)
  z = jnp.stack([cache[n] for n in names])
  onehot = jnp.asarray(data.template[:, None] == np.arange(data.template.max() + 1)[None],
                       jnp.float32)
  sums = jnp.einsum("bt,lbphe->ltphe", onehot, z.astype(jnp.float32))
  means = sums / jnp.maximum(onehot.sum(0), 1.0)[None, :, None, None, None]
  return means[:, jnp.asarray(data.template)].astype(z.dtype)


def faithfulness(cfg: TransformerConfig, params, data: IOIData, heads,
                 precision: Precision | str | None = None) -> dict:
  """LD with every head outside `heads` mean-ablated per template, against the full model
  (every forward under `precision`; None: float32)."""
  means = template_means(cfg, params, data, precision)
  keep = np.zeros((cfg.n_layers, cfg.n_heads), bool)
  for l, h in heads:
    keep[l, h] = True
  metric = patching.logit_diff(jnp.asarray(data.answers))
  end = jnp.asarray(data.end)

  # The model's weights and the means are arguments, not closed-over constants, which XLA
  # folds into the program at compile time (Gemma 3 270M, 8 prompts: 47.9 s -> 8.3 s).
  @jax.jit
  def run(params, tokens, means, mask):
    edits = {n: (lambda z, i=i: jnp.where(mask[i][None, None, :, None], z, means[i]))
             for i, n in enumerate(patching.hook_names(cfg, "heads"))}
    return metric(transformer.forward(cfg, params, tokens, Hooks(edits=edits), end,
                                      precision=precision)[0])

  tokens = jnp.asarray(data.tokens)
  model = float(run(params, tokens, means, jnp.ones_like(jnp.asarray(keep))))
  circuit = float(run(params, tokens, means, jnp.asarray(keep)))
  empty = float(run(params, tokens, means, jnp.zeros_like(jnp.asarray(keep))))
  return {"logit_diff_model": model, "logit_diff_circuit": circuit,
          "logit_diff_all_heads_ablated": empty, "faithfulness": circuit / model,
          "n_heads": int(keep.sum())}
