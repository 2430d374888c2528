"""Induction and previous-token heads of Gemma 3 270M, and what ablating them costs.

On `batch` sequences of <bos> + a random segment of `seg_len` tokens + the same segment again
(tokens drawn without replacement from ids [low, high), ordinary vocabulary in Gemma's
tokenizer), it measures every head's previous-token and prefix-matching scores, then the mean
loss on the second copy (tokens 2..seg_len of it: the first token of the copy cannot be
predicted) with the `top_k` best induction heads ablated together, against `random_sets` sets
of `top_k` heads drawn at random from the others. All ablations of one kind run as one
`lax.map`ped program (one at a time: each forward holds [batch, tokens, 262144] logits).
Every forward runs under the `precision` policy; patterns are widened to float32 before they
are scored, and logits and losses are float32.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from interp.circuits import ablate, icl, scores

from interp.induction import segments
from interp.models import transformer
from interp.models import gguf_loader
from interp.models.tokenizer_spm import SPMTokenizer
from interp.precision import Precision, as_precision


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
  """Attributes: batch, seg_len, top_k, random_sets (see the module docstring); seed; low and
  high, the token id range; modes, the ablations to run ("zero", "mean")."""

  batch: int = 8
  seg_len: int = 50
  top_k: int = 3
  random_sets: int = 5
  seed: int = 0
  low: int = 1000
  high: int = 20000
  modes: tuple[str, ...] = ("mean", "zero")

  def __post_init__(self):
    for name in ("batch", "seg_len", "top_k"):
      if getattr(self, name) < 1:
        raise ValueError(f"--gemma_{name.replace('seg_len', 'seg')}={getattr(self, name)} must "
                         f"be >= 1")
    if self.random_sets < 0:
      raise ValueError(f"--gemma_random_sets={self.random_sets} must be >= 0")
    if self.low < 0:
      raise ValueError(f"--gemma_low={self.low} must be >= 0 (a token id)")
    if self.high - self.low < self.seg_len:
      raise ValueError(f"--gemma_low={self.low} --gemma_high={self.high}: the id range must hold "
                       f"at least --gemma_seg={self.seg_len} ids (a segment's tokens are distinct)")


def vocab_size(path: str | None = None) -> int:
  """Gemma 3 270M's vocabulary size, from the GGUF header alone (no weights read)."""
  f = gguf_loader.read_gguf(path or gguf_loader.default_gemma_path())
  return int(f.tensors["token_embd.weight"].shape[0])


def check_config(config: GemmaConfig, vocab: int) -> None:
  """Refuses a token-id range outside the model's vocabulary [0, vocab)."""
  if config.high > vocab:
    raise ValueError(f"--gemma_high={config.high} exceeds the model's vocabulary: token ids "
                     f"[--gemma_low, --gemma_high) must lie in [0, {vocab})")


def second_copy_loss(seg_len: int):
  """metric(logits, tokens): mean loss on the induction-predictable tokens of the second copy
  of <bos> + A + A, i.e. tokens seg_len + 2 .. 2 seg_len."""
  def metric(logits, tokens):
    losses = icl.token_losses(logits, tokens)  # entry i predicts token i + 1
    return losses[:, seg_len + 1:2 * seg_len].mean()
  return metric


def second_copy_positions(batch: int, seg_len: int) -> jax.Array:
  """[batch, seg_len - 1]: the positions whose logits `second_copy_loss_at` reads (`logits_at`):
  seg_len + 1 .. 2 seg_len, each predicting the next token."""
  return jnp.tile(jnp.arange(seg_len + 1, 2 * seg_len, dtype=jnp.int32)[None], (batch, 1))


def second_copy_loss_at(seg_len: int):
  """`second_copy_loss` from logits [b seg_len-1 v] at `second_copy_positions` only (with
  262k-token logits, unembedding just these halves an ablated forward's unembedding)."""
  def metric(logits, tokens):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    targets = tokens[:, seg_len + 2:2 * seg_len + 1]
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1).mean()
  return metric


def first_copy_loss(seg_len: int):
  def metric(logits, tokens):
    return icl.token_losses(logits, tokens)[:, 1:seg_len].mean()
  return metric


def _top(values: np.ndarray, k: int) -> list[dict]:
  flat = np.argsort(-values, axis=None)[:k]
  return [{"head": f"L{l}H{h}", "layer": int(l), "index": int(h), "score": float(values[l, h])}
          for l, h in zip(*np.unravel_index(flat, values.shape))]


def measure(config: GemmaConfig = GemmaConfig(), model=None,
            precision: Precision | str | None = None) -> dict:
  """Measures Gemma 3 270M (module docstring).

  Args:
    config: the tokens, ablations and seed.
    model: (cfg, params, bos id) to measure instead of loading Gemma 3 270M (any model: tests
      pass a small random one through the same code).
    precision: the forwards' policy (`interp.precision`; None: float32).
  Returns:
    JSON-able dict of scores, top heads, losses and ablations.
  """
  start = time.perf_counter()
  if model is None:
    path = gguf_loader.default_gemma_path()
    check_config(config, vocab_size(path))  # before the weights are read
    cfg, params = gguf_loader.load_gemma3_gguf(path)
    bos = SPMTokenizer.from_gguf(path).bos_id
  else:
    cfg, params, bos = model
  check_config(config, cfg.vocab_size)
  load_s = time.perf_counter() - start
  tokens = segments.repeated_tokens(jax.random.key(config.seed), config.batch, config.seg_len,
                                    config.high, low=config.low, bos=bos)

  precision = as_precision(precision)

  @jax.jit
  def clean(p, t):
    logits, cache = transformer.run_with_cache(cfg, p, t, scores.pattern_names(cfg),
                                               precision=precision)
    patterns = jnp.stack([cache[n].astype(jnp.float32) for n in scores.pattern_names(cfg)])
    return {"previous_token": scores.previous_token_scores(patterns, t),
            "prefix_matching": scores.prefix_matching_scores(patterns, t),
            "duplicate_token": scores.duplicate_token_scores(patterns, t),
            "second_copy_loss": second_copy_loss(config.seg_len)(logits, t),
            "first_copy_loss": first_copy_loss(config.seg_len)(logits, t)}

  t0 = time.perf_counter()
  base = jax.tree.map(np.asarray, clean(params, tokens))
  forward_s = time.perf_counter() - t0
  prefix, prev = base["prefix_matching"], base["previous_token"]
  top = _top(prefix, config.top_k)
  rng = np.random.default_rng(config.seed)
  others = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)
            if (l, h) not in {(t["layer"], t["index"]) for t in top}]
  sets = [[(t["layer"], t["index"]) for t in top]]
  sets += [[others[i] for i in rng.choice(len(others), config.top_k, replace=False)]
           for _ in range(config.random_sets)]
  masks = jnp.stack([ablate.head_mask(cfg, s) for s in sets])
  ablations = {}
  for mode in config.modes:
    losses = np.asarray(ablate.ablate(
        cfg, params, tokens, masks, second_copy_loss_at(config.seg_len), mode=mode, chunk=1,
        logits_at=second_copy_positions(config.batch, config.seg_len), precision=precision))
    rise = losses - float(base["second_copy_loss"])
    ablations[mode] = {
        "top_heads_loss": float(losses[0]), "top_heads_rise": float(rise[0]),
        "random_sets": [[f"L{l}H{h}" for l, h in s] for s in sets[1:]],
        "random_losses": losses[1:].tolist(), "random_rise_mean": float(rise[1:].mean()),
        "random_rise_max": float(rise[1:].max())}
  return {"tokens": {"batch": config.batch, "seg_len": config.seg_len,
                     "id_range": [config.low, config.high], "bos": bos},
          "scores": {k: base[k] for k in ("previous_token", "prefix_matching", "duplicate_token")},
          "top_induction_heads": top, "top_previous_token_heads": _top(prev, config.top_k),
          "first_copy_loss": float(base["first_copy_loss"]),
          "second_copy_loss": float(base["second_copy_loss"]), "ablations": ablations,
          "config": dataclasses.asdict(config), "precision": precision.name,
          "seconds": {"load": round(load_s, 2), "clean_forward": round(forward_s, 2),
                      "total": round(time.perf_counter() - start, 2)}}
