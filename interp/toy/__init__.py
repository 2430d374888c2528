"""Toy models of superposition (Elhage et al., 2022), trained as many instances at once.

Vocabulary:
  feature     one input coordinate x_i: 0 with probability S (the sparsity), else uniform on
              [0, 1]. Its density is p = 1 - S.
  importance  I_i, the weight of feature i in the loss sum_i I_i (x_i - x'_i)^2.
  W, b        the model's parameters: W is [hidden m, feature n] as in the paper, so column W_i
              (`W[:, i]`) is feature i's direction in the hidden space; b is [n].
  model       x' = W^T W x + b (linear) or x' = ReLU(W^T W x + b) (ReLU output).
  instance    one independent model with its own importance, density, activation and seed.
              Every array of a run has a leading `instance` axis; all instances train in one
              compiled step (vmapped), sharded over the mesh's `data` axis.
  sweep       the per-instance table (importance, density, activation, labels) of a run.
  family      one figure family of the paper: intro, basic, phase, geometry.

Modules: `data` (sampling features fast), `model`, `sweep`, `program` (the compiled step and
its shardings), `train` (the run: loop, records, checkpoints), `measures` (geometry of W),
`analytic` (the n=2, m=1 phase diagram from the exact loss), one module per family (`intro`,
`basic`, `phase`, `geometry`), `experiment` (family registry and results.json), `speed` and
`compare` (timings; the PyTorch and naive-JAX reference loops), `plots`, and `suite_entries`
(the figure suite).
"""
