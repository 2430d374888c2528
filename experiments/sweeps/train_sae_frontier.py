"""The L0-FVU frontier of TopK vs ReLU+L1 on planted features (a sweep file, not a binary).

  python launch/sweep.py --sweep_dir=runs/sweeps/sae_frontier \
      --sweep_file=experiments/sweeps/train_sae_frontier.py \
      --plot_x=summary.l0 --plot_metric=summary.fvu --plot_group=activation

Each point is one dictionary; summary.png plots FVU against L0 with one line per rule (lower
left is better), results.csv has every run's summary (mean max cosine to the truth included).
"""

COMMAND = ["python", "experiments/train_sae.py", "--source=planted", "--d_sae=512",
           "--batch_size=512", "--num_steps=400", "--lr=3e-3", "--warmup_steps=20",
           "--init_sample=1024", "--log_every=100", "--mesh=data:1,model:1"]


def get_hyper(h):
  topk = h.product([h.fixed("activation", "topk"), h.sweep("k", [2, 4, 8, 16])])
  relu = h.product([h.fixed("activation", "relu"), h.sweep("l1_coeff", [0.5, 1.0, 2.0, 4.0])])
  return h.chain([topk, relu])
