"""Transformer-circuit analysis: head scores, weight-level circuits, lenses, ablations, ICL.

Every tool is a pure function of a `TransformerConfig`, a plain-dict parameter tree and/or a
cache of activations, vectorised over layers and heads, so `jit` and `vmap` apply.

Vocabulary (shape letters as in `interp.models.config`, plus):
  l      layer; arrays over heads are [l h] (layer-major), e.g. `scores[1, 0]` is L1H0
  n      a leading axis of things done at once (ablation masks, components, samples)
  head   (layer, head) pair; `L1H0` in labels and results
  mask   a boolean [l h] array selecting heads (several: [n l h])
  ICL    in-context-learning score: loss at a late token minus loss at an early token
         (Olsson et al., 2022; negative = the model learns from its context)

Modules:
  data       variable-length repeated-segment token sources (the induction task without a
             fixed period a 1-layer model could look up by position)
  scores     previous-token, prefix-matching (induction), duplicate-token and copying scores
  weights    QK / OV circuits as factored matrices; Q-, K-, V-composition with the baseline
  lens       logit lens, residual-stream decomposition, direct logit attribution
  ablate     zero / mean / resample ablation of heads or layers, pattern-preserving too
  icl        per-token loss and the ICL score, with positions scaled to short contexts
  train      a small LM trainer on any token source, keeping snapshots of head scores
  experiment the induction-heads experiment (`experiments/induction_heads.py`)
  gemma      the same measurements on Gemma 3 270M
"""
