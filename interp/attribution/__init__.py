"""Token- and head-level attributions of one scalar output: behavioural and causal evidence.

Behavioural attributions perturb the input and watch the output; they say which tokens matter,
not how. Attention-level evidence reads the forward pass; it says where heads look and how much
they write, not whether that matters. This package computes both, on the same prompts.

Vocabulary:
  p          number of token positions of the explained input.
  mask       bool [p]: True = the token is kept, False = it is replaced by a baseline token.
             Several masks at once: [n p].
  value fn   `value(masks [n p]) -> float [n]`: the explained scalar for each masking, all n in
             one call (`masking.masked_lm_value` builds one for an LM as a single compiled
             program). Any callable with this signature works, e.g. a jnp toy in tests.
  keep       bool [p]: positions that are never masked (BOS, the position read by the metric).
             They are not players: their attribution is 0 and no coalition varies them.
  player     a position not in `keep`; q = number of players, coalitions are bool [n q].
  f(all)     value with every token kept; f(empty) with every player masked.
  metric     `metric(logits [p v]) -> scalar` for one sequence (`LogitDiff`, `LogProb`).
  embeddings the `hook_embed` activation [p d] (after Gemma's sqrt(d) scale); gradient methods
             attribute to it, so learned position embeddings are not attributed.

Modules:
  masking    value functions over token masks; occlusion (leave-one-out); `together`, which
             evaluates the masks several methods ask for once each, in one call
  shapley    exact Shapley values (all 2^q coalitions) and KernelSHAP (Lundberg & Lee, 2017)
  lime       LIME (Ribeiro et al., 2016): a locally weighted linear surrogate
  gradients  gradient x input and integrated gradients (Sundararajan et al., 2017)
  heads      attention patterns and per-source write norms of every head; `head_evidence`
  evidence   all of the above against causal effects (patching a token or a head from a
             counterfactual prompt): Kendall tau, top-k overlap, mismatched heads
  evidence_tasks, evidence_report, evidence_plots
             the prompt batches, the library behind `experiments/evidence_report.py`, and its
             figures, statements and report.md
  suite_entries  the `evidence_report` entry of the figure suite
"""
