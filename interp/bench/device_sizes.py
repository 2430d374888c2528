"""The sizes the device check measures at: `FULL` (one H200) and `QUICK` (CPU, CI).

Model shapes are plain data here, so the driver and the torch workers read them without
importing JAX: `ModelShape.family` is `gpt2` (learned positions, LayerNorm, gelu_new, tied
unembedding) or `gemma3` (Gemma 3's RoPE, RMSNorm, grouped-query attention, gated MLP).
"""

from __future__ import annotations

import dataclasses
import os

from interp.bench import sae


@dataclasses.dataclass(frozen=True)
class ModelShape:
  """One model's widths; the rest of its architecture comes from `family`."""
  family: str
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  d_head: int
  d_mlp: int
  vocab: int
  window: int = 0  # gemma3's sliding window (0: half the context, so tiny prompts have one)


GPT2_SMALL = ModelShape("gpt2", 768, 12, 12, 12, 64, 3072, 50257)
GEMMA3_270M = ModelShape("gemma3", 640, 18, 4, 1, 256, 2048, 262_144, window=512)
# ~0.97 B parameters: 18 blocks of 12 d^2, a tied 32k-token embedding, 1k learned positions.
LM_1B = ModelShape("gpt2", 2048, 18, 16, 16, 128, 8192, 32_000)


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Attributes:
    matmul_n: the n x n matmul timed for the device's achievable peak (bf16 and f32).
    sae_d_in, sae_d_sae, sae_batch, sae_k: SAE width, latents, activations per step, TopK k.
    sae_steps, sae_warmup: timed and untimed train steps per rule.
    forward_models: {name: shape} for the forward-with-cache section; ctx, batch, reps.
    graph_model: the attribution-graph model; lengths in tokens; transcoder d_latent and k;
      max_feature_nodes and chunk as in `interp.graphs.attribute.GraphConfig`.
    lm_model, lm_ctx, lm_batch, lm_steps: the LM train step timed for MFU.
    parity_ctx, parity_batch: the parity model's prompt (a tiny Gemma-3-shaped model).
  """
  matmul_n: int
  sae_d_in: int
  sae_d_sae: int
  sae_batch: int
  sae_k: int
  sae_steps: int
  sae_warmup: int
  forward_models: dict[str, ModelShape]
  forward_ctx: int
  forward_batch: int
  forward_reps: int
  graph_model: ModelShape
  graph_lengths: tuple[int, ...]
  graph_d_latent: int
  graph_k: int
  graph_max_feature_nodes: int
  graph_chunk: int
  lm_model: ModelShape
  lm_ctx: int
  lm_batch: int
  lm_steps: int
  parity_ctx: int
  parity_batch: int


FULL = Sizes(
    matmul_n=8192, sae_d_in=2304, sae_d_sae=65_536, sae_batch=8192, sae_k=64, sae_steps=10,
    sae_warmup=2, forward_models={"gpt2_small": GPT2_SMALL, "gemma3_270m": GEMMA3_270M},
    forward_ctx=1024, forward_batch=8, forward_reps=10, graph_model=GEMMA3_270M,
    graph_lengths=(512, 2048, 8192), graph_d_latent=16_384, graph_k=16,
    graph_max_feature_nodes=512, graph_chunk=32, lm_model=LM_1B, lm_ctx=1024, lm_batch=4,
    lm_steps=5, parity_ctx=64, parity_batch=8)

QUICK = Sizes(
    matmul_n=128, sae_d_in=32, sae_d_sae=256, sae_batch=64, sae_k=8, sae_steps=2,
    sae_warmup=1,
    forward_models={"gpt2_small": ModelShape("gpt2", 32, 2, 4, 4, 8, 64, 128),
                    "gemma3_270m": ModelShape("gemma3", 32, 2, 4, 1, 8, 64, 128)},
    forward_ctx=16, forward_batch=2, forward_reps=2,
    graph_model=ModelShape("gemma3", 32, 2, 2, 1, 16, 64, 128), graph_lengths=(8, 16),
    graph_d_latent=32, graph_k=2, graph_max_feature_nodes=8, graph_chunk=4,
    lm_model=ModelShape("gpt2", 32, 2, 4, 4, 8, 64, 128), lm_ctx=16, lm_batch=8, lm_steps=2,
    parity_ctx=16, parity_batch=8)


def sae_config(arch: str, sizes: Sizes, torch_device: str = "cpu") -> sae.SAEBenchConfig:
  """The SAE benchmark's config at the device check's sizes (its runners take it)."""
  return sae.SAEBenchConfig(
      out="", d_in=sizes.sae_d_in, d_sae=sizes.sae_d_sae, batch=sizes.sae_batch, k=sizes.sae_k,
      archs=(sae.Arch(arch),), steps=sizes.sae_steps, warmup=sizes.sae_warmup, rounds=1,
      pair_steps=1, threads=os.cpu_count() or 1, l1_coeff=5.0, lr=3e-4, decoder_norm="weighted", xla_flags="",
      one_worker=True, torch_device=torch_device)
