"""Learning rate x seed for experiments/train_lm.py (a sweep file: data, not a binary).

  python launch/sweep.py --sweep_dir=runs/sweeps/lm_lr \
      --sweep_file=experiments/sweeps/train_lm_lr.py --parallel=2

`launch/sweep.py` calls get_hyper with the combinators of `launch.hyper` and runs COMMAND with
each run's overrides and its own --workdir.
"""

COMMAND = ["python", "experiments/train_lm.py", "--num_steps=100", "--log_every=10"]


def get_hyper(h):
  return h.product([h.sweep("lr", [1e-3, 3e-3, 1e-2]), h.sweep("seed", [0, 1])])
