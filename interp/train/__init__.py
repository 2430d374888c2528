"""Training: a pure step (state), one loop with I/O hooks (loop), Orbax checkpoints (checkpoint,
save_policy), metric writers (metrics), the optimizer (optim), and the language-model run (lm)."""
