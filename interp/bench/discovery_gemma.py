"""The Gemma 3 rows of `interp.bench.discovery`: random weights of Gemma 3's shapes, their
mapping into interp's parameters, and the EAP-IG reference on `transformers`' Gemma 3 model.

Reference: the same EAP-IG with TransformerLens 4 hooks and torch autograd on a
`TransformerBridge` (`tl_model`) over `transformers.Gemma3ForCausalLM`, built offline from a
local `Gemma3TextConfig` (eager attention, float32) with the shared random weights (never Gemma's
weight file); the bridge is booted with `hf_model=` and a stand-in tokenizer, and left in its
default mode (raw HF numerics; its logits equal the HF model's exactly). It runs the model as a
TL user would: logits for every position and the whole vocabulary, of which the metric reads
two columns at the last position. interp's scorer unembeds only the position the metric reads
(`logits_at`).

Weights: one `.npz` keyed by the `transformers` state-dict names (`hf_weight_shapes`), mapped by
`params_from_hf` (the mapping below; torch's Linear stores [out, in]):

  model.embed_tokens.weight [v d]                  -> embed/W_E (tied unembedding; both sides
                                                      scale the embedding by sqrt(d_model))
  layers.N.self_attn.q_proj / k_proj / v_proj      -> blocks_N/attn/W_Q [d h e], W_K, W_V [d g e]
  layers.N.self_attn.o_proj [d h*e]                -> blocks_N/attn/W_O [h e d]
  layers.N.self_attn.q_norm / k_norm               -> blocks_N/attn/q_norm/w, k_norm/w
  layers.N.input_layernorm / post_attention_layernorm / pre_feedforward_layernorm /
    post_feedforward_layernorm                     -> blocks_N/ln1, ln1_post, ln2, ln2_post /w
  layers.N.mlp.gate_proj / up_proj / down_proj     -> blocks_N/mlp/W_gate, W_in, W_out
  model.norm                                       -> ln_final/w
Norm weights are stored around 0 on both sides: (1 + w) (`norm_offset = 1`).

Upstream outputs on the reference side, as interp's graph defines them: the (scaled) token
embedding; each head's o_proj term divided by the RMS of the layer's summed attention output,
times (1 + post-norm gain), so the heads sum to the post-normed attention output; each MLP's
post-normed output. Receivers are merged per layer (the clone of each pre-norm's input), as in
`interp.bench.discovery_sides`.
"""

from __future__ import annotations

import numpy as np

from interp.bench import eap_ig_torch

GLOBAL_EVERY = 6  # five sliding-window layers, then a global one
SLIDING_WINDOW = 512  # longer than the benchmark's prompts: every layer sees the whole prompt


def is_gemma(spec) -> bool:
  """Whether a `forward.ModelShape` is one of the Gemma 3 rows."""
  return spec.name.startswith("gemma3")


def d_head(spec) -> int:
  """Head width: Gemma 3 270M's 256 at d_model 640 (4 x 256 != 640), else d_model / n_heads."""
  return 256 if spec.d_model == 640 else spec.d_model // spec.n_heads


def interp_config(spec):
  """interp's Gemma 3 config at the shape's sizes (one K/V head, as Gemma 3 270M). A model of
  fewer than six layers makes its last layer the global one, so both kinds are in it."""
  from interp.models import config as mc
  return mc.gemma3_270m(vocab_size=spec.vocab, d_model=spec.d_model, n_layers=spec.n_layers,
                        n_heads=spec.n_heads, n_kv_heads=1, d_head=d_head(spec),
                        d_mlp=spec.d_mlp, n_ctx=max(spec.ctx, 32),
                        sliding_window=SLIDING_WINDOW,
                        global_every=min(GLOBAL_EVERY, spec.n_layers))


def hf_config(spec):
  """`transformers`' Gemma3TextConfig of the same model, float32 and eager attention."""
  from transformers import Gemma3TextConfig
  cfg = interp_config(spec)
  return Gemma3TextConfig(
      vocab_size=spec.vocab, hidden_size=spec.d_model, intermediate_size=spec.d_mlp,
      num_hidden_layers=spec.n_layers, num_attention_heads=spec.n_heads, num_key_value_heads=1,
      head_dim=cfg.d_head, query_pre_attn_scalar=int(cfg.attn_scale), rms_norm_eps=cfg.norm_eps,
      max_position_embeddings=cfg.n_ctx, sliding_window=SLIDING_WINDOW,
      layer_types=["sliding_attention" if cfg.is_local(i) else "full_attention"
                   for i in range(spec.n_layers)],
      rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_base},
                       "sliding_attention": {"rope_type": "default",
                                             "rope_theta": cfg.rope_local_base}},
      hidden_activation="gelu_pytorch_tanh", final_logit_softcapping=None,
      attn_logit_softcapping=None, tie_word_embeddings=True, attn_implementation="eager",
      torch_dtype="float32")


def hf_weight_shapes(spec) -> dict[str, tuple[int, ...]]:
  """`transformers` state-dict names and shapes (lm_head is tied to the embedding)."""
  d, m, e = spec.d_model, spec.d_mlp, d_head(spec)
  out = {"model.embed_tokens.weight": (spec.vocab, d), "model.norm.weight": (d,)}
  for i in range(spec.n_layers):
    pre = f"model.layers.{i}."
    out.update({pre + "self_attn.q_proj.weight": (spec.n_heads * e, d),
                pre + "self_attn.k_proj.weight": (e, d), pre + "self_attn.v_proj.weight": (e, d),
                pre + "self_attn.o_proj.weight": (d, spec.n_heads * e),
                pre + "self_attn.q_norm.weight": (e,), pre + "self_attn.k_norm.weight": (e,),
                pre + "mlp.gate_proj.weight": (m, d), pre + "mlp.up_proj.weight": (m, d),
                pre + "mlp.down_proj.weight": (d, m)})
    for norm in ("input", "post_attention", "pre_feedforward", "post_feedforward"):
      out[f"{pre}{norm}_layernorm.weight"] = (d,)
  return out


def random_weights(spec, seed: int) -> dict[str, np.ndarray]:
  """Random float32 weights: N(0, 0.02) everywhere (norm gains are 1 + w, so near 1)."""
  rng = np.random.default_rng(seed)
  return {k: rng.normal(0.0, 0.02, s).astype(np.float32) for k, s in hf_weight_shapes(spec).items()}


def params_from_hf(spec, weights: dict[str, np.ndarray]) -> dict:
  """interp parameters (numpy) from the `transformers` state dict (see the module docstring)."""
  w, d, e = weights, spec.d_model, d_head(spec)
  heads = lambda x: x.T.reshape(d, -1, e)  # [n*e, d] -> [d, n, e]
  params = {"embed": {"W_E": w["model.embed_tokens.weight"]},
            "ln_final": {"w": w["model.norm.weight"]}}
  for i in range(spec.n_layers):
    pre = f"model.layers.{i}."
    a = pre + "self_attn."
    params[f"blocks_{i}"] = {
        "attn": {"W_Q": heads(w[a + "q_proj.weight"]), "W_K": heads(w[a + "k_proj.weight"]),
                 "W_V": heads(w[a + "v_proj.weight"]),
                 "W_O": w[a + "o_proj.weight"].T.reshape(-1, e, d),
                 "q_norm": {"w": w[a + "q_norm.weight"]}, "k_norm": {"w": w[a + "k_norm.weight"]}},
        "ln1": {"w": w[pre + "input_layernorm.weight"]},
        "ln1_post": {"w": w[pre + "post_attention_layernorm.weight"]},
        "ln2": {"w": w[pre + "pre_feedforward_layernorm.weight"]},
        "ln2_post": {"w": w[pre + "post_feedforward_layernorm.weight"]},
        "mlp": {"W_gate": w[pre + "mlp.gate_proj.weight"].T, "W_in": w[pre + "mlp.up_proj.weight"].T,
                "W_out": w[pre + "mlp.down_proj.weight"].T}}
  return params


def hf_model(spec, weights: dict[str, np.ndarray]):
  """`transformers`' Gemma3ForCausalLM with the shared weights, in eval mode."""
  import torch
  from transformers import Gemma3ForCausalLM
  torch.manual_seed(0)
  model = Gemma3ForCausalLM(hf_config(spec)).float().eval().requires_grad_(False)
  missing, unexpected = model.load_state_dict(
      {k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
  if unexpected or [k for k in missing if k != "lm_head.weight"]:
    raise ValueError(f"Gemma 3 weights: missing {missing}, unexpected {unexpected}")
  return model


def tl_model(spec, weights: dict[str, np.ndarray], dtype: str = "float32"):
  """TransformerLens 4's bridge over `hf_model`, booted offline (raw HF numerics, no
  compatibility mode: no norm folding or weight centring, so the logits are `transformers'`),
  its weights in `dtype` (float32 or bfloat16)."""
  import tempfile

  from tokenizers import Tokenizer, models
  from transformer_lens import TransformerBridge
  from transformers import AutoTokenizer, PreTrainedTokenizerFast
  import torch
  model = hf_model(spec, weights).to(getattr(torch, dtype))
  model.config.architectures = ["Gemma3ForCausalLM"]  # how the bridge picks its adapter
  # The bridge wants a tokenizer that can be reloaded by path; the benchmark passes token ids,
  # so a small word-level one stands in for Gemma's (never downloaded).
  words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(4)}, unk_token="t0"))
  with tempfile.TemporaryDirectory() as tmp:
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", pad_token="t0",
                            bos_token="t1", eos_token="t2").save_pretrained(tmp)
    bridge = TransformerBridge.boot_transformers(
        "google/gemma-3-270m", hf_model=model, load_weights=False,
        tokenizer=AutoTokenizer.from_pretrained(tmp))
  return bridge.eval()


def reference_scorer(spec, model, weights, data, steps: int):
  """fn() -> EAP-IG scores [n_up n_merged] with TL hooks on the bridge (`tl_model`)."""
  import torch
  from interp.discovery.scores import gauss_legendre
  L, h, e = spec.n_layers, spec.n_heads, d_head(spec)
  clean = torch.from_numpy(data["source"]).long()
  corrupt = torch.from_numpy(data["base"]).long()
  answers = torch.from_numpy(data["answers"]).long()
  rows = torch.arange(spec.batch)
  layer = lambda i, name: torch.from_numpy(weights[f"model.layers.{i}.{name}.weight"])
  dtype = next(model.parameters()).dtype  # the reference's own outputs are in the model's dtype
  w_o = [layer(i, "self_attn.o_proj").T.reshape(h, e, -1).to(dtype) for i in range(L)]
  gain = [(1.0 + layer(i, "post_attention_layernorm")).to(dtype) for i in range(L)]
  eps = interp_config(spec).norm_eps  # the config both sides were built from
  recv_hooks = [f"blocks.{i}.{n}.hook_in" for i in range(L) for n in ("ln1", "ln2")]
  recv_hooks.append("ln_final.hook_in")
  up_layer = [-1] + [s for i in range(L) for s in [2 * i] * h + [2 * i + 1]]
  recv_layer = [s for i in range(L) for s in (2 * i, 2 * i + 1)] + [2 * L]
  valid = torch.tensor(np.asarray(up_layer)[:, None] < np.asarray(recv_layer)[None, :])

  def metric(logits):
    last = logits[:, -1]
    return (last[rows, answers[:, 0]] - last[rows, answers[:, 1]]).mean()

  def outputs(tokens):
    """Upstream outputs [n_up b p d] as interp's graph defines them (module docstring)."""
    names = ["hook_embed"] + [f"blocks.{i}.{n}" for i in range(L)
                              for n in ("attn.hook_z", "hook_mlp_out")]
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    outs = [cache["hook_embed"]]
    for i in range(L):
      r = torch.einsum("bphe,hed->hbpd", cache[f"blocks.{i}.attn.hook_z"], w_o[i])
      scale = torch.rsqrt(r.sum(0).pow(2).mean(-1, keepdim=True) + eps)
      outs += list(r * scale * gain[i])
      outs.append(cache[f"blocks.{i}.hook_mlp_out"])  # after the MLP's post-norm
    return torch.stack(outs)

  alphas, weights_k = gauss_legendre(steps)

  def scores():
    with torch.no_grad():
      diff = outputs(clean) - outputs(corrupt)
      _, cache = model.run_with_cache(clean, names_filter="hook_embed")
      e_clean = cache["hook_embed"]
      _, cache = model.run_with_cache(corrupt, names_filter="hook_embed")
      e_corr = cache["hook_embed"]
    return eap_ig_torch.scores(model, clean, recv_hooks, metric, diff, e_clean, e_corr, valid,
                               alphas, weights_k)

  return scores


def shape(spec_cls, name: str = "gemma3_270m", **sizes):
  """A Gemma 3 `ModelShape` (Gemma 3 270M's sizes unless overridden; 16 prompts of 16 tokens)."""
  kw = dict(name=name, d_model=640, n_layers=18, n_heads=4, d_mlp=2048, vocab=262_144, ctx=16,
            batch=16, attn_only=False)
  kw.update(sizes)
  return spec_cls(**kw)

