"""Gemma 3 270M from its Q4_K_M GGUF, checked against transformers loading the same file.

Both sides dequantize the same blocks to float32, so any difference beyond float32 rounding is a
bug in the name mapping, the norms, RoPE, the attention mask or the tokenizer.

Measured on a 2-core CPU (transformers 5.24, eager attention), max |logit difference| over the
real positions, logits of magnitude ~40:
  full model:        3.7e-5, 7.2e-5, 1.3e-4   (6, 22 and 60-token prompts)
  sliding window 8:  3.3e-4, 1.8e-4           (22 and 60 tokens)
A wrong window (3 or 5 where transformers has 4) moves logits by 16-19. The float32 floor is not
far below the bound: the residual stream grows to ~1e5 (float32 spacing 0.008 there), random-token
prompts reach 5e-4 (1.1e-3 with transformers' SDPA attention), and a window of 4 reaches 1.3e-3,
where rounding the embeddings alone (6e-8 relative noise) moves logits by up to 5e-4.
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interp.models import config, generate, gguf_loader, transformer
from interp.models.tokenizer_spm import SPMTokenizer

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "In 1969, Neil Armstrong became the first person to walk on the Moon. The mission, Apollo 11, "
    "launched from Kennedy Space Center in Florida on July 16 and, after eight days in space, "
    "returned its three astronauts safely to Earth, splashing down in the",
]
PAD_TO = 64  # one jitted forward for every prompt: right padding leaves earlier logits unchanged
LOGIT_TOL = 1e-3
WINDOW = 8  # small sliding window for the local layers; 4 is more ill-conditioned (see above)

TOKENIZER_STRINGS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x**2  # square\n",
    "3.14159 + 2,718 = 5859.87 and 1234567890",
    "naïve café résumé Ελληνικά 日本語のテキスト 한국어",
    "emoji 🤖🎉👍🏽 family 👨‍👩‍👧",
    "  leading and   multiple    spaces  ",
    "line1\nline2\n\n\nline3\ttab\t\tx\r\n",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<b>bold</b> and <code>x</code>",
    "unusual ǅ ꙮ 𓀀 \u200b zero-width, ▁literal▁marks",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }  // URL https://example.com/p?q=1&r=2#f",
    "",
    " ",
]


@pytest.fixture(scope="module")
def prompt_ids(gemma_tokenizer):
  return [gemma_tokenizer.encode(p) for p in PROMPTS]


@functools.partial(jax.jit, static_argnums=0)
def _forward(cfg, params, tokens):
  return transformer.forward(cfg, params, tokens)[0]


def _ours(cfg, params, prompts):
  """Logits of each prompt (a list of id lists), from one right-padded batch."""
  buf = np.zeros((len(prompts), PAD_TO), np.int32)
  for row, ids in zip(buf, prompts):
    row[:len(ids)] = ids
  logits = _forward(cfg, params, jnp.asarray(buf))
  return [np.asarray(logits[i, :len(ids)]) for i, ids in enumerate(prompts)]


@pytest.fixture(scope="module")
def ours_full(gemma, prompt_ids):
  return _ours(*gemma, prompt_ids)


def _hf(model, prompts):
  import torch
  with torch.no_grad():
    return [model(torch.tensor([ids])).logits[0].numpy() for ids in prompts]


def _compare(ours, theirs, label, tol=LOGIT_TOL):
  errors = []
  for a, b in zip(ours, theirs):
    errors.append(float(np.abs(a - b).max()))
    assert (a.argmax(-1) == b.argmax(-1)).all(), label
    top_a, top_b = np.argsort(-a[-1])[:5], np.argsort(-b[-1])[:5]
    assert (top_a == top_b).all(), (label, top_a, top_b)
  print(f"\n{label}: max |logit diff| per prompt {[f'{e:.1e}' for e in errors]}, "
        f"lengths {[len(a) for a in ours]}, max |logit| {max(np.abs(b).max() for b in theirs):.0f}")
  assert max(errors) < tol, (label, errors)


def test_config_from_metadata(gemma):
  cfg, _ = gemma
  # The file stores eps as float32 (9.99999997e-7); everything else matches the hand-written preset.
  assert cfg.norm_eps == pytest.approx(1e-6, rel=1e-6)
  assert cfg == config.gemma3_270m(norm_eps=cfg.norm_eps)


def test_params_match_init_layout(gemma):
  cfg, params = gemma
  expected = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(expected)):
    assert a.shape == b.shape and a.dtype == jnp.float32, jax.tree_util.keystr(path)


def test_logits_match_transformers(hf_gemma, prompt_ids, ours_full):
  assert [len(p) for p in prompt_ids] == [6, 22, 60]
  _compare(ours_full, _hf(hf_gemma, prompt_ids), "full model")


def test_sliding_window_matches_transformers(gemma, hf_gemma, prompt_ids, ours_full):
  """An 8-token window on the local layers, on both sides (the real one, 512, is longer than
  any prompt here, so without this the sliding-window mask would go untested)."""
  cfg, params = gemma
  small = config.gemma3_270m(**{**cfg.to_dict(), "sliding_window": WINDOW})
  ours = _ours(small, params, prompt_ids)[1:]  # the 6-token prompt fits in the window
  hf_cfg, layers = hf_gemma.config, hf_gemma.model.layers
  saved = hf_cfg.sliding_window, [layer.self_attn.sliding_window for layer in layers]
  try:
    hf_cfg.sliding_window = WINDOW
    for layer in layers:
      if layer.self_attn.sliding_window is not None:
        layer.self_attn.sliding_window = WINDOW
    theirs = _hf(hf_gemma, prompt_ids[1:])
  finally:
    hf_cfg.sliding_window = saved[0]
    for layer, window in zip(layers, saved[1]):
      layer.self_attn.sliding_window = window
  # The window must have taken effect, or this compares full attention twice.
  assert np.abs(ours_full[2] - ours[1]).max() > 1.0
  # An 8-token window over 60 tokens sums fewer, larger attention terms than full attention:
  # float32 rounding against transformers reached 1.45e-3 here (2 cores, loaded), 1.6e-4 on
  # the 22-token prompt; compiled as the suite compiles (tests/__init__.py: LLVM level 1), whose
  # reductions round differently, 2.4e-3 (of logits up to 59). Top-1 and top-5 agreement above
  # stay exact.
  _compare(ours, theirs, f"sliding window {WINDOW}", tol=3e-3)


def test_greedy_matches_transformers(gemma, hf_gemma, prompt_ids):
  import torch
  cfg, params = gemma
  n_new = 5
  for ids in prompt_ids[:2]:  # both fit one 64-token buffer, so they share a compilation
    ours = generate.greedy(cfg, params, ids, n_new)
    with torch.no_grad():
      theirs = hf_gemma.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False,
                                 min_new_tokens=n_new)[0].numpy()
    print(f"\ngreedy: {ours[len(ids):].tolist()} vs transformers {theirs[len(ids):].tolist()}")
    np.testing.assert_array_equal(ours, theirs)


def test_greedy_is_argmax_of_each_prefix():
  """Padding, bucketing and the traced lengths, on a tiny random model: every generated token must
  be the argmax of an unpadded forward over the sequence before it (one forward checks them all,
  attention being causal)."""
  cfg = config.gemma3_270m(vocab_size=64, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1,
                           d_head=16, d_mlp=48, sliding_window=3, global_every=2, n_ctx=128,
                           tied_embeddings=False)  # tied, one embedding row wins every step
  # O(1) random weights straight from the shapes (init_params compiles slowly on a busy CPU).
  rng = np.random.default_rng(1)
  shapes = jax.eval_shape(lambda: transformer.init_params(cfg, jax.random.key(0)))
  params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
  prompt = np.random.default_rng(0).integers(0, 64, 60).tolist()
  out = generate.greedy(cfg, params, prompt, 10)  # 70 tokens: past the first 64-token bucket
  assert out.dtype == np.int32 and out.shape == (70,) and out[:60].tolist() == prompt
  logits = _forward(cfg, params, jnp.asarray(out[None]))
  np.testing.assert_array_equal(np.argmax(logits[0, 59:69], -1), out[60:])
  assert len(set(out[60:].tolist())) > 1  # not a degenerate constant output
  np.testing.assert_array_equal(generate.greedy(cfg, params, [prompt, prompt], 4),
                                [out[:64], out[:64]])
  assert generate.greedy(cfg, params, prompt, 0).tolist() == prompt
  # Rows of different prompt lengths in one call: each as it would run alone.
  short = generate.greedy(cfg, params, prompt[:37], 5)
  both = generate.greedy(cfg, params, [prompt, prompt[:37] + [0] * 23], 5, lengths=[60, 37])
  np.testing.assert_array_equal(both[0], out[:65])
  np.testing.assert_array_equal(both[1, :42], short)
  assert both[1, 42:].tolist() == [0] * 23
  with pytest.raises(ValueError, match="lengths must be"):
    generate.greedy(cfg, params, [prompt], 2, lengths=[61])


def test_tokenizer_matches_transformers(gemma_tokenizer, hf_gemma_tokenizer):
  assert len(TOKENIZER_STRINGS) >= 10
  for text in TOKENIZER_STRINGS:
    ours = gemma_tokenizer.encode(text)
    assert ours == hf_gemma_tokenizer(text).input_ids, text
    assert gemma_tokenizer.decode(ours) == hf_gemma_tokenizer.decode(ours), text


def _sentencepiece_reference(path):
  """A real SentencePiece BPE model built from the file's vocabulary.

  llama.cpp's converter spells the space-run pieces with real spaces; SentencePiece matches
  user-defined pieces after ' ' -> '▁', so they are spelled back with '▁' here.
  """
  spm = pytest.importorskip("sentencepiece")
  from sentencepiece import sentencepiece_model_pb2 as pb

  md = gguf_loader.read_gguf(path).metadata
  model = pb.ModelProto()
  model.trainer_spec.model_type = pb.TrainerSpec.BPE
  model.trainer_spec.byte_fallback = True
  model.trainer_spec.unk_id = md["tokenizer.ggml.unknown_token_id"]
  model.normalizer_spec.name = "identity"
  model.normalizer_spec.add_dummy_prefix = False
  model.normalizer_spec.remove_extra_whitespaces = False
  kinds = pb.ModelProto.SentencePiece
  types = {1: kinds.NORMAL, 2: kinds.UNKNOWN, 3: kinds.CONTROL, 4: kinds.USER_DEFINED,
           5: kinds.UNUSED, 6: kinds.BYTE}
  for i, (piece, score, kind) in enumerate(zip(md["tokenizer.ggml.tokens"],
                                               md["tokenizer.ggml.scores"],
                                               md["tokenizer.ggml.token_type"])):
    entry = model.pieces.add()
    entry.piece = "\u2581" * len(piece) if piece and set(piece) == {" "} else piece
    entry.score = float(score)
    entry.type = kinds.UNKNOWN if i == model.trainer_spec.unk_id else types[int(kind)]
  return spm.SentencePieceProcessor(model_proto=model.SerializeToString())


def test_tokenizer_matches_sentencepiece(gemma_path, gemma_tokenizer):
  """SentencePiece itself, on the strings above plus long text and a 40-space run.

  transformers differs on runs longer than the longest space piece (31): it rebuilds merges and
  gives 16 + 24 spaces for 40, where SentencePiece and llama.cpp match 31 whole, then 9.
  """
  sp = _sentencepiece_reference(gemma_path)
  long_text = pathlib.Path(transformer.__file__).read_text(encoding="utf-8")
  for text in TOKENIZER_STRINGS + [" " * 40 + "x", long_text]:
    ours = gemma_tokenizer.encode(text, add_bos=False, parse_special=False)
    assert ours == sp.encode(text), text[:60]
  assert len(gemma_tokenizer.encode(" " * 40 + "x")) == 4  # <bos>, 31 spaces, 9 spaces, x


def test_tokenizer_basics(gemma_tokenizer):
  tok = gemma_tokenizer
  assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (262_144, 2, 1)
  assert tok.encode("Hello world") == [2, 9259, 1902]
  assert tok.encode("Hello world", add_bos=False) == [9259, 1902]
  assert tok.decode(tok.encode("Hello world")) == "<bos>Hello world"
  assert tok.decode(tok.encode("Hello world"), skip_special=True) == "Hello world"
  # Control pieces are matched in the text unless parse_special is off; bytes round-trip.
  assert tok.encode("<start_of_turn>", add_bos=False) == [105]
  assert 105 not in tok.encode("<start_of_turn>", parse_special=False)
  for text in TOKENIZER_STRINGS:
    # A literal '▁' is a space to SentencePiece, so it comes back as one.
    assert tok.decode(tok.encode(text, add_bos=False)) == text.replace("\u2581", " ")


def test_truncated_file_gives_clear_error(gemma_path, tmp_path):
  with open(gemma_path, "rb") as f:
    data = f.read(os.path.getsize(gemma_path) // 2)
  cut = tmp_path / "gemma-cut.gguf"
  cut.write_bytes(data)  # header intact, tensor data cut off
  with pytest.raises(ValueError, match=r"gemma-cut\.gguf.*is truncated: tensor .* needs bytes"):
    gguf_loader.load_gemma3_gguf(cut)
  cut.write_bytes(data[:100_000])  # cut inside the vocabulary
  with pytest.raises(ValueError, match=r"gemma-cut\.gguf.*truncated or corrupt"):
    gguf_loader.load_gemma3_gguf(cut)
  with pytest.raises(ValueError, match=r"gemma-cut\.gguf.*truncated or corrupt"):
    SPMTokenizer.from_gguf(cut)
  cut.write_bytes(b"PK\x03\x04" + data[4:1000])
  with pytest.raises(ValueError, match=r"gemma-cut\.gguf.*bad magic"):
    gguf_loader.load_gemma3_gguf(cut)
  with pytest.raises(ValueError, match=r"missing\.gguf.*does not exist"):
    gguf_loader.load_gemma3_gguf(tmp_path / "missing.gguf")


def _tiny_gemma_gguf(path, drop=(), reshape=()):
  """A small Gemma 3 GGUF of float32 tensors, written with gguf's own writer."""
  import gguf
  d, h, g, e, m, v, n_layers = 8, 2, 1, 4, 12, 32, 2
  writer = gguf.GGUFWriter(str(path), "gemma3")
  for add, value in [("block_count", n_layers), ("embedding_length", d), ("head_count", h),
                     ("head_count_kv", g), ("key_length", e), ("value_length", e),
                     ("feed_forward_length", m), ("context_length", 64), ("sliding_window", 4),
                     ("layer_norm_rms_eps", 1e-6), ("rope_freq_base", 1e6)]:
    getattr(writer, "add_" + add)(value)
  rng = np.random.default_rng(0)
  shapes = {"token_embd.weight": (v, d), "output_norm.weight": (d,)}
  for i in range(n_layers):
    shapes.update({f"blk.{i}.{k}.weight": s for k, s in [
        ("attn_q", (h * e, d)), ("attn_k", (g * e, d)), ("attn_v", (g * e, d)),
        ("attn_output", (d, h * e)), ("attn_q_norm", (e,)), ("attn_k_norm", (e,)),
        ("attn_norm", (d,)), ("post_attention_norm", (d,)), ("ffn_norm", (d,)),
        ("post_ffw_norm", (d,)), ("ffn_gate", (m, d)), ("ffn_up", (m, d)), ("ffn_down", (d, m))]})
  tensors = {}
  for name, shape in shapes.items():
    if name in drop:
      continue
    tensors[name] = rng.normal(size=dict(reshape).get(name, shape)).astype(np.float32)
    writer.add_tensor(name, tensors[name])
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return tensors


def test_tiny_file_mapping(tmp_path):
  path = tmp_path / "tiny.gguf"
  tensors = _tiny_gemma_gguf(path)
  cfg, params = gguf_loader.load_gemma3_gguf(path)
  assert (cfg.d_model, cfg.n_layers, cfg.n_kv_heads, cfg.global_every) == (8, 2, 1, 6)
  blk = params["blocks_1"]
  np.testing.assert_array_equal(params["embed"]["W_E"], tensors["token_embd.weight"])
  np.testing.assert_array_equal(blk["ln2_post"]["w"], tensors["blk.1.post_ffw_norm.weight"] - 1)
  np.testing.assert_array_equal(blk["attn"]["W_Q"][:, 1, :],
                                tensors["blk.1.attn_q.weight"][4:8].T)  # head 1 = rows 4..7
  np.testing.assert_array_equal(blk["attn"]["W_O"][1],
                                tensors["blk.1.attn_output.weight"][:, 4:8].T)
  np.testing.assert_array_equal(blk["mlp"]["W_out"], tensors["blk.1.ffn_down.weight"].T)


def test_incomplete_file_gives_clear_error(tmp_path):
  path = tmp_path / "tiny.gguf"
  _tiny_gemma_gguf(path, drop=("blk.1.ffn_up.weight",))
  with pytest.raises(ValueError, match=r"tiny\.gguf.*missing tensors \['blk\.1\.ffn_up\.weight'\]"):
    gguf_loader.load_gemma3_gguf(path)
  _tiny_gemma_gguf(path, reshape={"blk.0.attn_k.weight": (8, 8)})
  with pytest.raises(ValueError, match=r"tiny\.gguf.*wrong shapes.*blk\.0\.attn_k\.weight"):
    gguf_loader.load_gemma3_gguf(path)


def test_header_parser_agrees_with_gguf_reader(gemma_path, gguf_reader):
  """Our fast header parser against the `gguf` package's own GGUFReader, the reference."""
  from interp.models.gguf_loader import read_gguf
  ours = read_gguf(gemma_path)
  ref = gguf_reader
  fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}  # header counts
  assert set(ours.metadata) == set(fields)
  for key, field in fields.items():
    want = field.contents()
    if isinstance(want, list) and want and not isinstance(want[0], str):
      np.testing.assert_array_equal(np.asarray(ours.metadata[key]), np.asarray(want), err_msg=key)
    else:
      assert ours.metadata[key] == want, key
  assert [t.name for t in ref.tensors] == list(ours.tensors)
  for t in ref.tensors:
    info = ours.tensors[t.name]
    assert info.shape == tuple(int(d) for d in reversed(t.shape)), t.name
    assert (info.offset, info.nbytes, info.ggml_type) == (t.data_offset, t.n_bytes, t.tensor_type)
