"""Transformer-circuit analysis toolkit: patching, ablations, lenses, head scores, weight circuits.

Every tool is a pure function of a `TransformerConfig`, a plain-dict parameter tree and/or a
cache of activations, vectorised over layers, heads or patch sites, so `jit` and `vmap` apply.
The experiments built on it live in packages of their own: `interp.induction`, `interp.ioi`,
`interp.steering`, and (on replacement models) `interp.graphs`.

Vocabulary (shape letters as in `interp.models.config`, plus):
  l      layer; arrays over heads are [l h] (layer-major), e.g. `scores[1, 0]` is L1H0
  n      a leading axis of things done at once (ablation masks, components, patch sites)
  head   (layer, head) pair; `L1H0` in labels and results
  mask   a boolean [l h] array selecting heads (several: [n l h])
  site   one place an activation is patched: a (layer, index) pair of one site kind
         (`patching`: resid, attn_out, mlp_out, heads)
  ICL    in-context-learning score: loss at a late token minus loss at an early token
         (Olsson et al., 2022; negative = the model learns from its context)

Modules:
  patching   activation, path and attribution patching over every site of a kind in one call
  ablate     zero / mean / resample ablation of heads or layers, pattern-preserving too
  lens       logit lens, residual-stream decomposition, direct logit attribution
  scores     previous-token, prefix-matching (induction), duplicate-token and copying scores
  weights    QK / OV circuits as factored matrices; Q-, K-, V-composition with the baseline
  icl        per-token loss and the ICL score, with positions scaled to short contexts
"""
