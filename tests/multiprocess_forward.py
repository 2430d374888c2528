"""Worker for test_sharding: sharded forward of a small GPT-2-shaped model, logits to a .npy file.

Run directly (one process) or under launch/local.py (several processes); the result must not
depend on how many processes or devices computed it.
"""

import sys

import numpy as np

from interp.parallel import mesh as mesh_lib

mesh_lib.maybe_initialize_distributed()

import jax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from interp.models import config, sharded  # noqa: E402

CFG = config.gpt2("small", vocab_size=128, n_ctx=32, d_model=64, n_layers=2, n_heads=4, d_head=16,
                  d_mlp=256)


def tokens(batch: int = 8, seq: int = 16) -> np.ndarray:
  return np.random.RandomState(0).randint(0, CFG.vocab_size, (batch, seq))


def main(out: str, mesh_spec: str) -> None:
  mesh = mesh_lib.make_mesh(mesh_lib.MeshConfig.parse(mesh_spec))
  params, shardings = sharded.init(CFG, jax.random.key(0), mesh)
  fwd = sharded.make_forward(CFG, mesh, shardings, capture=["blocks.1.hook_resid_mid"])
  toks = tokens()
  local = toks[mesh_lib.process_rows(toks.shape[0])]
  logits, cache = fwd(params, mesh_lib.global_batch(mesh, local))
  logits = multihost_utils.process_allgather(logits, tiled=True)
  if jax.process_index() == 0:
    np.save(out, np.asarray(logits))
    print(f"devices={jax.device_count()} processes={jax.process_count()} wrote {out}")


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
